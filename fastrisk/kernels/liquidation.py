"""Liquidation multipliers (SPEC §4): for every margin bucket, the nearest factors m below and above 1 by
which one underlying must move for the bucket to become liquidatable.

Index letters: a = accounts, p = positions (sorted by account), b = balances, i = instruments,
u = underlyings, t = tier brackets, r = output rows (buckets), c = chunks of accounts.

A *bucket* is either an account's cross bucket seen from one underlying ``u`` it has exposure to, or one
isolated position (seen from its own underlying). Its *excess* ``g(m) = equity(m) - MM(m)`` (USD) is
evaluated with the code of ``account_risk``: ``margin.position_figures``, ``margin.usd_contribution`` and
``margin.add_position`` summed as ``margin.account_figures`` sums them, and ``margin.moved_instrument`` +
``margin.balance_usd`` for the rows that move with ``u``. The bucket is liquidatable at ``m`` when MM > 0 and
``g(m) <= 0`` (SPEC §3). MM is > 0 at every ``m`` exactly when the bucket holds a future with a quantity or
a short option, so buckets without one never liquidate (NaN) and for the others the rule is ``g(m) <= 0``.

Two passes. ``count_rows`` finds each account's rows (its exposures as a bit set per account), so that the
rows can be allocated. ``account_factors`` then values each position once at m = 1, into the account's
totals and into per-underlying sums of the rows moving with each ``u`` (their equity, MM and slope bounds),
and groups the account's cross positions with a quantity by underlying, so that evaluating a bucket at
another m touches only its own positions: ``g(m) = fixed + moving(m)``, where ``fixed`` (the rows that do not
move with ``u``) is the whole account minus ``moving(1)``.

Root finding, outward from m = 1 in each direction (``g`` is continuous: tiers are continuous by the
maintenance-amount rule; and smooth between *breakpoints*, where a future's notional crosses a cap):

* **linear buckets**: every row moving with ``u`` is linear in m between breakpoints (linear futures settled
  in an asset that does not follow ``u``, inverse futures settled in one that does, anything on another
  underlying settled in such a coin, collateral). Equity is then linear in m and MM piecewise linear.
  - *concave* (every schedule involved has non-decreasing mmf, as exchanges publish them): MM is convex
    (for an inverse future in its own coin, ``S*m*f(N/m)`` is the perspective of the convex ``f``), so ``g``
    is concave: a crossing is unique, and the range end (or a tangent reaching 0, as g lies below it) tells
    whether there is one.
  - otherwise: g may cross more than once; the first crossing is the one reported.
  Either way g is linear between breakpoints: from 1, and from each breakpoint the walk reaches, the
  segment's exact slope gives its root (Binance's closed form) when it lies in the segment (``tangent``).
* **other buckets** (options on ``u``, inverse futures in a stable settle asset, linear futures settled in
  the coin itself): the walk visits the breakpoints and a geometric grid of ``GRID_PER_DECADE`` points per
  decade; the first bracketing cell is refined. Two crossings closer together than one grid step (3.7 %)
  inside one cell can be missed; a crossing is never reported where there is none. Where every row's equity
  is linear, concave or convex in m and its MM convex (all but linear futures and options settled in the coin
  itself, and futures whose mmf falls somewhere in their schedule), the walk strides over several cells at once,
  as long as a lower bound of g over the stride proves it has no crossing: the concave part of g lies above its
  chord, the convex part (long options, short inverse futures in a stable coin) above its tangents at the
  stride's ends (``stride_low``). Such a stride passes caps.

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
from numba.cpython.unsafe.numbers import trailing_zeros

from ..codes import CALL, INVERSE, LINEAR, OPTION
from ._jit import helper, index, inline, kernel
from .margin import (NO_POSITIONS, add_position, balance_usd, isolated_bucket, moved_instrument, position_figures,
                     usd_contribution)

M_MIN, M_MAX = 1e-4, 1e4
GRID_PER_DECADE = 64
_GRID_STEP = math.log(10.0) / GRID_PER_DECADE
# Grid points exp(k * _GRID_STEP) for |k| <= GRID_K span the search range [M_MIN, M_MAX].
GRID_K = 4 * GRID_PER_DECADE
REL_TOL = 1e-13
# Grid cells a certified walk's first step spans (one decade): most option buckets have no crossing for decades,
# and the bound of a step (``stride_low``) does not weaken with its length as such. Option walks at 1M accounts:
# 266k evaluations (118k off the grid), against 399k (154k) with a first step of one cell.
FIRST_STRIDE = GRID_PER_DECADE

# How g(m) behaves between breakpoints (see the module docstring), in increasing order of search effort.
CONCAVE, LINEAR_WALK, GRID_WALK, CELL_WALK = 0, 1, 2, 3


# ------------------------------------------------------------------------------------- account layout

@inline
def position_exposure(p, book, moving):
    """The underlyings a position moves its account's cross bucket with: ``(own, coin)``, ``own`` its
    underlying when it is a cross position with a quantity (else -1), ``coin`` the underlying its settle asset
    follows when that is another one (else -1; the account's equity then does not separate by underlying).
    With ``balance_exposure``, the one rule for which (account, underlying) rows exist."""
    _, pos_instrument, quantity, _, isolated, _, _, _, _ = book
    if isolated[index(p)] or quantity[index(p)] == 0.0:
        return -1, -1
    i = index(pos_instrument[index(p)])
    own = moving[0][i]
    coin = moving[1][i]
    return own, coin if coin >= 0 and coin != own else -1


@inline
def balance_exposure(b, book, moving):
    """The underlying balance ``b``'s asset follows, -1 if none or the balance is 0 (a cross bucket with a
    position with a quantity moves with it)."""
    _, _, _, _, _, _, _, bal_asset, bal_amount = book
    if bal_amount[index(b)] == 0.0:
        return -1
    return moving[2][index(bal_asset[index(b)])]


_ZERO, _ONE = np.uint64(0), np.uint64(1)


@inline
def _set(words, u):
    """Set bit ``u`` (>= 0) of the bit set ``words`` (uint64 [n_words])."""
    words[index(u >> 6)] |= _ONE << np.uint64(u & 63)


@inline
def _lowest(word):
    """``(bit, rest)``: the lowest set bit of a non-zero uint64 and the word without it."""
    return np.int64(trailing_zeros(word)), word & (word - _ONE)


_M1, _M2, _M4, _H01 = (np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F),
                      np.uint64(0x0101010101010101))


@inline
def _popcount(x):
    """The set bits of a uint64, branch-free (SWAR): a loop over the bits mispredicts its exit once a word."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _H01) >> np.uint64(56))


