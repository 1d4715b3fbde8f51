"""Every kernel's compilation settings, in one place.

- ``cache=True``: a second process loads machine code from ``__pycache__`` instead of compiling.
- ``fastmath=False``: money is summed in the order written; no reassociation, no flush-to-zero.
- ``error_model="numpy"``: division by zero yields inf/nan (handled explicitly) instead of a Python
  exception check on every division in the hot loop.
"""

from __future__ import annotations

import numba

_SETTINGS = dict(nopython=True, nogil=True, cache=True, fastmath=False, error_model="numpy")


def kernel(fn=None, *, parallel: bool = False):
    """Decorate a kernel; ``parallel=True`` enables ``prange`` over accounts or row chunks."""
    deco = numba.jit(parallel=parallel, **_SETTINGS)
    return deco if fn is None else deco(fn)


def inline(fn):
    """A helper called from kernels, inlined at Numba IR level: helpers take tuples of arrays, and passing
    those by value on every call would cost more than the arithmetic they do."""
    return numba.jit(inline="always", **_SETTINGS)(fn)


def n_chunks(n_rows: int, min_rows: int = 1 << 16) -> int:
    """Row chunks for chunked parallel passes: enough to balance threads, few enough to merge cheaply.

    The count depends only on ``n_rows``, never on the thread count, so chunked results are identical
    whatever ``numba.set_num_threads`` says.
    """
    return max(1, min(256, n_rows // min_rows))
