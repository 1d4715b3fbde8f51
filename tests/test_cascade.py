"""Liquidation cascades (SPEC §6): rounds, money conservation, the insurance fund, determinism, and the
screened kernel against the plain reference that re-checks every account every round."""

from __future__ import annotations

import numba
import numpy as np
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrisk as fr
from fastrisk import reference
from fastrisk.errors import InputError
from fastrisk.liquidation_cascade import SCREEN_WINDOW, format_rounds

REL = 1e-9


@pytest.fixture(scope="module")
def venue():
    return fr.generate.exchange(4000, seed=7)


@pytest.fixture(scope="module")
def result(venue):
    return fr.cascade(*venue, {"BTC": -0.2}, impact="sqrt", insurance_fund=1e6)


def test_zero_impact_is_one_round(venue):
    # Without impact the shock is the only move: everything liquidatable goes in round 1, then nothing.
    r = fr.cascade(*venue, {"BTC": -0.15}, impact="none")
    assert r.rounds.column("round").to_pylist() == [0, 1]
    assert r.stopped == "no liquidations"
    assert r.rounds.column("accounts_liquidated")[1].as_py() > 0
    # k = 0 in the square-root model is the same.
    r0 = fr.cascade(*venue, {"BTC": -0.15}, impact="sqrt", k=0.0)
    assert r0.rounds.column("round").to_pylist() == [0, 1]


def test_impact_makes_several_rounds(result):
    assert result.rounds.num_rows >= 4  # the shock and at least three rounds of forced selling


def test_one_sided_shock_gives_a_monotone_path(venue):
    # Only longs (every quantity made positive): every liquidation sells, so no price ever rises.
    market, book = venue
    q = pc.abs(book.positions.column("quantity"))
    longs = fr.Book(positions=book.positions.set_column(book.positions.schema.get_field_index("quantity"),
                                                        "quantity", q), balances=book.balances)
    r = fr.cascade(market, longs, {"BTC": -0.1}, impact="linear")
    assert r.rounds.num_rows >= 3
    for c in (c for c in r.rounds.column_names if c.startswith("price_")):
        path = r.rounds.column(c).to_numpy()
        assert np.all(np.diff(path) <= 0), c


def test_money_is_conserved(venue, result):
    # Per liquidated cross bucket: its market loss (equity before the shock - equity at close-out) is borne
    # by the account (equity lost - fee paid) and by the venue (bad debt):
    #     equity_before - equity_after = (equity_before - equity_at_liquidation) + fee_paid - bad_debt,
    # with equity_after = max(equity_at_liquidation - fee, 0). Fees go to the insurance fund, bad debt is
    # drawn from it, and what it cannot pay is shortfall:
    #     fund_end = fund_0 + sum(fees) - sum(bad_debt) + sum(shortfall).
    acc = result.accounts.to_pydict()
    rounds = result.rounds.to_pydict()
    positions = venue[1].positions
    with_isolated = set(pc.filter(positions.column("account_id"), pc.is_valid(positions.column("isolated_margin")))
                        .to_pylist())  # their surviving isolated buckets keep moving with prices
    pure = [j for j in range(len(acc["account_id"])) if acc["round_liquidated"][j] is not None
            and acc["account_id"][j] not in with_isolated]
    assert len(pure) > 20
    for j in pure:
        lhs = acc["loss"][j]
        rhs = (acc["equity_before"][j] - acc["equity_at_liquidation"][j]) + acc["fee_paid"][j] - acc["bad_debt"][j]
        assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-9 * abs(acc["equity_before"][j]) + 1e-9)
        assert acc["equity_after"][j] >= 0
    assert sum(rounds["fees"]) == pytest.approx(sum(acc["fee_paid"]), rel=1e-12)
    assert sum(rounds["bad_debt"]) == pytest.approx(sum(acc["bad_debt"]), rel=1e-12)
    end = 1e6 + sum(rounds["fees"]) - sum(rounds["bad_debt"]) + sum(rounds["shortfall"])
    assert rounds["insurance_fund_left"][-1] == pytest.approx(end, rel=1e-12, abs=1e-6)
    n_liquidated = sum(r is not None for r in acc["round_liquidated"])
    assert sum(rounds["accounts_liquidated"]) == n_liquidated


