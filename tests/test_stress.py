"""Stress tests and portfolio margin (SPEC §5): hand-computed cases, relationships, kernel == reference."""

from __future__ import annotations

import math

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastrisk as fr
from fastrisk import reference
from fastrisk.reference.stress import scenario_moves
from fastrisk.testing import assert_tables_close

import builders as B
from test_properties import SETTINGS, books, venues


def scenarios(rows):
    """rows: (scenario_id, underlying, price_shock[, vol_shock[, weight]])."""
    rows = [tuple(r) + (0.0, 1.0)[len(r) - 3:] for r in rows]
    return pa.table({"scenario_id": pa.array([r[0] for r in rows], pa.int32()),
                     "underlying": pa.array([r[1] for r in rows], pa.string()),
                     "price_shock": pa.array([r[2] for r in rows], pa.float64()),
                     "vol_shock": pa.array([r[3] for r in rows], pa.float64()),
                     "weight": pa.array([r[4] for r in rows], pa.float64())})


def by_id(table, key="account_id"):
    return {r[key]: r for r in table.to_pylist()}


# ---------------------------------------------------------------------------------------------- hand-computed

# Standard venue (tests/builders.py): BTC index and BTC collateral at 50000 (cw 0.9); #1 BTCUSDT linear,
# c = 0.01, flat mmf 0.05; #2 BTCUSD inverse, c = 100 USD, settled in BTC, flat mmf 0.025.
#   1: long 100 x #1 (1 BTC) @ 50000, 10000 USDT      equity 10000, MM 50000*0.05 = 2500
#   2: short 100 x #1 @ 50000, 10000 USDT              equity 10000, MM 2500
#   3: 1 BTC of collateral only                         equity 50000*0.9 = 45000, MM 0
#   4: long 500 x #2 (50000 USD face, 1 BTC) @ 50000, 0.2 BTC collateral
#        equity 0.2*50000*0.9 = 9000; MM = (500*100/50000 = 1 BTC)*0.025*50000 = 1250
#   5: isolated long 100 x #1 @ 50000 with 4000 USDT of margin: no cross figures; equity_iso 4000
# Scenarios: 0 = BTC -10 %, 1 = BTC -30 % at weight 0.35, 2 = BTC +10 %, 3 = ETH unchanged (zero shock).
HAND_POSITIONS = [(1, 1, 100.0, 50000.0), (2, 1, -100.0, 50000.0), (4, 2, 500.0, 50000.0),
                  (5, 1, 100.0, 50000.0, 4000.0)]
HAND_BALANCES = [(1, "USDT", 10000.0), (2, "USDT", 10000.0), (3, "BTC", 1.0), (4, "BTC", 0.2)]
HAND_SCENARIOS = scenarios([(0, "BTC", -0.1), (1, "BTC", -0.3, 0.0, 0.35), (2, "BTC", 0.1), (3, "ETH", 0.0)])


