"""account_risk at realistic size: fastrisk against the memory-read floor, the reference and the peers.

Each benchmark checks its result against fastrisk before timing. Run with
``pytest benchmarks/ --benchmark-columns=min,median,rounds`` (FASTRISK_BENCH_ACCOUNTS sets the size).
"""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

import fastrisk as fr
from fastrisk import bench, peers, reference
from fastrisk.testing import assert_tables_close


def test_memory_read_floor(benchmark, venue):
    benchmark(bench.memory_floor(venue[1]))


def test_plain_tiered_sweep(benchmark, venue):
    bench.check_plain_sweep(*venue)
    benchmark(bench.plain_sweep(*venue)[0])


def test_kernel(benchmark, venue):
    benchmark(bench.kernel_only(*venue))


def test_account_risk_with_validation(benchmark, tables, venue):
    market_tables = {k: tables[k] for k in ("assets", "underlyings", "instruments", "tiers")}

    def full():
        market = fr.Market(as_of=tables["as_of"], **market_tables)
        return fr.account_risk(market, fr.Book(positions=tables["positions"], balances=tables["balances"]))

    assert_tables_close(full(), fr.account_risk(*venue))
    benchmark(full)


def test_position_risk(benchmark, venue):
    benchmark(fr.position_risk, *venue)


@pytest.mark.parametrize("peer", ["numpy", "polars", "duckdb"])
def test_peer(benchmark, venue, peer):
    fn = getattr(peers, f"{peer}_account_risk")
    if peer != "numpy":
        pytest.importorskip(peer)
    assert_tables_close(fn(*venue), fr.account_risk(*venue), rtol=1e-9)
    benchmark.pedantic(fn, args=venue, rounds=2, iterations=1)


def test_reference_on_20k_accounts(benchmark, venue):
    market, book = venue
    cut = book.arrays.account_id[min(20_000, book.n_accounts) - 1]
    sub = fr.Book(positions=book.positions.filter(pc.less_equal(book.positions["account_id"], cut)),
                  balances=book.balances.filter(pc.less_equal(book.balances["account_id"], cut)))
    assert_tables_close(reference.account_risk(market, sub), fr.account_risk(market, sub))
    benchmark.pedantic(reference.account_risk, args=(market, sub), rounds=1, iterations=1)
