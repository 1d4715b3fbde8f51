"""Validation and layout passes over large tables.

Large outputs are allocated by the callers (``tables.empty``: pages Arrow's pool already mapped) and
filled here: an allocation inside a parallel kernel pays a page fault per 4 KiB, serialised by the OS.

A rule is checked in two steps: a branch-free count over the whole column (parallel over row chunks
for large tables, serial for small ones, where waking threads costs more than the work), and only when
that count is not zero, a serial scan for the first offending rows. Valid input, the common case, pays
one streaming read per column; the rows reported never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import chunked, index, inline, kernel, n_chunks

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


# ------------------------------------------------------------------------ positions against the market

@chunked
def resolve_instruments(instrument_id, id_to_index, out, k):
    """Dense instrument rows of every position into ``out`` (-1 for unknown ids); returns how many are
    unknown."""
    n = instrument_id.shape[0]
    size = id_to_index.shape[0]
    unknown = np.zeros(k, np.int64)
    for c in prange(k):
        n_unknown = 0
        for r in range(index(c * n // k), index((c + 1) * n // k)):
            v = instrument_id[r]
            looked_up = id_to_index[index(min(max(v, 0), size - 1))]
            code = looked_up if (v >= 0) & (v < size) else -1
            out[r] = code
            n_unknown += code < 0
        unknown[c] = n_unknown
    return unknown.sum()


@chunked
def resolve_balance_assets(local_to_market, local_code, bal_start, out, k):
    """Market asset codes of every balance into ``out`` (-1 for names the market lacks), from the book's own
    codes, in one pass over the accounts' segments that also counts the rows whose asset already occurred in
    the same account. Returns ``(n_unknown, n_duplicate)``."""
    n = bal_start.shape[0] - 1
    unknown = np.zeros(k, np.int64)
    duplicate = np.zeros(k, np.int64)
    for c in prange(k):
        n_unknown = 0
        n_duplicate = 0
        for a in range(index(c * n // k), index((c + 1) * n // k)):
            first = index(bal_start[a])
            for r in range(first, index(bal_start[a + index(1)])):
                code = local_to_market[index(local_code[r])]
                out[r] = code
                n_unknown += code < 0
                n_duplicate += _seen_earlier(out, first, r)
        unknown[c] = n_unknown
        duplicate[c] = n_duplicate
    return unknown.sum(), duplicate.sum()


@kernel
def first_rows_where(flags, limit):
    """The first ``limit`` rows where ``flags`` is set, in row order."""
    rows = np.empty(limit, np.int64)
    k = 0
    for r in range(flags.shape[0]):
        if k == limit:
            break
        if flags[r]:
            rows[k] = r
            k += 1
    return rows[:k]


# ----------------------------------------------------------------------- position key order and layout

@inline
def _key_increases(account, instrument, isolated, q, r):
    """Is row r's (account_id, instrument_id, isolated) key above row q's? (branch-free)"""
    a0, a1 = account[q], account[r]
    i0, i1 = instrument[q], instrument[r]
    return (a1 > a0) | ((a1 == a0) & ((i1 > i0) | ((i1 == i0) & (isolated[r] > isolated[q]))))


@chunked
def key_not_increasing(account, instrument, isolated, k):
    """Rows whose (account_id, instrument_id, isolated) key is not above the previous row's."""
    n = account.shape[0]
    total = 0
    for c in prange(k):
        cnt = 0
        for r in range(index(max(c * n // k, 1)), index((c + 1) * n // k)):
            cnt += not _key_increases(account, instrument, isolated, r - index(1), r)
        total += cnt
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


@chunked
def take(values, order, out, k):
    """``out[r] = values[order[r]]``: a column put in the row order ``order``. Three times faster than
    NumPy's fancy indexing, which checks and wraps every index (0.5 s against 1.6 s for six columns of
    10M shuffled positions, single-thread)."""
    n = order.shape[0]
    for c in prange(k):
        for r in range(index(c * n // k), index((c + 1) * n // k)):
            out[r] = values[index(order[r])]


@kernel
def stable_order(keys):
    """The row order sorting int64 ``keys`` stably, as ``np.argsort(keys, kind="stable")``: an LSD radix sort
    on bytes, skipping the bytes every key shares (account ids spanning a million values take three
    passes). 5x faster than NumPy's stable sort (timsort) on 10M shuffled account ids.
    """
    n = keys.shape[0]
    flip = np.uint64(1) << np.uint64(63)  # signed order as unsigned order
    counts = np.zeros((8, 256), np.int64)
    order, rows = np.empty(n, np.int64), np.empty(n, np.int64)
    key, key_out = np.empty(n, np.uint64), np.empty(n, np.uint64)
    for r in range(n):
        u = np.uint64(keys[r]) ^ flip
        key[r] = u
        order[r] = r
        for d in range(8):
            counts[d, (u >> np.uint64(8 * d)) & np.uint64(255)] += 1
    start = np.empty(256, np.int64)
    for d in range(8):
        if counts[d].max() == n:
            continue
        total = 0
        for b in range(256):
            start[b] = total
            total += counts[d, b]
        shift = np.uint64(8 * d)
        for r in range(n):
            u = key[r]
            digit = (u >> shift) & np.uint64(255)
            at = start[digit]
            rows[at] = order[r]
            key_out[at] = u
            start[digit] = at + 1
        order, rows = rows, order
        key, key_out = key_out, key
    return order


@kernel
def sort_within_accounts(order, account, instrument, isolated):
    """Insertion-sort each run of equal ``account`` by (instrument, isolated), stably and in place, moving
    ``order``, ``instrument`` and ``isolated`` together.

    Called after a stable sort by account, on the columns already gathered into that order: runs are a few
    positions long and read in sequence, so this is linear in practice. (Reading the columns through
    ``order`` instead costs a cache miss per row: 1.3 s for 10M shuffled positions, against 0.3 s.)
    """
    n = order.shape[0]
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and account[stop] == account[start]:
            stop += 1
        for r in range(start + 1, stop):
            cur, cur_instrument, cur_isolated = order[r], instrument[r], isolated[r]
            j = r - 1
            while j >= start and (instrument[j] > cur_instrument or (
                    instrument[j] == cur_instrument and isolated[j] > cur_isolated)):
                order[j + 1], instrument[j + 1], isolated[j + 1] = order[j], instrument[j], isolated[j]
                j -= 1
            order[j + 1], instrument[j + 1], isolated[j + 1] = cur, cur_instrument, cur_isolated
        start = stop


@chunked
def position_scan(account, instrument, quantity, entry_price, isolated_margin, isolated, bounds, start_rows,
                  start_values, k):
    """One read of every positions column: rows outside each column's closed bounds, rows whose key is
    not above the previous row's, and where accounts start.

    ``bounds`` [4, 2]: [lo, hi] of instrument_id, quantity, entry_price, isolated_margin (the latter
    checked only where ``isolated``). Returns ``(violations [4], key_not_increasing, zero_entry, starts [k])``
    (``zero_entry``: rows whose entry price is 0, which only options may have), and records the rows that
    begin a new account run, and their accounts, as ``run_start_rows`` does (``start_rows``, ``start_values``
    [n]).
    """
    n = account.shape[0]
    counts = np.zeros((k, 6), np.int64)
    starts = np.zeros(k, np.int64)
    inst_lo, inst_hi = bounds[0, 0], bounds[0, 1]
    qty_lo, qty_hi = bounds[1, 0], bounds[1, 1]
    entry_lo, entry_hi = bounds[2, 0], bounds[2, 1]
    iso_lo, iso_hi = bounds[3, 0], bounds[3, 1]
    for c in prange(k):
        b0 = c * n // k
        b1 = (c + 1) * n // k
        n_inst = 0
        n_qty = 0
        n_entry = 0
        n_iso = 0
        n_zero = 0
        for r in range(index(b0), index(b1)):
            v = np.float64(instrument[r])
            n_inst += not ((v >= inst_lo) & (v <= inst_hi))
            v = quantity[r]
            n_qty += not ((v >= qty_lo) & (v <= qty_hi))
            v = entry_price[r]
            n_entry += not ((v >= entry_lo) & (v <= entry_hi))
            n_zero += v == 0.0
            v = isolated_margin[r]
            n_iso += (isolated[r] != 0) & (not ((v >= iso_lo) & (v <= iso_hi)))
        n_key = 0
        for r in range(index(max(b0, 1)), index(b1)):
            n_key += not _key_increases(account, instrument, isolated, r - index(1), r)
        counts[c, 0] = n_inst
        counts[c, 1] = n_qty
        counts[c, 2] = n_entry
        counts[c, 3] = n_iso
        counts[c, 4] = n_key
        counts[c, 5] = n_zero
        starts[c] = _record_run_starts(account, b0, b1, start_rows, start_values)
    total = np.zeros(6, np.int64)
    for c in range(k):
        total += counts[c]
    return total[:4], total[4], total[5], starts


@inline
def _record_run_starts(account, b0, b1, start_rows, start_values):
    """Rows of ``b0:b1`` beginning a new run of ``account``, and their values, written to ``start_rows[b0:]``
    and ``start_values[b0:]``; returns how many. The values are kept so that no later pass has to gather
    them from ``account`` (a run start every few rows touches every cache line of it)."""
    j = index(b0)
    if b0 == 0 and b1 > 0:
        start_rows[0] = 0
        start_values[0] = account[0]
        j = index(1)
    for r in range(index(max(b0, 1)), index(b1)):
        # Kept only where a run starts: stores and an add, no branch to mispredict.
        start_rows[j] = r
        start_values[j] = account[r]
        j += index(account[r] != account[r - index(1)])
    return np.int64(j) - b0


@chunked
def run_start_rows(account, start_rows, start_values, k):
    """Per chunk ``c``, the rows of a sorted column that begin a new run and their values, written to
    ``start_rows[b0:b0 + starts[c]]`` and ``start_values[b0:b0 + starts[c]]`` (``b0`` the chunk's first
    row); returns ``starts`` [k]."""
    n = account.shape[0]
    starts = np.zeros(k, np.int64)
    for c in prange(k):
        starts[c] = _record_run_starts(account, c * n // k, (c + 1) * n // k, start_rows, start_values)
    return starts


@kernel
def account_runs(account, values, offsets):
    """The distinct values of an account column and where each run of them starts, into ``values`` [m] and
    ``offsets`` [m+1] (run ``j`` is ``offsets[j]:offsets[j+1]``; both sized for every row being a run), in
    one serial pass that also counts the rows below the previous one. Returns ``(m, n_decreasing)``: the
    runs are the column's accounts only when ``n_decreasing`` is 0, i.e. the column is sorted.

    For the balances, a row or two per account: one pass costs a third of chunked run starts copied into
    place in parallel, plus a separate sortedness check.
    """
    n = account.shape[0]
    offsets[0] = 0
    if n == 0:
        return 0, 0
    values[0] = account[0]
    m = index(1)
    n_decreasing = 0
    for r in range(index(1), index(n)):
        previous, current = account[r - index(1)], account[r]
        # Kept only where a run starts: stores and an add, no branch to mispredict.
        values[m] = current
        offsets[m] = r
        m += index(current != previous)
        n_decreasing += current < previous
    offsets[m] = n
    return np.int64(m), n_decreasing


@kernel
def merge_runs(pos_rows, pos_values, pos_chunk_starts, bal_accounts, bal_offsets, accounts, pos_start, bal_start):
    """The sorted union of the positions' and the balances' account runs, with each side's segment offsets:
    account ``a`` owns positions ``pos_start[a]:pos_start[a+1]`` and balances ``bal_start[a]:bal_start[a+1]``.

    The positions' runs are read where ``position_scan`` or ``run_start_rows`` recorded them, per row chunk
    (``pos_rows``, ``pos_values`` [p], ``pos_chunk_starts`` [k]), without first copying them into one
    array; the balances' are dense (``account_runs``). Each chunk's runs are merged with the balance runs from
    its first account up to the next chunk's. Outputs are sized for the worst case (no shared account);
    returns how many accounts there are.
    """
    n = pos_rows.shape[0]
    k = pos_chunk_starts.shape[0]
    n_b = bal_accounts.shape[0]
    # Where each chunk's group starts: its first position run (a chunk without one: the next chunk's), and
    # the first balance run at or after that account (the first group also takes every balance run before).
    first_value = np.zeros(k + 1, np.int64)
    first_row = np.full(k + 1, n, np.int64)
    for c in range(k - 1, -1, -1):
        b0 = c * n // k
        has_run = pos_chunk_starts[c] > 0
        first_row[c] = pos_rows[b0] if has_run else first_row[c + 1]
        first_value[c] = pos_values[b0] if has_run else first_value[c + 1]
    m = index(0)
    j = index(0)
    for c in range(k):
        i = index(c * n // k)
        i_end = i + index(pos_chunk_starts[c])
        j_end = index(n_b if first_row[c + 1] == n else np.searchsorted(bal_accounts, first_value[c + 1]))
        # Three cases, the first (an account with positions and balances) common and well predicted: half
        # the time of testing at every step which side is exhausted and which is ahead.
        while i < i_end and j < j_end:
            x = pos_values[i]
            y = bal_accounts[j]
            pos_start[m] = pos_rows[i]
            bal_start[m] = bal_offsets[j]
            if x == y:
                accounts[m] = x
                i += index(1)
                j += index(1)
            elif x < y:
                accounts[m] = x
                i += index(1)
            else:
                accounts[m] = y
                j += index(1)
            m += index(1)
        while i < i_end:
            accounts[m] = pos_values[i]
            pos_start[m] = pos_rows[i]
            bal_start[m] = bal_offsets[j]
            i += index(1)
            m += index(1)
        while j < j_end:  # accounts with balances only, after the group's last position run
            accounts[m] = bal_accounts[j]
            pos_start[m] = first_row[c + 1]
            bal_start[m] = bal_offsets[j]
            j += index(1)
            m += index(1)
    pos_start[m] = n
    bal_start[m] = bal_offsets[n_b]
    return np.int64(m)


@kernel
def duplicates_in_segments(offsets, codes):
    """Rows whose code already occurred earlier in the same segment (segments are a few rows long)."""
    cnt = 0
    rows = np.empty(MAX_EXAMPLES, np.int64)
    for s in range(offsets.shape[0] - 1):
        for r in range(offsets[s] + 1, offsets[s + 1]):
            if _seen_earlier(codes, offsets[s], r):
                if cnt < MAX_EXAMPLES:
                    rows[cnt] = r
                cnt += 1
    return cnt, rows[:min(cnt, MAX_EXAMPLES)]


@inline
def _seen_earlier(codes, first, r):
    """Does ``codes[r]`` occur in ``codes[first:r]``? (A segment is an account's few rows.)"""
    for q in range(first, r):
        if codes[q] == codes[r]:
            return True
    return False
