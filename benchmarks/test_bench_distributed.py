"""The distributed engine (SPEC §10) against the single-machine run of the same partitioned venue directory: a
local cluster of two worker processes, one Numba thread each (2 cores). Each engine result is checked against
the single-machine one before it is timed. On one machine the engine pays what a cluster adds (reading the
partitions in every call, results crossing processes, a round trip per cascade round): these numbers are its
overhead, docs/distributed.md has a table. Run with ``pytest benchmarks/test_bench_distributed.py
--benchmark-columns=min,median,rounds``."""

from __future__ import annotations

import pytest

import fastrisk as fr

pytest.importorskip("dask.distributed")

from fastrisk.distributed import Engine, repartition  # noqa: E402

SHOCK = {"BTC": -0.2}
PARTITIONS = 8


@pytest.fixture(scope="module")
def parts(venue, tmp_path_factory):
    return repartition(venue[1], tmp_path_factory.mktemp("venue"), PARTITIONS)


@pytest.fixture(scope="module")
def engine():
    with Engine(n_workers=2, threads_per_worker=1, dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"}) as e:
        yield e


@pytest.mark.benchmark(group="distributed account_risk")
def test_single_machine_account_risk_from_the_partitioned_directory(benchmark, venue, parts):
    benchmark(lambda: fr.account_risk(venue[0], fr.Book.from_dir(parts.path)))


@pytest.mark.benchmark(group="distributed account_risk")
def test_engine_account_risk(benchmark, venue, parts, engine):
    market, book = venue
    assert engine.account_risk(market, parts).equals(fr.account_risk(market, book))
    benchmark(engine.account_risk, market, parts)


@pytest.mark.benchmark(group="distributed cascade")
def test_single_machine_cascade_from_the_partitioned_directory(benchmark, venue, parts):
    benchmark(lambda: fr.cascade(venue[0], fr.Book.from_dir(parts.path), SHOCK, max_rounds=20))


@pytest.mark.benchmark(group="distributed cascade")
def test_engine_cascade(benchmark, venue, parts, engine):
    market, book = venue
    assert engine.cascade(market, parts, SHOCK, max_rounds=20).accounts.equals(
        fr.cascade(market, book, SHOCK, max_rounds=20).accounts)
    benchmark(engine.cascade, market, parts, SHOCK, max_rounds=20)
