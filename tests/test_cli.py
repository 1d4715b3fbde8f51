"""The command line, checked through its outputs and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import fastrisk as fr
from fastrisk.cli import main


def test_demo_writes_results_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--accounts", "3000", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "accounts by status" in printed and "riskiest accounts" in printed
    accounts = pq.read_table(out / "account_risk.parquet")
    positions = pq.read_table(out / "position_risk.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert accounts.num_rows == summary["accounts"] >= 3000 * 0.99
    assert positions.num_rows == summary["rows"]["positions"]
    assert sum(summary["accounts_by_status"].values()) == accounts.num_rows
    assert summary["totals_usd"]["equity"] == pytest.approx(pc.sum(accounts["equity"]).as_py(), rel=1e-12)
    assert not list(out.glob(".*.tmp"))


def test_generate_then_run_matches_the_api(tmp_path, capsys):
    venue, out = tmp_path / "venue", tmp_path / "out"
    assert main(["generate", str(venue), "--accounts", "2000", "--seed", "4", "--quiet"]) == 0
    assert main(["validate", str(venue)]) == 0
    assert main(["run", str(venue), "--out", str(out), "--quiet", "--json"]) == 0
    market, book = fr.Market.from_dir(venue), fr.Book.from_dir(venue)
    assert market.as_of is not None
    expected = fr.account_risk(market, book)
    assert pq.read_table(out / "account_risk.parquet").equals(expected)
    direct, _ = fr.generate.exchange(2000, seed=4)
    assert fr.account_risk(direct, book).equals(expected)


def test_generate_partitioned_writes_the_distributed_layout(tmp_path, capsys):
    from fastrisk.distributed import PartitionedBook

    venue = tmp_path / "venue"
    assert main(["generate", str(venue), "--accounts", "600", "--seed", "4", "--quiet"]) == 0
    whole = fr.Book.from_dir(venue)
    assert main(["generate", str(venue), "--accounts", "600", "--seed", "4", "--partitions", "3",
                 "--partition-by", "hash", "--quiet"]) == 0
    assert "in 3 partitions by hash" in capsys.readouterr().out
    assert not (venue / "positions.parquet").exists()  # else Book.from_dir would read the old file
    parts = PartitionedBook.open(venue)
    assert parts.parts == ("part-00000", "part-00001", "part-00002")
    assert sum(parts.book(k).n_accounts for k in range(3)) == whole.n_accounts
    market = fr.Market.from_dir(venue)
    assert fr.account_risk(market, fr.Book.from_dir(venue)).equals(fr.account_risk(market, whole))
    assert main(["validate", str(venue)]) == 0
    assert "in 3 partitions" in capsys.readouterr().out
    # An account's balances moved into another partition: the layout is wrong, validate says so.
    balances = pq.read_table(parts.files(0)[1])
    moved = balances.slice(0, 1)
    pq.write_table(balances.slice(1), parts.files(0)[1])
    pq.write_table(pa.concat_tables([pq.read_table(parts.files(1)[1]), moved]), parts.files(1)[1])
    assert main(["validate", str(venue)]) == 2
    assert "in exactly one partition" in capsys.readouterr().err


def test_run_on_a_local_cluster_writes_the_single_machine_tables(tmp_path, capsys):
    venue, single, spread = tmp_path / "venue", tmp_path / "single", tmp_path / "spread"
    assert main(["generate", str(venue), "--accounts", "800", "--seed", "5", "--partitions", "3", "--quiet"]) == 0
    job = ["--shock", "BTC=-0.3", "--impact", "linear", "--quiet", "--json"]
    assert main(["run", str(venue), "--out", str(single), *job]) == 0
    assert main(["run", str(venue), "--out", str(spread), "--scheduler", "local", "--workers", "2", *job]) == 0
    names = sorted(f.name for f in single.glob("*.parquet"))
    assert "cascade_rounds.parquet" in names and names == sorted(f.name for f in spread.glob("*.parquet"))
    for name in names:
        a, b = pq.read_table(single / name), pq.read_table(spread / name)
        if name in ("stress_scenarios.parquet", "contagion_summary.parquet"):  # venue totals: to 1e-12 (SPEC §7)
            for column in a.column_names:
                x, y = a.column(column).to_pylist(), b.column(column).to_pylist()
                assert x == pytest.approx(y, rel=1e-12, abs=0.0) if isinstance(x[0], float) else x == y, column
        else:
            assert a.equals(b), name
    summary = json.loads((spread / "summary.json").read_text())
    assert summary["rows"]["positions"] == json.loads((single / "summary.json").read_text())["rows"]["positions"]


def test_run_on_a_cluster_needs_a_partitioned_book(tmp_path, capsys):
    venue = tmp_path / "venue"
    assert main(["generate", str(venue), "--accounts", "300", "--quiet"]) == 0
    assert main(["run", str(venue), "--scheduler", "local", "--quiet"]) == 2
    assert "positions/ directory" in capsys.readouterr().err


def test_run_json_prints_the_summary(tmp_path, capsys):
    venue = tmp_path / "venue"
    fr.generate.write(fr.generate.exchange_tables(500, seed=2), venue)
    capsys.readouterr()
    assert main(["run", str(venue), "--out", str(tmp_path / "out"), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["positions"] == pq.read_table(venue / "positions.parquet").num_rows


def test_bad_directory_exits_2_with_a_clear_message(tmp_path, capsys):
    venue = tmp_path / "venue"
    tables = fr.generate.exchange_tables(300, seed=3)
    q = tables["positions"].column("quantity").to_pylist()
    q[5] = float("nan")
    tables["positions"] = tables["positions"].set_column(
        tables["positions"].column_names.index("quantity"), "quantity", __import__("pyarrow").array(q))
    fr.generate.write(tables, venue)
    assert main(["run", str(venue), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "positions.quantity: must be finite" in err and "row 5" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["validate", str(tmp_path / "nowhere")]) == 2


def test_bad_parameter_exits_2_with_a_clear_message(tmp_path, capsys):
    venue = tmp_path / "venue"
    fr.generate.write(fr.generate.exchange_tables(100, seed=3), venue)
    assert main(["run", str(venue), "--out", str(tmp_path / "out"), "--margin-call-ratio", "nan"]) == 2
    err = capsys.readouterr().err
    assert "account_risk.margin_call_ratio: must be finite and > 0" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "fastrisk", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout and "run" in done.stdout


def test_help_compiles_nothing():
    code = ("import sys, fastrisk.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('numba' in sys.modules, 'pyarrow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["False", "False"]
