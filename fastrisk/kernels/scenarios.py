"""Every account under every scenario (SPEC §5): stress figures and portfolio-margin losses.

Index letters: a = accounts, p = positions (sorted by account), b = balances, i = instruments, k = assets,
s = scenarios, g = scenario groups, u = underlyings, c = chunks of accounts, j = a row inside one account.

Instruments are revalued once per scenario by the caller (``risk.value_instruments``), giving prices
``[s, i]`` and asset prices ``[s, k]``. Here each account is loaded once and taken through every scenario
while its rows are in cache:

* its base figures are summed once, in row order, from each row's contribution (``margin.position_usd`` /
  ``balance_usd``, the code of ``account_risk``), and the contributions are kept;
* scenarios are grouped by the exact set of instruments and assets they move (the caller compares each
  scenario's prices with today's). Per group, the account's rows on moved instruments and assets are listed
  once; an account with none keeps its base figures for the whole group;
* per scenario only the listed rows are re-evaluated, and the account's figures are today's plus the
  changes of those rows: loss = Σ (base value - scenario value) over the moved rows, equity = base equity -
  loss, MM = base MM + Σ of the moved rows' MM changes. A row that does not move contributes nothing, so a
  scenario that moves nothing of an account (or moves it back exactly) leaves its figures bit for bit
  unchanged and its loss exactly 0.

Accounts are split into chunks that depend only on the account count; a chunk sums its accounts'
per-scenario totals in account order and the caller adds the chunks in order, so totals never depend on the
thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..codes import BANKRUPT, LIQUIDATABLE
from ._jit import index, inline, kernel
from .margin import ISOLATED, NO_POSITIONS, account_status, add_position, balance_usd, position_usd

# Per-account float outputs of ``stress_accounts`` (rows of ``acc_f``) and int outputs (rows of ``acc_i``).
STRESS_FLOATS = ("equity", "maintenance_margin", "worst_loss", "equity_after", "maintenance_margin_after")
STRESS_INTS = ("status", "worst_scenario", "status_after")
# Per-scenario venue totals (last axis of ``totals``).
SCENARIO_TOTALS = ("total_loss", "net_loss", "accounts_losing", "accounts_liquidatable", "accounts_bankrupt",
                   "newly_liquidatable", "bad_debt", "isolated_liquidatable", "isolated_bad_debt")

# Fields of a cached position contribution: floats [j, 4] and ints [j, 2].
_VALUE, _IM, _MM, _GROSS = 0, 1, 2, 3
_BUCKET, _LIQ = 0, 1


@inline
def _cache_base(a, book, inst, tiers, option_margin, base, asset_cw, asset_bw, pf, pi, bf):
    """Base contributions of account ``a``'s positions into ``pf``/``pi`` and of its balances into ``bf``
    (rows 0.. of each); returns the base sums (``margin.add_position``), collateral and isolated bad debt,
    summed in row order."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, bal_amount = book
    price, forward, settle_px, asset_px = base
    p0 = pos_start[a]
    sums = NO_POSITIONS
    iso_bad = 0.0
    for j in range(pos_start[a + 1] - p0):
        p = index(p0 + j)
        i = index(pos_instrument[p])
        cont = position_usd(p, i, price[i], forward[i], settle_px[i], quantity, entry_price, isolated,
                            isolated_margin, inst, tiers, option_margin)
        jj = index(j)
        pi[jj, _BUCKET] = cont[0]
        pi[jj, _LIQ] = cont[5]
        pf[jj, _VALUE] = cont[1]
        pf[jj, _IM] = cont[2]
        pf[jj, _MM] = cont[3]
        pf[jj, _GROSS] = cont[4]
        sums = add_position(sums, cont)
        if cont[0] == ISOLATED:
            iso_bad += max(-cont[1], 0.0)
    b0 = bal_start[a]
    collateral = 0.0
    for j in range(bal_start[a + 1] - b0):
        b = index(b0 + j)
        k = index(bal_asset[b])
        v = balance_usd(asset_px[k], bal_amount[b], asset_cw[k], asset_bw[k])
        bf[index(j)] = v
        collateral += v
    return sums, collateral, iso_bad


