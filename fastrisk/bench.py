"""``fastrisk bench``: fastrisk, the reference and peers on one generated book, measured in one run.

Every contender computes the same ``account_risk`` table from the same in-memory Arrow tables, and is
checked against fastrisk before it is timed. Times are the best of ``--repeat`` runs after a warm-up, and of as
many more as fill a second (``best_of``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def best_of(fn, repeat: int, min_seconds: float = 1.0) -> float:
    """The best time of at least ``repeat`` runs after a warm-up, and of as many more as fit in ``min_seconds``:
    a short contender (the floor: ~15 ms) gets dozens of runs, so that one slow moment of the machine does not
    set its time (best of 3, the floor measured 13-18 ms from run to run)."""
    fn()  # warm-up: compilation, caches, lazy imports
    best = float("inf")
    runs = 0
    start = time.perf_counter()
    while runs < repeat or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best


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


def plain_sweep(market, book):
    """A function running the plain tiered sweep (``kernels.floor.plain_sweep``, valuation included, as in
    ``kernel_only``) on a bound book, and the array [4, a] it writes."""
    from .kernels.floor import plain_sweep as sweep
    from .risk import kernel_market, value_instruments

    bound, M = book.bind(market), market.arrays
    B = bound.book
    inst, tiers = kernel_market(market)
    size, tier_first, tier_last = inst[1:4]
    out = np.empty((4, book.n_accounts))

    def run():
        val = value_instruments(market)
        sweep(out, B.pos_start, bound.pos_instrument, B.quantity, B.entry_price, B.bal_start, bound.bal_asset,
              B.bal_amount, size, tier_first, tier_last, tiers, val.price, val.settle_px, val.asset_px, M.asset_cw,
              M.asset_bw)
    return run, out


def linear_cross_book(market, book):
    """The book's cross positions on linear futures (its balances whole): a book the plain sweep computes exactly."""
    from .book import Book

    ins = market.instruments
    linear = ins.filter(pc.equal(ins.column("kind").cast(pa.string()), "linear")).column("instrument_id")
    p = book.positions
    keep = pc.and_(pc.is_in(p.column("instrument_id"), value_set=linear.combine_chunks()),
                   pc.is_null(p.column("isolated_margin")))
    return Book(positions=p.filter(keep), balances=book.balances)


def check_plain_sweep(market, book, oracle=None, atol: float = 0.0) -> None:
    """The plain sweep equals ``oracle`` (default ``account_risk``: the same formulas, summed in the same order)
    on the book's linear cross positions: a yardstick that measures the arithmetic it claims to."""
    from .risk import account_risk

    sub = linear_cross_book(market, book)
    run, out = plain_sweep(market, sub)
    run()
    expected = (oracle or account_risk)(market, sub)
    for k, name in enumerate(("collateral", "unrealized_pnl", "initial_margin", "maintenance_margin")):
        np.testing.assert_allclose(out[k], expected.column(name).to_numpy(), rtol=1e-12, atol=atol, err_msg=name)


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


@dataclass
class Context:
    """What every benchmark section shares: one generated venue, in memory, and the run's options."""

    tables: dict
    market: object
    book: object
    repeat: int
    skip: set
    reference_accounts: int
    floor: float = 0.0

    def reference_book(self):
        """The book cut to its first ``reference_accounts`` accounts (the plain reference is slow)."""
        from .book import Book

        ids = self.book.arrays.account_id[:self.reference_accounts]
        cut = ids[-1] if len(ids) else -1
        keep = lambda t: t.filter(pc.less_equal(t.column("account_id"), cut))
        return Book(positions=keep(self.book.positions), balances=keep(self.book.balances))


def timed_reference(fn, ctx: Context, sub) -> float:
    """Seconds of one reference run on ``sub``, scaled to the whole book by its account count."""
    start = time.perf_counter()
    fn(ctx.market, sub)
    return (time.perf_counter() - start) * ctx.book.n_accounts / max(sub.n_accounts, 1)


