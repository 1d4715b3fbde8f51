"""Yardsticks for the benchmarks: the memory-read floor and the plain tiered sweep.

The floor is one parallel pass that reads every input column once and does nothing else. No risk
computation can be faster than reading its inputs; benchmarks report times as multiples of this. The pass
folds each row's bits with XOR and OR, which LLVM vectorises: a float sum would be a chain of dependent
additions (about 4 cycles per row without reassociation), slower than memory on this hardware: the floor
would then measure that latency instead of the reads.

The plain sweep is the smallest cross-margin computation: what the account kernel does for a book of cross
linear futures only. It measures what the account kernel's other cases (inverse futures, options, isolated
positions) cost on top of the arithmetic every account needs.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import chunked, index, kernel
from .margin import balance_usd, tier_margin


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


@kernel(parallel=True)
def plain_sweep(out, pos_start, pos_instrument, quantity, entry_price, bal_start, bal_asset, bal_amount, size,
                tier_first, tier_last, tiers, price, settle_px, asset_px, asset_cw, asset_bw):
    """``account_margin``'s ``(collateral, unrealized_pnl, initial_margin, maintenance_margin)`` [4, a] for a book
    whose every position is a cross linear future, by the same formulas summed in the same order; any other
    position is taken as one (a yardstick, not a result: the benchmark's venue has a few)."""
    cap, imf, mmf, amount = tiers
    for a in prange(pos_start.shape[0] - 1):
        upnl = 0.0
        im = 0.0
        mm = 0.0
        for p in range(index(pos_start[a]), index(pos_start[a + 1])):
            i = index(pos_instrument[p])
            q, px = quantity[p], settle_px[i]
            _, p_im, p_mm = tier_margin(abs(q) * size[i] * price[i], tier_first[i], tier_last[i], cap, imf, mmf,
                                        amount)
            upnl += q * size[i] * (price[i] - entry_price[p]) * px
            im += p_im * px
            mm += p_mm * px
        collateral = 0.0
        for b in range(index(bal_start[a]), index(bal_start[a + 1])):
            k = index(bal_asset[b])
            collateral += balance_usd(asset_px[k], bal_amount[b], asset_cw[k], asset_bw[k])
        out[0, a] = collateral
        out[1, a] = upnl
        out[2, a] = im
        out[3, a] = mm
