"""Stress at realistic size (SPEC §5): the generated venue with options under 48 SPAN scenarios (16 for each
of the three underlyings with the most open interest), against one account_risk sweep of the same venue
(target: under 10x) and the vectorised NumPy peer (target: 10x slower or more); option pricing of 100k
instruments x 48 scenarios. Each benchmark checks its result before timing. Run with
``pytest benchmarks/test_bench_stress.py --benchmark-columns=min,median,rounds`` (FASTRISK_BENCH_ACCOUNTS
sets the size).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastrisk as fr
from fastrisk import bench_stress, reference
from fastrisk.peers_stress import numpy_stress
from fastrisk.risk import value_instruments
from fastrisk.scenarios import prepare, span
from fastrisk.testing import assert_tables_close

from conftest import N_ACCOUNTS

COMPARED = ["equity", "maintenance_margin", "status", "worst_loss"]  # vol pairs may tie: not worst_scenario


@pytest.fixture(scope="session")
def options_venue():
    t = fr.generate.exchange_tables(N_ACCOUNTS, seed=bench_stress.OPTIONS_SEED, options=True)
    market = fr.Market(as_of=t["as_of"], **{k: t[k] for k in ("assets", "underlyings", "instruments", "tiers")})
    book = fr.Book(positions=t["positions"], balances=t["balances"])
    scenarios = bench_stress.span_top(market, book)
    fr.stress(market, book, scenarios)  # compile (or load cached kernels) outside the timings
    fr.account_risk(market, book)
    return market, book, scenarios


def test_one_account_risk_sweep(benchmark, options_venue):
    market, book, _ = options_venue
    benchmark(fr.account_risk, market, book)


def test_stress_48_span_scenarios(benchmark, options_venue):
    market, book, scenarios = options_venue
    sub = bench_stress.first_accounts(book, 300)
    assert_tables_close(fr.stress(market, sub, scenarios).accounts, reference.stress(market, sub, scenarios).accounts,
                        rtol=1e-9, columns=COMPARED)
    benchmark(fr.stress, market, book, scenarios)


def test_numpy_stress_peer(benchmark, options_venue):
    market, book, scenarios = options_venue
    expected = fr.stress(market, book, scenarios)
    got = numpy_stress(market, book, scenarios)
    assert_tables_close(got.accounts, expected.accounts, rtol=1e-9, columns=COMPARED)
    assert_tables_close(got.scenarios, expected.scenarios, rtol=1e-9, key="scenario_id")
    benchmark.pedantic(numpy_stress, args=(market, book, scenarios), rounds=1, iterations=1)


def test_option_pricing_100k_instruments_48_scenarios(benchmark):
    market = bench_stress.option_market(100_000)
    scen = prepare(span(market), market)
    assert scen.n == 48
    prices = bench_stress.price_all(market, scen)  # [s, i], all scenarios in one parallel pass
    bench_stress.check_option_prices(market, scen, prices)
    for s in (0, 2, scen.n - 1):  # the one-scenario valuation of account_risk, bit for bit
        assert np.array_equal(prices[s], value_instruments(market, scen.mult[s], scen.vol_shift[s]).price)
    benchmark(bench_stress.price_all, market, scen)
