"""The background warm-up of a first run: started only on a cold kernel cache, stopped with the job."""

from __future__ import annotations

from fastrisk import run, warmup


def test_warm_cache_starts_nothing(monkeypatch):
    monkeypatch.setattr(warmup, "cold", lambda: False)
    with warmup.compiling_ahead() as proc:
        assert proc is None


def test_cold_cache_starts_a_process_and_the_job_stops_it(monkeypatch):
    monkeypatch.setattr(warmup, "cold", lambda: True)
    with warmup.compiling_ahead() as proc:
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None  # stopped (or done) when the block ends, never left running


def test_cache_is_warm_once_the_last_kernel_has_run():
    # If Numba's cache internals move, cold() says True forever (every first-run job would start a
    # redundant warm-up): this is where that shows.
    import fastrisk as fr

    market, book = fr.generate.exchange(200, seed=3)
    fr.contagion(market, book, warmup.SHOCK)
    assert warmup.cold() is False


def test_warmup_runs_the_steps_the_job_computes_last(monkeypatch):
    called = []
    import fastrisk as fr

    for name in ("liquidation_prices", "cascade", "contagion"):
        real = getattr(fr, name)
        monkeypatch.setattr(fr, name, lambda *a, _real=real, _name=name, **k: called.append(_name) or _real(*a, **k))
    warmup.main()
    assert tuple(called) == run.COMPUTED_LAST
