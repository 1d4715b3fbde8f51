"""The end-of-day job (fastrisk.run): every output, totals equal to the tables, all-or-nothing writes,
another engine through ``engine``, and the CLI commands over it (run --shock, cascade, demo)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import fastrisk as fr
from fastrisk import run as R
from fastrisk.cli import main
from fastrisk.codes import STATUS_NAMES
from fastrisk.errors import InputError
from fastrisk.io import atomic_write, write_parquet
from fastrisk.progress import Steps

from standins import StandInEngine

PER_ACCOUNT = ("account_risk", "stress_accounts", "account_risk_portfolio", "cascade_accounts", "contagion_accounts")
PER_PAIR = ("liquidation_prices", "exposures")  # (account, underlying): only accounts with exposure


@pytest.fixture(scope="module")
def venue():
    return fr.generate.exchange(800, seed=11)


@pytest.fixture(scope="module")
def venue_dir(tmp_path_factory, venue):
    path = tmp_path_factory.mktemp("venue")
    market, book = venue
    market.to_dir(path)
    book.to_dir(path)
    return path


@pytest.fixture(scope="module")
def standin_run(tmp_path_factory, venue):
    market, book = venue
    out = tmp_path_factory.mktemp("run") / "out"
    options = R.Options(shock={"BTC": -0.2}, portfolio_margin=True)
    return out, R.run(market, book, out, options, engine=StandInEngine())


def _strict_json(path: Path) -> dict:
    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(path.read_text(), parse_constant=bad)


def _no_leftovers(out: Path) -> None:
    hidden = [p.name for p in out.rglob(".*")]
    assert not hidden, f"staging or temporary files left: {hidden}"


# --------------------------------------------------------------------------------------------- real engine
def test_run_writes_every_output_and_totals_equal_the_tables(tmp_path, venue):
    market, book = venue
    out = tmp_path / "out"
    result = R.run(market, book, out)
    summary = _strict_json(out / "summary.json")
    assert summary["steps"]["account_risk"] == summary["steps"]["position_risk"] == "done"
    # Each step asked for ran and wrote every declared table; nothing else is in `out`.
    expected = {"summary.json", "report.html"}
    for step in R.STEPS:
        state = summary["steps"][step.name]
        assert state == ("not requested" if step.name in ("portfolio_margin", "cascade", "contagion") else "done")
        if state == "done":
            expected |= {f"{name}.parquet" for name in step.outputs}
    assert {p.name for p in out.iterdir()} == expected
    assert set(summary["outputs"]) == expected - {"summary.json", "report.html"}
    _no_leftovers(out)

    accounts = pq.read_table(out / "account_risk.parquet")
    ids = book.arrays.account_id
    for name in PER_ACCOUNT:
        if (out / f"{name}.parquet").exists():
            assert np.array_equal(pq.read_table(out / f"{name}.parquet").column("account_id").to_numpy(), ids), name
    for name, rows in summary["outputs"].items():
        assert pq.read_table(out / name).num_rows == rows
    positions = pq.read_table(out / "position_risk.parquet")
    assert positions.num_rows == summary["rows"]["positions"] == book.positions.num_rows
    t = summary["totals_usd"]
    for column in ("collateral", "equity", "initial_margin", "maintenance_margin", "gross_notional", "isolated_equity"):
        assert t[column] == pytest.approx(math.fsum(accounts.column(column).to_pylist()), rel=1e-12), column
    equity = accounts.column("equity").to_numpy()
    assert t["negative_equity"] == pytest.approx(math.fsum(equity[equity < 0]), rel=1e-12, abs=1e-9)
    statuses = accounts.column("status").to_pylist()
    assert summary["accounts_by_status"] == {s: statuses.count(s) for s in STATUS_NAMES}
    assert summary["isolated_positions_liquidatable"] == sum(accounts.column("n_isolated_liquidatable").to_pylist())
    assert summary["fastrisk_version"] == fr.__version__ and summary["as_of"] == market.as_of.isoformat()
    assert summary["rows"]["balances"] == book.balances.num_rows
    assert {"account_risk", "position_risk", "write", "report"} <= set(summary["timings_s"])
    assert result.report == out / "report.html" and result.summary["accounts"] == len(ids)


# --------------------------------------------------------------------------------------------- every step
def test_every_step_runs_with_another_engine(standin_run, venue):
    out, result = standin_run
    market, book = venue
    assert set(result.summary["steps"].values()) == {"done"}
    ids = book.arrays.account_id
    for name in PER_ACCOUNT:
        table = pq.read_table(out / f"{name}.parquet")
        assert np.array_equal(table.column("account_id").to_numpy(), ids), name
    for name in PER_PAIR:
        pair_ids = np.unique(pq.read_table(out / f"{name}.parquet").column("account_id").to_numpy())
        assert np.isin(pair_ids, ids).all() and len(pair_ids) > len(ids) // 2, name
    assert (out / "scenarios.parquet").exists() and (out / "report.html").exists()
    _no_leftovers(out)


def test_step_summaries_equal_their_tables(standin_run):
    out, result = standin_run
    s = _strict_json(out / "summary.json")
    read = lambda name: pq.read_table(out / f"{name}.parquet")

    scen, acc = read("stress_scenarios"), read("stress_accounts")
    losses = scen.column("total_loss").to_pylist()
    worst = max(range(len(losses)), key=losses.__getitem__)
    assert s["stress"]["scenarios"] == scen.num_rows == 16 * 40
    assert s["stress"]["worst_scenario_loss_usd"] == losses[worst]
    assert s["stress"]["worst_scenario"] == scen.column("scenario_id")[worst].as_py()
    assert s["stress"]["worst_scenario_bad_debt"] == scen.column("bad_debt")[worst].as_py()
    assert s["stress"]["sum_account_worst_loss_usd"] == pytest.approx(math.fsum(acc.column("worst_loss").to_pylist()))
    assert s["stress"]["accounts_with_loss"] == sum(x > 0 for x in acc.column("worst_loss").to_pylist())
    assert s["stress"]["worst_scenario_label"].startswith(
        pq.read_table(out / "scenarios.parquet")
        .filter(pc.equal(pc.field("scenario_id"), s["stress"]["worst_scenario"])).column("underlying")[0].as_py())

    exp = read("exposures").to_pylist()
    e = s["exposures"]
    assert e["net_delta_usd"] == pytest.approx(math.fsum(r["delta_usd"] for r in exp), rel=1e-9, abs=1e-6)
    assert e["gross_delta_usd"] == pytest.approx(math.fsum(abs(r["delta_usd"]) for r in exp), rel=1e-12)
    for row in e["by_underlying"][:5]:
        mine = sorted((abs(r["delta_usd"]) for r in exp if r["underlying"] == row["underlying"]), reverse=True)
        assert row["accounts"] == len(mine)
        assert row["gross_usd"] == pytest.approx(math.fsum(mine), rel=1e-12)
        assert row["long_usd"] == pytest.approx(math.fsum(r["delta_usd"] for r in exp if r["underlying"] ==
                                                          row["underlying"] and r["delta_usd"] > 0), rel=1e-12)
        assert row["top10_share"] == pytest.approx(math.fsum(mine[:10]) / math.fsum(mine), rel=1e-12)
    nets = [abs(r["net_usd"]) for r in e["by_underlying"]]
    assert e["concentration"] == pytest.approx(max(nets) / sum(nets))

    # Nearest liquidation per account, recomputed row by row in plain Python.
    nearest: dict[int, float] = {}
    for r in read("liquidation_prices").to_pylist():
        d = min(abs(x) if x is not None else math.inf for x in (r["distance_down"], r["distance_up"]))
        nearest[r["account_id"]] = min(nearest.get(r["account_id"], math.inf), d)
    within = s["liquidation"]["accounts_within"]
    for k, v in within.items():
        assert v == sum(d <= float(k) for d in nearest.values()), k
    assert s["liquidation"]["accounts_with_exposure"] == len(nearest)

    rounds = read("cascade_rounds")
    c = s["cascade"]
    assert c["shock"] == {"BTC": -0.2} and c["rounds"] == rounds.num_rows - 1
    assert c["accounts_liquidated"] == sum(rounds.column("accounts_liquidated").to_pylist())
    assert c["accounts_liquidated"] == c["accounts_liquidated_in_accounts_table"]
    assert c["notional_closed_usd"] == pytest.approx(math.fsum(rounds.column("notional_closed").to_pylist()))
    assert c["insurance_fund_left_usd"] == rounds.column("insurance_fund_left")[-1].as_py()

    pm = read("account_risk_portfolio")
    assert s["portfolio_margin"]["maintenance_margin"] == pytest.approx(
        math.fsum(pm.column("maintenance_margin").to_pylist()))
    assert s["contagion"]["accounts_liquidated_cross"] == read("contagion_summary").column(
        "accounts_liquidated_cross")[0].as_py()


# --------------------------------------------------------------------------------------------- all or nothing
def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_interrupt_while_writing_leaves_the_previous_run_untouched(tmp_path, venue, monkeypatch):
    market, book = venue
    out = tmp_path / "out"
    R.run(market, book, out, R.Options(shock={"BTC": -0.2}), engine=StandInEngine())
    before = _snapshot(out)
    written = []

    def write_then_interrupt(table, path):
        if len(written) == 3:  # the 4th table: half a file under its temporary name, then Ctrl-C
            def partial(tmp):
                Path(tmp).write_bytes(b"PAR1 half a parquet file")
                raise KeyboardInterrupt
            return atomic_write(path, partial)
        written.append(path)
        return write_parquet(table, path)

    monkeypatch.setattr(R, "write_parquet", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        R.run(market, book, out, R.Options(shock={"BTC": -0.3}), engine=StandInEngine())
    assert len(written) == 3
    assert _snapshot(out) == before  # the earlier run, byte for byte; no partial, no staging directory


@pytest.mark.parametrize("stage", ["compute", "report"])
def test_interrupted_run_writes_nothing(tmp_path, venue, monkeypatch, stage):
    market, book = venue
    out = tmp_path / "fresh" / "out"

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    if stage == "compute":  # a step function interrupted after earlier steps computed their tables
        steps = [dataclasses.replace(s, compute=interrupt) if s.name == "stress" else s for s in R.STEPS]
    else:                   # after every table was written, while the report renders
        steps = None
        monkeypatch.setattr(R.report, "render", interrupt)
    with pytest.raises(KeyboardInterrupt):
        R.run(market, book, out, engine=StandInEngine(), steps=steps)
    assert not out.exists()
    assert list((tmp_path / "fresh").iterdir()) == []


def test_cli_ctrl_c_exits_130_and_writes_nothing(tmp_path, venue_dir, monkeypatch, capsys):
    def interrupt(ctx):
        raise KeyboardInterrupt
    steps = tuple(dataclasses.replace(s, compute=interrupt) if s.name == "position_risk" else s for s in R.STEPS)
    monkeypatch.setattr(R, "STEPS", steps)
    assert main(["run", str(venue_dir), "--out", str(tmp_path / "out"), "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_input_found_by_a_step_writes_nothing(tmp_path, venue, venue_dir, monkeypatch, capsys):
    def reject(ctx):
        raise InputError("positions", "quantity", "too large for this step")
    steps = tuple(dataclasses.replace(s, compute=reject) if s.name == "position_risk" else s for s in R.STEPS)
    monkeypatch.setattr(R, "STEPS", steps)
    assert main(["run", str(venue_dir), "--out", str(tmp_path / "out")]) == 2
    assert "bad input: positions.quantity: too large for this step" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_stale_outputs_of_an_earlier_run_are_removed(tmp_path, venue):
    market, book = venue
    out = tmp_path / "out"
    R.run(market, book, out, R.Options(shock={"BTC": -0.2}), engine=StandInEngine())
    assert (out / "cascade_rounds.parquet").exists()
    (out / "notes.txt").write_text("mine")  # not a fastrisk output: left alone
    result = R.run(market, book, out, engine=StandInEngine())
    assert result.summary["steps"]["cascade"] == "not requested"
    assert not (out / "cascade_rounds.parquet").exists() and not (out / "contagion_summary.parquet").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "stress_accounts.parquet").exists()


def test_without_matplotlib_tables_and_summary_are_still_written(tmp_path, venue_dir):
    out = tmp_path / "out"
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # makes `import matplotlib` raise ImportError
            "from fastrisk.cli import main\n"
            f"sys.exit(main(['run', {str(venue_dir)!r}, '--out', {str(out)!r}, '--quiet']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'fastrisk[report]'" in done.stdout
    assert (out / "account_risk.parquet").exists() and not (out / "report.html").exists()
    summary = _strict_json(out / "summary.json")
    assert summary["report"] is None and "matplotlib" in summary["report_note"]


# --------------------------------------------------------------------------------------------- shocks and the CLI
def test_parse_shock():
    assert R.parse_shock(["BTC=-0.2", "ETH=-10%", "SOL=+0.05"]) == {"BTC": -0.2, "ETH": -0.1, "SOL": 0.05}
    for bad in ("BTC", "BTC=", "=0.1", "BTC=-1", "BTC=nan", "BTC=x"):
        with pytest.raises(InputError, match="shock"):
            R.parse_shock([bad])
    with pytest.raises(InputError, match="at most one"):
        R.parse_shock(["BTC=0.1", "BTC=0.2"])


def test_shock_errors_exit_2_before_reading(tmp_path, venue_dir, capsys):
    assert main(["run", str(venue_dir), "--out", str(tmp_path / "a"), "--shock", "BTC=-150%"]) == 2
    assert "shock" in capsys.readouterr().err
    assert main(["run", str(venue_dir), "--out", str(tmp_path / "b"), "--shock", "NOPE=-0.2"]) == 2
    err = capsys.readouterr().err
    assert "shock.underlying: must be one of underlyings.underlying" in err and "'NOPE'" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cascade_subcommand_prints_the_path_and_writes_with_out(tmp_path, venue_dir, capsys):
    assert main(["cascade", str(venue_dir), "--shock", "BTC=-0.2", "--insurance-fund", "250000", "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    market, book = fr.Market.from_dir(venue_dir), fr.Book.from_dir(venue_dir)
    expected = fr.cascade(market, book, {"BTC": -0.2}, insurance_fund=250000.0)
    assert printed == fr.liquidation_cascade.format_rounds(expected).splitlines()  # the cascade's own table
    assert printed[0].split()[:2] == ["round", "accounts"] and "BTC" in printed[0]
    assert "(-20.00%)" in printed[2]  # round 0: just the shock
    out = tmp_path / "out"
    assert main(["cascade", str(venue_dir), "--shock", "BTC=-0.2", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} == {"account_risk.parquet", "cascade_rounds.parquet",
                                               "cascade_accounts.parquet", "summary.json", "report.html"}
    assert 'id="cascade"' in (out / "report.html").read_text()


def test_run_with_shock_includes_the_cascade(tmp_path, venue_dir, capsys):
    out = tmp_path / "out"
    assert main(["run", str(venue_dir), "--out", str(out), "--shock", "BTC=-0.2", "--impact", "linear",
                 "--max-rounds", "3", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"]["cascade"] == summary["steps"]["contagion"] == "done"
    assert summary["cascade"]["rounds"] <= 3
    assert summary["parameters"]["shock"] == {"BTC": -0.2} and summary["parameters"]["impact"] == "linear"
    assert (out / "cascade_rounds.parquet").exists() and 'id="cascade"' in (out / "report.html").read_text()


def test_demo_points_at_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--accounts", "1500", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1] == f"report: {(out / 'report.html').resolve().as_uri()}"
    assert (out / "report.html").exists() and (out / "summary.json").exists()


# --------------------------------------------------------------------------------------------- progress
class _Terminal:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_lines_on_a_terminal_only(venue):
    market, book = venue
    term = _Terminal()
    steps = Steps(stream=term)
    R.run(market, book, None, progress=steps, engine=StandInEngine())
    final = [line.rsplit("\r\x1b[K", 1)[-1] for line in term.text.split("\n") if line]
    account_line = next(line for line in final if line.lstrip().startswith("account risk"))
    assert f"{book.n_accounts:,}/{book.n_accounts:,} accounts" in account_line and account_line.endswith(" s")
    assert any(line.lstrip().startswith("position risk") and "positions" in line for line in final)
    assert set(steps.timings) >= {"account_risk", "position_risk", "stress", "write"}

    quiet, pipe = _Terminal(), _Terminal()
    pipe.isatty = lambda: False
    for stream, quiet_flag in ((quiet, True), (pipe, False)):
        R.run(market, book, None, progress=Steps(quiet=quiet_flag, stream=stream), engine=StandInEngine())
        assert stream.text == ""


def test_progress_counts_advances_and_marks_interruptions():
    term = _Terminal()
    steps = Steps(stream=term)
    with steps.step("parts", "partitions", total=4, unit="partitions") as p:
        p.advance(3)
        assert p.done == 3
    assert "4/4 partitions" in term.text.splitlines()[-1]
    with pytest.raises(KeyboardInterrupt):
        with steps.step("slow", "slow step", total=10, unit="accounts") as p:
            p(2)  # a Progress is also a plain callback
            raise KeyboardInterrupt
    assert term.text.rstrip().endswith("(interrupted)") and "2/10 accounts" in term.text
    assert set(steps.timings) == {"parts"}