@inline
def _list_moved(a, g, book, inst_moved, asset_moved, moved_pos, moved_bal):
    """The rows of account ``a`` (indices j inside the account) that group ``g`` moves, into ``moved_pos``
    and ``moved_bal``; returns their counts."""
    pos_start, pos_instrument, _, _, _, _, bal_start, bal_asset, _ = book
    return (_rows_moved(pos_start[a], pos_start[a + 1], pos_instrument, inst_moved, g, moved_pos),
            _rows_moved(bal_start[a], bal_start[a + 1], bal_asset, asset_moved, g, moved_bal))


@inline
def _rows_moved(first, stop, code, moved, g, out):
    """Rows ``first:stop`` whose ``code`` group ``g`` moves (``moved[g, code]``), as indices from ``first``,
    into ``out``; returns how many."""
    n = 0
    for j in range(stop - first):
        if moved[index(g), index(code[index(first + j)])]:
            out[index(n)] = j
            n += 1
    return n


@inline
def _account_groups(a, book, inst_groups, asset_groups, mask):
    """Into ``mask`` [w]: the bitmask of the scenario groups that move some row of account ``a`` (the OR of its
    instruments' and assets' group masks), so that a group that moves nothing of it costs no pass."""
    pos_start, pos_instrument, _, _, _, _, bal_start, bal_asset, _ = book
    for w in range(mask.shape[0]):
        mask[w] = 0
    for p in range(index(pos_start[a]), index(pos_start[a + 1])):
        i = index(pos_instrument[p])
        for w in range(mask.shape[0]):
            mask[w] |= inst_groups[i, w]
    for b in range(index(bal_start[a]), index(bal_start[a + 1])):
        k = index(bal_asset[b])
        for w in range(mask.shape[0]):
            mask[w] |= asset_groups[k, w]


@inline
def _in_group(mask, g):
    return (mask[index(g >> 6)] >> np.uint64(g & 63)) & np.uint64(1)


@inline
def _moved_position(a, j, s, book, inst, tiers, option_margin, shocked):
    """``margin.position_usd`` of row ``j`` of account ``a`` at scenario ``s``'s prices."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, _, _, _ = book
    price, forward, settle_px, _ = shocked
    p = index(pos_start[a] + j)
    i = index(pos_instrument[p])
    s = index(s)
    return position_usd(p, i, price[s, i], forward[s, i], settle_px[s, i], quantity, entry_price, isolated,
                        isolated_margin, inst, tiers, option_margin)


@inline
def _moved_contribution(a, j, r, q, s, book, inst, tiers, option_margin, shocked, repeat, last_f, last_i):
    """``_moved_position`` of moved row ``j`` (the ``r``-th moved row) at scenario ``s``, the ``q``-th of its
    group: when ``repeat[q, i]`` says its instrument is priced exactly as in the group's previous scenario
    (e.g. a future in a vol-up / vol-down pair), the previous result kept in ``last_f``/``last_i``."""
    i = index(book[1][index(book[0][a] + j)])
    r = index(r)
    if repeat[index(q), i]:
        return (np.int64(last_i[r, 0]), last_f[r, 0], last_f[r, 1], last_f[r, 2], last_f[r, 3], last_i[r, 1] != 0)
    cont = _moved_position(a, j, s, book, inst, tiers, option_margin, shocked)
    last_i[r, 0] = cont[0]
    last_i[r, 1] = cont[5]
    last_f[r, 0] = cont[1]
    last_f[r, 1] = cont[2]
    last_f[r, 2] = cont[3]
    last_f[r, 3] = cont[4]
    return cont


@inline
def _moved_balance(a, j, s, book, shocked, asset_cw, asset_bw):
    """``margin.balance_usd`` of balance row ``j`` of account ``a`` at scenario ``s``'s asset prices."""
    _, _, _, _, _, _, bal_start, bal_asset, bal_amount = book
    b = index(bal_start[a] + j)
    k = index(bal_asset[b])
    return balance_usd(shocked[3][index(s), k], bal_amount[b], asset_cw[k], asset_bw[k])


