"""Exposures (SPEC §5): hand-computed deltas (coin-margined inverse included), finite differences of the
equity, venue totals and concentration, kernel == reference."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given

import fastrisk as fr
from fastrisk import reference
from fastrisk.exposure import account_concentration, venue_exposures
from fastrisk.testing import assert_tables_close

import builders as B
from test_properties import SETTINGS, books, venues


def rows(table):
    return {(r["account_id"], r["underlying"]): r for r in table.to_pylist()}


def test_exposures_hand_computed():
    # Standard venue: BTC index and BTC asset at 50000 (cw 0.9), ETH 2000 (cw 0.8); #1 BTCUSDT linear c = 0.01,
    # #2 BTCUSD inverse c = 100 USD settled in BTC, #3 ETHUSDT linear c = 1.
    market = B.make_market()
    book = B.make_book(
        [(1, 1, 200.0, 48000.0),      # 2 BTC long, USDT: delta_usd = 2*50000 = 100000, delta 2
         (2, 2, 1000.0, 40000.0),     # 100000 USD face long, coin-margined, entry 40000: USD PnL q*c*(P/E - 1)
         (3, 2, -1000.0, 50000.0),    # cash and carry: short 100000 USD face at 50000 against 2 BTC
         (3, 3, -5.0, 2000.0)],       # and short 5 ETH
        [(2, "BTC", 1.0), (3, "BTC", 2.0), (4, "ETH", -1.0), (4, "USDT", 5000.0)])
    got = rows(fr.exposures(market, book))
    assert list(got) == [(1, "BTC"), (2, "BTC"), (3, "BTC"), (3, "ETH"), (4, "ETH")]
    # 2: inverse: d/dm of q*c*(m/E - 1/P)*A = q*c*A/E = 100000*50000/40000 = 125000 (2.5 BTC = q*c/E coins, not
    #    the 2 coins of its face at today's price); + 1 BTC of collateral at cw 0.9: 45000 -> 170000, 3.4 BTC.
    #    Gamma: -2*q*c/P*A + 2*(q*c/P)*A = 0: the USD PnL is linear in the price.
    # 3: short 100000 face at 50000: -100000; 2 BTC at 0.9: +90000 -> -10000 (equity is short the haircut).
    #    ETH: -5*2000 = -10000 USD, -5 ETH. Concentration 10000/20000 = 0.5.
    # 4: borrowed 1 ETH at borrow weight 1.2: -2400 USD, -1.2 ETH.
    for key, (delta, delta_usd, conc) in {(1, "BTC"): (2.0, 100000.0, 1.0), (2, "BTC"): (3.4, 170000.0, 1.0),
                                          (3, "BTC"): (-0.2, -10000.0, 0.5), (3, "ETH"): (-5.0, -10000.0, 0.5),
                                          (4, "ETH"): (-1.2, -2400.0, 1.0)}.items():
        r = got[key]
        assert r["delta"] == pytest.approx(delta, rel=1e-12) and r["delta_usd"] == pytest.approx(delta_usd, rel=1e-12)
        assert r["concentration"] == pytest.approx(conc, rel=1e-12)
        assert abs(r["gamma_usd"]) <= 1e-9 * abs(delta_usd) and r["vega"] == 0.0


def test_coin_margined_inverse_delta_far_from_entry():
    # Long 1000 contracts of #2 (BTCUSD inverse, c = 100 USD, settled in BTC at A = 50000) entered at 5e10: its USD
    # value q*c*A*(m/E - 1/P) has delta q*c*A/E = 1e5*5e4/5e10 = 0.1 and no gamma. The product rule's two terms,
    # q*c*A/P = 1e5 and upnl*A = -99999.9, would cancel six of its digits.
    market = B.make_market()
    book = B.make_book([(1, 2, 1000.0, 5e10)])
    r = fr.exposures(market, book).to_pylist()[0]
    assert r["delta_usd"] == pytest.approx(0.1, rel=1e-14) and r["gamma_usd"] == 0.0
    assert_tables_close(fr.exposures(market, book), reference.exposures(market, book), rtol=1e-14, key="underlying")


def test_option_exposures_are_the_black76_greeks():
    # A long XYZ call K = 100, T = 1, sigma 0.5, 3 contracts of size 2, settled in USD (price 1), F = 100:
    # delta = 6*N(d1), gamma = 6*pdf(d1)/(F sigma), vega = 6*F*pdf(d1) (per 1.00 vol).
    call = B.option(10, "XYZ-C", "XYZ", "USD", 2.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR, option_type="call",
                    implied_vol=0.5)
    market = B.make_market(instruments=B.standard_instruments([call]))
    book = B.make_book([(1, 10, 3.0, 10.0)], [(1, "USD", 1000.0)])
    r = fr.exposures(market, book).to_pylist()[0]
    _, d, g, v, _ = reference.black76(100.0, 100.0, 1.0, 0.5, True)
    assert r["underlying"] == "XYZ"
    assert r["delta"] == pytest.approx(6 * d, rel=1e-12) and r["delta_usd"] == pytest.approx(600 * d, rel=1e-12)
    assert r["gamma"] == pytest.approx(6 * g, rel=1e-12) and r["gamma_usd"] == pytest.approx(6 * g * 1e4, rel=1e-12)
    assert r["vega"] == pytest.approx(6 * v, rel=1e-12)


def test_exposures_are_the_derivatives_of_equity():
    # Central differences of the account's whole equity (cross + isolated) in markets moved by hand.
    market, book = fr.generate.exchange(400, seed=8)
    exp = fr.exposures(market, book)
    ids = book.arrays.account_id

    def equity(moves):
        m = reference.shocked_market(market, moves)
        r = fr.account_risk(fr.Market(assets=m.assets, underlyings=m.underlyings, instruments=m.instruments,
                                      tiers=m.tiers, as_of=m.as_of), book)
        return r.column("equity").to_numpy() + r.column("isolated_equity").to_numpy()

    h = 1e-5
    for u in ("BTC", "ETH", "SOL"):
        up, down, flat = equity({u: (h, 0.0)}), equity({u: (-h, 0.0)}), equity({})
        vol_up, vol_down = equity({u: (0.0, h)}), equity({u: (0.0, -h)})
        sel = exp.filter(pa.compute.equal(exp.column("underlying"), u))
        a = np.searchsorted(ids, sel.column("account_id").to_numpy())
        scale = np.abs(sel.column("delta_usd").to_numpy()) + 1.0
        fd_delta = (up - down)[a] / (2 * h)
        # a tier bracket crossed inside [-h, h] bends the curve: skip those few accounts
        smooth = np.abs((up - flat)[a] + (down - flat)[a]) < 1e-3 * scale * h
        assert smooth.mean() > 0.95
        np.testing.assert_allclose(fd_delta[smooth], sel.column("delta_usd").to_numpy()[smooth], rtol=1e-5,
                                   atol=1e-6 * scale.max())
        fd_vega = (vol_up - vol_down)[a] / (2 * h)
        np.testing.assert_allclose(fd_vega, sel.column("vega").to_numpy(), rtol=1e-4, atol=1e-3)
        gamma = sel.column("gamma_usd").to_numpy()
        fd_gamma = ((up - flat) + (down - flat))[a] / (h * h)
        opt = np.abs(gamma) > 1e-2 * scale
        np.testing.assert_allclose(fd_gamma[opt & smooth], gamma[opt & smooth], rtol=1e-2)


def test_venue_totals_and_concentration():
    market, book = fr.generate.exchange(2_000, seed=4)
    exp = fr.exposures(market, book)
    venue = venue_exposures(exp, market)
    assert venue.column("underlying").to_pylist() == market.underlying_names.to_pylist()
    d = exp.column("delta_usd").to_numpy()
    u = exp.column("underlying").to_pylist()
    for row in venue.to_pylist():
        mine = np.array([x == row["underlying"] for x in u])
        assert row["accounts"] == mine.sum()
        assert row["delta_usd"] == pytest.approx(d[mine].sum(), rel=1e-9, abs=1e-6)
        assert row["long_delta_usd"] + row["short_delta_usd"] == pytest.approx(row["delta_usd"], rel=1e-9, abs=1e-6)
    acc = account_concentration(exp, book)
    assert acc.column("account_id").equals(pa.chunked_array([book.arrays.account_id]))
    conc = acc.column("concentration")
    values = conc.drop_null().to_numpy()
    assert ((values > 0) & (values <= 1.0)).all()
    # The per-account concentration is the one repeated on the account's rows of the long table.
    looked_up = dict(zip(exp.column("account_id").to_pylist(), exp.column("concentration").to_pylist()))
    for a, c in zip(acc.column("account_id").to_pylist(), conc.to_pylist()):
        assert (c is None and looked_up.get(a) is None) or c == pytest.approx(looked_up[a], rel=1e-12)
    # accounts holding only USDT have no exposure rows and no concentration
    assert conc.null_count >= book.n_accounts - len(looked_up)


@SETTINGS
@given(venues(), books())
def test_exposures_kernel_equals_reference(market, tables):
    book = fr.Book(positions=tables[0], balances=tables[1])
    got, want = fr.exposures(market, book), reference.exposures(market, book)
    assert got.column("account_id").equals(want.column("account_id"))
    assert got.column("underlying").to_pylist() == want.column("underlying").to_pylist()
    # One sum per (account, underlying) in the same order: equal but for the option greeks' last bits, and for
    # greeks that underflow (a far out-of-the-money gamma of ~1e-322 may be 0 on one side): atol.
    key = pa.array(range(got.num_rows))
    # Likewise an account whose every exposure underflows (a quantity of 5e-324: delta_usd 5e-324 on one side, 0
    # on the other) has a concentration of 1 on one side and none (no exposure) on the other: not compared.
    tiny = pa.array(np.abs(got.column("delta_usd").to_numpy()) <= 1e-300)
    got, want = (t.set_column(t.column_names.index("concentration"), "concentration",
                              pc.if_else(tiny, pa.nulls(t.num_rows, pa.float64()), t.column("concentration")))
                 for t in (got, want))
    assert_tables_close(got.append_column("row", key), want.append_column("row", key), rtol=1e-9, key="row",
                        columns=["delta", "delta_usd", "gamma", "gamma_usd", "vega", "concentration"], atol=1e-300)
