"""Contagion (SPEC §6): cross margin against its isolated counterfactual.

Standard venue (tests/builders.py): USDT at 1; 1 = BTCUSDT-PERP (c = 0.01, mark 50000, imf 10 % / mmf 5 %),
2 = BTCUSD-INV (c = 100 USD, BTC-settled, imf 5 % / mmf 2.5 %), 3 = ETHUSDT-PERP (c = 1, mark 2000, tiers
"ETH": imf 2 % / 5 % / 10 % and mmf 1 % / 2.5 % / 5 % above 10000 / 50000 of notional).
"""

from __future__ import annotations

import pytest

import builders as B
import fastrisk as fr
from fastrisk import reference


def by_account(result):
    return {r["account_id"]: r for r in result.accounts.to_pylist()}


def test_one_catastrophic_position_takes_the_whole_account_under_cross():
    # Account 1: 10000 USDT; ETH long 20 (40000 notional, bracket 2: IM 2000), BTCUSDT long 10 (0.1 BTC,
    # 5000 notional, IM 500) and BTCUSD-INV long 50 (5000 USD = 0.1 BTC, IM 0.1*0.05*50000 = 250), all
    # entered at today's marks. ETH falls 30 %: ETH loses 20 * 600 = 12000 > 10000: under cross the account
    # is bankrupt and loses all three. Isolated, the 10000 are shared by IM (2000 : 500 : 250): ETH has
    # 7272.7 - 12000 < 0 and is lost; BTCUSDT keeps 1818.2 against MM 250, the inverse 909.1 against MM
    # 0.1*0.025*50000 = 125: both survive. Contagion: the two BTC positions, 10000 USD of notional.
    market = B.make_market()
    book = B.make_book([(1, 3, 20.0, 2000.0), (1, 1, 10.0, 50000.0), (1, 2, 50.0, 50000.0)],
                       [(1, "USDT", 10000.0)])
    result = fr.contagion(market, book, {"ETH": -0.3})
    row = by_account(result)[1]
    assert row["liquidated_cross"] and row["n_positions"] == 3
    assert row["positions_lost_cross"] == 3 and row["positions_lost_isolated"] == 1
    assert row["contagion_positions"] == 2 and row["efficiency_positions"] == 0
    assert row["contagion_notional"] == pytest.approx(10000.0, rel=1e-12)
    assert row["notional_lost_isolated"] == pytest.approx(20 * 1400.0, rel=1e-12)  # ETH at 1400
    summary = result.summary.to_pylist()[0]
    assert summary["contagion_accounts"] == 1 and summary["accounts_liquidated_cross"] == 1


def test_a_hedge_is_saved_by_cross():
    # Account 2: 5000 USDT; BTCUSDT long 100 (1 BTC, IM 5000) hedged by BTCUSD-INV short 500 (50000 USD,
    # IM 1 BTC * 5 % * 50000 = 2500). BTC falls 30 % to 35000: the long loses 15000; the short inverse gains
    # 500*100*(1/35000 - 1/50000) = 0.42857 BTC = 15000 at 35000. Cross: equity stays 5000 against MM
    # 35000*5 % + (50000/35000 BTC)*2.5 %*35000 = 1750 + 1250 = 3000: safe. Isolated, shares 2/3 : 1/3: the
    # long has 3333.3 - 15000 < 0 and is lost; the short has 1666.7 + 15000 and is saved. Efficiency: the
    # long, 35000 of notional, survives only because of cross.
    market = B.make_market()
    book = B.make_book([(2, 1, 100.0, 50000.0), (2, 2, -500.0, 50000.0)], [(2, "USDT", 5000.0)])
    row = by_account(fr.contagion(market, book, {"BTC": -0.3}))[2]
    assert not row["liquidated_cross"]
    assert row["positions_lost_isolated"] == 1 and row["efficiency_positions"] == 1
    assert row["contagion_positions"] == 0
    assert row["efficiency_notional"] == pytest.approx(35000.0, rel=1e-12)  # 1 BTC at 35000


def test_generated_venue_equals_reference():
    market, book = fr.generate.exchange(600, seed=5)
    shock = {"BTC": -0.2, "ETH": -0.1}
    result = fr.contagion(market, book, shock)
    got = by_account(result)
    expected = reference.contagion(market, book, shock)
    assert len(expected) > 100
    for e in expected:
        g = got[e["account_id"]]
        for key, value in e.items():
            assert g[key] == pytest.approx(value, rel=1e-9, abs=1e-6), key
    summary = result.summary.to_pylist()[0]
    assert summary["contagion_positions"] == sum(e["contagion_positions"] for e in expected)
    assert summary["accounts"] == len(expected)
    assert result.accounts.num_rows == book.n_accounts  # every account, sorted
