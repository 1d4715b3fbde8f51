"""The end-of-day risk job (SPEC §9 ``run``): a validated venue in; Parquet tables, ``summary.json`` and
``report.html`` out.

The job is a list of uniform :class:`Step` s. A step has a name, a ``compute`` that calls engine functions
and returns named tables, a ``summarize`` that turns them into what it adds to ``summary.json``, and the
report sections that show them; the pipeline writes every table the same way.

The engine is the ``fastrisk`` package unless another object with the same function names is given, e.g. a
distributed engine (SPEC §10) or a stand-in in tests.

Outputs are all-or-nothing. Everything is first written into a hidden staging directory inside ``out``
(each file atomically, with :mod:`fastrisk.io`); only when every step, the report and the summary are done
are the files moved to their final names, ``summary.json`` last, and the outputs of an earlier run that this
one does not produce (e.g. ``cascade_rounds.parquet`` from a run with ``--shock``) removed, so ``out`` never
mixes two runs. A failure or Ctrl-C removes the staging directory (and ``out`` itself if the run created
it): nothing is left under a final name.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

from . import report
from . import summary as S
from .errors import InputError
from .io import atomic_write, write_parquet
from .progress import Steps


@dataclass(frozen=True)
class Options:
    """What a risk team chooses for a run (defaults are SPEC defaults)."""

    margin_call_ratio: float = 0.8
    shock: dict[str, float] | None = None      # underlying -> relative move; runs a cascade and contagion
    impact: str | None = None                  # cascade price impact model: "sqrt" or "linear"
    insurance_fund: float | None = None        # USD
    max_rounds: int | None = None
    portfolio_margin: bool = False             # also margin every account by SPAN scenarios (a what-if)
    report: bool = True


@dataclass
class Context:
    """What the steps share: the inputs, the options, the engine, and the tables computed so far.
    ``results`` keeps an engine result object where one is more than its tables (the cascade's, for its
    own formatter)."""

    market: object
    book: object
    options: Options
    engine: object
    tables: dict[str, pa.Table] = field(default_factory=dict)
    results: dict[str, object] = field(default_factory=dict)

    def function(self, name: str) -> Callable:
        """The engine's function ``name`` (dotted for a submodule: ``"scenarios.span"``)."""
        return functools.reduce(getattr, name.split("."), self.engine)


@dataclass(frozen=True)
class Step:
    """One piece of the job.

    ``compute(ctx)`` returns ``{output name: table}`` (each written as ``<name>.parquet``; ``outputs``
    declares the names); ``summarize(ctx)`` returns the keys it adds to the summary; ``sections`` are the
    report's section builders for these tables; ``work(ctx)`` is ``(units, unit)`` for the progress line;
    ``when(ctx)`` says whether this run asked for the step at all.
    """

    name: str
    title: str
    compute: Callable[[Context], dict[str, pa.Table]]
    outputs: tuple[str, ...]
    summarize: Callable[[Context], dict] | None = None
    sections: tuple[Callable, ...] = ()
    work: Callable[[Context], tuple[int, str]] = lambda ctx: (ctx.book.n_accounts, "accounts")
    when: Callable[[Context], bool] = lambda ctx: True


# ------------------------------------------------------------------------------------------------- steps
def _account_risk(ctx):
    fn = ctx.function("account_risk")
    return {"account_risk": fn(ctx.market, ctx.book, margin_call_ratio=ctx.options.margin_call_ratio)}


def _position_risk(ctx):
    return {"position_risk": ctx.function("position_risk")(ctx.market, ctx.book)}


def _liquidation_prices(ctx):
    return {"liquidation_prices": ctx.function("liquidation_prices")(ctx.market, ctx.book)}


def _span_scenarios(ctx) -> pa.Table:
    if "scenarios" not in ctx.tables:
        ctx.tables["scenarios"] = ctx.function("scenarios.span")(ctx.market.underlyings)
    return ctx.tables["scenarios"]


