"""Validation and layout passes over large tables: one read of each column, parallel over row chunks.

Each check returns ``(count, rows)``: how many rows break the rule and the first (up to) five of them in
row order. Chunks are merged in order, so the rows reported never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import kernel

MAX_EXAMPLES = 5


@kernel
def _merge(counts, firsts):
    """Total count and first examples, merged in chunk order."""
    total = 0
    rows = np.empty(MAX_EXAMPLES, np.int64)
    k = 0
    for c in range(counts.shape[0]):
        total += counts[c]
        j = 0
        while k < MAX_EXAMPLES and j < min(counts[c], MAX_EXAMPLES):
            rows[k] = firsts[c, j]
            k += 1
            j += 1
    return total, rows[:k]


@kernel(parallel=True)
def range_violations(x, valid, lo, lo_inclusive, hi, hi_inclusive, finite, n_chunks):
    """Rows of ``x`` outside the interval (lo, hi) with the given closedness, or not finite.

    ``valid`` is an empty array (every row checked) or a uint8 mask: rows with 0 are null and skipped.
    NaN is never inside an interval, so it always counts as a violation.
    """
    n = x.shape[0]
    masked = valid.shape[0] > 0
    counts = np.zeros(n_chunks, np.int64)
    firsts = np.empty((n_chunks, MAX_EXAMPLES), np.int64)
    for c in prange(n_chunks):
        start = c * n // n_chunks
        stop = (c + 1) * n // n_chunks
        cnt = 0
        for r in range(start, stop):
            if masked and valid[r] == 0:
                continue
            v = np.float64(x[r])
            ok = (v >= lo) if lo_inclusive else (v > lo)
            ok = ok and ((v <= hi) if hi_inclusive else (v < hi))
            if finite:
                ok = ok and np.isfinite(v)
            if not ok:
                if cnt < MAX_EXAMPLES:
                    firsts[c, cnt] = r
                cnt += 1
        counts[c] = cnt
    return _merge(counts, firsts)


@kernel(parallel=True)
def key_order(account, instrument, isolated, n_chunks):
    """Is the position key (account_id, instrument_id, isolated) strictly increasing row by row?

    Returns ``(n_descending, n_duplicate, duplicate_rows)``: rows whose key is below the previous one,
    and rows equal to the previous one (duplicates, meaningful only once the rows are sorted).
    """
    n = account.shape[0]
    desc = np.zeros(n_chunks, np.int64)
    dups = np.zeros(n_chunks, np.int64)
    firsts = np.empty((n_chunks, MAX_EXAMPLES), np.int64)
    for c in prange(n_chunks):
        start = max(1, c * n // n_chunks)
        stop = (c + 1) * n // n_chunks
        nd = 0
        nu = 0
        for r in range(start, stop):
            a0, a1 = account[r - 1], account[r]
            if a1 != a0:
                if a1 < a0:
                    nd += 1
                continue
            i0, i1 = instrument[r - 1], instrument[r]
            if i1 != i0:
                if i1 < i0:
                    nd += 1
                continue
            s0, s1 = isolated[r - 1], isolated[r]
            if s1 < s0:
                nd += 1
            elif s1 == s0:
                if nu < MAX_EXAMPLES:
                    firsts[c, nu] = r
                nu += 1
        desc[c] = nd
        dups[c] = nu
    total_dup, rows = _merge(dups, firsts)
    return desc.sum(), total_dup, rows


@kernel
def sort_within_accounts(order, account, instrument, isolated):
    """Insertion-sort each run of equal ``account[order]`` by (instrument, isolated), in place.

    Called after a stable sort by account: runs are a few positions long, so this is linear in practice.
    """
    n = order.shape[0]
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and account[order[stop]] == account[order[start]]:
            stop += 1
        for r in range(start + 1, stop):
            cur = order[r]
            j = r - 1
            while j >= start and (instrument[order[j]] > instrument[cur] or (
                    instrument[order[j]] == instrument[cur] and isolated[order[j]] > isolated[cur])):
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = cur
        start = stop


@kernel
def union_sorted_unique(a, b):
    """Sorted unique values of two sorted arrays (with repeats), by one merge pass."""
    out = np.empty(a.shape[0] + b.shape[0], np.int64)
    i = 0
    j = 0
    k = 0
    while i < a.shape[0] or j < b.shape[0]:
        if j >= b.shape[0] or (i < a.shape[0] and a[i] <= b[j]):
            v = a[i]
        else:
            v = b[j]
        if k == 0 or out[k - 1] != v:
            out[k] = v
            k += 1
        while i < a.shape[0] and a[i] == v:
            i += 1
        while j < b.shape[0] and b[j] == v:
            j += 1
    return out[:k]


@kernel
def segment_offsets(keys, accounts):
    """Offsets of each account's rows in ``keys`` (sorted, every key in ``accounts``): rows of
    ``accounts[a]`` are ``offsets[a]:offsets[a+1]``."""
    offsets = np.empty(accounts.shape[0] + 1, np.int64)
    r = 0
    for a in range(accounts.shape[0]):
        offsets[a] = r
        while r < keys.shape[0] and keys[r] == accounts[a]:
            r += 1
    offsets[accounts.shape[0]] = r
    return offsets


@kernel(parallel=True)
def lookup_codes(values, table, n_chunks):
    """``table[values[r]]`` with -1 for values outside ``table``; counts and first rows of the misses."""
    n = values.shape[0]
    out = np.empty(n, np.int32)
    counts = np.zeros(n_chunks, np.int64)
    firsts = np.empty((n_chunks, MAX_EXAMPLES), np.int64)
    size = table.shape[0]
    for c in prange(n_chunks):
        start = c * n // n_chunks
        stop = (c + 1) * n // n_chunks
        cnt = 0
        for r in range(start, stop):
            v = values[r]
            code = table[v] if 0 <= v < size else -1
            out[r] = code
            if code < 0:
                if cnt < MAX_EXAMPLES:
                    firsts[c, cnt] = r
                cnt += 1
        counts[c] = cnt
    total, rows = _merge(counts, firsts)
    return out, total, rows


@kernel(parallel=True)
def positive_where(values, group, flagged, n_chunks):
    """Rows with ``flagged[group[r]]`` set whose value is not > 0 (e.g. futures' entry prices)."""
    n = values.shape[0]
    counts = np.zeros(n_chunks, np.int64)
    firsts = np.empty((n_chunks, MAX_EXAMPLES), np.int64)
    for c in prange(n_chunks):
        start = c * n // n_chunks
        stop = (c + 1) * n // n_chunks
        cnt = 0
        for r in range(start, stop):
            if flagged[group[r]] and not values[r] > 0.0:
                if cnt < MAX_EXAMPLES:
                    firsts[c, cnt] = r
                cnt += 1
        counts[c] = cnt
    return _merge(counts, firsts)


@kernel
def duplicates_in_segments(offsets, codes):
    """Rows whose code already occurred earlier in the same segment (segments are a few rows long)."""
    cnt = 0
    rows = np.empty(MAX_EXAMPLES, np.int64)
    for s in range(offsets.shape[0] - 1):
        for r in range(offsets[s] + 1, offsets[s + 1]):
            for q in range(offsets[s], r):
                if codes[q] == codes[r]:
                    if cnt < MAX_EXAMPLES:
                        rows[cnt] = r
                    cnt += 1
                    break
    return cnt, rows[:min(cnt, MAX_EXAMPLES)]
