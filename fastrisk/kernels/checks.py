"""Validation and layout passes over large tables.

A rule is checked in two steps: a branch-free count over the whole column (parallel over row chunks
for large tables, serial for small ones, where waking threads costs more than the work), and only when
that count is not zero, a serial scan for the first offending rows. Valid input, the common case, pays
one streaming read per column; the rows reported never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import chunked, inline, kernel, n_chunks

MAX_EXAMPLES = 5


def violations(n_rows: int, count, first_rows, *args):
    """``(count, first rows)`` of one rule: ``count(*args, n_chunks)`` counts the offending rows,
    ``first_rows(*args, limit)`` finds the first ones in row order."""
    total = int(count(*args, n_chunks(n_rows)))
    rows = first_rows(*args, MAX_EXAMPLES) if total else np.empty(0, np.int64)
    return total, rows


# ----------------------------------------------------------------------------- numeric bounds [lo, hi]
# Open bounds and finiteness are folded into closed ones by the caller (nextafter, +-max float); NaN
# fails both comparisons, so it is always outside.

@inline
def _outside(x, valid, lo, hi, start, stop):
    cnt = 0
    if valid.shape[0] == 0:
        for r in range(start, stop):
            v = np.float64(x[r])
            cnt += not ((v >= lo) & (v <= hi))
    else:
        for r in range(start, stop):
            v = np.float64(x[r])
            cnt += (valid[r] != 0) & (not ((v >= lo) & (v <= hi)))
    return cnt


@chunked
def outside(x, valid, lo, hi, k):
    n = x.shape[0]
    total = 0
    for c in prange(k):
        total += _outside(x, valid, lo, hi, c * n // k, (c + 1) * n // k)
    return total


@kernel
def outside_rows(x, valid, lo, hi, limit):
    rows = np.empty(limit, np.int64)
    k = 0
    for r in range(x.shape[0]):
        if k == limit:
            break
        if valid.shape[0] > 0 and valid[r] == 0:
            continue
        v = np.float64(x[r])
        if not ((v >= lo) & (v <= hi)):
            rows[k] = r
            k += 1
    return rows[:k]


# ------------------------------------------------------------------- positive where a group is flagged

@inline
def _not_positive(values, group, flagged, start, stop):
    cnt = 0
    for r in range(start, stop):
        cnt += (flagged[group[r]] != 0) & (not (values[r] > 0.0))
    return cnt


@chunked
def not_positive(values, group, flagged, k):
    n = values.shape[0]
    total = 0
    for c in prange(k):
        total += _not_positive(values, group, flagged, c * n // k, (c + 1) * n // k)
    return total


@kernel
def not_positive_rows(values, group, flagged, limit):
    rows = np.empty(limit, np.int64)
    k = 0
    for r in range(values.shape[0]):
        if k == limit:
            break
        if flagged[group[r]] != 0 and not values[r] > 0.0:
            rows[k] = r
            k += 1
    return rows[:k]


# --------------------------------------------------------------------------- codes through a lookup

@chunked
def lookup(values, table, k):
    """``table[values[r]]``, -1 where the value is outside the table; and the number of -1s."""
    n = values.shape[0]
    out = np.empty(n, np.int32)
    size = table.shape[0]
    missing = 0
    for c in prange(k):
        m = 0
        for r in range(c * n // k, (c + 1) * n // k):
            v = values[r]
            code = table[min(max(v, 0), size - 1)] if size > 0 else -1
            code = code if (v >= 0) & (v < size) else -1
            out[r] = code
            m += code < 0
        missing += m
    return out, missing


@kernel
def negative_rows(codes, limit):
    rows = np.empty(limit, np.int64)
    k = 0
    for r in range(codes.shape[0]):
        if k == limit:
            break
        if codes[r] < 0:
            rows[k] = r
            k += 1
    return rows[:k]


# ----------------------------------------------------------------------- position key order and layout

@inline
def _key_not_increasing(account, instrument, isolated, start, stop):
    cnt = 0
    for r in range(max(start, 1), stop):
        a0, a1 = account[r - 1], account[r]
        i0, i1 = instrument[r - 1], instrument[r]
        ok = (a1 > a0) | ((a1 == a0) & ((i1 > i0) | ((i1 == i0) & (isolated[r] > isolated[r - 1]))))
        cnt += not ok
    return cnt


@chunked
def key_not_increasing(account, instrument, isolated, k):
    """Rows whose (account_id, instrument_id, isolated) key is not above the previous row's."""
    n = account.shape[0]
    total = 0
    for c in prange(k):
        total += _key_not_increasing(account, instrument, isolated, c * n // k, (c + 1) * n // k)
    return total


@kernel
def duplicate_key_rows(account, instrument, isolated, limit):
    """Rows equal to the previous one in a sorted key: (count, first rows)."""
    rows = np.empty(limit, np.int64)
    cnt = 0
    for r in range(1, account.shape[0]):
        if account[r] == account[r - 1] and instrument[r] == instrument[r - 1] and isolated[r] == isolated[r - 1]:
            if cnt < limit:
                rows[cnt] = r
            cnt += 1
    return cnt, rows[:min(cnt, limit)]


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
def merge_accounts(pos_account, bal_account):
    """The sorted union of two sorted account columns and each one's segment offsets, in one merge pass:
    account ``a`` owns positions ``pos_start[a]:pos_start[a+1]`` and balances ``bal_start[a]:bal_start[a+1]``."""
    n_p, n_b = pos_account.shape[0], bal_account.shape[0]
    accounts = np.empty(n_p + n_b, np.int64)
    pos_start = np.empty(n_p + n_b + 1, np.int64)
    bal_start = np.empty(n_p + n_b + 1, np.int64)
    i = 0
    j = 0
    k = 0
    while i < n_p or j < n_b:
        if j >= n_b or (i < n_p and pos_account[i] <= bal_account[j]):
            v = pos_account[i]
        else:
            v = bal_account[j]
        accounts[k] = v
        pos_start[k] = i
        bal_start[k] = j
        while i < n_p and pos_account[i] == v:
            i += 1
        while j < n_b and bal_account[j] == v:
            j += 1
        k += 1
    pos_start[k] = n_p
    bal_start[k] = n_b
    return accounts[:k].copy(), pos_start[:k + 1].copy(), bal_start[:k + 1].copy()


@chunked
def unpack_bits(bitmap, offset, n, k):
    """An Arrow validity bitmap (LSB first, starting at bit ``offset``) as one uint8 per row."""
    out = np.empty(n, np.uint8)
    for c in prange(k):
        for r in range(c * n // k, (c + 1) * n // k):
            b = r + offset
            out[r] = (bitmap[b >> 3] >> (b & 7)) & 1
    return out


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
