"""The background warm-up of a first run: started only on a cold kernel cache, waited for before the steps
whose kernels it compiles, stopped with the job."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fastrisk as fr
from fastrisk import run, warmup
from fastrisk.progress import Steps


def _started(monkeypatch, command=None):
    """Record the processes compiling_ahead starts (running ``command`` instead of the warm-up, if given)."""
    started = []
    real = subprocess.Popen

    def popen(args, **kwargs):
        started.append(real(command or args, **kwargs))
        return started[-1]

    monkeypatch.setattr(warmup.subprocess, "Popen", popen)
    return started


def test_warm_cache_starts_nothing(monkeypatch):
    monkeypatch.setattr(warmup, "cold", lambda: False)
    started = _started(monkeypatch)
    with warmup.compiling_ahead() as ready:
        assert ready is None  # nothing to wait for: the job shows no compile step
    assert started == []


def test_cold_cache_starts_a_process_per_group_and_the_job_stops_them(monkeypatch):
    monkeypatch.setattr(warmup, "cold", lambda: True)
    started = _started(monkeypatch)
    with warmup.compiling_ahead():
        assert [p.args[3:] for p in started] == [list(g) for g in warmup.GROUPS]
        assert all(p.poll() is None for p in started)
    assert all(p.poll() is not None for p in started)  # stopped (or done) when the block ends, never left running


def test_groups_cover_the_steps_computed_last_once():
    assert sum(warmup.GROUPS, ()) == run.COMPUTED_LAST


def test_ready_waits_for_the_warmup(monkeypatch):
    monkeypatch.setattr(warmup, "cold", lambda: True)
    started = _started(monkeypatch, [sys.executable, "-c", "import time; time.sleep(0.5)"])
    with warmup.compiling_ahead() as ready:
        ready()
        assert [p.returncode for p in started] == [0] * len(warmup.GROUPS)  # finished on their own, not stopped


def test_the_job_waits_once_before_its_later_steps():
    market, book = fr.generate.exchange(300, seed=4)
    progress = Steps(quiet=True)
    calls = []
    run.run(market, book, None, progress=progress, compiled=lambda: calls.append(list(progress.timings)))
    assert len(calls) == 1
    done_before = calls[0]
    assert not set(done_before) & set(run.COMPUTED_LAST) and "account_risk" in done_before
    order = list(progress.timings)
    assert order[order.index("compile") + 1] in run.COMPUTED_LAST


def test_cache_is_warm_once_the_last_kernel_has_run():
    # If Numba's cache internals move, cold() says True forever (every first-run job would start a
    # redundant warm-up): this is where that shows.
    market, book = fr.generate.exchange(200, seed=3)
    fr.contagion(market, book, warmup.SHOCK)
    assert warmup.cold() is False


def test_warmup_runs_the_steps_the_job_computes_last(monkeypatch):
    called = []
    for name in ("liquidation_prices", "cascade", "contagion"):
        real = getattr(fr, name)
        monkeypatch.setattr(fr, name, lambda *a, _real=real, _name=name, **k: called.append(_name) or _real(*a, **k))
    warmup.main()
    assert tuple(called) == run.COMPUTED_LAST
    called.clear()
    warmup.main(["contagion", "liquidation_prices"])  # a group's steps, in the job's order
    assert called == ["liquidation_prices", "contagion"]
    with pytest.raises(ValueError, match="computes last"):
        warmup.main(["stress"])