def test_stress_hand_computed():
    market, book = B.make_market(), B.make_book(HAND_POSITIONS, HAND_BALANCES)
    result = fr.stress(market, book, HAND_SCENARIOS, loss_matrix=True)
    # Losses (base equity - scenario equity):
    #   1: -10 %: upnl -5000 -> 5000;  -30 %: -15000;  +10 %: +5000 gain
    #   2: the mirror image
    #   3: collateral 0.9*(50000 - 45000) = 4500;  0.9*15000 = 13500;  -4500
    #   4: -10 %: upnl = 50000*(1/50000 - 1/45000) = -1/9 BTC at 45000 = -5000 USD, collateral 0.2*45000*0.9 = 8100
    #         -> equity 3100, loss 5900;  -30 %: upnl = 1 - 50000/35000 = -3/7 BTC at 35000 = -15000,
    #         collateral 6300 -> equity -8700, loss 17700;  +10 %: upnl 50000*(1/50000 - 1/55000) BTC at 55000
    #         = +5000, collateral 9900 -> loss -5900
    expected = {1: [5000, 15000, -5000, 0], 2: [-5000, -15000, 5000, 0], 3: [4500, 13500, -4500, 0],
                4: [5900, 17700, -5900, 0], 5: [0, 0, 0, 0]}
    ids = result.accounts.column("account_id").to_pylist()
    assert ids == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(result.loss_matrix, [expected[a] for a in ids], rtol=1e-12, atol=1e-9)
    assert (result.loss_matrix[:, 3] == 0.0).all()  # a zero shock moves nothing, exactly
    acc = by_id(result.accounts)
    # worst = max weighted loss: account 1 -> 0.35*15000 = 5250 > 5000 (scenario 1), equity -5000, MM
    # 35000*0.05 = 1750, bankrupt; account 2 -> 5000 at +10 % (equity 5000, MM 55000*0.05 = 2750, ratio 0.55);
    # account 3 -> 0.35*13500 = 4725; account 4 -> 0.35*17700 = 6195 > 5900, equity -8700, MM still
    # (50000/35000 BTC)*0.025*35000 = 1250; account 5 has no cross loss.
    for a, (worst, sid, eq, mm, status) in {1: (5250, 1, -5000, 1750, "bankrupt"),
                                            2: (5000, 2, 5000, 2750, "healthy"),
                                            3: (4725, 1, 31500, 0, "healthy"),
                                            4: (6195, 1, -8700, 1250, "bankrupt"),
                                            5: (0, None, 0, 0, "healthy")}.items():
        row = acc[a]
        assert row["worst_loss"] == pytest.approx(worst, rel=1e-12)
        assert row["worst_scenario"] == sid and row["status_after"] == status
        assert row["equity_after"] == pytest.approx(eq, rel=1e-12, abs=1e-9)
        assert row["maintenance_margin_after"] == pytest.approx(mm, rel=1e-12)
    sc = by_id(result.scenarios, "scenario_id")
    # scenario 0: losers 1, 3, 4: 5000 + 4500 + 5900 = 15400, net 15400 - 5000 = 10400; the isolated
    #   position: 4000 - 5000 = -1000 <= MM 2250 -> liquidatable, 1000 of isolated bad debt.
    # scenario 1: 15000 + 13500 + 17700 = 46200, net 31200; accounts 1 and 4 bankrupt (bad debt 5000 + 8700);
    #   isolated: 4000 - 15000 = -11000. scenario 2: only account 2 loses (5000); net -5000 + 5000 - 4500 - 5900.
    for sid, (total, net, losing, bankrupt, newly, bad, iso_liq, iso_bad) in {
            0: (15400, 10400, 3, 0, 0, 0, 1, 1000), 1: (46200, 31200, 3, 2, 2, 13700, 1, 11000),
            2: (5000, -10400, 1, 0, 0, 0, 0, 0), 3: (0, 0, 0, 0, 0, 0, 0, 0)}.items():
        row = sc[sid]
        assert row["total_loss"] == pytest.approx(total, rel=1e-12, abs=1e-9)
        assert row["net_loss"] == pytest.approx(net, rel=1e-12, abs=1e-9)
        assert (row["accounts_losing"], row["accounts_bankrupt"], row["newly_liquidatable"],
                row["isolated_liquidatable"]) == (losing, bankrupt, newly, iso_liq)
        assert row["bad_debt"] == pytest.approx(bad, rel=1e-12, abs=1e-9)
        assert row["isolated_bad_debt"] == pytest.approx(iso_bad, rel=1e-12, abs=1e-9)
    assert sc[1]["description"] == "BTC -30%" and sc[0]["weight"] == 1.0 and sc[1]["weight"] == 0.35


def test_stress_without_scenarios_or_accounts():
    market, book = B.make_market(), B.make_book(HAND_POSITIONS, HAND_BALANCES)
    result = fr.stress(market, book, HAND_SCENARIOS.slice(0, 0))
    assert result.scenarios.num_rows == 0 and result.accounts.num_rows == 5
    assert result.accounts.column("worst_scenario").null_count == 5
    assert result.accounts.column("equity_after").equals(result.accounts.column("equity"))
    empty = fr.stress(market, B.make_book(), HAND_SCENARIOS)
    assert empty.accounts.num_rows == 0 and empty.scenarios.column("total_loss").to_pylist() == [0.0] * 4


# ------------------------------------------------------------------------------------------- relationships

@pytest.fixture(scope="module")
def venue():
    return fr.generate.exchange(3_000, seed=21)


