"""The ``fastrisk`` command line (SPEC §9): thin over the public functions.

Exit codes: 0 success, 2 bad input (the InputError message, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2
DEMO_ACCOUNTS = 200_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrisk", description="Cross-margin risk for every account of a venue.")
    p.add_argument("--version", action="version", version=f"fastrisk {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="generate a venue and run the end-of-day risk job on it")
    d.add_argument("--accounts", type=int, default=DEMO_ACCOUNTS, help=f"accounts (default {DEMO_ACCOUNTS:,})")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--out", type=Path, default=Path("fastrisk-demo"), help="output directory")
    d.add_argument("--quiet", action="store_true", help="no progress lines")

    g = sub.add_parser("generate", help="write a synthetic venue directory (SPEC §1 layout)")
    g.add_argument("out", type=Path)
    g.add_argument("--accounts", type=int, default=DEMO_ACCOUNTS)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--quiet", action="store_true")

    v = sub.add_parser("validate", help="validate a venue directory; exit 2 naming the first problem")
    v.add_argument("dir", type=Path)

    r = sub.add_parser("run", help="end-of-day risk of a venue directory: account and position risk")
    r.add_argument("dir", type=Path)
    r.add_argument("--out", type=Path, default=Path("fastrisk-out"))
    r.add_argument("--margin-call-ratio", type=float, default=0.8)
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")

    b = sub.add_parser("bench", help="side-by-side timings: fastrisk, reference, peers, memory-read floor")
    b.add_argument("--accounts", type=int, default=1_000_000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--reference-accounts", type=int, default=20_000,
                   help="the plain-Python reference is timed on a prefix of this many accounts and reported "
                        "per account, scaled (it is 1000x slower)")
    b.add_argument("--skip", default="", help="comma-separated peers to skip (numpy,polars,duckdb,reference)")
    return p


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
    with steps.step(f"generating {args.accounts:,} accounts"):
        market, book = generate.exchange(args.accounts, seed=args.seed)
    with steps.step(f"writing {args.out}"):
        market.to_dir(args.out)
        book.to_dir(args.out)
    print(f"wrote {book!r} and {market!r} to {args.out}")
    return EXIT_OK


def _load(directory: Path, steps):
    from .book import Book
    from .market import Market

    with steps.step("reading and validating market"):
        market = Market.from_dir(directory)
    with steps.step("reading and validating book"):
        book = Book.from_dir(directory)
    with steps.step("resolving the book against the market"):
        book.bind(market)
    return market, book


def _validate(args) -> int:
    from .progress import Steps

    market, book = _load(args.dir, Steps())
    print(f"ok: {market!r}; {book!r}")
    return EXIT_OK


def _run(args) -> int:
    from .progress import Steps

    steps = Steps(args.quiet)
    market, book = _load(args.dir, steps)
    return _risk_job(market, book, args.out, steps, args, source=str(args.dir))


def _demo(args) -> int:
    from . import generate
    from .progress import Steps

    steps = Steps(args.quiet)
    with steps.step(f"generating a venue of {args.accounts:,} accounts"):
        market, book = generate.exchange(args.accounts, seed=args.seed)
    args.margin_call_ratio, args.json = 0.8, False
    return _risk_job(market, book, args.out, steps, args, source=f"generate.exchange({args.accounts}, "
                                                                    f"seed={args.seed})")


def _risk_job(market, book, out: Path, steps, args, source: str) -> int:
    from . import risk
    from .io import write_parquet
    from .summary import format_summary, summarize

    with steps.step(f"account risk of {book.n_accounts:,} accounts"):
        accounts = risk.account_risk(market, book, margin_call_ratio=args.margin_call_ratio)
    with steps.step(f"position risk of {book.positions.num_rows:,} positions"):
        positions = risk.position_risk(market, book)
    with steps.step(f"writing results to {out}"):
        write_parquet(accounts, out / "account_risk.parquet")
        write_parquet(positions, out / "position_risk.parquet")
        summary = summarize(market, book, accounts, positions, timings=steps.timings, source=source)
        from .io import atomic_write

        atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary, accounts))
        print(f"\nresults: {out}/account_risk.parquet, {out}/position_risk.parquet, {out}/summary.json")
    return EXIT_OK


def _bench(args) -> int:
    from .bench import run

    return run(args)


_COMMANDS = {"demo": _demo, "generate": _generate, "validate": _validate, "run": _run, "bench": _bench}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