def _stress(ctx):
    scenarios = _span_scenarios(ctx)
    result = ctx.function("stress")(ctx.market, ctx.book, scenarios)
    return {"scenarios": scenarios, "stress_accounts": result.accounts, "stress_scenarios": result.scenarios}


def _portfolio_margin(ctx):
    scenarios = _span_scenarios(ctx)
    pm = ctx.function("account_risk")(ctx.market, ctx.book, mode="portfolio", scenarios=scenarios,
                                      margin_call_ratio=ctx.options.margin_call_ratio)
    return {"account_risk_portfolio": pm}


def _exposures(ctx):
    return {"exposures": ctx.function("exposures")(ctx.market, ctx.book)}


def _cascade(ctx):
    o = ctx.options
    extra = {k: v for k, v in (("impact", o.impact), ("insurance_fund", o.insurance_fund),
                               ("max_rounds", o.max_rounds)) if v is not None}
    result = ctx.function("cascade")(ctx.market, ctx.book, shock=dict(o.shock), **extra)
    ctx.results["cascade"] = result
    return {"cascade_rounds": result.rounds, "cascade_accounts": result.accounts}


def _contagion(ctx):
    result = ctx.function("contagion")(ctx.market, ctx.book, dict(ctx.options.shock))
    return {"contagion_accounts": result.accounts, "contagion_summary": result.summary}


def _shocked(ctx) -> bool:
    return bool(ctx.options.shock)


def _stress_summary(ctx):
    t = ctx.tables
    out = S.stress_summary(t["stress_accounts"], t["stress_scenarios"])
    worst = out["stress"].get("worst_scenario")
    if worst is not None:
        out["stress"]["worst_scenario_label"] = S.scenario_labels(t["scenarios"]).get(worst, "")
    return out


STEPS: tuple[Step, ...] = (
    Step("account_risk", "account risk", _account_risk, ("account_risk",),
         lambda ctx: S.account_summary(ctx.tables["account_risk"]),
         (report.venue_section, report.margin_ratio_section)),
    Step("position_risk", "position risk", _position_risk, ("position_risk",), None, (report.riskiest_section,),
         work=lambda ctx: (ctx.book.n_positions, "positions")),
    Step("liquidation_prices", "liquidation prices", _liquidation_prices, ("liquidation_prices",),
         lambda ctx: S.liquidation_summary(ctx.tables["liquidation_prices"]), (report.liquidation_section,)),
    Step("stress", "SPAN stress", _stress, ("scenarios", "stress_accounts", "stress_scenarios"), _stress_summary,
         (report.stress_section,)),
    Step("portfolio_margin", "portfolio margin", _portfolio_margin, ("scenarios", "account_risk_portfolio"),
         lambda ctx: S.portfolio_summary(ctx.tables["account_risk"], ctx.tables["account_risk_portfolio"]),
         (report.portfolio_section,), when=lambda ctx: ctx.options.portfolio_margin),
    Step("exposures", "exposures", _exposures, ("exposures",),
         lambda ctx: S.exposure_summary(ctx.tables["exposures"]), (report.exposure_section,)),
    Step("cascade", "liquidation cascade", _cascade, ("cascade_rounds", "cascade_accounts"),
         lambda ctx: S.cascade_summary(ctx.tables["cascade_rounds"], ctx.tables["cascade_accounts"],
                                       ctx.options.shock),
         (report.cascade_section,), when=_shocked),
    Step("contagion", "contagion (cross vs isolated)", _contagion, ("contagion_accounts", "contagion_summary"),
         lambda ctx: S.contagion_summary(ctx.tables["contagion_summary"]), (report.contagion_section,),
         when=_shocked),
)

# Computed after the other steps (the report keeps the order of STEPS): their kernels take longest to
# compile, and on a machine's first run ``fastrisk.warmup`` compiles them in the background meanwhile.
COMPUTED_LAST = ("liquidation_prices", "cascade", "contagion")

SUMMARY_FILE, REPORT_FILE = "summary.json", "report.html"


def output_files(steps=STEPS) -> set[str]:
    """Every file name the job can write into ``out``."""
    return {f"{name}.parquet" for s in steps for name in s.outputs} | {SUMMARY_FILE, REPORT_FILE}


