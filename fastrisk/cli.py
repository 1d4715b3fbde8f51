"""The ``fastrisk`` command line (SPEC §9): thin over the public functions.

Exit codes: 0 success, 2 bad input (the InputError message, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2
DEMO_ACCOUNTS = 200_000
DEMO_SHOCK = "BTC=-0.2"  # the SPEC's example shock


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrisk", description="Cross-margin risk for every account of a venue.")
    p.add_argument("--version", action="version", version=f"fastrisk {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="generate a venue and run the end-of-day risk job on it")
    d.add_argument("--accounts", type=int, default=DEMO_ACCOUNTS, help=f"accounts (default {DEMO_ACCOUNTS:,})")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--out", type=Path, default=Path("fastrisk-demo"), help="output directory")
    d.add_argument("--shock", action="append", metavar="U=MOVE",
                   help=f"cascade shock (default {DEMO_SHOCK})")
    _common(d)

    g = sub.add_parser("generate", help="write a synthetic venue directory (SPEC §1 layout)")
    g.add_argument("out", type=Path)
    g.add_argument("--accounts", type=int, default=DEMO_ACCOUNTS)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--partitions", type=int, metavar="N",
                   help="write the book as N partitions, each account in one (SPEC §10; fastrisk.distributed)")
    g.add_argument("--partition-by", choices=("range", "hash"), default="range",
                   help="account_id ranges of about equal positions (default) or a hash of the account_id")
    g.add_argument("--quiet", action="store_true")

    v = sub.add_parser("validate", help="validate a venue directory; exit 2 naming the first problem")
    v.add_argument("dir", type=Path)

    r = sub.add_parser("run", help="end-of-day risk of a venue directory: tables, summary.json, report.html")
    r.add_argument("dir", type=Path)
    r.add_argument("--out", type=Path, default=Path("fastrisk-out"))
    r.add_argument("--margin-call-ratio", type=float, default=0.8)
    r.add_argument("--shock", action="append", metavar="U=MOVE",
                   help="also run a liquidation cascade after this move (repeatable), e.g. --shock BTC=-0.2")
    _cascade_options(r)
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="run partition by partition on this Dask scheduler ('local': a local cluster); the book "
                        "must be partitioned (fastrisk generate --partitions, fastrisk.distributed.repartition)")
    r.add_argument("--workers", type=int, default=2, metavar="N", help="workers of a local cluster (default 2)")
    _common(r)

    c = sub.add_parser("cascade", help="liquidation cascade after a price shock, round by round")
    c.add_argument("dir", type=Path)
    c.add_argument("--shock", action="append", metavar="U=MOVE", required=True,
                   help="relative move of an underlying (repeatable), e.g. --shock BTC=-0.2 --shock ETH=-10%%")
    _cascade_options(c)
    c.add_argument("--out", type=Path, help="also write the cascade tables, summary.json and report.html here")
    _common(c)

    b = sub.add_parser("bench", help="side-by-side timings: fastrisk, reference, peers, memory-read floor")
    b.add_argument("--accounts", type=int, default=1_000_000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--reference-accounts", type=int, default=20_000,
                   help="the plain-Python reference is timed on a prefix of this many accounts and reported "
                        "per account, scaled (it is 1000x slower)")
    b.add_argument("--skip", default="", help="comma-separated peers to skip (numpy,polars,duckdb,reference)")
    return p


def _common(p) -> None:
    p.add_argument("--portfolio-margin", action="store_true",
                   help="also margin every account by SPAN scenarios and compare with cross margin")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (for scripts)")


def _cascade_options(p) -> None:
    p.add_argument("--impact", choices=("sqrt", "linear"), help="price impact of forced flow (SPEC §6)")
    p.add_argument("--insurance-fund", type=float, metavar="USD", help="insurance fund before the cascade")
    p.add_argument("--max-rounds", type=int, metavar="N", help="stop after N rounds")


def _version() -> str:
    from . import __version__

    return __version__


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .errors import InputError

    try:
        return _COMMANDS[args.command](args)
    except InputError as e:
        print(f"fastrisk: bad input: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("fastrisk: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - the CLI's last resort: report, with the traceback for a bug report
        print("fastrisk: internal error (please report):", file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


def _generate(args) -> int:
    from . import generate
    from .progress import Steps

    steps = Steps(args.quiet)
    with steps.step("generate", f"generating {args.accounts:,} accounts"):
        market, book = generate.exchange(args.accounts, seed=args.seed)
    with steps.step("write", f"writing {args.out}"):
        market.to_dir(args.out)
        if args.partitions is None:
            book.to_dir(args.out)
        else:
            from .distributed import repartition

            repartition(book, args.out, args.partitions, by=args.partition_by)
    parts = "" if args.partitions is None else f" in {args.partitions} partitions by {args.partition_by}"
    print(f"wrote {book!r}{parts} and {market!r} to {args.out}")
    return EXIT_OK


def _load(directory: Path, steps):
    from .book import Book
    from .market import Market

    with steps.step("read_market", "reading and validating the market"):
        market = Market.from_dir(directory)
    with steps.step("read_book", "reading and validating the book"):
        book = Book.from_dir(directory)
    with steps.step("bind", "resolving the book against the market", book.positions.num_rows, "positions"):
        book.bind(market)
    return market, book


def _validate(args) -> int:
    from .progress import Steps

    from .distributed import PartitionedBook
    from .tables import find_table_file

    market, book = _load(args.dir, Steps())
    parts = ""
    if find_table_file(args.dir, "positions").is_dir() and find_table_file(args.dir, "balances").is_dir():
        partitioned = PartitionedBook.open(args.dir)  # a partitioned book: each account in one partition
        partitioned.check()
        parts = f" in {len(partitioned)} partitions"
    print(f"ok: {market!r}; {book!r}{parts}")
    return EXIT_OK


def _options(args, shock):
    from .run import Options

    return Options(margin_call_ratio=getattr(args, "margin_call_ratio", 0.8), shock=shock or None,
                   impact=getattr(args, "impact", None), insurance_fund=getattr(args, "insurance_fund", None),
                   max_rounds=getattr(args, "max_rounds", None),
                   portfolio_margin=getattr(args, "portfolio_margin", False))


def _run(args) -> int:
    from .progress import Steps
    from .run import parse_shock
    from .warmup import compiling_ahead

    shock = parse_shock(args.shock)  # a typo fails before the venue is read
    steps = Steps(args.quiet)
    if args.scheduler:
        return _distributed_run(args, shock, steps)
    with compiling_ahead() as compiled:
        market, book = _load(args.dir, steps)
        return _job(market, book, args.out, _options(args, shock), steps, args, source=str(args.dir),
                    compiled=compiled)


def _distributed_run(args, shock, steps) -> int:
    """``run --scheduler``: the same job, every engine function partition by partition (SPEC §10)."""
    from .distributed import Engine, PartitionedBook
    from .market import Market

    with steps.step("read_market", "reading and validating the market"):
        market = Market.from_dir(args.dir)
    book = PartitionedBook.open(args.dir)
    local = args.scheduler == "local"
    # A local cluster's workers share the machine's cores rather than each using all of them (docs/distributed.md).
    cluster = dict(n_workers=args.workers, threads_per_worker=1, dashboard_address=None,
                   env={"NUMBA_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(args.workers, 1)))})
    label = f"starting {args.workers} local workers" if local else f"connecting to {args.scheduler}"
    with steps.step("cluster", label):
        engine = Engine(**cluster) if local else Engine(args.scheduler)
    with engine:
        return _job(market, book, args.out, _options(args, shock), steps, args, source=f"{args.dir} ({book!r})",
                    engine=engine)


def _demo(args) -> int:
    from . import generate
    from .progress import Steps
    from .run import parse_shock
    from .warmup import compiling_ahead

    shock = parse_shock(args.shock or [DEMO_SHOCK])  # the showcase includes a cascade
    steps = Steps(args.quiet)
    with compiling_ahead() as compiled:
        with steps.step("generate", f"generating a venue of {args.accounts:,} accounts"):
            market, book = generate.exchange(args.accounts, seed=args.seed)
        return _job(market, book, args.out, _options(args, shock), steps, args,
                    source=f"generate.exchange({args.accounts}, seed={args.seed})", compiled=compiled)


def _job(market, book, out: Path, options, steps, args, source: str, compiled=None, engine=None) -> int:
    from .run import dumps, run
    from .summary import format_summary

    result = run(market, book, out, options, progress=steps, source=source, compiled=compiled, engine=engine)
    if args.json:
        print(dumps(result.summary))
        return EXIT_OK
    print(format_summary(result.summary, result.tables["account_risk"]))
    print(f"\nresults in {out}/: " + ", ".join(f.name for f in result.files))
    if result.report is not None:
        print(f"report: {result.report.resolve().as_uri()}")
    else:
        print(f"report: not written ({result.report_note})")
    return EXIT_OK


def _cascade(args) -> int:
    from .liquidation_cascade import format_rounds
    from .progress import Steps
    from .run import STEPS, dumps, parse_shock, run

    shock = parse_shock(args.shock)
    steps = Steps(args.quiet)
    market, book = _load(args.dir, steps)
    # Written to disk, the cascade comes with the venue's account risk so that its report has the context.
    wanted = ("account_risk", "cascade") if args.out else ("cascade",)
    result = run(market, book, args.out, _options(args, shock), steps=[s for s in STEPS if s.name in wanted],
                 progress=steps, source=str(args.dir))
    if args.json:
        print(dumps(result.summary))
        return EXIT_OK
    print(format_rounds(result.results["cascade"]))
    if args.out:
        print(f"\nresults in {args.out}/: " + ", ".join(f.name for f in result.files))
        if result.report is not None:
            print(f"report: {result.report.resolve().as_uri()}")
    return EXIT_OK


def _bench(args) -> int:
    from .bench import run

    return run(args)


_COMMANDS = {"demo": _demo, "generate": _generate, "validate": _validate, "run": _run, "cascade": _cascade,
             "bench": _bench}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
