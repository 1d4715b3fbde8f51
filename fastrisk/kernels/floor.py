"""The memory-read floor: one parallel pass that reads every input column once and does nothing else.

No risk computation can be faster than reading its inputs; benchmarks report times as multiples of this.
The pass folds each row's bits with XOR and OR, which LLVM vectorises: a float sum would be a chain of
dependent additions (about 4 cycles per row without reassociation), slower than memory on this hardware:
the floor would then measure that latency instead of the reads.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import chunked, index


@chunked
def read_positions(account_id, instrument_id, quantity, entry_price, isolated_margin, n_chunks):
    n = quantity.shape[0]
    qty, entry, iso = quantity.view(np.uint64), entry_price.view(np.uint64), isolated_margin.view(np.uint64)
    partial = np.zeros(n_chunks, np.uint64)
    for c in prange(n_chunks):
        s = np.uint64(0)
        for r in range(index(c * n // n_chunks), index((c + 1) * n // n_chunks)):
            s |= np.uint64(account_id[r]) ^ np.uint64(instrument_id[r]) ^ qty[r] ^ entry[r] ^ iso[r]
        partial[c] = s
    return partial.sum()


@chunked
def read_balances(account_id, asset, amount, n_chunks):
    n = amount.shape[0]
    amt = amount.view(np.uint64)
    partial = np.zeros(n_chunks, np.uint64)
    for c in prange(n_chunks):
        s = np.uint64(0)
        for r in range(index(c * n // n_chunks), index((c + 1) * n // n_chunks)):
            s |= np.uint64(account_id[r]) ^ np.uint64(asset[r]) ^ amt[r]
        partial[c] = s
    return partial.sum()
