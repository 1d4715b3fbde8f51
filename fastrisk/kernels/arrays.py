"""Whole-array utilities for large per-account state."""

from __future__ import annotations

from numba import prange

from ._jit import chunked, index


@chunked
def fill(out, value, k):
    """``out[:] = value`` in row chunks: a memory-bound store that one core cannot saturate (eight 1M-account
    arrays of a cascade: 8.3 ms with NumPy's fill, one thread)."""
    n = out.shape[0]
    for c in prange(k):
        for r in range(index(c * n // k), index((c + 1) * n // k)):
            out[r] = value
