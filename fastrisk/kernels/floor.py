"""The memory-read floor: one parallel pass that reads every input column once and does nothing else.

No risk computation can be faster than reading its inputs; benchmarks report times as multiples of this.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import chunked, index


@chunked
def read_positions(account_id, instrument_id, quantity, entry_price, isolated_margin, n_chunks):
    n = quantity.shape[0]
    partial = np.zeros(n_chunks)
    for c in prange(n_chunks):
        s = 0.0
        for r in range(index(c * n // n_chunks), index((c + 1) * n // n_chunks)):
            s += account_id[r] + instrument_id[r] + quantity[r] + entry_price[r] + isolated_margin[r]
        partial[c] = s
    return partial.sum()


@chunked
def read_balances(account_id, asset, amount, n_chunks):
    n = amount.shape[0]
    partial = np.zeros(n_chunks)
    for c in prange(n_chunks):
        s = 0.0
        for r in range(index(c * n // n_chunks), index((c + 1) * n // n_chunks)):
            s += account_id[r] + asset[r] + amount[r]
        partial[c] = s
    return partial.sum()
