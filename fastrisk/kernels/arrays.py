"""Whole-array utilities for large per-account state."""

from __future__ import annotations

from numba import prange

from ._jit import kernel


@kernel(parallel=True, nrt=False)
def fill(out, value):
    """``out[:] = value`` in parallel: a memory-bound store that one core cannot saturate (eight 1M-account
    arrays of a cascade: 8.3 ms with NumPy's fill, one thread). Parallel at every size, not ``chunked``: the
    background warm-up (``fastrisk.warmup``) then compiles the copy a large venue runs."""
    for r in prange(out.shape[0]):
        out[r] = value
