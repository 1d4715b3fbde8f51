"""Compile the end-of-day job's later kernels in a second process while the first one works.

Kernels compile on their first call and are cached on disk (``cache=True``), so only the first run on a
machine pays: about a minute on 2 cores for the whole job, one kernel after another on one core, while the
job's first steps (generating or reading the venue, account risk) leave the other core mostly idle. When
the cache is cold, :func:`compiling_ahead` starts ``python -m fastrisk.warmup``, which runs the steps the job
computes last (``run.COMPUTED_LAST``: liquidation prices, cascade, contagion, the longest to compile) on a
tiny venue: their kernels are compiled and cached by the time the job reaches them, and the job loads them
from the cache instead of compiling. Both processes compile
from the same sources into the same cache; Numba writes cache files atomically, so the worst case is a
kernel compiled twice.

The tiny venue has the types of a real one (it comes from the same generator), so the cached signatures
are the ones the job asks for. Kernels that run serially below ~65k rows (``_jit.chunked``) compile their
serial copy here; those are the small ones, and the job compiles their parallel copy itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

WARMUP_ACCOUNTS = 300
SHOCK = {"BTC": -0.2}


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
    """Within the block, a background process compiles the later steps' kernels, if the cache is cold;
    stopped on exit if it is still running (its cache files are complete or absent, never partial).

    Yields ``ready()``, which returns once that process is done (None when there is none). The job calls it
    before its first later step, so that it loads those kernels from the cache rather than compiling them a
    second time on the other core while the warm-up finishes."""
    proc = None
    if cold():
        proc = subprocess.Popen([sys.executable, "-m", "fastrisk.warmup"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> None:
        proc.wait()

    try:
        yield ready if proc is not None else None
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()


def main() -> None:
    """Run the steps the job computes last once on a tiny venue, in the job's order."""
    import fastrisk as fr

    market, book = fr.generate.exchange(WARMUP_ACCOUNTS, seed=0)
    fr.liquidation_prices(market, book)
    fr.cascade(market, book, SHOCK)
    fr.contagion(market, book, SHOCK)


if __name__ == "__main__":  # pragma: no cover
    main()
