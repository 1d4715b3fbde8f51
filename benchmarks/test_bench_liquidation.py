"""Liquidation prices and cascades at realistic size (SPEC §4, §6): fastrisk against one account_risk sweep,
the vectorised NumPy peer and the plain reference. Each benchmark checks its result before timing.
Run with ``pytest benchmarks/test_bench_liquidation.py --benchmark-columns=min,median,rounds``."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

import fastrisk as fr
from fastrisk import bench, reference
from fastrisk.peers_liquidation import numpy_cascade, numpy_liquidation_prices
from fastrisk.testing import assert_tables_close

SHOCK = {"BTC": -0.2}


def test_account_risk_sweep(benchmark, venue):
    benchmark(bench.kernel_only(*venue))


def test_liquidation_prices(benchmark, venue):
    fr.liquidation_prices(*venue)  # compile outside the timing
    benchmark(fr.liquidation_prices, *venue)


def test_cascade_20_rounds(benchmark, venue):
    result = fr.cascade(*venue, SHOCK, max_rounds=20)
    assert result.rounds.num_rows >= 2
    benchmark(fr.cascade, *venue, SHOCK, max_rounds=20)


def test_numpy_liquidation_prices(benchmark, venue):
    assert_tables_close(numpy_liquidation_prices(*venue), fr.liquidation_prices(*venue), rtol=1e-9)
    benchmark.pedantic(numpy_liquidation_prices, args=venue, rounds=1, iterations=1)


def test_numpy_cascade(benchmark, venue):
    _, round_of = numpy_cascade(*venue, SHOCK, max_rounds=20)
    expected = fr.cascade(*venue, SHOCK, max_rounds=20).accounts.column("round_liquidated").fill_null(-1)
    assert np.array_equal(round_of, expected.to_numpy())
    benchmark.pedantic(numpy_cascade, args=(*venue, SHOCK), kwargs={"max_rounds": 20}, rounds=1, iterations=1)


def test_reference_liquidation_prices_on_50_accounts(benchmark, venue):
    market, book = venue
    cut = book.arrays.account_id[min(50, book.n_accounts) - 1]
    sub = fr.Book(positions=book.positions.filter(pc.less_equal(book.positions["account_id"], cut)),
                  balances=book.balances.filter(pc.less_equal(book.balances["account_id"], cut)))
    assert_tables_close(reference.liquidation_prices(market, sub), fr.liquidation_prices(market, sub), rtol=1e-9)
    benchmark.pedantic(reference.liquidation_prices, args=(market, sub), rounds=1, iterations=1)
