"""Scenario generators (SPAN, grid, historical) and the validation of scenario tables (SPEC §5)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

import fastrisk as fr
from fastrisk import InputError
from fastrisk.scenarios import grid, historical, prepare, span, top_underlyings

import builders as B


def _market():
    # BTC 50000, ETH 2000, XYZ 100, no scan ranges given: price_range 0.15, vol_range 0.10 by default.
    return B.make_market()


def _rows(table):
    return [(r["scenario_id"], r["underlying"], r["price_shock"], r["vol_shock"], r["weight"])
            for r in table.to_pylist()]


# ------------------------------------------------------------------------------------------------------- SPAN

def test_span_is_the_16_cme_scenarios_per_underlying():
    t = span(["BTC", "ETH"], market=_market())
    assert t.schema.names == ["scenario_id", "underlying", "price_shock", "vol_shock", "weight"]
    assert t.num_rows == 32 and t.column("scenario_id").to_pylist() == list(range(32))
    rows = _rows(t)
    assert [r[1] for r in rows] == ["BTC"] * 16 + ["ETH"] * 16
    # CME risk array with R = 0.15, V = 0.10: unchanged, ±R/3, ±2R/3, ±R each with vol up and down,
    # then ±2R (extreme) with vol unchanged at weight 0.35.
    R, V = 0.15, 0.10
    expected = [(0, V), (0, -V), (R / 3, V), (R / 3, -V), (-R / 3, V), (-R / 3, -V), (2 * R / 3, V), (2 * R / 3, -V),
                (-2 * R / 3, V), (-2 * R / 3, -V), (R, V), (R, -V), (-R, V), (-R, -V), (2 * R, 0), (-2 * R, 0)]
    for k in (0, 16):
        got = [(r[2], r[3]) for r in rows[k:k + 16]]
        np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
        assert [r[4] for r in rows[k:k + 16]] == [1.0] * 14 + [0.35, 0.35]


def test_span_takes_each_underlyings_own_ranges_and_the_extreme_multiple():
    und = pa.table({"underlying": ["BTC", "SOL"], "index_price": [50000.0, 150.0], "price_range": [0.15, 0.30],
                    "vol_range": [0.10, 0.20]})
    t = span(und, extreme_multiple=3.0)
    shocks = t.column("price_shock").to_numpy()
    vols = t.column("vol_shock").to_numpy()
    assert shocks[14:16] == pytest.approx([0.45, -0.45]) and shocks[30:32] == pytest.approx([0.9, -0.9])
    assert vols[16] == pytest.approx(0.20) and np.abs(shocks[16:30]).max() == pytest.approx(0.30)
    # An extreme move of -100 % or more is an error naming the parameter that made it.
    with pytest.raises(InputError, match="price_shock.*extreme_multiple"):
        span(und, extreme_multiple=4.0)


def test_span_of_a_market_scans_every_underlying_and_names_must_exist():
    market = _market()
    assert span(market).column("underlying").unique().to_pylist() == ["BTC", "ETH", "XYZ"]
    with pytest.raises(InputError, match="scenarios.underlying.*'DOGE'"):
        span(["BTC", "DOGE"], market=market)
    with pytest.raises(ValueError, match="market"):
        span(["BTC"])


def test_top_underlyings_by_open_interest():
    market = _market()
    # gross USD notional: BTC 1 contract of 0.01 BTC = 500; ETH 3 ETH = 6000; XYZ none.
    book = B.make_book([(1, 1, 1.0, 50000.0), (2, 3, -3.0, 2000.0)], [(1, "USDT", 1000.0)])
    assert top_underlyings(market, book, 3) == ["ETH", "BTC"]
    assert top_underlyings(market, book, 1) == ["ETH"]


# ------------------------------------------------------------------------------------------------------- grid

def test_grid_default_is_nine_prices_by_three_vols_per_underlying():
    t = grid(["BTC"], market=_market())
    assert t.num_rows == 27
    shocks, vols = t.column("price_shock").to_numpy(), t.column("vol_shock").to_numpy()
    assert np.unique(shocks) == pytest.approx(np.linspace(-0.15, 0.15, 9))
    assert list(vols[:3]) == pytest.approx([-0.10, 0.0, 0.10])
    assert set(t.column("weight").to_pylist()) == {1.0}
    t = grid(["BTC", "ETH"], price_points=[-0.2, 0.2], vol_points=[0.0], market=_market())
    assert _rows(t) == [(0, "BTC", -0.2, 0.0, 1.0), (1, "BTC", 0.2, 0.0, 1.0), (2, "ETH", -0.2, 0.0, 1.0),
                        (3, "ETH", 0.2, 0.0, 1.0)]


# ------------------------------------------------------------------------------------------------- historical

def _history():
    d = [dt.date(2024, 1, k) for k in (1, 2, 3, 4)]
    return d, {"BTC": [0.10, -0.20, 0.05, 0.0], "ETH": [0.0, 0.5, -0.5, 0.01]}


def test_historical_one_joint_scenario_per_date_wide_and_long_agree():
    d, r = _history()
    wide = pa.table({"date": d[::-1], "BTC": r["BTC"][::-1], "ETH": r["ETH"][::-1]})  # any row order
    long = pa.table({"date": d * 2, "underlying": ["BTC"] * 4 + ["ETH"] * 4, "return": r["BTC"] + r["ETH"]})
    a, b = historical(wide), historical(long)
    assert a.equals(b)
    assert a.num_rows == 8 and a.column("scenario_id").to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert a.column("price_shock").to_pylist() == r["BTC"][:1] + r["ETH"][:1] + [-0.20, 0.5, 0.05, -0.5, 0.0, 0.01]
    assert a.column("date").to_pylist()[::2] == d
    assert set(a.column("vol_shock").to_pylist()) == {0.0} and set(a.column("weight").to_pylist()) == {1.0}


def test_historical_window_and_horizon_compound():
    d, r = _history()
    t = historical(pa.table({"date": d, **r}), window=3, horizon=2)
    # last 3 dates (2, 3, 4), 2-day windows ending on the 3rd and the 4th:
    #   BTC (1 - 0.20)(1 + 0.05) - 1 = -0.16;  (1.05)(1.0) - 1 = 0.05
    #   ETH (1.5)(0.5) - 1 = -0.25;            (0.5)(1.01) - 1 = -0.495
    assert t.column("price_shock").to_numpy() == pytest.approx([-0.16, -0.25, 0.05, -0.495], rel=1e-14)
    assert t.column("date").to_pylist() == [d[2], d[2], d[3], d[3]]


def test_historical_rejects_gaps_bad_returns_and_unknown_underlyings():
    d, r = _history()
    with pytest.raises(InputError, match="returns.BTC.*row 1") as e:
        historical(pa.table({"date": d, "BTC": [0.1, None, 0.0, 0.0]}))
    assert e.value.rows == [1]
    with pytest.raises(InputError, match="returns.ETH.*> -1"):
        historical(pa.table({"date": d, "ETH": [0.0, -1.0, 0.0, 0.0]}))
    with pytest.raises(InputError, match="complete.*'ETH'"):
        historical(pa.table({"date": d + d[:1], "underlying": ["BTC"] * 4 + ["ETH"], "return": [0.0] * 5}))
    with pytest.raises(InputError, match="returns.DOGE"):
        historical(pa.table({"date": d, "DOGE": [0.0] * 4}), market=_market())
    with pytest.raises(InputError, match="returns.date.*unique"):
        historical(pa.table({"date": d[:1] * 2, "BTC": [0.0, 0.0]}))


# ------------------------------------------------------------------------------------------------- validation

def _scenarios(rows, **extra):
    t = pa.table({"scenario_id": pa.array([r[0] for r in rows], pa.int32()), "underlying": [r[1] for r in rows],
                  "price_shock": [r[2] for r in rows]})
    for name, values in extra.items():
        t = t.append_column(name, pa.array(values, pa.float64()))
    return t


def test_prepare_turns_rows_into_multipliers():
    market = _market()
    s = prepare(_scenarios([(7, "ETH", -0.5), (2, "BTC", 0.1), (7, "BTC", 0.2)], vol_shock=[0.0, 0.05, -0.1]),
                market)
    assert list(s.ids) == [2, 7] and list(s.weight) == [1.0, 1.0]  # weight defaults to 1
    np.testing.assert_allclose(s.mult, [[1.1, 1.0, 1.0], [1.2, 0.5, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(s.vol_shift, [[0.05, 0.0, 0.0], [-0.1, 0.0, 0.0]], rtol=1e-15)
    assert [list(s.named_u[s.named_start[k]:s.named_start[k + 1]]) for k in range(2)] == [[0], [0, 1]]


@pytest.mark.parametrize("rows, extra, column, bad_rows, rule", [
    ([(0, "BTC", 0.1), (0, "DOGE", 0.1)], {}, "underlying", [1], "underlyings.underlying"),
    ([(0, "BTC", 0.1), (1, "BTC", -1.0)], {}, "price_shock", [1], "> -1"),
    ([(0, "BTC", 0.1), (1, "BTC", float("nan"))], {}, "price_shock", [1], "finite"),
    ([(0, "BTC", 0.1), (0, "ETH", 0.1), (0, "BTC", 0.2)], {}, "underlying", [2], "at most one row"),
    ([(0, "BTC", 0.1), (0, "ETH", 0.1)], {"weight": [1.0, 0.35]}, "weight", [1], "same on every row"),
    ([(0, "BTC", 0.1)], {"weight": [1.5]}, "weight", [0], r"in \[0, 1\]"),
    ([(0, "BTC", 0.1), (1, "BTC", 0.1)], {"vol_shock": [0.1, float("inf")]}, "vol_shock", [1], "finite"),
])
def test_scenario_table_errors_name_table_column_and_rows(rows, extra, column, bad_rows, rule):
    market, book = _market(), B.make_book([(1, 1, 1.0, 50000.0)], [(1, "USDT", 1000.0)])
    table = _scenarios(rows, **extra)
    for call in (lambda: prepare(table, market), lambda: fr.stress(market, book, table),
                 lambda: fr.account_risk(market, book, mode="portfolio", scenarios=table)):
        with pytest.raises(InputError, match=rule) as e:
            call()
        assert (e.value.table, e.value.column, e.value.rows) == ("scenarios", column, bad_rows)


def test_scenario_table_needs_its_columns():
    with pytest.raises(InputError, match="scenarios.price_shock: missing column"):
        prepare(pa.table({"scenario_id": pa.array([0], pa.int32()), "underlying": ["BTC"]}), _market())