def test_zero_shock_leaves_every_account_unchanged(venue):
    market, book = venue
    zero = scenarios([(0, "BTC", 0.0), (1, "ETH", 0.0, 0.0, 0.35), (2, "SOL", 0.0), (2, "BTC", 0.0)])
    result = fr.stress(market, book, zero, loss_matrix=True)
    base = fr.account_risk(market, book)
    assert (result.loss_matrix == 0.0).all()
    acc = result.accounts
    for c in ("equity", "maintenance_margin"):
        assert acc.column(c).equals(base.column(c))
    assert acc.column("equity_after").equals(base.column("equity"))
    assert acc.column("maintenance_margin_after").equals(base.column("maintenance_margin"))
    assert acc.column("status_after").equals(base.column("status"))
    assert acc.column("worst_scenario").null_count == acc.num_rows
    status = base.column("status").to_pylist()
    for row in result.scenarios.to_pylist():
        assert row["accounts_liquidatable"] == status.count("liquidatable")
        assert row["accounts_bankrupt"] == status.count("bankrupt")
        assert row["total_loss"] == 0.0 and row["newly_liquidatable"] == 0
        assert row["isolated_liquidatable"] == pc.sum(base.column("n_isolated_liquidatable")).as_py()


def test_a_long_only_book_never_gains_when_prices_fall(venue):
    market, book = venue
    pos = book.positions
    inst = market.instruments
    puts = pc.filter(inst.column("instrument_id"), pc.equal(inst.column("option_type"), "put"))
    # Long futures and long calls only (a long put is short the underlying); collateral as generated (long coin).
    keep = pc.and_(pc.greater(pos.column("quantity"), 0.0), pc.invert(pc.is_in(pos.column("instrument_id"), puts)))
    longs = fr.Book(positions=pos.filter(keep), balances=book.balances)
    assert longs.positions.num_rows > 1000
    down = scenarios([(k * 6 + j, u, shock, vol) for k, u in enumerate(["BTC", "ETH", "SOL"])
                      for j, (shock, vol) in enumerate([(-0.001, 0.0), (-0.05, 0.0), (-0.3, 0.0), (-0.05, -0.1),
                                                        (-0.6, -0.2), (-0.05, -0.0)])])
    result = fr.stress(market, longs, down, loss_matrix=True)
    assert (result.loss_matrix >= 0.0).all()
    assert (result.loss_matrix > 0.0).any(axis=0).all()  # every scenario hurts somebody


def _shock_by_hand(market, underlying, m, vol_shock):
    """A new fr.Market with ``underlying`` moved by the factor m and its options' vols by vol_shock, written
    table by table (the generated venue prices its options with the model, so there is no mark to move)."""
    assert market.instruments.column("mark_price").filter(
        pc.equal(market.instruments.column("kind"), "option")).null_count == \
        pc.sum(pc.equal(market.instruments.column("kind"), "option")).as_py()

    def moved(table, column, mask):
        col = table.column(column)
        values = col.to_numpy(zero_copy_only=False).copy()
        values[mask] = values[mask] * m
        return table.set_column(table.schema.get_field_index(column), column,
                                pa.array(values, pa.float64(), mask=col.is_null().to_numpy(zero_copy_only=False)))

    a, u, ins = market.assets, market.underlyings, market.instruments
    a = moved(a, "price", pc.fill_null(pc.equal(a.column("underlying"), underlying), False).to_numpy(
        zero_copy_only=False))
    u = moved(u, "index_price", pc.equal(u.column("underlying"), underlying).to_numpy(zero_copy_only=False))
    on_u = pc.equal(ins.column("underlying"), underlying).to_numpy(zero_copy_only=False)
    is_option = pc.equal(ins.column("kind"), "option").to_numpy(zero_copy_only=False)
    ins = moved(ins, "mark_price", on_u & ~is_option)
    vol = ins.column("implied_vol").to_numpy(zero_copy_only=False).copy()
    vol[on_u & is_option] = np.maximum(vol[on_u & is_option] + vol_shock, 1e-4)
    ins = ins.set_column(ins.schema.get_field_index("implied_vol"), "implied_vol",
                         pa.array(vol, pa.float64(), mask=~is_option))
    return fr.Market(assets=a, underlyings=u, instruments=ins, tiers=market.tiers, as_of=market.as_of)