@pytest.mark.parametrize("fund", [0.0, 1e4, 1e12])
def test_insurance_fund_never_negative(venue, fund):
    r = fr.cascade(*venue, {"BTC": -0.25}, insurance_fund=fund)
    left = r.rounds.column("insurance_fund_left").to_numpy()
    shortfall = r.rounds.column("shortfall").to_numpy()
    assert np.all(left >= 0) and np.all(shortfall >= 0)
    assert sum(r.rounds.column("bad_debt").to_pylist()) > 0
    if fund == 1e12:
        assert np.all(shortfall == 0)
    if fund == 0.0:
        assert shortfall.sum() > 0


def test_thread_count_changes_nothing(venue):
    default = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fr.cascade(*venue, {"BTC": -0.2, "ETH": -0.1})
    finally:
        numba.set_num_threads(default)
    many = fr.cascade(*venue, {"BTC": -0.2, "ETH": -0.1})
    assert one.rounds.equals(many.rounds) and one.accounts.equals(many.accounts) and one.path.equals(many.path)


@pytest.mark.parametrize("impact, shock, k", [("sqrt", {"BTC": -0.2}, 1.0),
                                             ("linear", {"BTC": -0.12, "ETH": -0.08}, 1.0),
                                             ("sqrt", {"BTC": -0.2}, 60.0)])
def test_screened_kernel_equals_reference(impact, shock, k):
    # The reference re-values every live bucket every round; the kernel only those the price path reached
    # (kernels/cascade.py). Same rounds, same accounts, same losses. k = 60: impact halves prices (beyond
    # liquidation_cascade.SCREEN_WINDOW, where the screen checks everyone), and accounts lose isolated positions
    # rounds before their cross bucket (fees and bad debt of both add up).
    market, book = fr.generate.exchange(400, seed=12)
    got = fr.cascade(market, book, shock, impact=impact, insurance_fund=5e4, k=k)
    ref_rounds, ref_accounts = reference.cascade(market, book, shock, impact=impact, insurance_fund=5e4, k=k)
    if k > 1.0:
        first = got.rounds.to_pylist()[0]
        moved = [r[c] / first[c] for r in got.rounds.to_pylist() for c in r if c.startswith("price_")]
        assert min(moved) < 0.5
    rounds = got.rounds.to_pylist()
    assert len(rounds) == len(ref_rounds) >= 2
    for g, e in zip(rounds, ref_rounds):
        for c in ("accounts_liquidated", "isolated_liquidated"):
            assert g[c] == e[c]
        for c in ("notional_closed", "fees", "bad_debt", "insurance_fund_left", "shortfall"):
            assert g[c] == pytest.approx(e[c], rel=REL, abs=1e-6)
        for u, price in e["prices"].items():
            assert g[f"price_{u}"] == pytest.approx(price, rel=REL)
    accounts = got.accounts.to_pylist()
    assert [a["account_id"] for a in accounts] == [a["account_id"] for a in ref_accounts]
    for g, e in zip(accounts, ref_accounts):
        assert g["round_liquidated"] == e["round_liquidated"]
        assert g["isolated_liquidated"] == e["isolated_liquidated"]
        for c in ("equity_before", "fee_paid", "bad_debt", "equity_after", "loss"):
            assert g[c] == pytest.approx(e[c], rel=REL, abs=1e-6), (c, g, e)


def test_format_rounds(result):
    text = format_rounds(result)
    assert "BTC" in text and "stopped: " in text
    assert len(text.splitlines()) == result.rounds.num_rows + 3


@pytest.mark.parametrize("shock, kw, match", [
    ({"NOPE": -0.1}, {}, "shock.underlying"),
    ({"BTC": -1.0}, {}, "shock.price_shock"),
    ({"BTC": float("nan")}, {}, "shock.price_shock"),
    ({"BTC": -0.1}, {"impact": "cubic"}, "cascade.impact"),
    ({"BTC": -0.1}, {"insurance_fund": -1.0}, "cascade.insurance_fund"),
    ({"BTC": -0.1}, {"max_rounds": 0}, "cascade.max_rounds"),
])
def test_bad_arguments(venue, shock, kw, match):
    with pytest.raises(InputError, match=match):
        fr.cascade(*venue, shock, **kw)
    if not kw:
        with pytest.raises(InputError, match=match):
            fr.contagion(*venue, shock)


