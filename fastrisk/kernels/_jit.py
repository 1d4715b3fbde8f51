"""Every kernel's compilation settings, in one place.

- ``cache=True``: a second process loads machine code from ``__pycache__`` instead of compiling.
- ``fastmath=False``: money is summed in the order written; no reassociation, no flush-to-zero.
- ``error_model="numpy"``: division by zero yields inf/nan (handled explicitly) instead of a Python
  exception check on every division in the hot loop.
"""

from __future__ import annotations

import types

import numba
import numpy as np

_SETTINGS = dict(nopython=True, nogil=True, cache=True, fastmath=False, error_model="numpy")


def kernel(fn=None, *, parallel: bool = False, nrt: bool = True):
    """Decorate a kernel; ``parallel=True`` enables ``prange`` over accounts or row chunks.

    ``nrt=False`` compiles without Numba's reference counting, for a function that allocates nothing but
    is called with many arrays: unpacking a tuple of arrays inside a loop otherwise costs an atomic
    increment and decrement per array and iteration, which can cost more than the arithmetic.
    """
    deco = numba.jit(parallel=parallel, _nrt=nrt, **_SETTINGS)
    return deco if fn is None else deco(fn)


def chunked(fn=None, *, nrt: bool = True):
    """A kernel whose ``prange`` runs over row chunks, the chunk count being its last argument.

    Compiled twice, parallel and serial (``prange`` is a plain ``range`` there), and run serially when
    there is one chunk: for a small table, waking the thread pool costs more than the work. The serial
    copy has its own name so that the two never share a cache entry. ``nrt``: as in ``kernel``.
    """
    if fn is None:
        return lambda f: chunked(f, nrt=nrt)
    parallel = numba.jit(parallel=True, _nrt=nrt, **_SETTINGS)(fn)
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    serial = numba.jit(_nrt=nrt, **_SETTINGS)(twin)

    def run(*args):
        return (serial if args[-1] == 1 else parallel)(*args)

    run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    run.parallel, run.serial = parallel, serial
    return run


def helper(fn):
    """A larger function called from several kernels (a per-account pass), compiled once on its own; LLVM
    inlines it where that pays. Where ``inline`` would copy it, and all it inlines, into every call site and
    multiply compile time, this keeps the first run on a machine short.

    Compiled without reference counting: helpers take tuples of arrays and allocate nothing, and unpacking
    those tuples would otherwise cost an atomic increment and decrement per array and call.
    """
    return numba.jit(_nrt=False, **_SETTINGS)(fn)


def inline(fn):
    """A helper on a hot path (per position, per scenario), inlined at Numba IR level into each caller:
    called with tuples of arrays, a real call would cost more than its arithmetic. IR inlining recompiles
    the helper, and all it inlines, at every call site: large composites called from several kernels are
    ``helper`` s instead.
    """
    return numba.jit(inline="always", **_SETTINGS)(fn)


# An array index known to be >= 0. Numba wraps negative *signed* indices around, a compare and a select on
# every array access; an unsigned index skips that, which makes the per-position loops ~25 % faster. Only for
# indexing: arithmetic mixing it with signed integers gives floats.
index = np.uint64


def n_chunks(n_rows: int, min_rows: int = 1 << 16) -> int:
    """Row chunks for chunked parallel passes: enough to balance threads, few enough to merge cheaply.

    The count depends only on ``n_rows``, never on the thread count, so chunked results are identical
    whatever ``numba.set_num_threads`` says.
    """
    return max(1, min(256, n_rows // min_rows))
