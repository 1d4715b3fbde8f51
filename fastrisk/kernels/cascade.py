"""Liquidation cascade rounds (SPEC §6): screen, exact check, close-out and forced flow.

Index letters: a = accounts, p = positions, j = isolated positions or candidates of a round, u =
underlyings, k = rounds.

The screen makes a round cost a look at a few numbers of the buckets near liquidation, not a sweep. From the shocked
prices, ``screen_figures`` gives every bucket its excess ``g = equity - MM`` and, per underlying it moves with,
bounds on how fast that underlying's part of g can fall per unit of its move, down and up
(``kernels.liquidation.slope_bounds``; inf where the slope is unbounded); a cross bucket keeps their sum over its
underlyings, the larger of down and up, ``F``. When the equity separates by underlying (``g = g0 + sum_u d_u(x_u)``,
true unless a position is settled in a coin following another underlying than its own), a bucket last known to have
excess ``g_k`` at the moves ``x_k`` has, at the moves ``x``, ``g >= g_k - F * max_u |x_u - x_k,u|``: while that
stays positive the bucket is safe without looking at it. The others are candidates, re-valued exactly with the
shared account kernel at the round's prices; a candidate that survives becomes its own new reference (``g_k``,
``x_k`` = this round's), so it is looked at again only once prices move on enough. Buckets that do not separate are
checked whenever they are alive. The fall rates hold for moves in a window around the shocked prices
(``liquidation_cascade.SCREEN_WINDOW``); the caller checks everyone once prices leave it.

The bound grows with the largest move since a bucket's reference, so a round screens only the buckets it can
flag at a *horizon* no move has passed yet (``watch_accounts``, ``watch_isolated``: a pass over every bucket,
redone with a horizon twice as far whenever the moves pass it); the others stay safe until then. The watched
buckets' figures are gathered into arrays of their own, which a round reads contiguously.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..codes import OPTION
from ._jit import chunked, index, inline, kernel
from .liquidation import balance_exposure, coin_bounds, position_exposure, slope_bounds
from .margin import (NO_POSITIONS, account_figures, add_position, balance_usd, isolated_bucket, position_figures,
                     position_notional, position_usd, usd_contribution)

# The bound is exact arithmetic on rounded figures: a bucket is flagged a hair early rather than late.
SCREEN_MARGIN = 1e-9


@kernel(parallel=True, nrt=False)
def screen_figures(accounts, isolated_out, iso_chunk, scratch, book, inst, terms, tiers, val, today, weights,
                   option_margin, moving, n_chunks):
    """What the screen knows of every bucket at the valuation ``val`` (the shocked prices), from one pass over each
    account's positions and balances.

    ``accounts = (g, fall, n_cross, always, equity_today, exact)`` [a]: the cross bucket's excess equity - MM
    (USD, as ``check_accounts`` computes it; inf without cross rows or MM), the sum over the underlyings it moves
    with of the larger of its fall rates down and up (0 without MM), how many underlyings it moves with
    (``kernels.liquidation.position_exposure`` and ``balance_exposure``), whether it has cross rows and its
    equity does not separate by underlying (the screen cannot bound it: checked whenever alive), and while
    the rows are at hand: its equity at the valuation ``today``, cross plus isolated, as
    ``margin.account_figures`` sums it (the cascade's equity before), and ``exact`` [3, a], what ``check_accounts``
    writes for it at ``val`` (the cascade's first round, at the shocked prices, reads it). ``isolated_out =
    (underlying, position, down, up, excess, always, account)`` [j]: each isolated position's, in position order
    (chunk c's from ``iso_chunk[c]``: ``chunk_isolated``); ``always``: settled in a coin following another
    underlying (its equity does not separate). A fall rate is how fast the bucket's g can fall per unit of its
    underlying's factor moved that way, within the window of ``terms`` (``slope_bounds``: down ``max(hi, 0)``, up
    ``max(-lo, 0)``, inf where unbounded). ``scratch = (lo, hi, touched, seen)`` [chunk, u], zero at entry and left
    so. The rest as in ``kernels.liquidation.liquidation_factors``."""
    for c in prange(n_chunks):
        _screen_chunk(np.int64(c), n_chunks, accounts, isolated_out, iso_chunk, scratch, book, inst, terms, tiers, val,
                      today, weights, option_margin, moving)


@kernel(nrt=False)
def _screen_chunk(c, n_chunks, accounts, isolated_out, iso_chunk, scratch, book, inst, terms, tiers, val, today,
                  weights, option_margin, moving):
    n = accounts[0].shape[0]
    j = iso_chunk[c]
    for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
        j = _screen_account(a, c, j, accounts, isolated_out, scratch, book, inst, terms, tiers, val, today,
                            weights, option_margin, moving)


@inline
def _screen_account(a, c, j, accounts, isolated_out, scratch, book, inst, terms, tiers, val, today, weights,
                    option_margin, moving):
    """Account ``a``'s figures (``screen_figures``): its totals summed as ``margin.account_figures`` sums them,
    and the slope bounds of its rows moving with each underlying summed per underlying, in row order. Its
    isolated positions are written from ``j`` on; returns where the next account's start."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    kind, size, tier_first, tier_last, option_type, strike = inst
    price, forward, settle_px, asset_px = val
    iso_u, iso_p, iso_down, iso_up, iso_excess, iso_always, iso_a = isolated_out
    lo_u, hi_u, touched, seen = scratch[0][c], scratch[1][c], scratch[2][c], scratch[3][c]
    sums = NO_POSITIONS
    sums_today = NO_POSITIONS
    n_u = 0
    sep = True
    for p in range(index(pos_start[a]), index(pos_start[a + 1])):
        i = index(pos_instrument[p])
        px = settle_px[i]
        figures = position_figures(kind[i], quantity[p], size[i], price[i], forward[i], entry_price[p], tier_first[i],
                                   tier_last[i], option_type[i], strike[i], tiers, option_margin)
        sums = add_position(sums, usd_contribution(figures, kind[i], isolated[p], isolated_margin[p], px))
        # The whole position_usd, although only the equity is kept: margin.value_usd here made this pass 8 % slower.
        sums_today = add_position(sums_today, position_usd(p, i, today[0][i], today[1][i], today[2][i], quantity,
                                                           entry_price, isolated, isolated_margin, inst, tiers,
                                                           option_margin))
        notional, _, value, _, mm, tier = figures
        own, coin = position_exposure(p, book, moving)
        if not isolated[p] and own < 0:
            continue
        u = moving[0][i]
        lo, hi = slope_bounds(p, i, u, value, mm, notional, tier, True, book, inst, terms, tiers, val, option_margin,
                              moving)[:2]
        if isolated[p]:
            equity, _ = isolated_bucket(isolated_margin[p], value, mm, px)
            r = index(j)
            iso_u[r] = u
            iso_p[r] = p
            iso_a[r] = a
            has_mm = mm * px > 0.0
            iso_down[r] = max(hi, 0.0) if has_mm else 0.0
            iso_up[r] = max(-lo, 0.0) if has_mm else 0.0
            iso_excess[r] = equity - mm * px if has_mm else np.inf
            iso_always[r] = moving[1][i] >= 0 and moving[1][i] != u
            j += 1
            continue
        n_u = _touch(own, lo, hi, n_u, lo_u, hi_u, touched, seen)
        if coin >= 0:
            sep = False
            d = coin_bounds(value, mm, px)[0]
            n_u = _touch(coin, d, d, n_u, lo_u, hi_u, touched, seen)
    n_own = n_u
    collateral = 0.0
    collateral_today = 0.0
    for b in range(index(bal_start[a]), index(bal_start[a + 1])):
        k = index(bal_asset[b])
        cv = balance_usd(asset_px[k], bal_amount[b], weights[0][k], weights[1][k])
        collateral += cv
        collateral_today += balance_usd(today[3][k], bal_amount[b], weights[0][k], weights[1][k])
        u = balance_exposure(b, book, moving)
        if u >= 0 and n_own > 0:
            n_u = _touch(u, cv, cv, n_u, lo_u, hi_u, touched, seen)  # linear in m
    upnl, option_value, _, mm_total, gross, _, _ = sums
    upnl_today, option_today, _, _, _, isolated_today, _ = sums_today
    fall = 0.0
    for k in range(n_u):  # in the order the rows were first touched
        u = index(touched[index(k)])
        fall += max(max(hi_u[u], 0.0), max(-lo_u[u], 0.0))
        lo_u[u] = hi_u[u] = 0.0
        seen[u] = 0
    has_mm = n_u > 0 and mm_total > 0.0
    equity = collateral + upnl + option_value
    accounts[0][a] = equity - mm_total if has_mm else np.inf
    accounts[1][a] = fall if has_mm else 0.0
    accounts[2][a] = n_u
    accounts[3][a] = not sep and n_u > 0
    accounts[4][a] = (collateral_today + upnl_today + option_today) + isolated_today
    accounts[5][0, a] = equity
    accounts[5][1, a] = mm_total
    accounts[5][2, a] = gross
    return j


@kernel(parallel=True, nrt=False)
def chunk_isolated(counts, pos_start, isolated, n_chunks):
    """The isolated positions of each chunk of accounts (``screen_figures``' chunks) into ``counts`` [chunk]: a
    flat sum over the chunk's positions, which vectorises (per account, the loop overhead dominates)."""
    n = pos_start.shape[0] - 1
    for c in prange(n_chunks):
        k = 0
        for p in range(index(pos_start[c * n // n_chunks]), index(pos_start[(c + 1) * n // n_chunks])):
            k += isolated[p]
        counts[c] = k


@inline
def _touch(u, lo, hi, n_u, lo_u, hi_u, touched, seen):
    """Add slope bounds ``[lo, hi]`` to underlying ``u``'s sums, adding ``u`` to the ``n_u`` underlyings touched
    (``seen`` [u] marks them); returns their new count."""
    v = index(u)
    if not seen[v]:
        seen[v] = 1
        touched[index(n_u)] = u
        n_u += 1
    lo_u[v] += lo
    hi_u[v] += hi
    return n_u


@inline
def _may_fall(g, fall, reach, always):
    """Whether a bucket last known to have excess ``g`` may have become liquidatable after moves of at most
    ``reach`` since (the largest move of any underlying since its reference round), its g falling by at most
    ``fall`` per unit of move (a cross bucket: the sum over its rows of the larger fall rate): always when
    ``always`` (its equity does not separate by underlying). With a relative slack far above rounding.
    Monotone in ``reach`` (``fall`` >= 0): what it flags at some reach it flags at any larger one. No move is no
    fall, even where the rate is unbounded (inf * 0 would be NaN, and a bucket liquidatable at its reference
    prices never flagged)."""
    drop = fall * reach if reach > 0.0 else 0.0
    return always or drop * (1.0 + 1e-12) >= g * (1.0 - SCREEN_MARGIN)


@kernel(parallel=True, nrt=False)
def watch_accounts(horizon, n_cross, fall_total, g_account, account_live, account_always, flag):
    """``flag[a] = 1`` for every live cross bucket ``screen_accounts`` may flag while no underlying has moved more
    than ``horizon`` from any round's prices: the accounts the rounds screen until then. Every flag is written."""
    for a in prange(n_cross.shape[0]):
        flag[a] = account_live[a] != 0 and n_cross[a] != 0 and _may_fall(g_account[a], fall_total[a], horizon,
                                                                         account_always[a])


@kernel(nrt=False)
def screen_accounts(reach, g, fall, ref, live, always, found):
    """The watched cross buckets s (``watch_accounts``; their figures gathered, [s]) that the moves since the
    shock may have made liquidatable (``_may_fall`` with ``reach[ref[s]]``: the largest move since their
    reference round), into ``found`` [: k]; returns k. Serial: a round watches a few ten thousand."""
    k = 0
    for s in range(g.shape[0]):
        if live[s] and _may_fall(g[s], fall[s], reach[ref[s]], always[s]):
            found[k] = s
            k += 1
    return k


@kernel(parallel=True, nrt=False)
def watch_isolated(horizon, fall_down, fall_up, iso_always, g_iso, iso_live, flag):
    """``watch_accounts`` for the isolated positions j (its own underlying's move makes one fall by at most the
    larger of its fall rates times ``horizon``)."""
    for j in prange(fall_down.shape[0]):
        flag[j] = iso_live[j] != 0 and _may_fall(g_iso[j], max(fall_down[j], fall_up[j]), horizon, iso_always[j])


@kernel(nrt=False)
def screen_isolated(x, hist, iso_u, fall_down, fall_up, g, ref, live, always, found):
    """``screen_accounts`` for the watched isolated positions s, each its own bucket moved by its underlying
    ``iso_u`` [s], by its own fall rate that way (``x`` [u]: the moves since the shock, ``hist`` [k, u]: round
    k's)."""
    k = 0
    for s in range(g.shape[0]):
        if live[s] == 0:
            continue
        u = iso_u[s]
        own = _fall(x[u] - hist[ref[s], u], fall_down[s], fall_up[s])
        if always[s] or own >= g[s] * (1.0 - SCREEN_MARGIN):
            found[k] = s
            k += 1
    return k


@inline
def _fall(dx, fall_down, fall_up):
    """The most a row's part of g can have fallen after a move ``dx`` of its underlying (0 when it did not
    move, even where the bound is inf)."""
    if dx < 0.0:
        return -dx * fall_down
    if dx > 0.0:
        return dx * fall_up
    return 0.0


@chunked(nrt=False)
def check_accounts(candidates, out, book, inst, tiers, val, weights, option_margin, n_chunks):
    """Cross bucket of each candidate account at the round's prices: ``out`` [3, j] = equity, MM and gross
    notional (USD), with the code of ``account_risk``. Chunked (the caller: at least 256 accounts a chunk): a
    round's few candidates run serially (waking the thread pool costs more), a round with more in parallel
    (scattered accounts cost ~0.3 us each, mostly memory latency, which the threads overlap). Without reference
    counting: with it, unpacking the tuples of arrays per account cost 18x the arithmetic (54k accounts, 1
    thread: 55 ms, 3 ms without)."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    price, forward, settle_px, asset_px = val
    n = candidates.shape[0]
    for c in prange(n_chunks):
        for j in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            a = candidates[j]
            coll, upnl, optv, im, mm, gross, iso_eq, n_iso = account_figures(
                a, pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start,
                bal_asset, bal_amount, inst, tiers, price, forward, settle_px, asset_px, weights[0], weights[1],
                option_margin)
            out[0, j] = coll + upnl + optv
            out[1, j] = mm
            out[2, j] = gross


@kernel(nrt=False)
def check_isolated(candidates, out, book, inst, tiers, val, option_margin):
    """Each candidate isolated position's own bucket at the round's prices: ``out`` [3, j] = equity, MM and
    notional (USD), as ``margin.isolated_bucket`` sees them. Serial: a round has a few thousand at most."""
    _, pos_instrument, quantity, entry_price, _, isolated_margin, _, _, _ = book
    kind, size, tier_first, tier_last, option_type, strike = inst
    price, forward, settle_px, _ = val
    for j in range(candidates.shape[0]):
        p = candidates[j]
        i = pos_instrument[p]
        notional, upnl, value, im, mm, _ = position_figures(
            kind[i], quantity[p], size[i], price[i], forward[i], entry_price[p], tier_first[i], tier_last[i],
            option_type[i], strike[i], tiers, option_margin)
        px = settle_px[i]
        equity, _ = isolated_bucket(isolated_margin[p], value, mm, px)
        out[0, j] = equity
        out[1, j] = mm * px
        out[2, j] = notional * px


@kernel(nrt=False)
def close_out(fee_rate, rnd, dead, out, liq, owners, out_iso, liq_iso, round_of, eq_at, fee_paid, bad_debt, left,
              iso_count, iso_rest, charged):
    """A round's close-out (SPEC §6): each liquidated cross bucket (account ``dead`` [j], its figures the columns
    of ``out`` [3, :] where ``liq``: equity, MM, notional) and isolated position (``owners`` [j] its account,
    ``out_iso`` where ``liq_iso``) pays ``fee_rate * notional`` while its equity lasts; negative equity is bad
    debt. Per account: the round it was liquidated in, its equity then, what its cross bucket had ``left``,
    the fees and bad debt it caused (added: an isolated position may have been closed in an earlier round) and
    its closed isolated positions; per closed isolated position what it left, into ``iso_rest`` [j]; per bucket
    closed, its fee, bad debt and notional into ``charged`` [3, k] (the cross buckets, then the isolated
    positions: the round's totals are their sums in this order, ``liquidation_cascade.round_totals``)."""
    j = 0
    for c in range(liq.shape[0]):
        if not liq[c]:
            continue
        a = dead[j]
        eq = out[0, c]
        charged[0, j], charged[1, j], rest = _charge(fee_rate, eq, out[2, c], fee_paid, bad_debt, a)
        charged[2, j] = out[2, c]
        round_of[a] = rnd
        eq_at[a] = eq
        left[a] = rest
        j += 1
    n = j
    j = 0
    for c in range(liq_iso.shape[0]):
        if not liq_iso[c]:
            continue
        a = owners[j]
        charged[0, n + j], charged[1, n + j], iso_rest[j] = _charge(fee_rate, out_iso[0, c], out_iso[2, c], fee_paid,
                                                                    bad_debt, a)
        charged[2, n + j] = out_iso[2, c]
        iso_count[a] += 1
        j += 1


@inline
def _charge(fee_rate, equity, notional, fee_paid, bad_debt, a):
    """One bucket closed out (SPEC §6): its fee ``fee_rate * notional`` while its ``equity`` lasts, negative equity
    as bad debt, both added to account ``a``'s; returns ``(fee, bad debt, equity left)``."""
    fee = min(fee_rate * notional, max(equity, 0.0))
    debt = max(-equity, 0.0)
    fee_paid[a] += fee
    bad_debt[a] += debt
    return fee, debt, max(equity - fee, 0.0)


@kernel(parallel=True, nrt=False)
def flow_contributions(accounts, offsets, positions, underlying, usd, book, inst, val, delta, inst_underlying):
    """The forced flow of a round's close-out, item by item: each position closed, its underlying and signed USD
    notional (``_signed_usd``) into ``underlying`` and ``usd`` [k]. First the positions of the liquidated
    ``accounts`` [j], account j's at ``offsets[j]:offsets[j + 1]`` in position order (underlying -1 for an
    isolated position or one without a quantity: not closed with the cross bucket), then the liquidated isolated
    ``positions`` [j] from ``offsets[-1]`` on (-1 without a quantity). ``add_flows`` sums them in this order:
    the sums never depend on the thread count, nor on how the accounts are partitioned."""
    pos_start, pos_instrument, quantity, _, isolated, _, _, _, _ = book
    for j in prange(accounts.shape[0]):
        a = index(accounts[j])
        k = offsets[j]
        for p in range(index(pos_start[a]), index(pos_start[a + 1])):
            closed = not isolated[p] and quantity[p] != 0.0
            underlying[index(k)] = inst_underlying[index(pos_instrument[p])] if closed else -1
            usd[index(k)] = _signed_usd(p, book, inst, val, delta) if closed else 0.0
            k += 1
    base = offsets[accounts.shape[0]]
    for j in prange(positions.shape[0]):
        p = index(positions[j])
        closed = quantity[p] != 0.0
        underlying[index(base + j)] = inst_underlying[index(pos_instrument[p])] if closed else -1
        usd[index(base + j)] = _signed_usd(p, book, inst, val, delta) if closed else 0.0


@kernel(nrt=False)
def add_flows(flow, underlying, usd):
    """Add ``usd`` [k] to ``flow`` [u] by ``underlying`` [k] (-1: skipped), in order (``flow_contributions``)."""
    for k in range(underlying.shape[0]):
        if underlying[k] >= 0:
            flow[index(underlying[k])] += usd[k]


@inline
def _signed_usd(p, book, inst, val, delta):
    """Position ``p``'s signed USD notional closed (``forced_flow``)."""
    _, pos_instrument, quantity, _, _, _, _, _, _ = book
    kind, size = inst[0], inst[1]
    price, forward, settle_px, _ = val
    i = index(pos_instrument[index(p)])
    q = quantity[index(p)]
    if kind[i] == OPTION:
        return q * size[i] * delta[i] * forward[i] * settle_px[i]
    return np.sign(q) * position_notional(kind[i], q, size[i], price[i], forward[i]) * settle_px[i]


# Integer and float outputs of ``contagion_accounts`` (per account), in row order.
CONTAGION_COUNTS = ("n_positions", "positions_lost_cross", "positions_lost_isolated", "contagion_positions",
                    "efficiency_positions")
CONTAGION_NOTIONALS = ("notional_lost_cross", "notional_lost_isolated", "contagion_notional",
                       "efficiency_notional")


@kernel(parallel=True, nrt=False)
def contagion_accounts(counts, notionals, liquidated, book, inst, tiers, before, after, weights, option_margin,
                       n_chunks):
    """Cross margin against the isolated counterfactual, per account (SPEC §6), at the valuations ``before``
    (today) and ``after`` (shocked), each ``(price, forward, settle_px, asset_px)``.

    Cross: the account's cross bucket is liquidated after the shock (MM > 0 and equity <= MM): all its cross
    positions with a quantity are lost. Isolated counterfactual: each such position alone, with a share of
    today's cross equity in proportion to its initial margin (equal shares if none has any); its equity after
    the shock is ``share * (equity today + the collateral's change) + its own change of value``, so the
    buckets add up to the cross equity after the shock; it is lost if its MM > 0 and equity <= MM.
    Writes ``counts`` [5, a] (``CONTAGION_COUNTS``), ``notionals`` [4, a] (USD at the shocked prices,
    ``CONTAGION_NOTIONALS``) and ``liquidated`` [a] (the cross bucket).

    The parallel body is one compiled call per chunk of accounts (``n_chunks``): a small body to analyse,
    and the arrays passed once per chunk, not once per account.
    """
    for c in prange(n_chunks):
        contagion_chunk(np.int64(c), n_chunks, counts, notionals, liquidated, book, inst, tiers, before, after,
                        weights, option_margin)


@kernel(nrt=False)
def contagion_chunk(c, n_chunks, counts, notionals, liquidated, book, inst, tiers, before, after, weights,
                    option_margin):
    """The accounts of chunk ``c`` of ``n_chunks`` (see ``contagion_accounts``)."""
    n = book[0].shape[0] - 1
    for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
        contagion_account(a, counts, notionals, liquidated, book, inst, tiers, before, after, weights,
                          option_margin)


@inline
def contagion_account(a, counts, notionals, liquidated, book, inst, tiers, before, after, weights, option_margin):
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    c0, u0, o0, im0, mm0, g0, ie0, n0 = account_figures(
        a, pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset,
        bal_amount, inst, tiers, before[0], before[1], before[2], before[3], weights[0], weights[1], option_margin)
    c1, u1, o1, im1, mm1, g1, ie1, n1 = account_figures(
        a, pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset,
        bal_amount, inst, tiers, after[0], after[1], after[2], after[3], weights[0], weights[1], option_margin)
    equity0 = c0 + u0 + o0
    equity1 = c1 + u1 + o1
    lost_all = mm1 > 0.0 and equity1 <= mm1
    n = 0
    for p in range(index(pos_start[a]), index(pos_start[a + 1])):
        n += isolated[p] == 0 and quantity[p] != 0.0
    pool = equity0 + (c1 - c0)
    lost_cross = 0
    lost_iso = 0
    contagion = 0
    efficiency = 0
    n_cross = 0.0
    n_iso = 0.0
    n_contagion = 0.0
    n_efficiency = 0.0
    for p in range(index(pos_start[a]), index(pos_start[a + 1])):
        if isolated[p] or quantity[p] == 0.0:
            continue
        i = index(pos_instrument[p])
        _, v0, pim, _, _, _ = position_usd(p, i, before[0][i], before[1][i], before[2][i], quantity, entry_price,
                                           isolated, isolated_margin, inst, tiers, option_margin)
        _, v1, _, pmm, notional, _ = position_usd(p, i, after[0][i], after[1][i], after[2][i], quantity,
                                                  entry_price, isolated, isolated_margin, inst, tiers, option_margin)
        share = pim / im0 if im0 > 0.0 else 1.0 / n
        equity = share * pool + (v1 - v0)
        alone = pmm > 0.0 and equity <= pmm
        lost_cross += lost_all
        lost_iso += alone
        n_cross += notional if lost_all else 0.0
        n_iso += notional if alone else 0.0
        if lost_all and not alone:
            contagion += 1
            n_contagion += notional
        if alone and not lost_all:
            efficiency += 1
            n_efficiency += notional
    counts[0, a] = n
    counts[1, a] = lost_cross
    counts[2, a] = lost_iso
    counts[3, a] = contagion
    counts[4, a] = efficiency
    notionals[0, a] = n_cross
    notionals[1, a] = n_iso
    notionals[2, a] = n_contagion
    notionals[3, a] = n_efficiency
    liquidated[a] = lost_all and n > 0
