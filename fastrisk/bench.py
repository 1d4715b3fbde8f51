"""``fastrisk bench``: fastrisk, the reference and peers on one generated book, measured in one run.

Every contender computes the same ``account_risk`` table from the same in-memory Arrow tables, and is
checked against fastrisk before it is timed. Times are the best of ``--repeat`` runs after a warm-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up: compilation, caches, lazy imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def memory_floor(book) -> float:
    """A function making one parallel pass that reads every input column of positions and balances."""
    from .kernels._jit import n_chunks
    from .kernels.floor import read_balances, read_positions
    from .tables import numeric_values

    p, b = book.positions, book.balances
    cols = [numeric_values(p.column(c))[0] for c in ("account_id", "instrument_id", "quantity", "entry_price",
                                                     "isolated_margin")]
    asset = b.column("asset").combine_chunks()
    asset_idx = numeric_values(asset.indices if pa.types.is_dictionary(asset.type) else
                               pc.dictionary_encode(asset).indices)[0]
    bcols = [numeric_values(b.column("account_id"))[0], asset_idx, numeric_values(b.column("amount"))[0]]

    def run():
        read_positions(*cols, n_chunks(len(cols[0])))
        read_balances(*bcols, n_chunks(len(bcols[0])))
    return run


def kernel_only(market, book):
    """The compiled sweep alone (instrument valuation + account kernel) on an already bound book."""
    from .risk import MARGIN_CALL_RATIO, OPTION_MARGIN, _account_outputs, value_instruments

    bound = book.bind(market)
    return lambda: _account_outputs(market, bound, value_instruments(market), OPTION_MARGIN, MARGIN_CALL_RATIO)


def first_call_times() -> tuple[float, float]:
    """Seconds of a new process's first ``account_risk`` call (import to result, tiny book): with an empty
    kernel cache (cold: compiles) and then with the cache it left (warm)."""
    import tempfile

    code = textwrap.dedent("""
        import time; t = time.perf_counter()
        import fastrisk as fr
        m, b = fr.generate.exchange(50, seed=3)
        t1 = time.perf_counter(); fr.account_risk(m, b); print(time.perf_counter() - t1)
    """)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1]) for _ in range(2)]
    return out[0], out[1]


def run(args) -> int:
    from . import generate, peers, reference
    from .book import Book
    from .market import Market
    from .risk import account_risk
    from .testing import assert_tables_close

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"generating {args.accounts:,} accounts (seed {args.seed}) ...", file=sys.stderr)
    tables = generate.exchange_tables(args.accounts, seed=args.seed)
    market_args = {k: tables[k] for k in ("assets", "underlyings", "instruments", "tiers")}
    book_args = {k: tables[k] for k in ("positions", "balances")}
    market = Market(as_of=tables["as_of"], **market_args)
    book = Book(**book_args)
    n_pos = book.positions.num_rows
    print(f"{book.n_accounts:,} accounts, {n_pos:,} positions, {book.balances.num_rows:,} balances; "
          f"{os.cpu_count()} cores", file=sys.stderr)

    expected = account_risk(market, book)
    rows = []

    def full_call():
        m = Market(as_of=tables["as_of"], **market_args)
        return account_risk(m, Book(**book_args))

    floor = best_of(memory_floor(book), args.repeat)
    rows.append(("memory-read floor (every input column once)", floor))
    rows.append(("fastrisk kernel (valuation + account sweep)", best_of(kernel_only(market, book), args.repeat)))
    assert_tables_close(full_call(), expected)
    fastrisk_time = best_of(full_call, args.repeat)
    rows.append(("fastrisk account_risk (validation + output)", fastrisk_time))
    for name, fn in (("numpy", peers.numpy_account_risk), ("polars", peers.polars_account_risk),
                     ("duckdb", peers.duckdb_account_risk)):
        if name in skip:
            continue
        try:
            assert_tables_close(fn(market, book), expected, rtol=1e-9)
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        rows.append((f"{name} peer (same computation)", best_of(lambda: fn(market, book), 1)))
    if "reference" not in skip:
        sub_ids = book.arrays.account_id[:args.reference_accounts]
        cut = sub_ids[-1] if len(sub_ids) else -1
        sub = Book(positions=book.positions.filter(pc.less_equal(book.positions.column("account_id"), cut)),
                   balances=book.balances.filter(pc.less_equal(book.balances.column("account_id"), cut)))
        assert_tables_close(reference.account_risk(market, sub), account_risk(market, sub))
        start = time.perf_counter()
        reference.account_risk(market, sub)
        ref = (time.perf_counter() - start) * book.n_accounts / max(sub.n_accounts, 1)
        rows.append((f"reference, plain Python (scaled from {sub.n_accounts:,} accounts)", ref))
    cold, warm = first_call_times()

    print(f"\naccount_risk on {book.n_accounts:,} accounts / {n_pos:,} positions, {os.cpu_count()} cores, "
          f"best of {args.repeat}\n")
    print(f"| {'contender':<58} | {'time':>10} | {'vs fastrisk':>11} | {'vs floor':>8} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 13}|{'-' * 10}|")
    for name, t in rows:
        print(f"| {name:<58} | {_fmt(t):>10} | {t / fastrisk_time:>10.2f}x | {t / floor:>7.1f}x |")
    print(f"\nfirst account_risk call in a new process: cold (compiling) {cold:.2f} s, "
          f"warm (cached kernels) {warm:.3f} s")
    return 0


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"
