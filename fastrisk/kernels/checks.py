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
from numba.cpython.unsafe.numbers import trailing_zeros

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
def resolve_codes(ids, id_to_code, out, k):
    """``id_to_code[id]`` of every id into ``out`` (-1 for ids outside it, as for those it maps to -1):
    the dense instrument rows of positions, the market asset codes of balances. Returns how many are -1."""
    n = ids.shape[0]
    size = id_to_code.shape[0]
    unknown = np.zeros(k, np.int64)
    for c in prange(k):
        n_unknown = 0
        for r in range(index(c * n // k), index((c + 1) * n // k)):
            v = ids[r]
            looked_up = id_to_code[index(min(max(v, 0), size - 1))]
            code = looked_up if (v >= 0) & (v < size) else -1
            out[r] = code
            n_unknown += code < 0
        unknown[c] = n_unknown
    return unknown.sum()


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


# Rows per block of ``position_scan``: its passes over a block re-read the block from L1/L2, not memory.
# 512-2048 measured alike; 8192 ~5 % slower.
SCAN_BLOCK = 1024
_LOW63 = np.int64(0x7FFFFFFFFFFFFFFF)


@inline
def _order_key(bits):
    """An int64 whose order is the float order of the float64 with these ``bits``: -0.0 just below +0.0,
    NaNs beyond the infinities. Integer min and max vectorise; float ones need fastmath to."""
    return bits ^ ((bits >> 63) & _LOW63)


@inline
def _extremes(instrument, quantity, entry_price, isolated_margin, isolated, neutral, s, e, out):
    """Fold rows ``s:e`` into ``out`` [8]: min and max of instrument ids, then of the ``_order_key`` s of
    quantity, entry_price and isolated_margin (``neutral`` where not ``isolated``)."""
    i_lo, i_hi, q_lo, q_hi, e_lo, e_hi, m_lo, m_hi = out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]
    for r in range(s, e):
        x = np.int64(instrument[r])
        i_lo, i_hi = min(i_lo, x), max(i_hi, x)
        x = _order_key(quantity[r])
        q_lo, q_hi = min(q_lo, x), max(q_hi, x)
        x = _order_key(entry_price[r])
        e_lo, e_hi = min(e_lo, x), max(e_hi, x)
        x = _order_key(isolated_margin[r]) if isolated[r] != 0 else neutral
        m_lo, m_hi = min(m_lo, x), max(m_hi, x)
    out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7] = i_lo, i_hi, q_lo, q_hi, e_lo, e_hi, m_lo, m_hi


@inline
def _runs(account, instrument, isolated, b0, b1, start_rows, start_values, j):
    """Rows of ``b0:b1`` beginning a new run of ``account``, and their accounts, written to ``start_rows[j:]``
    and ``start_values[j:]``. Returns ``(the next j, whether some row's key (account_id, instrument_id,
    isolated) is not above the previous row's)``. The values are kept so that no later pass has to gather
    them from ``account`` (a run start every few rows touches every cache line of it)."""
    if b0 == 0 and b1 > 0:
        start_rows[j] = 0
        start_values[j] = account[0]
        j += index(1)
    bad = False
    for w in range(index(max(b0, 1)), index(b1), index(64)):
        # A 64-bit mask of the run starts, built with compares LLVM vectorises, then only its set bits
        # visited: 2.6 ms per 10M rows from cache, against 6.1 for a store at every row kept by advancing j
        # where a run starts.
        mask = np.uint64(0)
        for r in range(w, min(w + index(64), index(b1))):
            a0, a1 = account[r - index(1)], account[r]
            # instrument_id and isolated (0 or 1) as one int64: one compare.
            k0 = np.int64(instrument[r - index(1)]) * 2 + isolated[r - index(1)]
            k1 = np.int64(instrument[r]) * 2 + isolated[r]
            bad |= (a1 == a0) & (k1 <= k0)
            mask |= np.uint64(a1 != a0) << np.uint64(r - w)
        while mask != np.uint64(0):
            r = w + index(trailing_zeros(mask))
            mask &= mask - np.uint64(1)
            a1 = account[r]
            bad |= a1 < account[r - index(1)]  # accounts only decrease where they change
            start_rows[j] = r
            start_values[j] = a1
            j += index(1)
    return j, bad


