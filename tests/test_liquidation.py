"""Liquidation prices (SPEC §4): Binance's published formula, its inverse (coin-margined) form, the defining
property at the reported price, and kernel == reference on random books.

The standard venue (tests/builders.py): USDT at 1; BTC at 50000 (collateral weight 0.9, follows BTC);
1 = BTCUSDT-PERP linear c = 0.01, flat mmf 5 %; 2 = BTCUSD-INV inverse c = 100 USD, BTC-settled, flat mmf
2.5 %; 3 = ETHUSDT-PERP linear c = 1, mark 2000, tiers "ETH": cap 10000 mmf 1 % (amount 0), cap 50000 mmf
2.5 % (amount 150), above mmf 5 % (amount 1400).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

import builders as B
import fastrisk as fr
from fastrisk import reference
from fastrisk.testing import assert_tables_close
from test_properties import books, normal_quantities, venues

REL = 1e-9
# SPEC §4's accuracy is 1e-9 relative in price. A distance (1 - price/index) carries that error absolutely, so
# tables are also compared with atol = REL: a distance of 5e-4 need not agree to 1e-9 of itself (5e-13).


def rows_of(table):
    return table.to_pylist()


def cross_row(table, account_id, underlying):
    rows = [r for r in rows_of(table) if r["account_id"] == account_id and r["underlying"] == underlying
            and not r["isolated"]]
    assert len(rows) == 1, rows
    return rows[0]


def binance_price(wb, q, c, entry, brackets, others=0.0):
    """Binance's cross-margin liquidation price, one-way mode, one position on the moved symbol:
    P* = (WB + amount_t - q*c*E) / (|q|*c*mmf_t - q*c), with t the bracket of the notional |q|*c*P* (try each
    bracket, keep the consistent one). ``others`` = the rest of the account (upnl - MM of positions on other
    symbols), which Binance's full formula adds to WB."""
    found = []
    lo = 0.0
    for cap, mmf, amount in brackets:
        price = (wb + others + amount - q * c * entry) / (abs(q) * c * mmf - q * c)
        if price > 0 and lo < abs(q) * c * price <= cap:
            found.append(price)
        lo = cap
    assert len(found) == 1, found
    return found[0]


ETH_BRACKETS = [(10000.0, 0.01, 0.0), (50000.0, 0.025, 150.0), (math.inf, 0.05, 1400.0)]


@pytest.mark.parametrize("q, wb, expect_t", [
    (4.0, 1000.0, 1),    # long: 4 ETH (8000 notional, bracket 1) falls to (1000 - 8000)/(0.04 - 4) = 1767.68
    (-4.0, 1000.0, 1),   # short: rises to (1000 + 8000)/(0.04 + 4) = 2227.72
    (-4.9, 2000.0, 2),   # short 9800 notional in bracket 1 today; at P* the notional 11658 is in bracket 2:
                         # (2000 + 150 + 9800)/(4.9*0.025 + 4.9) = 2379.29 (bracket 1 would give 2384.3, 11683 > cap)
    (30.0, 20000.0, 2),  # long 60000 notional in bracket 3 today; falls into bracket 2 at P*
])
def test_binance_single_position(q, wb, expect_t):
    market = B.make_market()
    book = B.make_book([(1, 3, q, 2000.0)], [(1, "USDT", wb)])
    row = cross_row(fr.liquidation_prices(market, book), 1, "ETH")
    expected = binance_price(wb, q, 1.0, 2000.0, ETH_BRACKETS)
    got = row["liq_price_down"] if q > 0 else row["liq_price_up"]
    assert got == pytest.approx(expected, rel=REL)
    assert (row["liq_price_up"] if q > 0 else row["liq_price_down"]) is None
    cap_lo = [0.0, 10000.0, 50000.0][expect_t - 1]
    cap_hi = [10000.0, 50000.0, math.inf][expect_t - 1]
    assert cap_lo < abs(q) * got <= cap_hi
    assert row["distance_down" if q > 0 else "distance_up"] == pytest.approx(abs(got / 2000.0 - 1.0), rel=REL)


