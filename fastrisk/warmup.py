"""Compile the end-of-day job's later kernels in other processes while the first one works.

Kernels compile on their first call and are cached on disk (``cache=True``), so only the first run on a
machine pays: about two minutes of CPU for the whole job, one kernel after another in a process (Numba
compiles under a lock), while the job's first steps (generating or reading the venue, account risk) leave
the other core mostly idle. When the cache is cold, :func:`compiling_ahead` starts ``python -m
fastrisk.warmup STEP...`` once per group of ``GROUPS``, which run the steps the job computes last
(``run.COMPUTED_LAST``: liquidation prices, cascade, contagion, the longest to compile) on a tiny venue:
their kernels are compiled and cached by the time the job reaches them, and the job loads them from the
cache instead of compiling. Two groups of about equal compile time (liquidation prices 42 s alone; the
cascade and contagion 34 s) keep both cores compiling once the job's own steps are done: one warm-up
process for all three left the job waiting 67 s on one core (a cold ``fastrisk demo``: 118 s; 92 s now). All
processes compile from the same sources into the same cache; Numba writes cache files atomically, so the
worst case is a kernel compiled twice.

The tiny venue has the types of a real one (it comes from the same generator), so the cached signatures
are the ones the job asks for. Kernels that run serially below ~65k rows (``_jit.chunked``) compile their
serial copy here; those are mostly small ones, and the job compiles their parallel copy itself. The
exception is the cascade's ``check_accounts``, whose parallel copy is compiled here too (``_parallel_copies``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

WARMUP_ACCOUNTS = 300
SHOCK = {"BTC": -0.2}
# The steps each warm-up process runs, in the job's order (together: run.COMPUTED_LAST).
GROUPS = (("liquidation_prices",), ("cascade", "contagion"))


def cold() -> bool:
    """Does the kernel cache lack the job's last kernel? (It is written last, so its presence means a warm
    cache.) Reads a Numba internal; if that moves, assume cold: the warm-up is then merely redundant."""
    from .kernels.cascade import contagion_accounts

    try:
        return not os.path.exists(contagion_accounts._cache._cache_file._index_path)
    except AttributeError:
        return True


@contextmanager
def compiling_ahead():
    """Within the block, background processes compile the later steps' kernels (one per group of ``GROUPS``),
    if the cache is cold; stopped on exit if still running (their cache files are complete or absent, never
    partial).

    Yields ``ready()``, which returns once they are done (None when there are none). The job calls it before
    its first later step, so that it loads those kernels from the cache rather than compiling them a second
    time while the warm-up finishes."""
    procs = []
    if cold():
        procs = [subprocess.Popen([sys.executable, "-m", "fastrisk.warmup", *group], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for group in GROUPS]

    def ready() -> None:
        for proc in procs:
            proc.wait()

    try:
        yield ready if procs else None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()


def main(steps=None) -> None:
    """Run ``steps`` (names of ``run.COMPUTED_LAST``; default all of them) once on a tiny venue, in the job's
    order."""
    import fastrisk as fr

    from .kernels.cascade import check_accounts
    from .run import COMPUTED_LAST

    steps = COMPUTED_LAST if not steps else steps
    unknown = set(steps) - set(COMPUTED_LAST)
    if unknown:
        raise ValueError(f"not a step the job computes last: {sorted(unknown)}")
    market, book = fr.generate.exchange(WARMUP_ACCOUNTS, seed=0)
    calls = {"liquidation_prices": lambda: fr.liquidation_prices(market, book),
             "cascade": lambda: fr.cascade(market, book, SHOCK),
             "contagion": lambda: fr.contagion(market, book, SHOCK)}
    for name in COMPUTED_LAST:
        if name in steps:
            calls[name]()
            if name == "cascade":
                _parallel_copies(check_accounts)


def _parallel_copies(kernel) -> None:
    """Compile the parallel copy of a ``_jit.chunked`` kernel for the argument types its serial copy ran with:
    the tiny venue runs it serially (one chunk), the job at its size in parallel. (The cascade's
    ``check_accounts``, uncompiled, cost a cold ``fastrisk demo`` 4 s in its cascade step.)"""
    for signature in kernel.serial.signatures:
        kernel.parallel.compile(signature)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