# ------------------------------------------------------------------------------------------------- the run
@dataclass
class RunResult:
    summary: dict
    tables: dict[str, pa.Table]
    files: list[Path]                 # final paths, in the order written
    report: Path | None               # None: not written, see ``report_note``
    report_note: str | None
    results: dict[str, object]


def parse_shock(items) -> dict[str, float]:
    """``["BTC=-0.2", "ETH=-10%"]`` -> ``{"BTC": -0.2, "ETH": -0.1}``; a bad item is an InputError."""
    shock: dict[str, float] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        try:
            move = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        except ValueError:
            move = math.nan
        if not sep or not name or not math.isfinite(move) or move <= -1:
            raise InputError("shock", name or "*", "must be UNDERLYING=MOVE with MOVE a finite fraction > -1 "
                             f"(e.g. BTC=-0.2 or BTC=-20%); got {item!r}")
        if name in shock:
            raise InputError("shock", name, "at most one move per underlying")
        shock[name] = move
    return shock


def check_shock(market, shock: dict[str, float]) -> None:
    known = set(market.underlying_names.to_pylist())
    unknown = [u for u in shock if u not in known]
    if unknown:
        raise InputError("shock", "underlying", "must be one of underlyings.underlying",
                         count=len(unknown), examples=[repr(u) for u in unknown[:5]])


def run(market, book, out, options: Options = Options(), *, steps=None, engine=None,
        progress: Steps | None = None, source: str = "", compiled=None) -> RunResult:
    """Run the end-of-day job on a validated venue and write its outputs into ``out`` (see the module doc).

    Parameters
    ----------
    market, book : Market, Book
        (or what ``engine`` takes for a book: a ``distributed.PartitionedBook`` for a ``distributed.Engine``)
    out : path or None
        Output directory (created if needed); None computes and summarises without writing anything.
    options : Options
    steps : sequence of Step, optional
        Default :data:`STEPS`; steps not asked for (``when``) are skipped.
    engine : object, optional
        Provides the functions by name; default the ``fastrisk`` package.
    progress : Steps, optional
        Progress lines and timings (silent by default).
    compiled : callable, optional
        Called once before the first of the steps computed last (``COMPUTED_LAST``): returns when their
        kernels are compiled (``warmup.compiling_ahead``).

    Raises
    ------
    InputError
        Bad options (an unknown underlying in ``shock``) or input a step rejects; nothing is written.
    """
    steps = STEPS if steps is None else tuple(steps)
    engine = engine if engine is not None else importlib.import_module("fastrisk")
    progress = progress or Steps(quiet=True)
    ctx = Context(market, book, options, engine)
    if options.shock:
        check_shock(market, options.shock)
    states: dict[str, str] = {}
    ran: list[Step] = []
    with (_Staging(Path(out)) if out is not None else _Discard()) as staging:
        for step in sorted(steps, key=lambda s: s.name in COMPUTED_LAST):
            if not step.when(ctx):
                states[step.name] = "not requested"
                continue
            if compiled is not None and step.name in COMPUTED_LAST:
                with progress.step("compile", "finishing the first run's compilation in the background"):
                    compiled()
                compiled = None
            units, unit = step.work(ctx)
            with progress.step(step.name, step.title, units, unit):
                tables = step.compute(ctx)
            ctx.tables.update(tables)
            states[step.name] = "done"
            ran.append(step)

        ran.sort(key=steps.index)  # tables, summary and report in the order of ``steps``
        # Steps sharing a table (stress and portfolio margin both use the scenarios) write it once.
        written = list(dict.fromkeys(f"{name}.parquet" for s in ran for name in s.outputs if name in ctx.tables))
        with progress.step("write", f"writing {len(written)} tables", len(written), "tables") as p:
            staging.write_tables({f: ctx.tables[f.removesuffix(".parquet")] for f in written}, p.advance)

        summary = S.run_metadata(market, book, source=source, parameters=_parameters(options))
        for step in ran:
            if step.summarize is not None:
                summary.update(step.summarize(ctx))
        summary["steps"] = states
        summary["outputs"] = {f: ctx.tables[f.removesuffix(".parquet")].num_rows for f in written}
        summary["timings_s"] = dict(progress.timings)

        report_path, note = None, None
        if not options.report or out is None:
            note = "not requested"
        elif not report.available():
            note = "matplotlib is not installed: pip install 'fastrisk[report]' to get report.html"
            progress.note(f"report: {note}")
        else:
            sections = [section for step in ran for section in step.sections]
            with progress.step("report", "report", len(sections), "sections") as p:
                html = report.render(summary, ctx.tables, market, sections, progress=p)
                staging.write_text(REPORT_FILE, html)
            report_path = Path(out) / REPORT_FILE
        summary["report"] = REPORT_FILE if report_path else None
        if note:
            summary["report_note"] = note
        summary["timings_s"] = {k: round(v, 4) for k, v in progress.timings.items()}
        staging.write_text(SUMMARY_FILE, dumps(summary))
        files = staging.commit(stale=output_files(STEPS) | output_files(steps))
    return RunResult(summary, ctx.tables, files, report_path, note, ctx.results)