@kernel(parallel=True)
def stress_accounts(acc_f, acc_i, totals, loss_matrix, book, inst, tiers, option_margin, margin_call_ratio, base,
                    shocked, asset_cw, asset_bw, weight, groups, pos_f, pos_i, bal_f, moved_pos, moved_bal, masks,
                    last_f, last_i, group_totals):
    """Every account under every scenario (SPEC §5 ``stress``).

    Parameters (arrays allocated by the caller)
    ----------
    acc_f : [5, a] float64, written: rows ``STRESS_FLOATS`` (base equity and MM; worst weighted loss, 0 if no
        scenario loses; equity and MM in the worst scenario, the base ones if none loses).
    acc_i : [3, a] int32, written: base status; worst scenario (index into the sorted scenarios, -1 if none
        loses; ties go to the first); status in it.
    totals : [c, s, 9] float64, zeroed by the caller, summed per chunk: ``SCENARIO_TOTALS``.
    loss_matrix : [a, s] float64 written with every loss, or a [0, 0] array to skip it.
    book : (pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset,
        bal_amount) as ``BoundBook``.
    base, shocked : (price, forward, settle_px, asset_px): [i], [i], [i], [k] today and [s, i] ... [s, k] per scenario.
    weight : [s].
    groups : (group_start [g+1], group_scen [s], inst_moved [g, i] uint8, asset_moved [g, k] uint8,
        inst_groups [i, w] uint64, asset_groups [k, w] uint64, repeat [s, i] uint8): scenarios
        ``group_scen[group_start[g]:group_start[g+1]]`` move exactly the flagged instruments and assets;
        bit g of ``*_groups`` says group g moves that instrument / asset; ``repeat[q, i]``: instrument i is
        priced in scenario ``group_scen[q]`` exactly as in ``group_scen[q-1]`` of the same group.
    pos_f, pos_i, bal_f, moved_pos, moved_bal, masks, last_f, last_i, group_totals : per-chunk scratch
        [c, max positions, 4] float64, [c, max positions, 2] int8, [c, max balances] float64,
        [c, max positions] and [c, max balances] int64, [c, w] uint64, [c, max positions, 4] float64,
        [c, max positions, 2] int8 and [c, g, 9] float64 (zeroed by the caller); ``c`` (their first axis) is
        the chunk count.

    The loss of an account in a scenario is its base cross equity minus its cross equity in the scenario
    (USD; positive = the account loses): the Σ over its moved cross rows and balances of base value minus
    scenario value.
    """
    # The loop body is one compiled call per chunk: the parallel pass then analyses a small body, which
    # keeps compilation short; the index is cast because the parallel loop's own is unsigned once lowered.
    for c in prange(pos_f.shape[0]):
        stress_chunk(np.int64(c), acc_f, acc_i, totals, loss_matrix, book, inst, tiers, option_margin,
                     margin_call_ratio, base, shocked, asset_cw, asset_bw, weight, groups, pos_f, pos_i, bal_f,
                     moved_pos, moved_bal, masks, last_f, last_i, group_totals)