def account_risk_section(ctx: Context):
    """account_risk: the kernel, the whole call from Arrow tables, the peers and the reference."""
    from . import peers, reference
    from .book import Book
    from .market import Market
    from .risk import account_risk
    from .testing import assert_tables_close

    tables, market, book = ctx.tables, ctx.market, ctx.book
    market_args = {k: tables[k] for k in ("assets", "underlyings", "instruments", "tiers")}
    expected = account_risk(market, book)

    def full_call():
        return account_risk(Market(as_of=tables["as_of"], **market_args),
                            Book(positions=tables["positions"], balances=tables["balances"]))

    check_plain_sweep(market, book)
    rows = [("memory-read floor (every input column once)", ctx.floor),
            ("plain tiered sweep (every position a cross linear future)", best_of(plain_sweep(market, book)[0],
                                                                               ctx.repeat)),
            ("fastrisk kernel (valuation + account sweep)", best_of(kernel_only(market, book), ctx.repeat))]
    assert_tables_close(full_call(), expected)
    rows.append(("fastrisk account_risk (Arrow in: validation, layout, kernel, Arrow out)",
                 best_of(full_call, ctx.repeat)))
    base = rows[-1][0]
    for name, fn in (("numpy", peers.numpy_account_risk), ("polars", peers.polars_account_risk),
                     ("duckdb", peers.duckdb_account_risk)):
        if name in ctx.skip:
            continue
        try:
            assert_tables_close(fn(market, book), expected, rtol=1e-9)
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        rows.append((f"{name} peer (same computation)", best_of(lambda: fn(market, book), 1)))
    if "reference" not in ctx.skip:
        sub = ctx.reference_book()
        assert_tables_close(reference.account_risk(market, sub), account_risk(market, sub))
        rows.append((f"reference, plain Python (scaled from {sub.n_accounts:,} accounts)",
                     timed_reference(reference.account_risk, ctx, sub)))
    return "account_risk", rows, base


def sections() -> list:
    """Benchmark sections in the order printed; later topics register theirs here."""
    from .bench_liquidation import liquidation_section
    from .bench_stress import stress_section

    return [account_risk_section, stress_section, liquidation_section]


def run(args) -> int:
    from . import generate
    from .book import Book
    from .market import Market

    print(f"generating {args.accounts:,} accounts (seed {args.seed}) ...", file=sys.stderr)
    # Futures only: the peers compute futures and collateral, and every contender is checked against fastrisk.
    # Sections that need options (stress) generate their own venue.
    tables = generate.exchange_tables(args.accounts, seed=args.seed, options=False)
    market = Market(as_of=tables["as_of"], **{k: tables[k] for k in ("assets", "underlyings", "instruments",
                                                                      "tiers")})
    book = Book(positions=tables["positions"], balances=tables["balances"])
    ctx = Context(tables, market, book, args.repeat, {s.strip() for s in args.skip.split(",") if s.strip()},
                  args.reference_accounts)
    ctx.floor = best_of(memory_floor(book), args.repeat)
    header = (f"{book.n_accounts:,} accounts / {book.positions.num_rows:,} positions, {os.cpu_count()} cores, "
              f"best of >= {args.repeat} runs (peers: 1) and >= 1 s of runs; memory-read floor {_fmt(ctx.floor)}")
    print(header)
    for section in sections():
        title, rows, base = section(ctx)
        base_time = dict(rows)[base]
        print(f"\n{title}\n")
        print(f"| {'contender':<72} | {'time':>10} | {'vs fastrisk':>11} | {'vs floor':>8} |")
        print(f"|{'-' * 74}|{'-' * 12}|{'-' * 13}|{'-' * 10}|")
        for name, t in rows:
            print(f"| {name:<72} | {_fmt(t):>10} | {t / base_time:>10.2f}x | {t / ctx.floor:>7.1f}x |")
    cold, warm = first_call_times()
    print(f"\nfirst account_risk call in a new process: cold (compiling) {cold:.2f} s, "
          f"warm (cached kernels) {warm:.3f} s")
    return 0


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"