@pytest.mark.parametrize("underlying, shock, vol", [("BTC", -0.12, 0.05), ("ETH", 0.2, -0.1), ("SOL", -0.4, 0.0)])
def test_stress_equals_account_risk_on_a_market_moved_by_hand(venue, underlying, shock, vol):
    market, book = venue
    result = fr.stress(market, book, scenarios([(5, underlying, shock, vol)]), loss_matrix=True)
    base = fr.account_risk(market, book)
    moved = fr.account_risk(_shock_by_hand(market, underlying, 1.0 + shock, vol), book)
    equity, after = base.column("equity").to_numpy(), moved.column("equity").to_numpy()
    scale = np.abs(equity).max()
    np.testing.assert_allclose(result.loss_matrix[:, 0], equity - after, rtol=0, atol=1e-12 * scale)
    hit = result.accounts.column("worst_scenario").is_valid().to_numpy(zero_copy_only=False)
    assert hit.sum() > 100
    acc = result.accounts.filter(pa.array(hit))
    np.testing.assert_allclose(acc.column("equity_after").to_numpy(), after[hit], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(acc.column("maintenance_margin_after").to_numpy(),
                               moved.column("maintenance_margin").to_numpy()[hit], rtol=1e-12)
    assert acc.column("status_after").to_pylist() == moved.filter(pa.array(hit)).column("status").to_pylist()


def test_results_do_not_depend_on_scenario_row_order(venue):
    market, book = venue
    span = fr.scenarios.span(["BTC", "ETH"], market=market)
    shuffled = span.take(pa.array(np.random.default_rng(1).permutation(span.num_rows)))
    a, b = fr.stress(market, book, span), fr.stress(market, book, shuffled)
    assert a.accounts.equals(b.accounts) and a.scenarios.equals(b.scenarios)


def test_thread_count_changes_nothing():
    market, book = fr.generate.exchange(20_000, seed=12)
    span = fr.scenarios.span(["BTC", "ETH", "SOL"], market=market)

    def run():
        s = fr.stress(market, book, span, loss_matrix=True)
        return s, fr.account_risk(market, book, mode="portfolio", scenarios=span), fr.exposures(market, book)

    default = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
    finally:
        numba.set_num_threads(default)
    many = run()
    assert one[0].accounts.equals(many[0].accounts) and one[0].scenarios.equals(many[0].scenarios)
    assert np.array_equal(one[0].loss_matrix, many[0].loss_matrix)
    assert one[1].equals(many[1]) and one[2].equals(many[2])


# ---------------------------------------------------------------------------------------------- portfolio

def _span_btc(market):
    return fr.scenarios.span(["BTC"], market=market)


def test_portfolio_margin_of_one_future_is_its_worst_span_loss():
    market = B.make_market()
    book = B.make_book([(1, 1, 100.0, 50000.0)], [(1, "USDT", 10000.0)])
    row = fr.account_risk(market, book, mode="portfolio", scenarios=_span_btc(market)).to_pylist()[0]
    # 1 BTC long: the -15 % scan loses 7500 (vol does not matter), the -30 % extreme 15000 x 0.35 = 5250.
    # MM = 7500, IM = 1.25 x 7500 = 9375; equity 10000 -> margin_ratio 0.75, healthy.
    assert row["maintenance_margin"] == pytest.approx(7500.0, rel=1e-12)
    assert row["initial_margin"] == pytest.approx(9375.0, rel=1e-12)
    assert row["margin_ratio"] == pytest.approx(0.75, rel=1e-12)
    assert row["free_collateral"] == pytest.approx(625.0, rel=1e-9) and row["status"] == "healthy"
    row = fr.account_risk(market, book, mode="portfolio", scenarios=_span_btc(market), im_factor=1.5,
                          margin_call_ratio=0.7).to_pylist()[0]
    assert row["initial_margin"] == pytest.approx(11250.0, rel=1e-12) and row["status"] == "margin_call"


def test_portfolio_margin_of_a_delta_hedged_book_is_far_below_cross():
    market = B.make_market()
    # Long 1 BTC of the USDT-linear perpetual, short 50000 USD of the coin-margined inverse (entry 50000): the
    # inverse's USD PnL is -50000*(m - 1), the linear's +50000*(m - 1): flat in every BTC scenario.
    book = B.make_book([(1, 1, 100.0, 50000.0), (1, 2, -500.0, 50000.0)], [(1, "USDT", 10000.0)])
    cross = fr.account_risk(market, book).to_pylist()[0]
    pm = fr.account_risk(market, book, mode="portfolio", scenarios=_span_btc(market)).to_pylist()[0]
    assert cross["maintenance_margin"] == pytest.approx(2500.0 + 1250.0, rel=1e-12)
    assert pm["maintenance_margin"] < 1e-6 * cross["maintenance_margin"]
    for c in ("equity", "collateral", "gross_notional", "leverage", "n_positions"):
        assert pm[c] == cross[c]


def test_portfolio_margin_of_an_options_book_hedged_with_futures():
    # A short XYZ straddle, delta-hedged: SPAN charges its gamma and vega, far less than the per-leg rates.
    call = B.option(10, "XYZ-C", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR, option_type="call",
                    implied_vol=0.5)
    put = B.option(11, "XYZ-P", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR, option_type="put",
                   implied_vol=0.5)
    perp = B.linear(12, "XYZUSD", "XYZ", "USD", 1.0, 100.0, imf=0.1, mmf=0.05)
    market = B.make_market(instruments=B.standard_instruments([call, put, perp]))
    # Straddle delta at the money: N(d1) - N(-d1) with d1 = sigma/2 = 0.25 -> 2N(0.25) - 1 = 0.1974 per pair.
    book = B.make_book([(1, 10, -100.0, 20.0), (1, 11, -100.0, 20.0), (1, 12, 19.74, 100.0)], [(1, "USD", 1e5)])
    cross = fr.account_risk(market, book).to_pylist()[0]
    pm = fr.account_risk(market, book, mode="portfolio", scenarios=fr.scenarios.span(["XYZ"], market=market))
    pm = pm.to_pylist()[0]
    stressed = fr.stress(market, book, fr.scenarios.span(["XYZ"], market=market)).accounts.to_pylist()[0]
    # Portfolio MM = the worst weighted SPAN loss, which stress reports too.
    assert pm["maintenance_margin"] == pytest.approx(stressed["worst_loss"], rel=1e-12)
    assert 0 < pm["maintenance_margin"] < 0.6 * cross["initial_margin"]


def test_portfolio_margin_sums_underlyings_without_offsets_and_keeps_standard_margin_elsewhere():
    market = B.make_market()
    # Long 1 BTC (#1) and short 25 ETH (#3, 50000 USD): a joint -10 % move of both loses 5000 on BTC and
    # gains 5000 on ETH: 0 in stress, but portfolio margin adds max(loss_u, 0) per underlying: 5000 + 0.
    book = B.make_book([(1, 1, 100.0, 50000.0), (1, 3, -25.0, 2000.0)], [(1, "USDT", 20000.0)])
    joint = scenarios([(0, "BTC", -0.1), (0, "ETH", -0.1)])
    assert fr.stress(market, book, joint, loss_matrix=True).loss_matrix[0, 0] == pytest.approx(0.0, abs=1e-9)
    pm = fr.account_risk(market, book, mode="portfolio", scenarios=joint).to_pylist()[0]
    assert pm["maintenance_margin"] == pytest.approx(5000.0, rel=1e-12)
    # BTC scenarios only: ETH keeps its standard margin. Notional 25*2000 = 50000 is in bracket 2 of "ETH"
    # (mmf 0.025, amount 150, imf 0.05): MM 1250 - 150 = 1100, IM 2500. With BTC's 7500 / 9375 (see above):
    pm = fr.account_risk(market, book, mode="portfolio", scenarios=_span_btc(market)).to_pylist()[0]
    assert pm["maintenance_margin"] == pytest.approx(7500.0 + 1100.0, rel=1e-12)
    assert pm["initial_margin"] == pytest.approx(9375.0 + 2500.0, rel=1e-12)


def test_portfolio_default_scenarios_are_span_of_every_underlying(venue):
    market, book = venue
    assert fr.account_risk(market, book, mode="portfolio").equals(
        fr.account_risk(market, book, mode="portfolio", scenarios=fr.scenarios.span(market)))
    with pytest.raises(ValueError, match="mode"):
        fr.account_risk(market, book, mode="isolated")


# ------------------------------------------------------------------------------------ kernel == reference

@st.composite
def scenario_tables(draw):
    rows = []
    for sid in draw(st.lists(st.integers(-5, 50), max_size=4, unique=True)):
        weight = draw(st.sampled_from([1.0, 0.35, 0.0]) | st.floats(0, 1))
        for u in draw(st.lists(st.sampled_from(["BTC", "ETH", "XYZ"]), min_size=1, max_size=3, unique=True)):
            shock = draw(st.just(0.0) | st.floats(-0.95, 3.0))
            vol = draw(st.just(0.0) | st.floats(-0.6, 0.6))
            rows.append((sid, u, shock, vol, weight))
    return scenarios(rows) if rows else scenarios([]).cast(scenarios([(0, "BTC", 0.0)]).schema)


def _close_per_account(actual, expected, columns, tol):
    """Columns equal within ``tol`` [accounts], a multiple of each account's own scale (the size of its
    positions and collateral): the kernel sums the moved rows' changes, the reference the whole shocked
    account, so they differ by the rounding of the account's largest terms, not of its (maybe cancelled)
    result."""
    for c in columns:
        a, e = actual.column(c).to_numpy(), expected.column(c).to_numpy()
        ok = (np.isinf(a) & (a == e)) | (np.abs(a - e) <= tol)
        assert ok.all(), f"{c}: {a[~ok][:3]!r} vs {e[~ok][:3]!r} (tolerance {tol[~ok][:3]!r})"


def _account_scale(market, book):
    """Per account: Σ |position value|, |notional| and |collateral| (USD), in any shocked market within 4x."""
    pos = fr.position_risk(market, book)
    ids = book.arrays.account_id
    acc = np.searchsorted(ids, pos.column("account_id").to_numpy())
    terms = np.abs(pos.column("value_usd").to_numpy()) + pos.column("notional_usd").to_numpy()
    scale = np.bincount(acc, weights=terms, minlength=len(ids)).astype(float)  # (int64 when empty)
    bal = book.balances
    price = dict(zip(market.assets.column("asset").to_pylist(), market.assets.column("price").to_pylist()))
    usd = np.abs(bal.column("amount").to_numpy()) * np.array([price[a] for a in bal.column("asset").to_pylist()])
    scale += np.bincount(np.searchsorted(ids, bal.column("account_id").to_numpy()), weights=usd, minlength=len(ids))
    return 4.0 * (scale + 1.0)


def _near(x, y, tol):
    return np.abs(x - y) <= tol


@SETTINGS
@given(venues(), books(), scenario_tables())
def test_stress_kernel_equals_reference(market, tables, scen):
    book = fr.Book(positions=tables[0], balances=tables[1])
    got = fr.stress(market, book, scen, loss_matrix=True)
    want = reference.stress(market, book, scen, loss_matrix=True)
    tol = 1e-9 * _account_scale(market, book)  # per account
    # Today's figures come from the same row-order sums as account_risk.
    assert_tables_close(got.accounts, want.accounts, columns=["equity", "maintenance_margin", "status"])
    want_loss = np.array(want.loss_matrix, dtype=float).reshape(got.loss_matrix.shape)
    assert _near(got.loss_matrix, want_loss, tol[:, None]).all()
    assert_tables_close(got.scenarios, want.scenarios, key="scenario_id", columns=["description", "weight"])
    weight = got.scenarios.column("weight").to_numpy()
    # Per account: the worst weighted loss; its scenario and the figures in it wherever it is not a near-tie.
    _close_per_account(got.accounts, want.accounts, ["worst_loss"], tol)
    weighted = np.maximum(want_loss * weight, 0.0)
    top2 = np.sort(np.hstack([weighted, np.zeros((len(tol), 2))]), axis=1)[:, -2:]
    clear = pa.array(top2[:, 1] - top2[:, 0] > 4 * tol)
    g, w = got.accounts.filter(clear), want.accounts.filter(clear)
    assert g.column("worst_scenario").equals(w.column("worst_scenario"))
    _close_per_account(g, w, ["equity_after", "maintenance_margin_after"], tol[clear.to_numpy(zero_copy_only=False)])
    # Per scenario: sums within the accounts' tolerances; counts exact except for accounts on a knife's edge
    # (a loss within rounding of 0, an equity within rounding of 0 or of its MM).
    base = fr.account_risk(market, book)
    was_liq = np.isin(base.column("status").to_pylist(), ["liquidatable", "bankrupt"])
    for k, (_, _, moves) in enumerate(scenario_moves(scen)):
        shocked = reference.account_risk(reference.shocked_market(market, moves), book)
        eq, mm = shocked.column("equity").to_numpy(), shocked.column("maintenance_margin").to_numpy()
        status = np.array(shocked.column("status").to_pylist())
        loss = want_loss[:, k]
        edge = _near(eq, 0.0, tol) | _near(eq, mm, tol)
        row = got.scenarios.to_pylist()[k]
        for name, clear_true, ambiguous in (
                ("accounts_losing", loss > tol, _near(loss, 0.0, tol)),
                ("accounts_liquidatable", (status == "liquidatable") & ~edge, edge),
                ("accounts_bankrupt", (status == "bankrupt") & ~edge, edge),
                ("newly_liquidatable", np.isin(status, ["liquidatable", "bankrupt"]) & ~was_liq & ~edge, edge & ~was_liq)):
            assert clear_true.sum() <= row[name] <= clear_true.sum() + ambiguous.sum(), (name, row[name])
        pos = reference.position_risk(reference.shocked_market(market, moves), book)
        iso = pos.column("isolated").to_numpy(zero_copy_only=False)
        pos_tol = tol[np.searchsorted(book.arrays.account_id, pos.column("account_id").to_numpy())][iso]
        iso_eq = pos.column("isolated_equity").to_numpy(zero_copy_only=False)[iso].astype(float)
        iso_mm = pos.column("maintenance_margin").to_numpy()[iso]
        iso_edge = _near(iso_eq, iso_mm, pos_tol) & (iso_mm > 0)
        iso_liq = pos.column("liquidatable").to_numpy(zero_copy_only=False)[iso].astype(bool)
        assert (iso_liq & ~iso_edge).sum() <= row["isolated_liquidatable"] <= (iso_liq | iso_edge).sum()
        for name, values in (("total_loss", np.maximum(loss, 0.0)), ("net_loss", loss), ("bad_debt", np.maximum(-eq, 0.0))):
            assert abs(row[name] - values.sum()) <= tol.sum(), name
        assert abs(row["isolated_bad_debt"] - want.scenarios.column("isolated_bad_debt")[k].as_py()) <= tol.sum()


@SETTINGS
@given(venues(), books(), scenario_tables())
def test_portfolio_kernel_equals_reference(market, tables, scen):
    book = fr.Book(positions=tables[0], balances=tables[1])
    got = fr.account_risk(market, book, mode="portfolio", scenarios=scen)
    want = reference.portfolio_account_risk(market, book, scen)
    scale = _account_scale(market, book)
    _close_per_account(got, want, ["initial_margin", "maintenance_margin", "free_collateral"], 1e-9 * scale)
    cross = fr.account_risk(market, book)
    for c in ("collateral", "unrealized_pnl", "option_value", "equity", "gross_notional", "leverage",
              "isolated_equity", "n_positions", "n_isolated_liquidatable"):
        assert got.column(c).equals(cross.column(c)), c
    # status where the margin is not on a knife's edge
    mm, eq = want.column("maintenance_margin").to_numpy(), want.column("equity").to_numpy()
    edge = (np.abs(eq - mm) <= 1e-9 * scale) | (np.abs(eq) <= 1e-9 * scale) | \
        (np.abs(mm - 0.8 * eq) <= 1e-9 * scale)
    assert got.filter(pa.array(~edge)).column("status").equals(want.filter(pa.array(~edge)).column("status"))


def test_reference_shocked_market_moves_marked_options_by_the_model_change():
    # A put with a given mark of 4.0: a BTC-like move of XYZ by -10 % and vol +0.1 moves the mark by
    # model(90, sigma 0.6) - model(100, sigma 0.5).
    put = B.option(18, "XYZ-90-P", "XYZ", "USD", 1.0, strike=90.0, expiry=B.AS_OF + B.ONE_YEAR, option_type="put",
                   implied_vol=0.5, mark=4.0)
    market = B.make_market(instruments=B.standard_instruments([put]))
    moved = reference.shocked_market(market, {"XYZ": (-0.1, 0.1)})
    row = [r for r in moved.instruments.to_pylist() if r["instrument_id"] == 18][0]
    change = reference.black76(90.0, 90.0, 1.0, 0.6, False)[0] - reference.black76(100.0, 90.0, 1.0, 0.5, False)[0]
    assert row["mark_price"] == pytest.approx(4.0 + change, rel=1e-12) and row["implied_vol"] == pytest.approx(0.6)
    book = B.make_book([(1, 18, 3.0, 3.5)], [(1, "USD", 100.0)])
    loss = fr.stress(market, book, scenarios([(0, "XYZ", -0.1, 0.1)]), loss_matrix=True).loss_matrix[0, 0]
    assert loss == pytest.approx(-3.0 * change, rel=1e-12)
    assert math.isfinite(loss)


# ------------------------------------------------------------------------------ scenario valuation, batched

def _value_each_scenario(market, scen):
    """``risk.value_instruments`` once per scenario: what ``scenario_risk.value_scenarios`` must equal."""
    from fastrisk.risk import value_instruments

    vals = [value_instruments(market, scen.mult[s], scen.vol_shift[s]) for s in range(scen.n)]
    n_i, n_k = len(market.arrays.kind), len(market.arrays.asset_price)
    stack = lambda f, n: np.array([f(v) for v in vals]).reshape(scen.n, n)  # noqa: E731
    return (stack(lambda v: v.price, n_i), stack(lambda v: v.forward, n_i), stack(lambda v: v.settle_px, n_i),
            stack(lambda v: v.asset_px, n_k))


def _assert_scenario_values_exact(market, scen):
    from fastrisk.kernels.valuation import scenario_instrument_prices
    from fastrisk.scenario_risk import value_scenarios

    want = _value_each_scenario(market, scen)
    for got, expected in zip(value_scenarios(market, scen), want):
        assert got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True)
    # Any chunk count (serial or parallel copy) gives the same bits.
    M = market.arrays
    for chunks in (1, 2, 7):
        price = np.empty((scen.n, len(M.kind)))
        run = scenario_instrument_prices.serial if chunks == 1 else scenario_instrument_prices.parallel
        run(price, M.kind, M.underlying, M.mark, M.index_price, M.option_type, M.strike, M.expiry_years,
            M.implied_vol, scen.mult, scen.vol_shift, 0.0, chunks)
        assert np.array_equal(price, want[0], equal_nan=True)