@kernel(nrt=False)
def stress_chunk(c, acc_f, acc_i, totals, loss_matrix, book, inst, tiers, option_margin, margin_call_ratio, base,
                 shocked, asset_cw, asset_bw, weight, groups, pos_f, pos_i, bal_f, moved_pos, moved_bal, masks,
                 last_f, last_i, group_totals):
    """The accounts of chunk ``c`` of ``stress_accounts``."""
    group_start, group_scen, inst_moved, asset_moved, inst_groups, asset_groups, repeat = groups
    n = book[0].shape[0] - 1
    n_chunks = pos_f.shape[0]
    n_groups = group_start.shape[0] - 1
    keep_matrix = loss_matrix.shape[0] > 0
    pf = pos_f[c]
    pi = pos_i[c]
    bf = bal_f[c]
    mp = moved_pos[c]
    mb = moved_bal[c]
    mask = masks[c]
    lf = last_f[c]
    li = last_i[c]
    tot = totals[c]
    gtot = group_totals[c]
    for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
        sums, coll0, iso_bad0 = _cache_base(a, book, inst, tiers, option_margin, base, asset_cw, asset_bw,
                                            pf, pi, bf)
        upnl, optv, _, mm0, _, _, n_liq0 = sums
        equity0 = coll0 + upnl + optv
        st0 = account_status(equity0, mm0, margin_call_ratio)[1]
        _account_groups(a, book, inst_groups, asset_groups, mask)
        worst = 0.0
        worst_s = -1
        eq_worst = equity0
        mm_worst = mm0
        st_worst = st0
        for g in range(n_groups):
            if not _in_group(mask, g):
                # Untouched by the whole group: today's figures and a loss of 0 in each of its scenarios,
                # added to the group's totals once (they go to every scenario of the group at the end).
                gtot[g, 3] += st0 == LIQUIDATABLE
                gtot[g, 4] += st0 == BANKRUPT
                gtot[g, 6] += max(-equity0, 0.0)
                gtot[g, 7] += n_liq0
                gtot[g, 8] += iso_bad0
                if keep_matrix:
                    for q in range(group_start[g], group_start[g + 1]):
                        loss_matrix[a, group_scen[q]] = 0.0
                continue
            n_p, n_b = _list_moved(a, g, book, inst_moved, asset_moved, mp, mb)
            for q in range(group_start[g], group_start[g + 1]):
                s = group_scen[index(q)]
                loss = 0.0
                d_mm = 0.0
                n_liq = n_liq0
                iso_bad = iso_bad0
                for r in range(n_p):
                    j = mp[index(r)]
                    cont = _moved_contribution(a, j, r, q, s, book, inst, tiers,
                                               option_margin, shocked, repeat, lf, li)
                    if cont[0] == ISOLATED:
                        n_liq += np.int64(cont[5]) - pi[index(j), _LIQ]
                        iso_bad += max(-cont[1], 0.0) - max(-pf[index(j), _VALUE], 0.0)
                    else:
                        loss += pf[index(j), _VALUE] - cont[1]
                        d_mm += cont[3] - pf[index(j), _MM]
                for r in range(n_b):
                    j = mb[index(r)]
                    loss += bf[index(j)] - _moved_balance(a, j, s, book, shocked, asset_cw, asset_bw)
                equity = equity0 - loss
                mm = mm0 + d_mm
                st = account_status(equity, mm, margin_call_ratio)[1]
                if keep_matrix:
                    loss_matrix[a, s] = loss
                wl = weight[index(s)] * loss
                if wl > 0.0 and (wl > worst or (wl == worst and s < worst_s)):
                    worst = wl
                    worst_s = s
                    eq_worst = equity
                    mm_worst = mm
                    st_worst = st
                tot[s, 0] += max(loss, 0.0)
                tot[s, 1] += loss
                tot[s, 2] += loss > 0.0
                tot[s, 3] += st == LIQUIDATABLE
                tot[s, 4] += st == BANKRUPT
                tot[s, 5] += st >= LIQUIDATABLE and st0 < LIQUIDATABLE
                tot[s, 6] += max(-equity, 0.0)
                tot[s, 7] += n_liq
                tot[s, 8] += iso_bad
        acc_f[0, a] = equity0
        acc_f[1, a] = mm0
        acc_f[2, a] = worst
        acc_f[3, a] = eq_worst
        acc_f[4, a] = mm_worst
        acc_i[0, a] = st0
        acc_i[1, a] = worst_s
        acc_i[2, a] = st_worst
    for g in range(n_groups):
        for q in range(group_start[g], group_start[g + 1]):
            for f in range(tot.shape[1]):
                tot[group_scen[q], f] += gtot[g, f]