@inline
def _add_bit(w0, words, u):
    """Set bit ``u`` (>= 0) of the bit set whose first word is kept in ``w0`` (returned) and the rest in
    ``words``: a venue's first 64 underlyings cost a register operation, not a store and a reload."""
    if u < 64:
        return w0 | (_ONE << np.uint64(u))
    _set(words, u)
    return w0


@kernel(parallel=True, nrt=False)
def count_rows(n_rows, n_cross, exposure, book, moving):
    """Per account: the underlyings its cross bucket moves with, as a bit set ``exposure`` [a, n_words] (bit u
    of word u // 64; none when it has no cross position with a quantity); the rows of its liquidation table
    into ``n_rows`` [a] (cross rows + isolated positions) and its cross rows into ``n_cross`` [a]."""
    pos_start, _, _, _, isolated, _, bal_start, _, _ = book
    for a in prange(pos_start.shape[0] - 1):
        words = exposure[a]
        words[:] = 0
        w0 = _ZERO
        n_iso = 0
        for p in range(pos_start[a], pos_start[a + 1]):
            n_iso += isolated[index(p)] != 0
            own, coin = position_exposure(p, book, moving)
            if own >= 0:
                w0 = _add_bit(w0, words, own)
            if coin >= 0:
                w0 = _add_bit(w0, words, coin)
        if words.shape[0] > 0:
            words[0] = w0
        n_u = 0
        for w in range(words.shape[0]):
            n_u += _popcount(words[w])
        if n_u > 0:
            for b in range(bal_start[a], bal_start[a + 1]):
                u = balance_exposure(b, book, moving)
                if u >= 0 and not words[index(u >> 6)] & (_ONE << np.uint64(u & 63)):
                    _set(words, u)
                    n_u += 1
        n_rows[a] = n_u + n_iso
        n_cross[a] = n_u


@kernel(nrt=False)
def row_offsets(n_rows, pos_start, row_start):
    """Where each account's rows begin, ``row_start`` [a+1] (0, then the running sum of ``count_rows``'
    ``n_rows`` [a]), in one serial pass that also returns the most positions an account has (at least 1: the
    size of ``liquidation_factors``' scratch for isolated positions): NumPy's cumsum and two diffs took 7 ms of
    a 2-thread liquidation_prices at 1M accounts, this 3."""
    row_start[0] = 0
    total = 0
    most = 1
    for a in range(n_rows.shape[0]):
        total += n_rows[a]
        row_start[a + 1] = total
        most = max(most, pos_start[a + 1] - pos_start[a])
    return most


@inline
def position_shape(i, u, kind, settle_underlying, mm_convex):
    """How a future or option on ``u`` (its own underlying) makes its bucket's g behave (module docstring):
    ``CELL_WALK`` when its USD equity is neither concave nor convex in m (a linear future or an option settled in
    the coin itself: its value times the coin's price); ``GRID_WALK`` when it is but is not linear in m between
    breakpoints (an option, an inverse future in a stable coin); then ``CONCAVE`` if its mmf never falls from
    bracket to bracket, else ``LINEAR_WALK``. A bucket combines its rows' (``combined_shape``)."""
    k = kind[i]
    coin_settled = settle_underlying[i] == u
    if coin_settled and (k == LINEAR or k == OPTION):
        return CELL_WALK
    if k == OPTION or (k == INVERSE and not coin_settled):
        return GRID_WALK
    return CONCAVE if mm_convex[i] else LINEAR_WALK


@inline
def combined_shape(a, b):
    """The shape of a bucket from two of its rows' (``position_shape``): the larger, except that a future whose
    mmf falls somewhere in its schedule (``LINEAR_WALK``) in a ``GRID_WALK`` bucket makes it a ``CELL_WALK``
    one: its MM is not convex, which certified steps need (``stride_low``)."""
    if (a == LINEAR_WALK and b == GRID_WALK) or (a == GRID_WALK and b == LINEAR_WALK):
        return CELL_WALK
    return max(a, b)


# ------------------------------------------------------------------------------------- a bucket's g(m)