def test_binance_two_positions():
    # ETH long 10 (20000 notional, bracket 2, entry 2100) and a BTC short 1 BTCUSDT contract set (q = -50,
    # c = 0.01: 0.5 BTC, entry 48000, flat mmf 5 %) in a 10000 USDT wallet. Moving ETH alone, BTC's
    # upnl - MM = -50*0.01*(50000 - 48000) - 0.5*50000*0.05 = -1000 - 1250 = -2250 joins the wallet.
    market = B.make_market()
    # ETH falls to (10000 - 2250 + 150 - 21000)/(10*0.025 - 10) = 1343.6 (notional 13436, bracket 2).
    book = B.make_book([(7, 3, 10.0, 2100.0), (7, 1, -50.0, 48000.0)], [(7, "USDT", 10000.0)])
    table = fr.liquidation_prices(market, book)
    eth = cross_row(table, 7, "ETH")
    expected = binance_price(10000.0, 10.0, 1.0, 2100.0, ETH_BRACKETS, others=-2250.0)
    assert eth["liq_price_down"] == pytest.approx(expected, rel=REL)
    # Moving BTC alone, ETH's upnl - MM = 10*(2000 - 2100) - (20000*0.025 - 150) = -1350 joins the wallet:
    # BTC rises to (10000 - 1350 + 0.5*48000)/(0.5*0.05 + 0.5) = 62190.5.
    btc = cross_row(table, 7, "BTC")
    expected = binance_price(10000.0, -50.0, 0.01, 48000.0, [(math.inf, 0.05, 0.0)], others=-1350.0)
    assert btc["liq_price_up"] == pytest.approx(expected, rel=REL)
    assert_tables_close(table, reference.liquidation_prices(market, book), rtol=REL, atol=REL)


def test_inverse_coin_margined():
    # b BTC of collateral (weight w = 0.9) and a long inverse BTCUSD position of q contracts (c = 100 USD,
    # entry E, BTC-settled, flat mmf 2.5 %). Move BTC by m (index = mark = S = 50000 today, P = S*m); the
    # settle asset is BTC, priced S*m in USD:
    #   collateral  = w*b*S*m
    #   upnl (USD)  = q*c*(1/E - 1/P) * S*m = q*c*S*m/E - q*c*S/S = q*c*m*S/E - q*c
    #   MM (USD)    = (|q|*c/P)*mmf * S*m  = |q|*c*mmf
    # Liquidation where equity = MM: m*S*(w*b + q*c/E) = q*c + |q|*c*mmf, so the index price
    #   P* = S*m* = (q*c + |q|*c*mmf) / (w*b + q*c/E)
    # (the coin-margined form of Binance's formula: wallet and position both in coin, so equity and MM
    # are linear in the price). A long inverse on coin collateral is doubly long: it falls.
    w, b, q, c, E, mmf = 0.9, 0.5, 400.0, 100.0, 50000.0, 0.025
    market = B.make_market()
    book = B.make_book([(3, 2, q, E)], [(3, "BTC", b)])
    row = cross_row(fr.liquidation_prices(market, book), 3, "BTC")
    expected = (q * c + abs(q) * c * mmf) / (w * b + q * c / E)
    assert row["liq_price_down"] == pytest.approx(expected, rel=REL)   # 41000 / 1.25 = 32800
    assert row["liq_price_up"] is None
    # A cash-and-carry short (1 BTC against a 40000 USD short) never liquidates: w*b + q*c/E = 0.9 - 0.8 > 0
    # and q*c + |q|*c*mmf < 0, so m* < 0.
    book = B.make_book([(4, 2, -400.0, E)], [(4, "BTC", 1.0)])
    row = cross_row(fr.liquidation_prices(market, book), 4, "BTC")
    assert row["liq_price_down"] is None and row["liq_price_up"] is None