@SETTINGS
@given(venues(), scenario_tables())
def test_batched_scenario_prices_are_value_instruments_bit_for_bit(market, scen):
    # Futures, a model-priced call, a marked put, an expired call; moves of 0, vol shifts to the floor.
    _assert_scenario_values_exact(market, fr.scenarios.prepare(scen, market))


def test_batched_scenario_prices_on_a_generated_venue(venue):
    market, _ = venue
    scen = fr.scenarios.prepare(fr.scenarios.span(["BTC", "ETH"], market=market), market)
    _assert_scenario_values_exact(market, scen)


def test_batched_scenario_prices_of_the_option_benchmark_market():
    # 1,000 options on three underlyings in random order (the benchmark's market, cut): runs of one
    # underlying inside a block, vol-up / vol-down pairs sharing ln(F/K), every scenario unmoving two thirds.
    from fastrisk.bench_stress import check_option_prices, option_market, price_all

    market = option_market(1_000, seed=3)
    scen = fr.scenarios.prepare(fr.scenarios.span(market), market)
    _assert_scenario_values_exact(market, scen)
    check_option_prices(market, scen, price_all(market, scen))


def test_batched_scenario_prices_with_a_vol_below_the_floor():
    # implied_vol 5e-5 < the 1e-4 floor: today's model value (floored vol) differs from the base a mark
    # moves from (implied vol), so an unmoved scenario is not simply the base.
    opts = [B.option(10 + n, f"BTC-{n}", "BTC", "USDT", 1.0, strike=k, expiry=B.AS_OF + B.ONE_YEAR * t,
                     option_type=typ, implied_vol=iv, mark=mark)
            for n, (k, t, typ, iv, mark) in enumerate([(50000.0, 1e-6, "call", 5e-5, None),
                                                       (50000.0, 1e-6, "put", 5e-5, 3.0),
                                                       (60000.0, 0.5, "put", 0.6, 10500.0),
                                                       (40000.0, 0.0, "call", 0.6, None)])]
    market = B.make_market(instruments=B.standard_instruments(opts))
    scen = fr.scenarios.prepare(scenarios([(0, "BTC", 0.0), (1, "BTC", 0.0, 0.2), (2, "BTC", 1e-17),
                                           (3, "BTC", -0.1, -0.7), (3, "ETH", 0.05), (4, "ETH", 0.1)]), market)
    _assert_scenario_values_exact(market, scen)
