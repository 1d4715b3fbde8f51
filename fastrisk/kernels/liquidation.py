"""Liquidation multipliers (SPEC §4): for every margin bucket, the nearest factors m below and above 1 by
which one underlying must move for the bucket to become liquidatable.

Index letters: a = accounts, p = positions (sorted by account), b = balances, i = instruments,
u = underlyings, t = tier brackets, r = output rows (buckets), j = slots of the per-account grouping.

A *bucket* is either an account's cross bucket seen from one underlying ``u`` it has exposure to, or one
isolated position (seen from its own underlying). Its *excess* ``g(m) = equity(m) - MM(m)`` (USD) is
evaluated with the code of ``account_risk``: ``margin.account_figures`` (the whole account, once) and, for
the rows that move with ``u``, ``margin.moved_instrument`` + ``margin.position_usd`` + ``margin.add_position``
+ ``margin.balance_usd``. The bucket is liquidatable at ``m`` when MM > 0 and ``g(m) <= 0`` (SPEC §3). MM is
> 0 at every ``m`` exactly when the bucket holds a future with a quantity or a short option, so buckets
without one never liquidate (NaN) and for the others the rule is ``g(m) <= 0``.

Each account's cross positions with a quantity are first grouped by underlying (``group_positions``), so
that evaluating a bucket touches only its own positions: ``g(m) = fixed + moving(m)``, where ``fixed`` (the
rows that do not move with ``u``) is the whole account minus ``moving(1)``.

Root finding, outward from m = 1 in each direction (``g`` is continuous: tiers are continuous by the
maintenance-amount rule; and smooth between *breakpoints*, where a future's notional crosses a cap):

* **linear buckets**: every row moving with ``u`` is linear in m between breakpoints (linear futures settled
  in an asset that does not follow ``u``, inverse futures settled in one that does, anything on another
  underlying settled in such a coin, collateral). Equity is then linear in m and MM piecewise linear.
  - *concave* (every schedule involved has non-decreasing mmf, as exchanges publish them): MM is convex
    (for an inverse future in its own coin, ``S*m*f(N/m)`` is the perspective of the convex ``f``), so ``g``
    is concave: the range end decides whether a crossing exists, and if so it is unique. One evaluation at
    the end, then refinement of [1, end].
  - otherwise: the walk visits the breakpoints; the first one where ``g <= 0`` brackets the root.
* **other buckets** (options on ``u``, inverse futures in a stable settle asset, linear futures settled in
  the coin itself): the walk visits the breakpoints and a geometric grid of ``GRID_PER_DECADE`` points per
  decade; the first bracketing cell is refined. Two crossings closer together than one grid step (3.7 %)
  inside one cell can be missed; a crossing is never reported where there is none.

*Safe skip*, for every bucket: the pass at m = 1 also bounds the slope dg/dm over the whole range
(``slope_bounds``: exact for collateral and coin-settled rows, a bracket-independent range for futures,
Black-76's delta in [0, 1] for options; unbounded only for inverse futures in a stable coin and rows settled
in their own coin). g can then fall by at most L per unit of m moved outward, so a direction where L = 0
needs no evaluation, and from any point with excess g the walk may jump g / L outward without passing a
crossing: most option buckets are decided in a few evaluations instead of a 64-per-decade walk, and what
such a skip decides is exact (no grid is involved).

Refinement is Illinois regula falsi (bracketing, superlinear; exact in one step on a linear segment, which
is Binance's closed form), stopped when the bracket is narrower than ``REL_TOL`` relative. The factor
returned is the bracket's far end, where the bucket *is* liquidatable: at the reported price equity <= MM,
and a hair nearer to today it is not. Search range [``M_MIN``, ``M_MAX``].
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ..codes import CALL, INVERSE, LINEAR, OPTION
from ._jit import chunked, helper, index, inline, kernel
from .margin import account_figures, balance_usd, isolated_bucket, moved_instrument, position_figures

M_MIN, M_MAX = 1e-4, 1e4
GRID_PER_DECADE = 64
_GRID_STEP = math.log(10.0) / GRID_PER_DECADE
REL_TOL = 1e-13
_MAX_REFINE = 200

# How g(m) behaves between breakpoints (see the module docstring).
CONCAVE, LINEAR_WALK, GRID_WALK = 0, 1, 2


# ------------------------------------------------------------------------------------- account layout

@inline
def _cross_with_quantity(p, quantity, isolated):
    return isolated[p] == 0 and quantity[p] != 0.0


@kernel(parallel=True, nrt=False)
def group_positions(order, n_rows, n_cross, separable, book, moving):
    """Per account: its cross positions with a quantity into ``order[pos_start[a]:]`` grouped by underlying
    code (row order within a group; the slots left are -1), the rows of its liquidation table into
    ``n_rows`` [a] (cross rows + isolated positions), its cross rows into ``n_cross`` [a], and whether its
    equity is a sum of one function per underlying into ``separable`` [a] (False when a cross position is
    settled in an asset following another underlying than its own).

    Cross rows are the underlyings the cross bucket moves with: those of its cross positions with a
    quantity, of their settle assets, and of its balances in assets that follow an underlying; none when
    the account has no cross position with a quantity.
    """
    pos_start, pos_instrument, quantity, _, isolated, _, bal_start, bal_asset, bal_amount = book
    inst_underlying, settle_underlying, asset_underlying = moving[0], moving[1], moving[2]
    n = pos_start.shape[0] - 1
    for a in prange(n):
        lo = pos_start[a]
        k = lo
        n_iso = 0
        sep = True
        for p in range(lo, pos_start[a + 1]):
            n_iso += isolated[p] != 0
            if not _cross_with_quantity(p, quantity, isolated):
                continue
            i = pos_instrument[p]
            s = settle_underlying[i]
            if s >= 0 and s != inst_underlying[i]:
                sep = False
            # Insertion by underlying (stable): accounts hold a few positions.
            u = inst_underlying[i]
            j = k
            while j > lo and inst_underlying[pos_instrument[order[j - 1]]] > u:
                order[j] = order[j - 1]
                j -= 1
            order[j] = p
            k += 1
        for j in range(k, pos_start[a + 1]):
            order[j] = -1
        c = 0
        if k > lo:
            u, first, cursor = next_exposure(a, -1, lo, k, sep, order, book, moving)
            while u >= 0:
                c += 1
                u, first, cursor = next_exposure(a, u, cursor, k, sep, order, book, moving)
        n_rows[a] = c + n_iso
        n_cross[a] = c
        separable[a] = sep


@helper
def next_exposure(a, prev, cursor, hi, sep, order, book, moving):
    """The next underlying of account ``a``'s cross bucket after ``prev`` and its positions' slots: returns
    ``(u, first, last)``, ``u = -1`` when there is none; ``order[first:last]`` are its cross positions on
    ``u`` (possibly none: exposure through collateral or a settle coin only).

    ``order[cursor:hi]`` are the account's grouped cross positions not yet visited (``cursor`` = the ``last``
    of the previous call, or the account's first slot): exposures are visited in increasing code, so one
    account costs one pass over its positions plus its few balances per exposure.
    """
    pos_start, pos_instrument, quantity, _, isolated, _, bal_start, bal_asset, bal_amount = book
    inst_underlying, settle_underlying, asset_underlying = moving[0], moving[1], moving[2]
    best = -1
    if cursor < hi:
        best = inst_underlying[pos_instrument[order[cursor]]]
    if not sep:
        for j in range(pos_start[a], pos_start[a + 1]):
            q = order[j]
            if q < 0:
                break
            c = settle_underlying[pos_instrument[q]]
            if c > prev and (best < 0 or c < best):
                best = c
    for b in range(bal_start[a], bal_start[a + 1]):
        if bal_amount[b] == 0.0:
            continue
        c = asset_underlying[bal_asset[b]]
        if c > prev and (best < 0 or c < best):
            best = c
    last = cursor
    while last < hi and inst_underlying[pos_instrument[order[last]]] == best:
        last += 1
    return best, cursor, last


# ------------------------------------------------------------------------------------- a bucket's g(m)

@inline
def moving_figures(a, p, u, m, bounds, lo, hi, sep, order, book, inst, terms, tiers, val, weights, option_margin,
                   moving):
    """``(equity, MM, slope_lo, slope_hi, slope_down, slope_up, seg_down, seg_up)`` in USD, at ``m``, of the
    rows of a bucket that move with ``u``:
    isolated position ``p`` when ``p >= 0``; else account ``a``'s cross positions on ``u`` (``order[lo:hi]``),
    its other cross positions settled in a coin following ``u`` (only when not ``sep``arable) and its balances
    in assets following ``u``.

    With ``bounds`` (at m = 1 only), ``[slope_lo, slope_hi]`` bounds dg/dm over the whole range (USD per unit
    of m; ``-inf, inf`` when a row's slope is not bounded in m, see ``slope_bounds``), and ``slope_down``,
    ``slope_up`` are dg/dm exactly on the linear segments just below and just above m (NaN off linear buckets),
    which end at the factors ``seg_down`` < m < ``seg_up``: the nearest breakpoints (0 and inf: none); else
    the six are 0, 0, 0, 0, 0, inf.
    One call site of the position code, for every kind of row: the helper is specialised once."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    kind, option_type, strike = inst[0], inst[4], inst[5]
    price, forward, settle_px, asset_px = val
    inst_underlying, settle_underlying, asset_underlying = moving[0], moving[1], moving[2]
    equity = 0.0
    mm_sum = 0.0
    s_lo = 0.0
    s_hi = 0.0
    e_dn = 0.0
    e_up = 0.0
    seg_dn = 0.0
    seg_up = np.inf
    if p >= 0:
        n_own, n_other = 1, 0
    else:
        n_own = hi - lo
        n_other = 0 if sep else pos_start[a + 1] - pos_start[a]
    for k in range(n_own + n_other):
        if p >= 0:
            q = index(p)
        elif k < n_own:
            q = index(order[lo + k])
        else:
            q = index(pos_start[a] + k - n_own)
            i = index(pos_instrument[q])
            if isolated[q] or inst_underlying[i] == u or settle_underlying[i] != u:
                continue
        i = index(pos_instrument[q])
        pr, fw, px = moved_instrument(i, u, m, kind, option_type, strike, price, forward, settle_px, moving)
        notional, upnl, value, im, mm, tier = position_figures(
            kind[i], quantity[q], inst[1][i], pr, fw, entry_price[q], inst[2][i], inst[3][i], option_type[i],
            strike[i], tiers, option_margin)
        if p >= 0:
            equity, _ = isolated_bucket(isolated_margin[q], value, mm, px)  # the bucket's own rule
        else:
            equity += value * px  # futures: upnl; options: q*c*V (margin.position_usd)
        mm_sum += mm * px
        if bounds:
            lo_k, hi_k, dn_k, up_k, sd_k, su_k = slope_bounds(q, i, u, value, mm, notional, tier, book, inst, terms,
                                                              tiers, val, option_margin, moving)
            s_lo += lo_k
            s_hi += hi_k
            e_dn += dn_k
            e_up += up_k
            seg_dn = max(seg_dn, sd_k)
            seg_up = min(seg_up, su_k)
    for b in range(bal_start[a], bal_start[a + 1] if p < 0 else bal_start[a]):
        k = bal_asset[b]
        if asset_underlying[k] == u:
            c = balance_usd(asset_px[k] * m, bal_amount[b], weights[0][k], weights[1][k])
            equity += c
            if bounds:
                s_lo += c  # linear in m
                s_hi += c
                e_dn += c
                e_up += c
    return equity, mm_sum, s_lo, s_hi, e_dn, e_up, seg_dn, seg_up


@inline
def slope_bounds(q, i, u, value, mm, notional, tier, book, inst, terms, tiers, val, option_margin, moving):
    """``(lo, hi, down, up, seg_down, seg_up)``: ``[lo, hi]`` bounds the slope in m (USD per unit of m) of position ``q``'s part of
    its bucket's excess g = equity - MM, for every m, from today's valuation (``value``, ``mm``, ``notional`` in
    settle units at m = 1, ``tier`` its 1-based bracket); ``down``, ``up`` are that slope exactly on the linear
    segment just below and just above m = 1 (NaN for a row that is not linear in m between breakpoints), and
    those segments end at ``seg_down`` < 1 < ``seg_up``, where the notional meets a cap (0, inf: never).

    Down and up differ only at a cap: the notional is then at the top of its bracket t (``tier_margin``), and
    the side where it grows is in bracket t + 1.

    The bounds hold for m in the window ``[terms[4], terms[5]]`` (the search range for liquidation prices, a
    narrower one for the cascade's screen): a future's bracket t then ranges over the brackets its notional
    reaches in the window, and the bound takes the extreme mmf / maintenance amount among those (over the
    whole search range, the schedule's: ``terms[1:4]``).

    Derivatives of ``margin.position_figures`` with the row moved by ``margin.moved_instrument`` (c = contract
    size, P, F = today's mark and forward, S = settle price, E = entry, t = bracket):

    * on another underlying, settled in a coin following u: ``(value - MM) * S * m``, slope exactly
      ``(value - MM) * S``;
    * linear future, settle asset not following u: ``q*c*P*S - mmf_t*|q|*c*P*S``, between the reachable
      brackets' largest and smallest mmf;
    * inverse future settled in a coin following u: USD upnl ``q*c*S*(m/E - 1/P)``, MM ``mmf_t*|q|*c*S/P -
      amount_t*S*m``: slope ``q*c*S/E + amount_t*S`` (plus the isolated margin times S for an isolated one),
      between the reachable brackets' smallest and largest amount;
    * option, settle asset not following u: ``q*c*F*S*delta`` with call delta in [0, D], put delta in [-D, 0]
      (D = the discount factor, Black-76; a given mark moves by the model's change), minus the short
      option's MM ``mm_fraction*|q|*c*F*S``;
    * anything else (inverse futures in a stable coin, linear futures or options settled in their own coin):
      unbounded, ``(-inf, inf)``.
    """
    _, _, quantity, entry_price, isolated, isolated_margin, _, _, _ = book
    kind, size, option_type = inst[0], inst[1], inst[4]
    w_lo, w_hi = terms[4], terms[5]
    # Over the whole search range a future reaches (nearly) every bracket: the schedule's extremes, precomputed.
    whole = w_lo <= M_MIN and w_hi >= M_MAX
    price, forward, settle_px = val[0], val[1], val[2]
    inst_underlying, settle_underlying, years, rate = moving[0], moving[1], moving[5], moving[7]
    cap, mmf, amount = tiers[0], tiers[2], tiers[3]
    qq = quantity[q]
    if qq == 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, np.inf
    sx = settle_px[i]
    coin = settle_underlying[i] == u
    if inst_underlying[i] != u:
        d = (value - mm) * sx
        return d, d, d, d, 0.0, np.inf
    k = kind[i]
    first = inst[2][i]
    t = first + tier - 1
    # The bracket on the side where the notional grows, when it sits exactly at a cap; the cap below.
    t_grow = t + 1 if t < inst[3][i] and notional >= cap[t] else t
    below = cap[t - 1] if t > first else 0.0
    if k == LINEAR and not coin:
        base = qq * size[i] * price[i] * sx
        if whole:
            f_lo, f_hi = 0.0, terms[1][i]
        else:
            f_lo, f_hi = reachable(mmf, cap, first, inst[3][i], notional * w_lo, notional * w_hi)
        # The notional N*m meets the cap below going down, the grown bracket's cap going up.
        return (base - f_hi * abs(base), base - f_lo * abs(base), base - mmf[t] * abs(base),
                base - mmf[t_grow] * abs(base), below / notional, cap[t_grow] / notional)
    if k == INVERSE and coin:
        # The coin notional N/m shrinks as m grows.
        base = qq * size[i] * sx / entry_price[q]
        if isolated[q]:
            base += isolated_margin[q] * sx
        if whole:
            a_lo, a_hi = terms[2][i], terms[3][i]
        else:
            a_lo, a_hi = reachable(amount, cap, first, inst[3][i], notional / w_hi, notional / w_lo)
        return (base + a_lo * sx, base + a_hi * sx, base + amount[t_grow] * sx, base + amount[t] * sx,
                notional / cap[t_grow], notional / below)
    if k == OPTION and not coin:
        disc = 1.0
        if rate < 0.0 and years[i] > 0.0:
            disc = math.exp(-rate * years[i])
        base = qq * size[i] * forward[i] * sx * disc
        if option_type[i] != CALL:
            base = -base
        lo_k = min(base, 0.0)
        hi_k = max(base, 0.0)
        if qq < 0.0:
            short_mm = option_margin[2] * abs(qq) * size[i] * forward[i] * sx
            lo_k -= short_mm
            hi_k -= short_mm
        return lo_k, hi_k, np.nan, np.nan, 0.0, np.inf
    return -np.inf, np.inf, np.nan, np.nan, 0.0, np.inf


@helper
def reachable(figure, cap, first, last, n_lo, n_hi):
    """``(min, max)`` of a bracket figure (mmf or maintenance amount) over the brackets a notional in
    ``[n_lo, n_hi]`` can be in (brackets ``first..last``, as ``margin.tier_margin`` assigns them)."""
    t = first
    while t < last and n_lo > cap[t]:
        t += 1
    lo = figure[t]
    hi = figure[t]
    while t < last and n_hi > cap[t]:
        t += 1
        lo = min(lo, figure[t])
        hi = max(hi, figure[t])
    return lo, hi


@inline
def shape(a, p, u, lo, hi, sep, order, book, inst, mm_convex, moving):
    """``CONCAVE``, ``LINEAR_WALK`` or ``GRID_WALK``: how the bucket's g behaves in m (module docstring)."""
    pos_start, pos_instrument, quantity, _, isolated, _, _, _, _ = book
    kind = inst[0]
    inst_underlying, settle_underlying = moving[0], moving[1]
    out = CONCAVE
    if p >= 0:
        lo, hi = 0, 1
    for j in range(lo, hi):
        q = p if p >= 0 else order[j]
        if quantity[q] == 0.0:
            continue
        i = pos_instrument[q]
        if inst_underlying[i] != u:
            continue  # on another underlying, settled in a coin following u: value and MM times m
        k = kind[i]
        coin_settled = settle_underlying[i] == u
        if k == OPTION or (k == LINEAR and coin_settled) or (k == INVERSE and not coin_settled):
            return GRID_WALK
        if not mm_convex[i]:
            out = LINEAR_WALK
    return out


# ------------------------------------------------------------------------------------- root finding

@inline
def next_point(m, down, grid, p, lo, hi, order, u, book, inst, tiers, val, moving):
    """The nearest factor beyond ``m`` (below it if ``down``) where a walk must look: a breakpoint of one of
    the bucket's futures on ``u``, a grid point (``grid``) or the end of the range."""
    _, pos_instrument, quantity, _, _, _, _, _, _ = book
    kind, size, tier_first, tier_last = inst[0], inst[1], inst[2], inst[3]
    cap = tiers[0]
    price = val[0]
    inst_underlying = moving[0]
    best = M_MIN if down else M_MAX
    if grid:
        k = math.floor(math.log(m) / _GRID_STEP) if down else math.ceil(math.log(m) / _GRID_STEP)
        g = math.exp(k * _GRID_STEP)
        if down and g >= m:
            g = math.exp((k - 1) * _GRID_STEP)
        elif not down and g <= m:
            g = math.exp((k + 1) * _GRID_STEP)
        best = max(best, g) if down else min(best, g)
    if p >= 0:
        lo, hi = 0, 1
    for j in range(lo, hi):
        q = p if p >= 0 else order[j]
        i = pos_instrument[q]
        if inst_underlying[i] != u or kind[i] == OPTION or quantity[q] == 0.0:
            continue
        units = abs(quantity[q]) * size[i]
        base = units * price[i] if kind[i] == LINEAR else units / price[i]  # notional at m = 1
        for t in range(tier_first[i], tier_last[i]):  # every finite cap of the schedule
            # Linear notional grows with m, inverse notional (coin) shrinks: where it meets the cap.
            x = cap[t] / base if kind[i] == LINEAR else base / cap[t]
            if down:
                if best < x < m:
                    best = x
            elif m < x < best:
                best = x
    return best


@inline
def search(d, g1, target, how, s_lo, s_hi, e_dn, e_up, seg_dn, seg_up, a, p, u, fixed, lo, hi, sep, order, book,
           inst, terms, tiers, val, weights, option_margin, moving):
    """One bucket's evaluation at m = 1 (``d = 0``: returns ``moving_figures``'s eight figures there), or its
    nearest factor below (``d = 1``) or above (``d = 2``) 1 where ``g <= target``, given ``g(1) = g1 >
    target``, the slope bounds ``[s_lo, s_hi]`` and (linear buckets) the exact slopes ``e_dn``, ``e_up`` of the
    segments just below and above 1, which end at the breakpoints ``seg_dn``, ``seg_up``: returns ``(factor, 0,
    0, 0, 0, 0, 0, 0)``, factor NaN when there is none in [M_MIN, M_MAX].

    *Tangent*, linear buckets: g is linear from 1 to the nearest breakpoint (or the range end), so if g falls
    there its root is ``1 + g1 / rate`` (Binance's closed form; evaluated a quarter tolerance outward to
    confirm it, so that rounding rarely leaves g a hair above 0 there); if that lies
    beyond the range end with no breakpoint before it, or g does not fall and there is no breakpoint, there is
    no crossing at all (no evaluation). When g is positive at the tangent's root (rounding) or a breakpoint
    comes first, the walk below decides.

    *Safe skip*: g falls by at most L per unit of m moved outward (L = ``s_hi`` down, ``-s_lo`` up), so from
    a point ``near`` there is no crossing before ``near +- (g(near) - target) / L``: L = 0 means none at all
    (no evaluation), a skip beyond the range end means none, and the walk jumps there when that is farther
    than its next point. A concave bucket is then evaluated at the range end: no crossing there, none at all.
    Then walk outward from breakpoint to breakpoint (and, off linear buckets, grid point to grid point) until
    ``g <= target``, so that a linear bucket's bracket is one linear segment; then narrow the bracket [near,
    far] to ``REL_TOL`` relative by Illinois regula falsi, each step kept at least one tolerance inside the
    bracket (so it always shrinks). Returns the far end, where ``g <= target``; on a linear segment the first
    step is the exact root and is returned at once when ``g <= target`` there (else one more step just across
    it closes the bracket). One evaluation site, so the bucket's evaluation is compiled once.
    """
    down = d == 1
    end = M_MIN if down else M_MAX
    sgn = -1.0 if down else 1.0
    # How fast g can fall per unit of m moved outward (inf: no bound, the walk alone decides).
    fall = max(s_hi, 0.0) if down else max(-s_lo, 0.0)
    if d != 0 and fall == 0.0:
        return np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0  # g never falls outward from g1 > target
    near = 1.0
    g_near = g1 - target
    x = 1.0
    chosen = d == 0
    tangent = d != 0 and how != GRID_WALK
    if tangent:
        # The first segment's exact fall rate outward, and its root.
        rate = e_dn if down else -e_up
        root = 1.0 + sgn * (g_near / rate) if rate > 0.0 else end
        if root < end if down else root > end:
            root = end
        if root >= seg_dn if down else root <= seg_up:
            if root == end:
                return np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0  # linear to the range end without reaching 0
            # Inside the segment: the exact root, a quarter tolerance outward so that rounding in g's sum
            # rarely leaves it a hair above 0; evaluated below to confirm it.
            x = root + sgn * (0.25 * REL_TOL * root)
            chosen = True
        else:
            tangent = False  # a breakpoint comes first (before the root, so before the range end too)
    far = end
    fa = 0.0
    fb = 0.0
    side = 0
    refining = False
    # A concave bucket crosses at most once in each direction: the range end tells whether it does.
    check_end = how == CONCAVE and not tangent
    g_end = np.nan
    while True:
        if not chosen:
            # The walk's next point, or farther when the safe skip reaches beyond it.
            safe = near + sgn * (g_near / fall)
            if safe < end if down else safe > end:
                return np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            x = end if check_end else next_point(near, down, how == GRID_WALK, p, lo, hi, order, u, book, inst,
                                                 tiers, val, moving)
            if safe < x if down else safe > x:
                x = safe
        chosen = False
        if x == end and not np.isnan(g_end):
            gx = g_end
        else:
            eq, mm, b_lo, b_hi, b_dn, b_up, b_sd, b_su = moving_figures(a, p, u, x, d == 0, lo, hi, sep, order, book,
                                                                        inst, terms, tiers, val, weights,
                                                                        option_margin, moving)
            if d == 0:
                return eq, mm, b_lo, b_hi, b_dn, b_up, b_sd, b_su
            gx = ((fixed + eq) - mm) - target
        if tangent:
            if gx <= 0.0:
                return x, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            # Rounding beyond the tolerance: walk on from here (a concave bucket checks the range end first).
            near = x
            g_near = gx
            tangent = False
            check_end = how == CONCAVE
            continue
        if check_end:
            if gx > 0.0:
                return np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            check_end = False
            g_end = gx
            continue
        if not refining:
            if gx > 0.0:
                if x == end:
                    return np.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                near = x
                g_near = gx
                continue
            refining = True
            far = x
            fa = g_near
            fb = gx
        elif gx <= 0.0:
            if side == 0 and how != GRID_WALK:
                # The first step on a linear segment is its exact root (Binance's closed form): done.
                return x, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            far, fb = x, gx
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            near, fa = x, gx
            if side == 1:
                fb *= 0.5
            side = 1
        toward = 1.0 if near > far else -1.0
        width = (near - far) * toward
        # A quarter of REL_TOL at the bracket's larger end: never below the spacing of floats in the bracket,
        # so that a step of one tolerance always moves.
        tol = 0.25 * REL_TOL * max(near, far)
        if width <= 2.0 * tol:
            return far, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        # Regula falsi (Illinois), kept at least one tolerance inside the bracket: after an exact step on a
        # linear segment the next trial lands just across the root and closes the bracket.
        step = (fb / (fb - fa)) * width
        if not step >= tol:
            step = tol
        elif not step <= width - tol:
            step = width - tol
        x = far + toward * step
        chosen = True


@inline
def bucket_factors(a, p, u, lo, hi, sep, split, total, order, book, inst, terms, tiers, val,
                   weights, option_margin, moving):
    """``(m_down, m_up, g1)`` of one bucket: factors 1.0 if liquidatable now, NaN where none; ``g1`` its excess
    equity - MM at m = 1 (+inf when it carries no MM: never liquidated).

    ``total = (equity, MM)`` of account ``a``'s whole cross bucket (unused for an isolated position).
    ``split``: no search; instead of the factors, how fast g can fall per unit of m moved down and up
    (``search``'s L, from the slope bounds; inf where unbounded): the cascade's screen (``kernels.cascade``)."""
    # One call site of ``search`` (inlined: the bucket's evaluation is compiled once, in here).
    g1 = fixed = s_lo = s_hi = e_dn = e_up = seg_dn = 0.0
    seg_up = np.inf
    target = 0.0
    how = CONCAVE
    down = np.nan
    up = np.nan
    for d in range(3):
        r0, r1, r2, r3, r4, r5, r6, r7 = search(d, g1, target, how, s_lo, s_hi, e_dn, e_up, seg_dn, seg_up, a, p,
                                                u, fixed, lo, hi, sep, order, book, inst, terms, tiers, val,
                                                weights, option_margin, moving)
        if d == 1:
            down = r0
        elif d == 2:
            up = r0
        else:
            eq1, mm1, s_lo, s_hi, e_dn, e_up, seg_dn, seg_up = r0, r1, r2, r3, r4, r5, r6, r7
            if p >= 0:
                has_mm = mm1 > 0.0
            else:
                # The rows that do not move with u, once: the whole bucket minus its moving part.
                fixed = (total[0] - eq1) - (total[1] - mm1)
                has_mm = total[1] > 0.0
            if not has_mm:
                return (0.0, 0.0, np.inf) if split else (np.nan, np.nan, np.inf)
            g1 = (fixed + eq1) - mm1
            if split:
                return max(s_hi, 0.0), max(-s_lo, 0.0), g1
            if g1 <= 0.0:
                return 1.0, 1.0, g1
            how = shape(a, p, u, lo, hi, sep, order, book, inst, terms[0], moving)
    return down, up, g1


# ------------------------------------------------------------------------------------- the kernel

@kernel(parallel=True, nrt=False)
def liquidation_factors(row_start, order, separable, out_account, out_u, out_pos, out_down, out_up, out_excess,
                        split, book, inst, terms, tiers, val, weights, option_margin, moving):
    """Every bucket's ``(m_down, m_up)`` (SPEC §4); account ``a``'s rows are ``row_start[a]:row_start[a+1]``:
    its cross rows by underlying code, then its isolated positions in position order.

    Writes ``out_account`` [r] (account index), ``out_u`` [r] (underlying code), ``out_pos`` [r] (position
    index, -1 for a cross row), ``out_down`` / ``out_up`` [r] (factors; 1.0 = liquidatable now, NaN = none in
    range; with ``split``, the fall rates of ``bucket_factors`` instead, and ``out_excess`` [r] the bucket's
    excess, else ``out_excess`` may be empty). ``order`` and ``separable`` come from ``group_positions``.
    ``val = (price, forward, settle_px, asset_px)`` is the valuation moved from (today's, or a shocked one);
    ``weights = (collateral_weight, borrow_weight)`` per asset; ``terms = (mm_convex, mmf_max, amount_min,
    amount_max, w_lo, w_hi)``: per instrument [i] whether its mmf never falls from bracket to bracket, and the
    range of its mmf and maintenance amounts; then the window of factors the slope bounds must hold over
    (``slope_bounds``); ``moving`` as in ``margin.moved_instrument``. Outputs are allocated by the caller.

    The loop body is one compiled call per account: the parallel pass analyses a small body, and the call
    costs a few nanoseconds. The index is cast because the parallel loop's own is unsigned once lowered,
    which would compile every callee a second time.
    """
    for a in prange(row_start.shape[0] - 1):
        account_factors(np.int64(a), row_start, order, separable, out_account, out_u, out_pos, out_down, out_up,
                        out_excess, split, book, inst, terms, tiers, val, weights, option_margin, moving)


@kernel(nrt=False)
def account_factors(a, row_start, order, separable, out_account, out_u, out_pos, out_down, out_up, out_excess,
                    split, book, inst, terms, tiers, val, weights, option_margin, moving):
    """The rows of account ``a`` (see ``liquidation_factors``)."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    price, forward, settle_px, asset_px = val
    inst_underlying = moving[0]
    r0 = row_start[a]
    lo = pos_start[a]
    hi = lo
    while hi < pos_start[a + 1] and order[hi] >= 0:
        hi += 1
    n_cross = row_start[a + 1] - r0
    for p in range(lo, pos_start[a + 1]):
        n_cross -= isolated[p] != 0
    sep = separable[a] != 0
    total = (0.0, 0.0)
    if n_cross > 0:
        coll, upnl, optv, im, mm, gross, iso_eq, n_iso = account_figures(
            a, pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start,
            bal_asset, bal_amount, inst, tiers, price, forward, settle_px, asset_px, weights[0], weights[1],
            option_margin)
        total = (coll + upnl + optv, mm)
    # One call site for every row, cross and isolated alike: each compiled helper is specialised once.
    u = -1
    last = lo
    p = lo - 1
    for r in range(r0, row_start[a + 1]):
        if r - r0 < n_cross:
            u, first, last = next_exposure(a, u, last, hi, sep, order, book, moving)
            bucket = -1
        else:
            p += 1
            while not isolated[p]:
                p += 1
            u = inst_underlying[pos_instrument[p]]
            first, last = lo, lo
            bucket = p
        out_account[r] = a
        out_u[r] = u
        out_pos[r] = bucket
        down, up, g1 = bucket_factors(a, bucket, u, first, last, sep, split, total, order, book, inst, terms, tiers,
                                      val, weights, option_margin, moving)
        out_down[r] = down
        out_up[r] = up
        if split:
            out_excess[r] = g1


@chunked
def liquidation_columns(account, underlying, position, down, up, account_id, instrument_id, index_price,
                        out_account_id, out_instrument_id, out_index, out_price, out_distance, out_valid, n_chunks):
    """The SPEC §4 columns of every row, in one pass: ``out_account_id`` [r], ``out_instrument_id`` [r] (-1
    for a cross row), ``out_index`` [r] (today's index price), ``out_price`` / ``out_distance`` [2, r]
    (down, up: price = index * factor; distance = 1 - factor down, factor - 1 up) and ``out_valid`` [3, r]
    uint8 (down found, up found, isolated row): the validity of the nullable columns."""
    n = down.shape[0]
    for c in prange(n_chunks):
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            p = position[r]
            index = index_price[underlying[r]]
            out_account_id[r] = account_id[account[r]]
            out_instrument_id[r] = instrument_id[p] if p >= 0 else -1
            out_index[r] = index
            out_price[0, r] = index * down[r]
            out_price[1, r] = index * up[r]
            out_distance[0, r] = 1.0 - down[r]
            out_distance[1, r] = up[r] - 1.0
            out_valid[0, r] = not np.isnan(down[r])
            out_valid[1, r] = not np.isnan(up[r])
            out_valid[2, r] = p >= 0