def test_isolated_position_uses_its_own_margin():
    # Isolated long 4 ETH at 2000 with 1000 USDT of isolated margin: the single-position formula with
    # WB = 1000 (the cross wallet, 1e6, plays no part).
    market = B.make_market()
    book = B.make_book([(5, 3, 4.0, 2000.0, 1000.0)], [(5, "USDT", 1e6)])
    table = fr.liquidation_prices(market, book)
    (row,) = [r for r in rows_of(table) if r["isolated"]]
    assert row["instrument_id"] == 3
    assert row["liq_price_down"] == pytest.approx(binance_price(1000.0, 4.0, 1.0, 2000.0, ETH_BRACKETS), rel=REL)
    assert not any(r["account_id"] == 5 and not r["isolated"] for r in rows_of(table))  # no cross position


def test_liquidatable_now_and_no_margin():
    market = B.make_market()
    xyz_call = B.option(9, "XYZ-C", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR,
                        option_type="call", implied_vol=0.5)
    market = B.make_market(instruments=B.standard_instruments([xyz_call]))
    book = B.make_book([(1, 3, 10.0, 2500.0), (2, 9, 5.0, 10.0)], [(1, "USDT", 100.0), (2, "USD", 10.0)])
    table = fr.liquidation_prices(market, book)
    now = cross_row(table, 1, "ETH")  # loses 5000 with 100 of wallet: liquidatable today
    assert (now["liq_price_down"], now["liq_price_up"], now["distance_down"], now["distance_up"]) == \
        (2000.0, 2000.0, 0.0, 0.0)
    long_option = cross_row(table, 2, "XYZ")  # no maintenance margin: never liquidated
    assert long_option["liq_price_down"] is None and long_option["liq_price_up"] is None


@pytest.fixture(scope="module")
def generated():
    market, book = fr.generate.exchange(400, seed=21)
    return market, book, fr.liquidation_prices(market, book)


def test_at_the_price_equity_equals_maintenance(generated):
    # Re-value the whole venue at the reported price (every mark, option and coin on the underlying moved)
    # with account_risk: equity = MM to 1e-9, and a hair nearer today the account is not liquidatable.
    market, book, table = generated
    rows = [r for r in rows_of(table) if not r["isolated"] and r["distance_down"] not in (None, 0.0)]
    rows += [r for r in rows_of(table) if not r["isolated"] and r["distance_up"] not in (None, 0.0)]
    assert len(rows) > 50
    rng = np.random.default_rng(0)
    for k in rng.choice(len(rows), 40, replace=False):
        r = rows[k]
        down = r["distance_down"] not in (None, 0.0)
        factor = r["liq_price_down" if down else "liq_price_up"] / r["index_price"]
        for f, liquidatable in ((factor, True), (factor * (1 + 1e-9) if down else factor * (1 - 1e-9), False)):
            moved = reference.moved_market(market, {r["underlying"]: f})
            acc = [x for x in fr.account_risk(moved, book).to_pylist() if x["account_id"] == r["account_id"]][0]
            eq, mm = acc["equity"], acc["maintenance_margin"]
            assert (mm > 0 and eq <= mm) == liquidatable or abs(eq - mm) <= 1e-9 * mm, (r, f, eq, mm)
            if liquidatable:
                assert eq == pytest.approx(mm, rel=1e-9)


def test_generated_venue_equals_reference():
    market, book = fr.generate.exchange(30, seed=4)
    assert_tables_close(fr.liquidation_prices(market, book), reference.liquidation_prices(market, book), rtol=REL,
                        atol=REL)