@kernel(parallel=True)
def portfolio_losses(out, book, inst, tiers, option_margin, base, shocked, asset_cw, asset_bw, weight, groups, named,
                     row_underlying, covered, pos_f, pos_i, bal_f, moved_pos, moved_bal, masks, last_f, last_i, loss_u,
                     named_flag):
    """Portfolio margin (SPEC §5): per account, ``out[0, a]`` = Σ_u max(loss_u, 0), and ``out[1, a]``,
    ``out[2, a]`` = the standard (SPEC §2) IM and MM of its cross positions on underlyings no scenario names.

    ``loss_u`` is the largest weighted loss, over the scenarios that name u, of the account's cross positions
    and balances that move with u: positions on instruments whose underlying is u or whose settle asset follows
    u, balances in assets that follow u. A row's loss is its base USD value minus its value in the scenario
    (``margin.position_usd`` / ``balance_usd``), summed in row order; isolated positions are their own buckets
    and stay out. A scenario naming several underlyings adds, for each of them, the loss of that underlying's
    rows under the joint move (a row that moves with two of them counts for both).

    ``named = (named_start [s+1], named_u [r])``; ``row_underlying = (inst_underlying [i], settle_underlying
    [i], asset_underlying [k])`` (-1: follows none); ``covered`` [u] uint8: some scenario names u. Scratch per
    chunk as ``stress_accounts``, plus ``loss_u`` [c, 2, u] float64 and ``named_flag`` [c, u] uint8 (zeroed
    by the caller).
    """
    pos_start, pos_instrument, _, _, _, _, _, bal_asset, _ = book
    group_start, group_scen, inst_moved, asset_moved, inst_groups, asset_groups, repeat = groups
    named_start, named_u = named
    inst_und, settle_und, asset_und = row_underlying
    n = pos_start.shape[0] - 1
    n_chunks = pos_f.shape[0]
    n_groups = group_start.shape[0] - 1
    n_u = covered.shape[0]
    for c in prange(n_chunks):
        pf = pos_f[c]
        pi = pos_i[c]
        bf = bal_f[c]
        mp = moved_pos[c]
        mb = moved_bal[c]
        worst_u = loss_u[c, 0]
        acc_u = loss_u[c, 1]
        flag = named_flag[c]
        mask = masks[c]
        lf = last_f[c]
        li = last_i[c]
        for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            _cache_base(a, book, inst, tiers, option_margin, base, asset_cw, asset_bw, pf, pi, bf)
            _account_groups(a, book, inst_groups, asset_groups, mask)
            p0 = pos_start[a]
            # Cross positions on underlyings that no scenario covers keep their standard margin.
            im_std = 0.0
            mm_std = 0.0
            for j in range(pos_start[a + 1] - p0):
                if pi[j, _BUCKET] != ISOLATED and not covered[inst_und[pos_instrument[p0 + j]]]:
                    im_std += pf[j, _IM]
                    mm_std += pf[j, _MM]
            for u in range(n_u):
                worst_u[u] = 0.0
            for g in range(n_groups):
                if not _in_group(mask, g):
                    continue  # nothing of this account moves: every loss of the group is 0
                n_p, n_b = _list_moved(a, g, book, inst_moved, asset_moved, mp, mb)
                for q in range(group_start[g], group_start[g + 1]):
                    s = group_scen[q]
                    for r in range(named_start[s], named_start[s + 1]):
                        acc_u[named_u[r]] = 0.0
                        flag[named_u[r]] = 1
                    for r in range(n_p):
                        j = mp[r]
                        if pi[j, _BUCKET] == ISOLATED:
                            continue
                        loss = pf[j, _VALUE] - _moved_contribution(a, j, r, q, s, book,
                                                                   inst, tiers, option_margin, shocked, repeat, lf,
                                                                   li)[1]
                        i = pos_instrument[p0 + j]
                        u = inst_und[i]
                        if flag[u]:
                            acc_u[u] += loss
                        v = settle_und[i]
                        if v >= 0 and v != u and flag[v]:
                            acc_u[v] += loss
                    for r in range(n_b):
                        j = mb[r]
                        v = asset_und[bal_asset[book[6][a] + j]]
                        if v >= 0 and flag[v]:
                            acc_u[v] += bf[j] - _moved_balance(a, j, s, book, shocked, asset_cw, asset_bw)
                    for r in range(named_start[s], named_start[s + 1]):
                        u = named_u[r]
                        worst_u[u] = max(worst_u[u], weight[s] * acc_u[u])
                        flag[u] = 0
            total = 0.0
            for u in range(n_u):
                total += worst_u[u]  # each is max(loss_u, 0): it starts at 0
            out[0, a] = total
            out[1, a] = im_std
            out[2, a] = mm_std


@kernel(parallel=True)
def apply_margin(floats, status, im, mm, margin_call_ratio):
    """Replace the margins of ``account_margin``'s outputs (``floats`` [11, a], ``status`` [a]) by ``im``
    and ``mm`` [a], and derive margin_ratio, free_collateral and status from them (SPEC §3)."""
    for a in prange(floats.shape[1]):
        equity = floats[3, a]
        ratio, st = account_status(equity, mm[a], margin_call_ratio)
        floats[4, a] = im[a]
        floats[5, a] = mm[a]
        floats[6, a] = ratio
        floats[7, a] = equity - im[a]
        status[a] = st