@inline
def moving_figures(a, p, u, m, kg, lo, hi, sep, order, book, inst, tiers, val, weights, option_margin, moving, certify,
                   slopes, down):
    """``(equity, MM, convex, convex_slope, slope, segment end)`` in USD, at ``m``, of the rows of a bucket that
    move with ``u``: isolated position ``p`` when ``p >= 0``; else account ``a``'s cross positions on ``u``
    (``order[lo:hi]``), its other cross positions settled in a coin following ``u`` (only when not ``sep``arable)
    and its balances in assets following ``u``. One call site of the position code, for every kind of row: it is
    specialised once.

    With ``certify`` (a ``GRID_WALK`` bucket), ``convex`` is the equity of the rows whose equity is convex in m
    (long options, short inverse futures in a stable coin) and ``convex_slope`` its derivative in m; the rest
    of the bucket's excess is concave in m (``search``); else both are 0.

    With ``slopes`` (a linear bucket), also g's exact slope in m just beyond ``m`` (below it if ``down``) and
    the nearest factor there where it changes (``outward_slope``); else those two are 0 and 0 or inf.

    ``kg >= 0``: ``m`` is grid point ``kg - GRID_K`` (``next_point``). The walks of option buckets step from grid
    point to grid point, and a venue has far fewer options than option positions (436 against 113k in the
    benchmark's): an option's price and its slope in m there are kept in ``moving[9]`` and ``moving[10]`` [row,
    kg] (NaN until first priced; option ``i``'s row is ``moving[8][i]``, -1 for futures) and read instead of
    re-priced with Black-76. Any thread may price an entry first: they all write the same bits, so results never
    depend on which."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    kind, option_type, strike = inst[0], inst[4], inst[5]
    price, forward, settle_px, asset_px = val
    inst_underlying, settle_underlying, asset_underlying = moving[0], moving[1], moving[2]
    equity = 0.0
    mm_sum = 0.0
    convex = 0.0
    convex_slope = 0.0
    slope = 0.0
    seg = 0.0 if down else np.inf
    if p >= 0:
        n_own, n_other = 1, 0
    else:
        n_own = hi - lo
        n_other = 0 if sep else pos_start[a + 1] - pos_start[a]
    n_bal = 0 if p >= 0 else bal_start[a + 1] - bal_start[a]
    for k in range(n_own + n_other + n_bal):
        if k >= n_own + n_other:
            b = index(bal_start[a] + k - n_own - n_other)
            kb = index(bal_asset[b])
            if asset_underlying[kb] != u:
                continue
            e = balance_usd(asset_px[kb] * m, bal_amount[b], weights[0][kb], weights[1][kb])
            mm_k = 0.0
            if slopes:
                slope += balance_usd(asset_px[kb], bal_amount[b], weights[0][kb], weights[1][kb])  # linear in m
        else:
            if p >= 0:
                q = index(p)
            elif k < n_own:
                q = index(order[index(lo + k)])
            else:
                q = index(pos_start[a] + k - n_own)
                i = index(pos_instrument[q])
                if isolated[q] or inst_underlying[i] == u or settle_underlying[i] != u:
                    continue
            i = index(pos_instrument[q])
            tabulated = kg >= 0 and moving[8][i] >= 0 and inst_underlying[i] == u
            cell = (index(max(moving[8][i], 0)), index(max(kg, 0)))  # read and written only where tabulated
            known = (moving[9][cell], moving[10][cell]) if tabulated else (np.nan, np.nan)
            pr, fw, px, dp = moved_instrument(i, u, m, kind, option_type, strike, price, forward, settle_px, moving,
                                              known)
            if tabulated and (np.isnan(known[0]) or np.isnan(known[1])):
                moving[9][cell] = pr  # whichever thread prices it first: the same bits
                moving[10][cell] = dp
            qq = quantity[q]
            notional, upnl, value, im, mm, tier = position_figures(
                kind[i], qq, inst[1][i], pr, fw, entry_price[q], inst[2][i], inst[3][i], option_type[i],
                strike[i], tiers, option_margin)
            if p >= 0:
                e, _ = isolated_bucket(isolated_margin[q], value, mm, px)  # the bucket's own rule
            else:
                e = value * px  # futures: upnl; options: q*c*V (margin.position_usd)
            mm_k = mm * px
            if certify and inst_underlying[i] == u:
                if kind[i] == OPTION and qq > 0.0:
                    convex += e
                    convex_slope += qq * inst[1][i] * dp * px
                elif kind[i] == INVERSE and qq < 0.0 and settle_underlying[i] != u:
                    convex += e  # -q*c*S/(P*m) and a constant
                    convex_slope += qq * inst[1][i] * px * (price[i] / pr) / pr
            if slopes:
                if inst_underlying[i] != u:
                    slope += coin_bounds(value, mm, settle_px[i])[0]
                else:
                    slope_k, seg_k = outward_slope(q, i, m, notional, tier, down, book, inst, tiers, val)
                    slope += slope_k
                    seg = max(seg, seg_k) if down else min(seg, seg_k)
        equity += e
        mm_sum += mm_k
    return equity, mm_sum, convex, convex_slope, slope, seg


@inline
def slope_bounds(q, i, u, value, mm, notional, tier, bounds_only, book, inst, terms, tiers, val, option_margin,
                 moving):
    """``(lo, hi, down, up, seg_down, seg_up)``: ``[lo, hi]`` bounds the slope in m (USD per unit of m) of position
    ``q``'s part of its bucket's excess g = equity - MM when its own underlying ``u`` moves by m, from today's
    valuation (``value``, ``mm``, ``notional`` in settle units at m = 1, ``tier`` its 1-based bracket); ``down``,
    ``up`` are that slope exactly on the linear segment just below and just above m = 1 (NaN for a row that is not
    linear in m between breakpoints), and those segments end at ``seg_down`` < 1 < ``seg_up``, where the notional
    meets a cap (0, inf: never).

    Down and up (and where their segments end) are ``outward_slope`` at m = 1: they differ only at a cap. With
    ``bounds_only`` (the cascade's screen) they are not computed (0).

    The bounds hold for m in the window ``[terms[4], terms[5]]`` (the search range for liquidation prices, a
    narrower one for the cascade's screen): a future's bracket t then ranges over the brackets its notional
    reaches in the window, and the bound takes the extreme mmf / maintenance amount among those (over the
    whole search range, the schedule's: ``terms[1:4]``).

    Derivatives of ``margin.position_figures`` with the row moved by ``margin.moved_instrument`` (c = contract
    size, P, F = today's mark and forward, S = settle price, E = entry, t = bracket):

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
    settle_underlying, years, rate = moving[1], moving[5], moving[7]
    cap, mmf, amount = tiers[0], tiers[2], tiers[3]
    qq = quantity[index(q)]
    if qq == 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, np.inf
    sx = settle_px[i]
    coin = settle_underlying[i] == u
    k = kind[i]
    first = inst[2][i]
    if (k == LINEAR and not coin) or (k == INVERSE and coin):
        base = future_base(q, i, book, inst, val)
        dn = up = seg_dn = seg_up = 0.0
        for d in range(0 if bounds_only else 2):  # one call site: inlined once
            slope_d, seg_d = outward_slope(q, i, 1.0, notional, tier, d == 0, book, inst, tiers, val)
            if d == 0:
                dn, seg_dn = slope_d, seg_d
            else:
                up, seg_up = slope_d, seg_d
        if k == LINEAR:
            if whole:
                f_lo, f_hi = 0.0, terms[1][i]
            else:
                f_lo, f_hi = reachable(mmf, cap, first, inst[3][i], notional * w_lo, notional * w_hi)
            return base - f_hi * abs(base), base - f_lo * abs(base), dn, up, seg_dn, seg_up
        # The coin notional N/m shrinks as m grows.
        if whole:
            a_lo, a_hi = terms[2][i], terms[3][i]
        else:
            a_lo, a_hi = reachable(amount, cap, first, inst[3][i], notional / w_hi, notional / w_lo)
        return base + a_lo * sx, base + a_hi * sx, dn, up, seg_dn, seg_up
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


@inline
def future_base(q, i, book, inst, val):
    """The part of a linear-in-m future's slope (USD per unit of m) that no bracket changes: ``q*c*P*S`` for
    a linear future in a stable coin (its upnl), ``q*c*S/E`` for an inverse one in its own coin (plus the
    isolated margin times S for an isolated one). See ``slope_bounds``."""
    _, _, quantity, entry_price, isolated, isolated_margin, _, _, _ = book
    size = inst[1]
    price, settle_px = val[0], val[2]
    q = index(q)
    if inst[0][i] == LINEAR:
        return quantity[q] * size[i] * price[i] * settle_px[i]
    base = quantity[q] * size[i] * settle_px[i] / entry_price[q]
    if isolated[q]:
        base += isolated_margin[q] * settle_px[i]
    return base


@inline
def bracket_slope(kind, base, t, sx, tiers):
    """The slope in m of such a future's part of g in bracket ``t`` (``future_base``'s ``base``): a linear
    future's MM grows with its notional at mmf_t, ``base - mmf_t*|base|``; an inverse one's USD MM is
    ``mmf_t*|q|*c*S/P - amount_t*S*m``, ``base + amount_t*S``."""
    if kind == LINEAR:
        return base - tiers[2][index(t)] * abs(base)
    return base + tiers[3][index(t)] * sx


@inline
def outward_slope(q, i, m, notional, tier, down, book, inst, tiers, val):
    """``(slope, segment end)`` of a linear-in-m future's part of g (a linear one in a stable coin, an inverse
    one in its own coin) just beyond ``m`` (below it if ``down``), where its notional (settle units) is
    ``notional`` in bracket ``tier`` (1-based): the slope in the bracket its notional enters there, and the
    factor where it leaves it (its cap or the one below; 0 or inf: none). A notional within rounding of a cap
    counts in the bracket the walk goes on into."""
    kind, first, last = inst[0][i], inst[2][i], inst[3][i]
    cap = tiers[0]
    grows = (kind == LINEAR) != down  # a linear notional grows with m, an inverse (coin) one shrinks
    t = first + tier - 1
    if grows and t < last and notional >= cap[index(t)] * (1.0 - 1e-12):
        t += 1
    elif not grows and t > first and notional <= cap[index(t - 1)] * (1.0 + 1e-12):
        t -= 1
    slope = bracket_slope(kind, future_base(q, i, book, inst, val), t, val[2][i], tiers)
    if grows:
        edge = cap[index(t)] if t < last else np.inf
    else:
        edge = cap[index(t - 1)] if t > first else 0.0
    # The notional scales with m (linear) or 1/m (inverse): the factor where it meets the edge.
    if kind == LINEAR:
        return slope, m * (edge / notional)
    return slope, m * (notional / edge)


@inline
def coin_bounds(value, mm, px):
    """``slope_bounds`` of a position on another underlying than u, settled in a coin following u: its
    ``(value - MM) * S * m`` is linear in m, slope exactly ``(value - MM) * S``."""
    d = (value - mm) * px
    return d, d, d, d, 0.0, np.inf


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


# ------------------------------------------------------------------------------------- root finding

@inline
def next_point(m, down, cells, certified, p, lo, hi, order, u, book, inst, tiers, val, moving):
    """``(x, kg)``: the nearest factor beyond ``m`` (below it if ``down``) where a walk must look: a breakpoint of
    one of the bucket's futures on ``u`` (none for a ``certified`` walk, whose steps pass caps: see ``search``),
    the grid point ``cells`` cells beyond ``m`` (none if 0) or the end of the range;
    ``kg``: ``GRID_K`` + the grid point's k when it is that (``moving_figures``), else -1."""
    _, pos_instrument, quantity, _, _, _, _, _, _ = book
    kind, size, tier_first, tier_last = inst[0], inst[1], inst[2], inst[3]
    cap = tiers[0]
    price = val[0]
    inst_underlying = moving[0]
    best = M_MIN if down else M_MAX
    kg = -1
    if cells > 0:
        # The first grid point strictly beyond m, then cells - 1 more.
        k = math.floor(math.log(m) / _GRID_STEP) if down else math.ceil(math.log(m) / _GRID_STEP)
        if down and math.exp(k * _GRID_STEP) >= m:
            k -= 1
        elif not down and math.exp(k * _GRID_STEP) <= m:
            k += 1
        k = k - (cells - 1) if down else k + (cells - 1)
        g = math.exp(k * _GRID_STEP)
        if g > best if down else g < best:
            best = g
            kg = np.int64(k) + GRID_K
    if p >= 0:
        lo, hi = 0, 1
    if certified:
        hi = lo
    for j in range(lo, hi):
        q = index(p if p >= 0 else order[index(j)])
        i = index(pos_instrument[q])
        if inst_underlying[i] != u or kind[i] == OPTION or quantity[q] == 0.0:
            continue
        units = abs(quantity[q]) * size[i]
        base = units * price[i] if kind[i] == LINEAR else units / price[i]  # notional at m = 1
        for t in range(tier_first[i], tier_last[i]):  # every finite cap of the schedule
            # Linear notional grows with m, inverse notional (coin) shrinks: where it meets the cap.
            x = cap[index(t)] / base if kind[i] == LINEAR else base / cap[index(t)]
            if down:
                if best < x < m:
                    best = x
                    kg = -1
            elif m < x < best:
                best = x
                kg = -1
    return best, kg


@inline
def tangent(near, g_near, rate, seg, end, down):
    """Where g, linear from ``near`` (excess ``g_near`` > 0, falling by ``rate`` per unit of m moved outward,
    below ``near`` if ``down``) up to the segment end ``seg``, reaches 0: ``(factor, True)``, a quarter
    tolerance outward (exact up to the rounding of g and the slope, which an evaluation there would share), or
    NaN when it does not before the range ``end`` and no breakpoint comes first; else ``(root, False)``, a
    breakpoint comes first (root: where the line reaches 0, the range end if it does not)."""
    sgn = -1.0 if down else 1.0
    root = near + sgn * (g_near / rate) if rate > 0.0 else end
    if root < end if down else root > end:
        root = end
    if root >= seg if down else root <= seg:
        if root == end:
            return np.nan, True  # linear to the range end without reaching 0
        return root + sgn * (0.25 * REL_TOL * root), True
    return root, False


@inline
def stride_low(x0, k0, c0, d0, x1, k1, c1, d1):
    """A lower bound, less the bucket's fixed part, of its excess g over the factors between ``x0`` and ``x1``
    at an interior point, given at each end the part of g that is concave in m (``k``), the part that is convex
    (``c``) and the convex part's slope (``d``) (``moving_figures``); +inf when the bound's least value is at an
    end, where g itself is known; NaN when a figure is.

    Every row of a certified bucket has an equity that is linear, concave (short options, long inverse futures
    in a stable coin) or convex (long options, short inverse futures in a stable coin) in m, and an MM that is
    convex in m (short options' MM is linear; a future's is convex when its mmf never falls from bracket to
    bracket, also for a coin-settled inverse one, whose USD MM ``S*m*MM(N/m)`` is the perspective of a convex
    function). So the concave part lies above its chord between the two ends, and the convex part above both
    of its tangents there: g is at least the chord plus the larger tangent, a convex piecewise linear function
    whose least value is at an end or where the two tangents meet. Unlike a bound from each row's values at the
    two ends, this one does not weaken as a step grows (only as the convex rows bend), and it holds across caps.
    """
    if d0 == d1:
        return np.inf  # the convex part is linear: the least value is at an end
    x = (c1 - c0 - d1 * x1 + d0 * x0) / (d0 - d1)  # where the tangents meet
    if x <= min(x0, x1) or x >= max(x0, x1):
        return np.inf  # written so that a NaN gives a NaN bound: nothing certified
    return k0 + (k1 - k0) * ((x - x0) / (x1 - x0)) + (c0 + d0 * (x - x0))


@inline
def search(down, g1, how, s_lo, s_hi, e_dn, e_up, seg_dn, seg_up, a, p, u, fixed, lo, hi, sep, order, book, inst,
           tiers, val, weights, option_margin, moving):
    """One bucket's nearest factor below (``down``) or above 1 where ``g <= 0``, NaN when there is none in
    [M_MIN, M_MAX], given ``g(1) = g1 > 0``, the slope bounds ``[s_lo, s_hi]`` and (linear buckets) the exact
    slopes ``e_dn``, ``e_up`` of the segments just below and above 1, which end at the breakpoints ``seg_dn``,
    ``seg_up`` (``slope_bounds``).

    *Tangent*, linear buckets: g is linear from 1 to the nearest breakpoint (or the range end), so if g falls
    there its root is ``1 + g1 / rate`` (Binance's closed form), returned without an evaluation (``tangent``);
    if that lies beyond the range end with no breakpoint before it, or g does not fall and there is no
    breakpoint, there is no crossing at all. When a breakpoint comes first, the walk below decides, and does
    the same from every breakpoint it reaches (the evaluation there gives the next segment's slope), so that
    it stops at the segment holding the root.

    *Safe skip*: g falls by at most L per unit of m moved outward (L = ``s_hi`` down, ``-s_lo`` up), so from
    a point ``near`` there is no crossing before ``near +- g(near) / L``: L = 0 means none at all
    (no evaluation), a skip beyond the range end means none, and the walk jumps there when that is farther
    than its next point. A concave bucket whose first tangent does not reach 0 in range is then evaluated at
    the range end: no crossing there, none at all.
    Then walk outward from breakpoint to breakpoint (and, off linear buckets, grid point to grid point) until
    ``g <= 0``, so that a linear bucket's bracket is one linear segment; then narrow the bracket [near,
    far] to ``REL_TOL`` relative by Illinois regula falsi, each step kept at least one tolerance inside the
    bracket (so it always shrinks). Returns the far end, where ``g <= 0``; on a linear segment the first
    step is the exact root and is returned at once when ``g <= 0`` there (else one more step just across
    it closes the bracket). One evaluation site, so the bucket's evaluation is compiled once.

    *Certified steps* (``GRID_WALK``): the walk steps over several grid cells at once (``FIRST_STRIDE`` first),
    doubling the count while the steps are certified, i.e. proven to hold no crossing by a lower bound of g over
    the whole step (``stride_low``); an uncertified step is retried with half the cells; one cell is walked as
    before. A certified step passes every cap: the bound needs no bracket to hold over the step. A step of
    several cells that ends at ``g <= 0`` is refined at once (``verify``), and the root found is returned if the
    bound proves g > 0 from the step's start up to it; otherwise a nearer crossing is possible, and the step is
    walked again from its start in halves down to one cell before refinement.
    """
    end = M_MIN if down else M_MAX
    sgn = -1.0 if down else 1.0
    # How fast g can fall per unit of m moved outward (inf: no bound, the walk alone decides).
    fall = max(s_hi, 0.0) if down else max(-s_lo, 0.0)
    if fall == 0.0:
        return np.nan  # g never falls outward from g1 > 0
    near = 1.0
    g_near = g1
    x = 1.0
    chosen = False
    certify = how == GRID_WALK
    cells = FIRST_STRIDE if certify else 1
    # When certifying: the concave part of g, the convex part and its slope at ``near`` (see stride_low).
    k_near = c_near = d_near = 0.0
    skipped = False
    bisecting = False  # a step of several cells ended at g <= 0: the next ones halve down to one cell
    linear = how < GRID_WALK
    line_root = end
    if linear:
        factor, decided = tangent(1.0, g_near, e_dn if down else -e_up, seg_dn if down else seg_up, end, down)
        if decided:
            return factor
        line_root = factor
    far = end
    fa = 0.0
    fb = 0.0
    side = 0
    refining = False
    # A concave bucket crosses at most once in each direction: the range end tells whether it does, unless its
    # tangent at 1 (above it) reaches 0 in range.
    check_end = how == CONCAVE and line_root == end
    g_end = np.nan
    kx = -1  # the grid index of x (``next_point``), -1 off the grid
    at_one = certify  # first, the split of g at m = 1 (the pass at m = 1 sums only the whole)
    if at_one:
        x, kx, chosen = 1.0, GRID_K, True
    k_x = c_x = d_x = 0.0
    verify = False
    start, g_start, k_start, c_start, d_start = near, g_near, k_near, c_near, d_near
    while True:
        if not chosen:
            # The walk's next point, or farther when the safe skip reaches beyond it.
            safe = near + sgn * (g_near / fall)
            if safe < end if down else safe > end:
                return np.nan
            x, kx = (end, -1) if check_end else next_point(near, down, cells if how >= GRID_WALK else 0, certify, p,
                                                           lo, hi, order, u, book, inst, tiers, val, moving)
            skipped = safe < x if down else safe > x
            if skipped:
                x, kx = safe, -1  # beyond the step: certified by the slope bound
        chosen = False
        if x == end and not np.isnan(g_end):
            gx = g_end
        else:
            eq, mm, c_x, d_x, slope_x, seg_x = moving_figures(a, p, u, x, kx, lo, hi, sep, order, book, inst, tiers,
                                                              val, weights, option_margin, moving, certify, linear,
                                                              down)
            gx = (fixed + eq) - mm
            k_x = (eq - c_x) - mm
            if at_one:
                at_one = False
                k_near, c_near, d_near = k_x, c_x, d_x
                continue
        if check_end:
            if gx > 0.0:
                return np.nan
            check_end = False
            g_end = gx
            continue
        if not refining:
            low = stride_low(near, k_near, c_near, d_near, x, k_x, c_x, d_x) if cells > 1 and not skipped else np.inf
            # A step of several cells that ends liquidatable: refine at once, and check afterwards that no
            # crossing comes before the root found (``verify``), instead of first halving it down to one cell.
            verify = certify and cells > 1 and not skipped and not bisecting and gx <= 0.0
            if cells > 1 and not skipped and not verify and (gx <= 0.0 or not fixed + low > 0.0):
                cells //= 2  # a crossing may lie inside the step: shorter steps from ``near``
                bisecting = bisecting or gx <= 0.0
                continue
            if gx > 0.0:
                if x == end:
                    return np.nan
                near = x
                g_near = gx
                if linear and not check_end:
                    factor, decided = tangent(x, gx, slope_x if down else -slope_x, seg_x, end, down)
                    if decided:
                        return factor
                if certify:
                    k_near, c_near, d_near = k_x, c_x, d_x
                    if bisecting:
                        cells = max(cells // 2, 1)  # the crossing lies within as many cells as just stepped
                    elif skipped or fixed + low > 0.0:
                        cells *= 2
                continue
            refining = True
            start, g_start, k_start, c_start, d_start = near, g_near, k_near, c_near, d_near  # what verify needs
            far = x
            fa = g_near
            fb = gx
        elif gx <= 0.0:
            if side == 0 and how < GRID_WALK:
                # The first step on a linear segment is its exact root (Binance's closed form): done.
                return x
            far, fb = x, gx
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            near, fa = x, gx
            k_near, c_near, d_near = k_x, c_x, d_x
            if side == 1:
                fb *= 0.5
            side = 1
        toward = 1.0 if near > far else -1.0
        width = (near - far) * toward
        # A quarter of REL_TOL at the bracket's larger end: never below the spacing of floats in the bracket,
        # so that a step of one tolerance always moves.
        tol = 0.25 * REL_TOL * max(near, far)
        if width <= 2.0 * tol:
            if not verify or fixed + stride_low(start, k_start, c_start, d_start, near, k_near, c_near, d_near) > 0.0:
                return far  # g > 0 from the step's start up to the bracket: this is the nearest crossing
            # An earlier crossing is possible: walk the step again from its start in halves, as without verify.
            near, g_near, k_near, c_near, d_near = start, g_start, k_start, c_start, d_start
            cells //= 2
            bisecting = True
            verify = refining = False
            side = 0
            continue
        # Regula falsi (Illinois), kept at least one tolerance inside the bracket: after an exact step on a
        # linear segment the next trial lands just across the root and closes the bracket.
        step = (fb / (fb - fa)) * width
        if not step >= tol:
            step = tol
        elif not step <= width - tol:
            step = width - tol
        x, kx = far + toward * step, -1
        chosen = True


@inline
def row_factors(a, p, u, equity, mm, fixed, has_mm, bounds, how, lo, hi, sep, order, book, inst, tiers, val, weights,
                option_margin, moving):
    """``(m_down, m_up)`` of one bucket row: factors 1.0 if liquidatable now, NaN where none (always, when the
    bucket carries no MM: never liquidated).

    ``equity``, ``mm``: at m = 1, of the rows moving with ``u`` (``moving_figures``' scope: isolated position
    ``p`` when ``p >= 0``, else account ``a``'s, its positions on ``u`` being ``order[lo:hi]``); ``fixed``: the
    excess of the rest of the bucket; ``has_mm``: the whole bucket carries MM; ``bounds``: the moving rows'
    ``slope_bounds``, summed (segment ends: the nearest); ``how``: their shape (``position_shape``).

    Compiled once and called for cross and isolated rows alike, with one call site of ``search``: the
    bucket's evaluation is compiled once."""
    s_lo, s_hi, e_dn, e_up, seg_dn, seg_up = bounds
    if not has_mm:
        return np.nan, np.nan
    g1 = (fixed + equity) - mm
    if g1 <= 0.0:
        return 1.0, 1.0
    down = up = np.nan
    for d in range(2):
        factor = search(d == 0, g1, how, s_lo, s_hi, e_dn, e_up, seg_dn, seg_up, a, p, u, fixed, lo, hi, sep, order,
                        book, inst, tiers, val, weights, option_margin, moving)
        if d == 0:
            down = factor
        else:
            up = factor
    return down, up


@inline
def _write_row(r, a, u, p, factors, out, ids):
    """Row ``r`` of the kernel's outputs ``out`` (``liquidation_factors``): bucket (account ``a``, underlying ``u``,
    position ``p``) and its ``row_factors``. ``ids = (account_id [a], instrument_id [p], index_price [u])``."""
    underlying, account_id, instrument_id, index_price, price, distance, valid = out
    down, up = factors
    r = index(r)
    underlying[r] = u
    x = ids[2][index(u)]
    account_id[r] = ids[0][index(a)]
    instrument_id[r] = ids[1][index(p)] if p >= 0 else -1
    index_price[r] = x
    price[0, r] = x * down
    price[1, r] = x * up
    distance[0, r] = 1.0 - down
    distance[1, r] = up - 1.0
    valid[0, r] = not np.isnan(down)
    valid[1, r] = not np.isnan(up)
    valid[2, r] = p >= 0


# Per-underlying sums of one account's pass (``account_factors``' scratch ``acc`` [u, FIGURES]): equity and MM
# at m = 1 of the rows moving with u, then ``slope_bounds``' six figures (summed; segment ends: the nearest).
EQUITY, MM, SLOPE_LO, SLOPE_HI, SLOPE_DOWN, SLOPE_UP, SEG_DOWN, SEG_UP = range(8)
FIGURES = 8


@inline
def _open_row(row):
    """Empty sums (``row`` [FIGURES]): no equity, MM or slope; segments unbounded."""
    row[:] = 0.0
    row[SEG_UP] = np.inf


@inline
def _add_row(row, equity, mm, bounds):
    """Add one row's equity and MM at m = 1 and ``slope_bounds`` to the sums ``row`` [FIGURES]."""
    lo_k, hi_k, dn_k, up_k, sd_k, su_k = bounds
    row[EQUITY] += equity
    row[MM] += mm
    row[SLOPE_LO] += lo_k
    row[SLOPE_HI] += hi_k
    row[SLOPE_DOWN] += dn_k
    row[SLOPE_UP] += up_k
    row[SEG_DOWN] = max(row[SEG_DOWN], sd_k)
    row[SEG_UP] = min(row[SEG_UP], su_k)


# ------------------------------------------------------------------------------------- the kernel

@kernel(parallel=True, nrt=False)
def liquidation_factors(row_start, n_cross, exposure, order, scratch, out, ids, book, inst, terms, tiers, val, weights,
                        option_margin, moving, n_chunks):
    """Every bucket's ``(m_down, m_up)`` (SPEC §4); account ``a``'s rows are ``row_start[a]:row_start[a+1]``:
    its ``n_cross`` [a] cross rows, one per underlying in its ``exposure`` bit set, by code (``count_rows``), then
    its isolated positions in position order.

    Writes the SPEC §4 columns ``out = (underlying, account_id, instrument_id, index, price, distance, valid)``:
    every row its ``underlying`` [r] (code) and ``account_id`` [r], ``instrument_id`` [r] (-1 for a cross row) and
    ``index`` [r] from ``ids = (account_id [a], instrument_id [p], index_price [u])``, ``price`` and ``distance`` [2,
    r] (down, up: price = index * factor, distance = 1 - factor down, factor - 1 up; factor 1.0 = liquidatable now,
    NaN = none in range) and ``valid`` uint8 [3, r] (down found, up found, isolated row: the validity of the
    nullable columns); and ``order`` [p] (each account's cross positions with a quantity grouped by underlying
    code, ``account_factors``). ``scratch = (count, shape, acc, iso_acc, iso_of)``, one row per chunk of accounts,
    of any content (K = the most positions an account has): int64 [chunk, u], int64 [chunk, u], float64 [chunk, u,
    FIGURES] (the sums per underlying), float64 [chunk, K, FIGURES] and int64 [chunk, K, 2] (the isolated
    positions' sums, their position and shape). ``val =
    (price, forward, settle_px, asset_px)`` is the valuation moved from (today's); ``weights = (collateral_weight,
    borrow_weight)`` per asset; ``terms = (mm_convex, mmf_max, amount_min, amount_max, w_lo, w_hi)``: per
    instrument [i] whether its mmf never falls from bracket to bracket, and the range of its mmf and maintenance
    amounts; then the window of factors the slope bounds must hold over (``slope_bounds``); ``moving`` as in
    ``margin.moved_instrument``, plus the options' grid prices and their slopes (``moving_figures``). Outputs are allocated by the
    caller.

    Accounts run in chunks, each with its own scratch; the body is one compiled call per chunk (the parallel
    pass analyses a small body; a call per account would pass its many arrays once per account, and without
    reference counting, which would cost an atomic increment and decrement per array and call)."""
    for c in prange(n_chunks):
        chunk_factors(np.int64(c), n_chunks, row_start, n_cross, exposure, order, scratch, out, ids, book, inst,
                      terms, tiers, val, weights, option_margin, moving)


@kernel(nrt=False)
def chunk_factors(c, n_chunks, row_start, n_cross, exposure, order, scratch, out, ids, book, inst,
                  terms, tiers, val, weights, option_margin, moving):
    """The accounts of chunk ``c`` of ``n_chunks`` (see ``liquidation_factors``)."""
    n = row_start.shape[0] - 1
    for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
        account_factors(a, c, row_start, n_cross, exposure, order, scratch, out, ids, book, inst, terms, tiers,
                        val, weights, option_margin, moving)


@inline
def account_factors(a, c, row_start, n_cross, exposure, order, scratch, out, ids, book, inst, terms, tiers, val,
                    weights, option_margin, moving):
    """The rows of account ``a`` of chunk ``c`` (see ``liquidation_factors``), from one pass over its positions
    and balances.

    Each position is valued once at m = 1: into the account's cross totals (summed as
    ``margin.account_figures`` sums them, so that the bucket's excess is ``account_risk``'s) and into the sums
    of the underlyings it moves its bucket with (``position_exposure``; each of those sums is started from the
    account's bit set first, so the pass does not ask whether it is), or, for an isolated position, into its
    own. Then the account's cross positions with a quantity are grouped by underlying into
    ``order[pos_start[a]:]`` (row order within a group: a bucket's evaluation touches only its own rows), and
    every row is searched, cross rows first, at one call site (``row_factors`` is compiled once).
    """
    count, shape, acc, iso_acc, iso_of = scratch[0][c], scratch[1][c], scratch[2][c], scratch[3][c], scratch[4][c]
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    kind, size, tier_first, tier_last, option_type, strike = inst
    price, forward, settle_px, asset_px = val
    inst_underlying, settle_underlying = moving[0], moving[1]
    words = exposure[a]
    for w in range(words.shape[0]):
        word = words[w]
        while word != _ZERO:
            bit, word = _lowest(word)
            u = index(64 * w + bit)
            _open_row(acc[u])
            shape[u] = CONCAVE
            count[u] = 0
    lo = pos_start[a]
    n_iso = 0
    sums = NO_POSITIONS
    sep = True
    for p in range(index(lo), index(pos_start[a + 1])):
        i = index(pos_instrument[p])
        px = settle_px[i]
        figures = position_figures(kind[i], quantity[p], size[i], price[i], forward[i], entry_price[p], tier_first[i],
                                   tier_last[i], option_type[i], strike[i], tiers, option_margin)
        sums = add_position(sums, usd_contribution(figures, kind[i], isolated[p], isolated_margin[p], px))
        notional, _, value, _, mm, tier = figures
        u = inst_underlying[i]
        bounds = slope_bounds(p, i, u, value, mm, notional, tier, False, book, inst, terms, tiers, val,
                              option_margin, moving)
        how = position_shape(i, u, kind, settle_underlying, terms[0])
        if isolated[p]:
            equity, _ = isolated_bucket(isolated_margin[p], value, mm, px)
            _open_row(iso_acc[index(n_iso)])
            _add_row(iso_acc[index(n_iso)], equity, mm * px, bounds)
            iso_of[index(n_iso), 0] = p
            iso_of[index(n_iso), 1] = how
            n_iso += 1
            continue
        own, coin = position_exposure(p, book, moving)
        if own < 0:
            continue
        own = index(own)
        _add_row(acc[own], value * px, mm * px, bounds)
        shape[own] = combined_shape(shape[own], how)
        count[own] += 1
        if coin >= 0:
            # Its value and MM, in a coin following ``coin``, scale with that underlying: linear in its m.
            sep = False
            _add_row(acc[index(coin)], value * px, mm * px, coin_bounds(value, mm, px))
    collateral = 0.0
    for b in range(index(bal_start[a]), index(bal_start[a + 1])):
        k = index(bal_asset[b])
        cv = balance_usd(asset_px[k], bal_amount[b], weights[0][k], weights[1][k])
        collateral += cv
        u = balance_exposure(b, book, moving)
        if u >= 0 and n_cross[a] > 0:
            _add_row(acc[index(u)], cv, 0.0, (cv, cv, cv, cv, 0.0, np.inf))  # linear in m
    upnl, option_value, _, mm_total, _, _, _ = sums
    equity_total = collateral + upnl + option_value
    # Each underlying's group of slots, in code order: count[u] becomes the group's next free slot, then its end.
    slot = lo
    for w in range(words.shape[0]):
        word = words[w]
        while word != _ZERO:
            bit, word = _lowest(word)
            u = index(64 * w + bit)
            slot, count[u] = slot + count[u], slot
    for p in range(index(lo), index(pos_start[a + 1])):
        own, _ = position_exposure(p, book, moving)
        if own >= 0:
            order[index(count[index(own)])] = p
            count[index(own)] += 1
    # Every row: the cross rows by underlying code, then the isolated positions.
    first = lo
    w = 0
    word = words[0] if words.shape[0] > 0 else _ZERO
    for k in range(row_start[a + 1] - row_start[a]):
        if k < n_cross[a]:
            while word == _ZERO:
                w += 1
                word = words[w]
            bit, word = _lowest(word)
            u = 64 * w + bit
            sums_u = acc[index(u)]
            p = -1
            # The rows that do not move with u: the whole bucket minus its moving part.
            fixed = (equity_total - sums_u[EQUITY]) - (mm_total - sums_u[MM])
            has_mm = mm_total > 0.0
            how = shape[index(u)]
            hi = count[index(u)]
        else:
            j = k - n_cross[a]
            p = iso_of[index(j), 0]
            u = inst_underlying[index(pos_instrument[index(p)])]
            sums_u = iso_acc[index(j)]
            fixed = 0.0
            has_mm = sums_u[MM] > 0.0
            how = iso_of[index(j), 1]
            first = hi = lo
        bounds = (sums_u[SLOPE_LO], sums_u[SLOPE_HI], sums_u[SLOPE_DOWN], sums_u[SLOPE_UP], sums_u[SEG_DOWN],
                  sums_u[SEG_UP])
        factors = row_factors(a, p, u, sums_u[EQUITY], sums_u[MM], fixed, has_mm, bounds, how, first, hi, sep, order,
                              book, inst, tiers, val, weights, option_margin, moving)
        if k < n_cross[a]:
            first = hi
        _write_row(row_start[a] + k, a, u, p, factors, out, ids)
