"""Liquidation prices and cascades at realistic size (SPEC §4, §6). Issue 4's targets are stated for a venue
with options: liquidation_prices and a 20-round cascade each at most 5 account_risk sweeps of that venue; and
at least 10x faster than the vectorised NumPy peer, which computes futures and collateral only (so the peer
benchmarks run on the futures-only venue). Each benchmark checks its result before timing. Run with
``pytest benchmarks/test_bench_liquidation.py --benchmark-columns=min,median,rounds`` (FASTRISK_BENCH_ACCOUNTS
sets the size)."""

from __future__ import annotations

import numpy as np
import pytest

import fastrisk as fr
from fastrisk import bench, bench_stress, reference
from fastrisk.peers_liquidation import numpy_cascade, numpy_liquidation_prices
from fastrisk.testing import assert_tables_close

from conftest import N_ACCOUNTS

SHOCK = {"BTC": -0.2}
ROUNDS = 20


@pytest.fixture(scope="module")
def options_venue():
    t = fr.generate.exchange_tables(N_ACCOUNTS, seed=bench_stress.OPTIONS_SEED, options=True)
    market = fr.Market(as_of=t["as_of"], **{k: t[k] for k in ("assets", "underlyings", "instruments", "tiers")})
    return market, fr.Book(positions=t["positions"], balances=t["balances"])


def test_account_risk_sweep_with_options(benchmark, options_venue):
    benchmark(bench.kernel_only(*options_venue))


def test_liquidation_prices_with_options(benchmark, options_venue):
    market, book = options_venue
    sub = bench_stress.first_accounts(book, 20)
    assert_tables_close(reference.liquidation_prices(market, sub), fr.liquidation_prices(market, sub), rtol=1e-9)
    fr.liquidation_prices(market, book)  # compile outside the timing
    benchmark(fr.liquidation_prices, market, book)


def test_cascade_20_rounds_with_options(benchmark, options_venue):
    result = fr.cascade(*options_venue, SHOCK, max_rounds=ROUNDS)
    assert result.rounds.num_rows >= 2
    benchmark(fr.cascade, *options_venue, SHOCK, max_rounds=ROUNDS)


def test_liquidation_prices(benchmark, venue):
    fr.liquidation_prices(*venue)
    benchmark(fr.liquidation_prices, *venue)


def test_cascade_20_rounds(benchmark, venue):
    assert fr.cascade(*venue, SHOCK, max_rounds=ROUNDS).rounds.num_rows >= 2
    benchmark(fr.cascade, *venue, SHOCK, max_rounds=ROUNDS)


def test_numpy_liquidation_prices(benchmark, venue):
    assert_tables_close(numpy_liquidation_prices(*venue), fr.liquidation_prices(*venue), rtol=1e-9)
    benchmark.pedantic(numpy_liquidation_prices, args=venue, rounds=1, iterations=1)


def test_numpy_cascade(benchmark, venue):
    _, round_of = numpy_cascade(*venue, SHOCK, max_rounds=ROUNDS)
    expected = fr.cascade(*venue, SHOCK, max_rounds=ROUNDS).accounts.column("round_liquidated").fill_null(-1)
    assert np.array_equal(round_of, expected.to_numpy())
    benchmark.pedantic(numpy_cascade, args=(*venue, SHOCK), kwargs={"max_rounds": ROUNDS}, rounds=1, iterations=1)


def test_reference_liquidation_prices_on_20_accounts(benchmark, venue):
    market, book = venue
    sub = bench_stress.first_accounts(book, 20)
    assert_tables_close(reference.liquidation_prices(market, sub), fr.liquidation_prices(market, sub), rtol=1e-9)
    benchmark.pedantic(reference.liquidation_prices, args=(market, sub), rounds=1, iterations=1)