@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.floats(SCREEN_WINDOW[0], SCREEN_WINDOW[1]), min_size=12, max_size=12),
       seed=st.integers(0, 3))
def test_screen_bound_holds_within_its_window(moves, seed):
    # The screen's promise (kernels/cascade.py): from the shocked prices, with every underlying moved by a factor
    # x_u in the window, a separable cross bucket's excess is >= g - F * max_u |x_u - 1|, and an isolated
    # position's >= g - (its fall rate that way) * |x_u - 1|; exact excesses from the account kernel.
    from fastrisk.liquidation import screen_buckets
    from fastrisk.liquidation_cascade import shock_multipliers
    from fastrisk.risk import OPTION_MARGIN, _account_outputs, value_instruments

    market, book = _screen_venues[seed]
    bound = book.bind(market)
    mult0 = shock_multipliers(market, {"BTC": -0.2})
    bk = screen_buckets(market, bound, value_instruments(market, mult0), window=SCREEN_WINDOW)
    x = np.resize(np.array(moves), len(mult0))
    moved = value_instruments(market, mult0 * x)
    floats, *_ = _account_outputs(market, bound, moved, OPTION_MARGIN, 0.8)
    g = floats[3] - floats[5]  # equity - MM
    slack = 1e-9 * (np.abs(floats[3]) + np.abs(floats[5]) + 1.0)
    reach = np.abs(x - 1.0).max()
    check = (bk.n_cross > 0) & (bk.always == 0) & np.isfinite(bk.g_account) & (floats[5] > 0)
    assert check.sum() > 50
    assert np.all(g[check] >= bk.g_account[check] - bk.fall_total[check] * reach - slack[check])
    # Isolated positions: their own bucket, re-valued exactly by check_isolated.
    from fastrisk.kernels.cascade import check_isolated
    from fastrisk.liquidation import kernel_book
    from fastrisk.risk import kernel_market

    inst, tiers = kernel_market(market)
    out = np.empty((3, len(bk.iso_position)))
    check_isolated(bk.iso_position, out, kernel_book(bound), inst, tiers,
                   (moved.price, moved.forward, moved.settle_px, moved.asset_px), OPTION_MARGIN)
    dx = x[bk.iso_underlying] - 1.0
    fall = np.where(dx < 0, -dx * bk.iso_down, np.where(dx > 0, dx * bk.iso_up, 0.0))
    live = np.isfinite(bk.iso_excess) & np.isfinite(fall)
    assert live.sum() > 10
    iso_slack = 1e-9 * (np.abs(out[0]) + 1.0)
    assert np.all((out[0] - out[1])[live] >= (bk.iso_excess - fall - iso_slack)[live])


_screen_venues = [fr.generate.exchange(300, seed=s, options=True) for s in range(4)]


def test_unbounded_fall_rate_liquidated_in_the_first_round():
    # A linear BTC future settled in BTC is worth its PnL times the coin's price: the screen has no bound on how
    # fast its bucket's excess falls (fall rate inf). Account 1 (long 10 x c = 1e-5 from 50000, 0.5 BTC at weight
    # 0.9) is liquidatable right after the shock (BTC -20 %: upnl 10 * 1e-5 * (40000 - 50000) = -1 BTC against
    # 0.45 BTC of collateral): the first round must close it, before any price moves again (no impact: there is
    # exactly one round), as the reference does. Account 2 (USDT-settled, 3x) survives.
    import builders as B

    market = B.make_market(instruments=B.standard_instruments(
        [B.linear(9, "BTCBTC-LIN", "BTC", "BTC", 1e-5, 50000.0, imf=0.10, mmf=0.05)]))
    book = B.make_book([(1, 9, 10.0, 50000.0, None), (2, 1, 1.0, 50000.0, None)],
                       [(1, "BTC", 0.5), (2, "USDT", 200.0)])
    got = fr.cascade(market, book, {"BTC": -0.2}, impact="none")
    _, ref_accounts = reference.cascade(market, book, {"BTC": -0.2}, impact="none")
    rounds = got.accounts.column("round_liquidated").to_pylist()
    assert rounds == [1, None] == [a["round_liquidated"] for a in ref_accounts]