def _parameters(options: Options) -> dict:
    return {"margin_call_ratio": options.margin_call_ratio, "portfolio_margin": options.portfolio_margin,
            "shock": options.shock or None,
            "impact": options.impact, "insurance_fund": options.insurance_fund, "max_rounds": options.max_rounds}


def dumps(summary: dict) -> str:
    """The summary as strict JSON: non-finite numbers (an infinite margin ratio) become null."""
    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # NumPy scalars
            x = x.item()
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x
    return json.dumps(clean(summary), indent=2, allow_nan=False)


class _Discard:
    """Where a run with ``out=None`` writes: nowhere."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write_tables(self, tables, done):
        for _ in tables:
            done()

    def write_text(self, filename, text):
        pass

    def commit(self, stale):
        return []


class _Staging:
    """The hidden directory a run writes into before its outputs move to their final names (module doc)."""

    def __init__(self, out: Path):
        self.out = out
        self.files: list[str] = []

    def __enter__(self):
        if self.out.exists() and not self.out.is_dir():
            raise InputError("out", "*", f"not a directory: {self.out}")
        self.created_out = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=".fastrisk-run-", dir=self.out))
        return self

    def write_tables(self, tables: dict[str, pa.Table], done: Callable[[], None]) -> None:
        """Write ``{filename: table}`` as Parquet, several files at once, calling ``done()`` as each is
        written. Arrow's Parquet writer keeps one core busy per file and releases the GIL: a 1M-account run's
        tables took 7.6 s one after another, 4.8 s two at a time on 2 cores."""
        self.files.extend(tables)  # in the caller's order, whichever file is done first
        with ThreadPoolExecutor(max_workers=max(min(len(tables), os.cpu_count() or 1), 1)) as pool:
            for future in as_completed([pool.submit(write_parquet, t, self.dir / f) for f, t in tables.items()]):
                future.result()
                done()

    def write_text(self, filename: str, text: str) -> None:
        atomic_write(self.dir / filename, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        self.files.append(filename)

    def commit(self, stale: set[str]) -> list[Path]:
        """Move the staged files into ``out`` (summary last: its presence marks a complete run) and remove
        outputs of an earlier run that this one did not produce."""
        tables = [f for f in self.files if f != SUMMARY_FILE]
        for name in tables:
            os.replace(self.dir / name, self.out / name)
        for name in sorted(stale - set(self.files)):
            (self.out / name).unlink(missing_ok=True)
        order = tables + [f for f in self.files if f == SUMMARY_FILE]
        if SUMMARY_FILE in self.files:
            os.replace(self.dir / SUMMARY_FILE, self.out / SUMMARY_FILE)
        self.dir.rmdir()
        self.dir = None
        return [self.out / f for f in order]

    def __exit__(self, exc_type, exc, tb):
        if self.dir is not None:  # not committed: failure or interrupt
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.created_out and not any(self.out.iterdir()):
                self.out.rmdir()
        return False
