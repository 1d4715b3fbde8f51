"""Benchmark fixtures: one generated venue per session, sized by FASTRISK_BENCH_ACCOUNTS (default 1M)."""

from __future__ import annotations

import os

import pytest

import fastrisk as fr

N_ACCOUNTS = int(os.environ.get("FASTRISK_BENCH_ACCOUNTS", "1000000"))


@pytest.fixture(scope="session")
def tables():
    # Futures only: the account_risk benchmarks compare with peers that do not price options.
    return fr.generate.exchange_tables(N_ACCOUNTS, seed=1, options=False)


@pytest.fixture(scope="session")
def venue(tables):
    market = fr.Market(as_of=tables["as_of"], **{k: tables[k] for k in ("assets", "underlyings", "instruments",
                                                                         "tiers")})
    book = fr.Book(positions=tables["positions"], balances=tables["balances"])
    fr.account_risk(market, book)  # compile (or load cached kernels) outside the timings
    return market, book