@chunked
def position_scan(account, instrument, quantity, entry_price, isolated_margin, isolated, bounds, start_rows,
                  start_values, k):
    """One read of every positions column: which columns have rows outside their bounds, whether some row's
    key is not above the previous row's, and where accounts start.

    ``bounds`` [4, 2]: [lo, hi] of instrument_id, quantity, entry_price, isolated_margin (the latter checked
    only where ``isolated``). Returns ``(outside [4], key_not_increasing, least_entry,
    starts [k])`` (``least_entry``: the least entry price, +inf when there is none),
    and records per chunk the rows that begin a new account run, and their accounts, as ``run_starts`` does.

    Flags rather than counts: a flag is a min or max, vector min/max instructions, where a count of bound
    violations takes compares into AVX-512 mask registers, which one port executes (4.9 against 6.5 ms per
    10M rows from cache). The scan is not memory-bound: its compute adds to the reads (25 ms for these
    columns on one core) instead of hiding under them; with the run starts of ``_runs``, 42 -> 34.6 ms on
    one core at 10M rows. Callers count the rows of a flagged column (``violations``), which valid input
    never pays.
    """
    n = account.shape[0]
    extremes = np.empty((k, 8), np.int64)
    not_increasing = np.zeros(k, np.bool_)
    starts = np.zeros(k, np.int64)
    qty, entry, margin = quantity.view(np.int64), entry_price.view(np.int64), isolated_margin.view(np.int64)
    # The bounds of the float columns as order keys, a bound of 0 widened to take both signed zeros (-0.0 >= 0).
    widened = np.empty((4, 2))
    for i in range(4):
        widened[i, 0] = -0.0 if bounds[i, 0] == 0 else bounds[i, 0]
        widened[i, 1] = 0.0 if bounds[i, 1] == 0 else bounds[i, 1]
    limits = widened.view(np.int64)
    for i in range(4):
        limits[i, 0], limits[i, 1] = _order_key(limits[i, 0]), _order_key(limits[i, 1])
    for c in prange(k):
        b0, b1 = c * n // k, (c + 1) * n // k
        ext = extremes[c]
        for i in range(4):
            ext[2 * i], ext[2 * i + 1] = _LOW63, -_LOW63 - 1
        j = index(b0)
        bad = False
        # Block by block, so that _runs re-reads instrument and isolated from cache.
        for s in range(index(b0), index(b1), index(SCAN_BLOCK)):
            e = min(s + index(SCAN_BLOCK), index(b1))
            _extremes(instrument, qty, entry, margin, isolated, limits[3, 0], s, e, ext)
            j, bad_block = _runs(account, instrument, isolated, s, e, start_rows, start_values, j)
            bad |= bad_block
        not_increasing[c] = bad
        starts[c] = np.int64(j) - b0
    outside = np.zeros(4, np.bool_)
    # Instrument ids are int32: exact as floats.
    outside[0] = (extremes[:, 0].min() < bounds[0, 0]) | (extremes[:, 1].max() > bounds[0, 1])
    for i in range(1, 4):
        outside[i] = (extremes[:, 2 * i].min() < limits[i, 0]) | (extremes[:, 2 * i + 1].max() > limits[i, 1])
    least_entry = np.full(1, np.inf)
    if n > 0:
        least_entry.view(np.int64)[0] = _order_key(extremes[:, 4].min())  # the key's own inverse
    return outside, not_increasing.any(), least_entry[0], starts


@chunked
def run_starts(account, instrument, isolated, start_rows, start_values, k):
    """Per chunk ``c``, the rows of sorted positions that begin a new account run and their accounts, written
    to ``start_rows[b0:b0 + starts[c]]`` and ``start_values[b0:b0 + starts[c]]`` (``b0`` the chunk's first
    row). Returns ``(key_not_increasing, starts [k])``: whether some row's key (account_id, instrument_id,
    isolated) is not above the previous row's."""
    n = account.shape[0]
    starts = np.zeros(k, np.int64)
    not_increasing = np.zeros(k, np.bool_)
    for c in prange(k):
        b0 = c * n // k
        j, not_increasing[c] = _runs(account, instrument, isolated, b0, (c + 1) * n // k, start_rows,
                                     start_values, index(b0))
        starts[c] = np.int64(j) - b0
    return not_increasing.any(), starts


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

    The positions' runs are read where ``position_scan`` or ``run_starts`` recorded them, per row chunk
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


# Rows before each balance row that ``duplicate_codes`` compares it with in a loop LLVM vectorises (an account
# has a few balances); only rows of longer runs are then looked at one by one. A loop per account segment, a
# few rows each, mispredicts its exit: with the asset codes resolved in it, 5.2 ms for 1.36M balances on one
# core, against 0.95 for this and 0.4 for resolve_codes.
_WINDOW = 4


@chunked
def duplicate_codes(account, codes, k):
    """How many rows of sorted ``account`` hold a code that an earlier row of the same account holds."""
    n = account.shape[0]
    counts = np.zeros(k, np.int64)
    for c in prange(k):
        b0, b1 = c * n // k, (c + 1) * n // k
        cnt = 0
        for r in range(b0, min(b1, _WINDOW)):  # the table's first rows: fewer rows before them than the window
            cnt += _seen_earlier(codes, _run_first(account, r), r)
        n_longer = 0
        for r in range(index(max(b0, _WINDOW)), index(b1)):
            cnt += _seen_in_window(account, codes, r)
            n_longer += account[r - index(_WINDOW)] == account[r]
        if n_longer:  # runs longer than the window: rows before it
            for r in range(max(b0, _WINDOW), b1):
                if account[r - _WINDOW] == account[r] and not _seen_in_window(account, codes, r):
                    cnt += _seen_earlier(codes, _run_first(account, r), r)
        counts[c] = cnt
    return counts.sum()


@inline
def _seen_in_window(account, codes, r):
    """Does ``codes[r]`` occur in one of the ``_WINDOW`` rows before r of the same account?"""
    seen = False
    for d in range(index(1), index(_WINDOW + 1)):
        seen |= (account[r - d] == account[r]) & (codes[r - d] == codes[r])
    return seen


@inline
def _run_first(account, r):
    """The first row of the run of ``account`` holding row r."""
    q = r
    while q > 0 and account[q - 1] == account[r]:
        q -= 1
    return q


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