def test_option_buckets_beside_futures_across_caps_equal_reference():
    # Short and long options beside futures of 1 to 10k contracts on the same underlying, with and without coin
    # collateral: the option walks' certified strides pass the futures' caps (kernels.liquidation.search); the
    # reference walks a finer grid from scratch.
    market, _ = fr.generate.exchange(50, seed=1, options=True)
    d = market.instruments.to_pydict()
    on_btc = [(i, k, p) for i, k, u, p in zip(d["instrument_id"], d["kind"], d["underlying"], d["mark_price"])
              if u == "BTC"]
    options = [x for x in on_btc if x[1] == "option"]
    futures = [x for x in on_btc if x[1] != "option"]
    assert options and {k for _, k, _ in futures} == {"linear", "inverse"}
    rng = np.random.default_rng(7)
    pos, bal = [], []
    for a in range(30):
        held = [options[j] for j in rng.choice(len(options), rng.integers(1, 5), replace=False)]
        held += [futures[j] for j in rng.choice(len(futures), rng.integers(1, 3), replace=False)]
        for i, kind, mark in sorted(set(held)):
            if kind == "option":
                pos.append((a, i, float(rng.normal() * 10), float(rng.uniform(0, 2000)), None))
            else:
                pos.append((a, i, float(rng.normal() * 10 ** rng.uniform(0, 4)), mark * rng.uniform(0.8, 1.2), None))
        bal.append((a, "USDT", float(10 ** rng.uniform(4, 8))))
        if rng.random() < 0.5:
            bal.append((a, "BTC", float(rng.uniform(-5, 20))))
    book = fr.Book(positions=B.positions(pos), balances=B.balances(bal))
    table = fr.liquidation_prices(market, book)
    assert 0 < table.column("liq_price_down").null_count < table.num_rows  # crossings found and not found
    assert_tables_close(table, reference.liquidation_prices(market, book), rtol=REL, atol=REL)


def test_long_options_dip_inside_a_certified_stride():
    # A future hedged by long options that only pay far out: g is positive at 1 and again a decade out, and
    # negative in between. The walk's first stride spans that decade; the long options' convexity must not
    # let the stride be certified (kernels.liquidation.stride_low bounds them by their tangents, not a chord).
    # Account 0: short 10 BTC-USDT futures, long 20 calls struck 120k (index 90.8k, June expiry), 20k USDT
    # borrowed: liquidatable from ~1.1x to ~1.4x the index. Account 1: long 10 futures, long 20 puts struck
    # 60k: liquidatable from ~0.95x down to ~0.35x. Account 2: account 0's book, 30k USDT, short 9.76 calls
    # struck 200k: liquidatable from ~1.045x to ~1.9x and again from ~9.3x, so the first stride, to 10x, ends
    # liquidatable, and its refinement finds the root at ~9.3x (regula falsi's first point, ~4.6x, is past
    # the dip): kernels.liquidation.search must see that the nearest crossing can be earlier and walk again.
    market, _ = fr.generate.exchange(50, seed=1, options=True)
    d = market.instruments.to_pydict()
    index_price = market.underlyings.to_pydict()["index_price"][0]
    june = max(e for e, u, k in zip(d["expiry"], d["underlying"], d["kind"]) if u == "BTC" and k == "option")

    def option(strike, option_type):
        return next(i for i, u, k, t, e in zip(d["instrument_id"], d["underlying"], d["strike"], d["option_type"],
                                               d["expiry"]) if u == "BTC" and k == strike and t == option_type and e == june)

    call_120k = option(120000.0, "call")
    book = fr.Book(positions=B.positions([(0, 1, -10.0, index_price, None), (0, call_120k, 20.0, 0.0, None),
                                          (1, 1, 10.0, index_price, None), (1, option(60000.0, "put"), 20.0, 0.0, None),
                                          (2, 1, -10.0, index_price, None), (2, call_120k, 20.0, 0.0, None),
                                          (2, option(200000.0, "call"), -9.76, 0.0, None)]),
                   balances=B.balances([(0, "USDT", -20000.0), (1, "USDT", 0.0), (2, "USDT", 30000.0)]))
    table = fr.liquidation_prices(market, book)
    assert_tables_close(table, reference.liquidation_prices(market, book), rtol=REL, atol=REL)
    up = [cross_row(table, a, "BTC")["liq_price_up"] / index_price for a in (0, 2)]
    down = cross_row(table, 1, "BTC")["liq_price_down"] / index_price
    assert 1.02 < up[0] < 1.3 and 1.0 < up[1] < 1.1 and 0.6 < down < 0.98, (up, down)


def test_stride_low_hand_computed():
    # kernels.liquidation.stride_low(x0, k0, c0, d0, x1, k1, c1, d1): concave part k, convex part c and its slope
    # d at the two ends. Convex part c(x) = (x - 1)^2 on [0, 2] (c = 1, 1; d = -2, 2), concave part constant 5:
    # the tangents y = -2x + 1 and y = 2x - 3 meet at x = 1, y = -1 (the true minimum of c is 0 there): 5 - 1 = 4.
    import numba

    from fastrisk.kernels.liquidation import stride_low

    low = numba.njit(lambda x0, k0, c0, d0, x1, k1, c1, d1: stride_low(x0, k0, c0, d0, x1, k1, c1, d1))
    assert low(0.0, 5.0, 1.0, -2.0, 2.0, 5.0, 1.0, 2.0) == 4.0
    assert low(2.0, 5.0, 1.0, 2.0, 0.0, 5.0, 1.0, -2.0) == 4.0  # a walk down: the same stride from its other end
    # Concave part 6 at 0 and 2 at 2: the chord is 4 at x = 1.
    assert low(0.0, 6.0, 1.0, -2.0, 2.0, 2.0, 1.0, 2.0) == 3.0
    assert low(0.0, 5.0, 0.0, 1.0, 2.0, 5.0, 2.0, 1.0) == math.inf  # a linear convex part: the least at an end
    assert low(0.0, 5.0, 0.0, 0.0, 1.0, 5.0, 9.0, 9.0) == math.inf  # the tangents meet at an end: the least there
    assert math.isnan(low(0.0, 5.0, 1.0, math.nan, 2.0, 5.0, 1.0, 2.0))  # NaN certifies nothing


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(venues(), books(normal_quantities))
def test_kernel_equals_reference(market, tables):
    # Subnormal quantities (2.2e-313 contracts) hold ~14 significant bits: two correct evaluation orders then
    # place a root 3e-9 apart (docs/liquidation.md, accuracy).
    book = fr.Book(positions=tables[0], balances=tables[1])
    assert_tables_close(fr.liquidation_prices(market, book), reference.liquidation_prices(market, book),
                        rtol=REL, atol=REL)


def test_sorted_and_typed(generated):
    _, book, table = generated
    ids = table.column("account_id").to_numpy()
    assert np.all(ids[1:] >= ids[:-1])
    assert table.schema.equals(fr.liquidation.LIQUIDATION_SCHEMA) if hasattr(fr, "liquidation") else True
    for c in ("distance_down", "distance_up"):
        d = table.column(c).drop_null().to_numpy()
        assert np.all(d >= 0)
    assert pa.compute.all(pa.compute.is_valid(table.column("index_price"))).as_py()


def test_thread_count_changes_nothing():
    # Accounts run in parallel chunks, and option buckets share the options' prices at the walks' grid points,
    # which whichever thread gets there first computes: every row is bit-identical whatever the thread count.
    import numba

    market, book = fr.generate.exchange(3000, seed=11, options=True)
    default = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fr.liquidation_prices(market, book)
    finally:
        numba.set_num_threads(default)
    assert one.equals(fr.liquidation_prices(market, book))
    assert one.num_rows - one.column("liq_price_down").null_count > 1000


def test_row_offsets_prefix_sums_and_most_positions():
    # Rows of account a start at row_start[a]; the scratch for isolated positions holds an account's positions:
    # the most of those (at least 1) is returned.
    from fastrisk.kernels.liquidation import row_offsets

    n_rows = np.array([2, 0, 5, 1], np.int64)
    pos_start = np.array([0, 3, 3, 9, 10], np.int64)
    row_start = np.full(5, -7, np.int64)
    assert row_offsets(n_rows, pos_start, row_start) == 6  # account 2: 6 positions
    assert row_start.tolist() == [0, 2, 2, 7, 8]
    assert row_offsets(np.zeros(0, np.int64), np.zeros(1, np.int64), row_start[:1]) == 1
