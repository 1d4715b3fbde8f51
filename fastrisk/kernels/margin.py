"""Per-position notional, PnL and tiered margin, and per-account cross-margin sums (SPEC §2–3).

Index letters: a = accounts, p = positions (sorted by account), b = balances (sorted by account),
i = instruments, t = tier brackets, s = tier schedules.

Instruments are valued first (``valuation.instrument_prices``); here each position gathers its
instrument's price, and each account sums its positions and balances sequentially. Accounts run in
parallel, so every account figure is bit-identical whatever the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..codes import BANKRUPT, CALL, HEALTHY, INVERSE, LIQUIDATABLE, LINEAR, MARGIN_CALL, OPTION
from ._jit import chunked, index, inline, kernel
from .valuation import black76, marked_value

# Float outputs of ``account_margin``, in row order of its result.
ACCOUNT_FLOAT_COLUMNS = ("collateral", "unrealized_pnl", "option_value", "equity", "initial_margin",
                         "maintenance_margin", "margin_ratio", "free_collateral", "gross_notional", "leverage",
                         "isolated_equity")
N_ACCOUNT_FLOATS = len(ACCOUNT_FLOAT_COLUMNS)


@inline
def tier_margin(notional, first, last, cap, imf, mmf, amount):
    """Bracket (1-based), IM and MM of a notional under the schedule whose brackets are ``first..last``:
    the bracket t with cap[t-1] < notional <= cap[t]; IM = notional*imf_t, MM = notional*mmf_t - amount_t
    (Binance's "maintenance amount" form, continuous in notional)."""
    # The notional is compared first: most sit in the first bracket, so a row usually costs one compare (the
    # last cap is +inf, the bound check is a guard). The account sweep is 5 % faster than bound check first.
    t = index(first)
    end = index(last)
    while notional > cap[t] and t < end:
        t += index(1)
    return np.int64(t) - first + 1, notional * imf[t], notional * mmf[t] - amount[t]


@inline
def position_value(kind, q, size, price, entry):
    """``(upnl, value)`` of one position in settle-asset units: futures' PnL, and what it adds to its bucket's
    equity (futures: upnl; options: q*c*V). The part of ``position_figures`` that an equity needs."""
    if kind == LINEAR:
        upnl = q * size * (price - entry)
        return upnl, upnl
    if kind == INVERSE:
        upnl = q * size * (1.0 / entry - 1.0 / price)
        return upnl, upnl
    return q * size * (price - entry), q * size * price


@inline
def position_notional(kind, q, size, price, forward):
    """One position's notional in settle-asset units: |q|*c*P (linear), |q|*c/P (inverse), |q|*c*F (options).
    The part of ``position_figures`` that tiers and forced flows need."""
    if kind == LINEAR:
        return abs(q) * size * price
    if kind == INVERSE:
        return abs(q) * size / price
    return abs(q) * size * forward


@inline
def position_figures(kind, q, size, price, forward, entry, first, last, option_type, strike, tiers, option_margin):
    """One position in settle-asset units: ``(notional, upnl, value, im, mm, tier)``.

    ``value`` is what the position adds to its bucket's equity (futures: upnl; options: q*c*V,
    ``position_value``). ``tier`` is 0 for options (no bracket). The instrument's brackets are ``first..last``
    of ``tiers = (cap, imf, mmf, amount)``;
    ``option_margin = (im_fraction, min_fraction, mm_fraction)``, Deribit-shaped (SPEC §2).
    """
    upnl, value = position_value(kind, q, size, price, entry)
    notional = position_notional(kind, q, size, price, forward)
    if kind == LINEAR:
        tier, im, mm = tier_margin(notional, first, last, tiers[0], tiers[1], tiers[2], tiers[3])
        return notional, upnl, value, im, mm, tier
    if kind == INVERSE:
        tier, im, mm = tier_margin(notional, first, last, tiers[0], tiers[1], tiers[2], tiers[3])
        return notional, upnl, value, im, mm, tier
    # Options: valued, not PnL'd; only shorts carry margin (the value is already in equity).
    im = 0.0
    mm = 0.0
    if q < 0.0:
        otm = max(strike - forward, 0.0) if option_type == CALL else max(forward - strike, 0.0)
        im = notional * max(option_margin[0] - otm / forward, option_margin[1])
        mm = notional * option_margin[2]
    return notional, upnl, value, im, mm, 0


@inline
def isolated_bucket(isolated_margin, value, mm, px):
    """USD equity and liquidation flag of one isolated position: equity = (margin + value) * px,
    liquidatable when its MM > 0 and equity <= MM (SPEC §3)."""
    equity = (isolated_margin + value) * px
    mm_usd = mm * px
    return equity, mm_usd > 0.0 and equity <= mm_usd


@inline
def per_equity(x, equity):
    """``x / equity`` for the ratios of SPEC §3 (margin ratio, leverage): 0 when x is 0, +inf when there
    is something to cover and no positive equity to cover it."""
    if x == 0.0:
        return 0.0
    if equity <= 0.0:
        return np.inf
    return x / equity


@inline
def account_status(equity, mm, margin_call_ratio):
    """``(margin_ratio, status)`` of a cross bucket (SPEC §3 and docs/conventions.md)."""
    ratio = per_equity(mm, equity)
    if equity < 0.0:
        return ratio, BANKRUPT
    if mm > 0.0 and equity <= mm:
        return ratio, LIQUIDATABLE
    if ratio >= margin_call_ratio:
        return ratio, MARGIN_CALL
    return ratio, HEALTHY


# Where a position's contribution goes (``position_usd``): the cross futures PnL, the cross option value,
# or its own isolated bucket.
CROSS_FUTURE, CROSS_OPTION, ISOLATED = 0, 1, 2


@inline
def position_usd(p, i, price, forward, px, quantity, entry_price, isolated, isolated_margin, inst, tiers,
                 option_margin):
    """What position ``p`` (on instrument ``i``, at instrument price ``price``, forward ``forward`` and settle
    asset USD price ``px``) adds to its account, in USD: ``(bucket, value, im, mm, gross_notional,
    isolated_liquidatable)``.

    ``bucket`` is CROSS_FUTURE (``value`` = upnl), CROSS_OPTION (``value`` = q*c*V) or ISOLATED (``value``
    = the bucket's equity; margins and notional are 0 because they stay out of the cross figures). Account
    sums, stress and portfolio margin all evaluate positions with this, so it is the one place the rule lives.
    """
    kind, size, tier_first, tier_last, option_type, strike = inst
    figures = position_figures(kind[i], quantity[p], size[i], price, forward, entry_price[p], tier_first[i],
                               tier_last[i], option_type[i], strike[i], tiers, option_margin)
    return usd_contribution(figures, kind[i], isolated[p], isolated_margin[p], px)


@inline
def usd_contribution(figures, kind, is_isolated, isolated_margin, px):
    """``position_usd`` from a position's ``position_figures`` (settle units) and its settle asset's USD price
    ``px``, for a caller that needs the figures themselves too."""
    # Selects, not branches (here and in add_position): isolated rows and options are scattered through a
    # book, so a branch on them mispredicts; computing every figure and picking made the account sweep 13 %
    # faster at 1M accounts. LLVM's loop is fragile here: equivalent spellings (``is_isolated and liq``,
    # ``liq & is_isolated``, ``(value if option else upnl) * px``) compile to a loop as slow as the branches.
    notional, upnl, value, im, mm, _ = figures
    iso_equity, liq = isolated_bucket(isolated_margin, value, mm, px)
    option = kind == OPTION
    bucket = ISOLATED if is_isolated else (CROSS_OPTION if option else CROSS_FUTURE)
    usd = iso_equity if is_isolated else (value * px if option else upnl * px)
    cross = not is_isolated
    return (bucket, usd, im * px if cross else 0.0, mm * px if cross else 0.0, notional * px if cross else 0.0,
            liq and is_isolated)


@inline
def pick(c, a, b):
    """``a if c else b`` for floats, from their bits and an integer mask: LLVM keeps it a blend, where it
    turns add_position's plain ``if``/``else`` into a branch on the row's bucket (2.6 % slower at 1M accounts)."""
    mask = -np.int64(c)
    bits = np.int64((np.float64(a).view(np.int64) & mask) | (np.float64(b).view(np.int64) & ~mask))
    return bits.view(np.float64)


@inline
def value_usd(p, i, price, px, quantity, entry_price, isolated, isolated_margin, inst):
    """``position_usd`` for a caller that needs equities only: its margins and notional are 0, from
    ``position_value`` (no tier lookup)."""
    kind, size = inst[0], inst[1]
    upnl, value = position_value(kind[i], quantity[p], size[i], price, entry_price[p])
    return usd_contribution((0.0, upnl, value, 0.0, 0.0, 0), kind[i], isolated[p], isolated_margin[p], px)


@inline
def add_position(sums, contribution):
    """``sums = (upnl, option_value, im, mm, gross, isolated_equity, n_isolated_liquidatable)`` plus one
    ``position_usd`` contribution, each figure summed in the order positions are added."""
    upnl, optv, im, mm, gross, iso_eq, n_liq = sums
    bucket, value, p_im, p_mm, p_gross, liq = contribution
    # Adding +0.0 for the buckets a row is not in leaves those sums bit for bit as they were (a sum that starts
    # at +0.0 is never -0.0), and an isolated row's margins and notional are 0.0 already.
    return (upnl + pick(bucket == CROSS_FUTURE, value, 0.0), optv + pick(bucket == CROSS_OPTION, value, 0.0),
            im + p_im, mm + p_mm, gross + p_gross, iso_eq + pick(bucket == ISOLATED, value, 0.0), n_liq + liq)


@inline
def balance_usd(px, amount, collateral_weight, borrow_weight):
    """USD collateral value of a balance of ``amount`` units of an asset priced ``px``:
    px*amount*(collateral_weight if amount > 0 else borrow_weight) (SPEC §3)."""
    return px * amount * (collateral_weight if amount > 0.0 else borrow_weight)


NO_POSITIONS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


@inline
def moved_instrument(i, u, m, kind, option_type, strike, price, forward, settle_px, moving, known):
    """``(price, forward, settle_px, price_slope)`` of instrument ``i`` with underlying ``u`` moved by the factor
    ``m`` on top of the valuation given (``u < 0``: the valuation unchanged, read as is); ``price_slope`` is an
    option's d(price)/dm there (0 for anything else).

    ``moving = (inst_underlying [i], settle_underlying [i], asset_underlying [asset], mark [i], model_base [i],
    expiry_years [i], vol [i], rate, ...)``: what it takes to move an instrument by itself. Futures' marks and the
    forward scale by ``m``; options are re-valued with Black-76 at the moved forward, a given mark moving by
    the model's change (``valuation.marked_value``; its slope is the model's delta times today's forward),
    unless ``known = (price, price_slope)`` (not NaN) holds them, computed before; a settle asset that follows
    ``u`` scales by ``m``.
    """
    p = price[i]
    f = forward[i]
    s = settle_px[i]
    dp = 0.0
    if u >= 0:
        inst_underlying, settle_underlying, mark, model_base, years, vol, rate = (moving[0], moving[1], moving[3],
                                                                                 moving[4], moving[5], moving[6],
                                                                                 moving[7])
        if inst_underlying[i] == u:
            f = f * m
            if kind[i] == OPTION:
                if np.isnan(known[0]) or np.isnan(known[1]):
                    v, delta, _, _, _ = black76(f, strike[i], years[i], vol[i], option_type[i] == CALL, rate)
                    p = marked_value(mark[i], v, model_base[i])
                    dp = delta * forward[i]
                else:
                    p, dp = known
            else:
                p = p * m
        if settle_underlying[i] == u:
            s = s * m
    return p, f, s, dp


@inline
def account_figures(a, pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin,
                    bal_start, bal_asset, bal_amount, inst, tiers, price, forward, settle_px, asset_px,
                    asset_cw, asset_bw, option_margin):
    """Cross-margin figures of account ``a`` at the given instrument prices, summed in row order.

    ``inst = (kind, size, tier_first, tier_last, option_type, strike)`` per instrument; ``settle_px`` [i] and
    ``asset_px`` [a] are USD prices. Returns ``(collateral, upnl, option_value, im, mm, gross_notional,
    isolated_equity, n_isolated_liquidatable)`` in USD.
    """
    sums = NO_POSITIONS
    for p in range(index(pos_start[a]), index(pos_start[a + 1])):
        i = index(pos_instrument[p])
        sums = add_position(sums, position_usd(p, i, price[i], forward[i], settle_px[i], quantity, entry_price,
                                               isolated, isolated_margin, inst, tiers, option_margin))
    collateral = 0.0
    for b in range(index(bal_start[a]), index(bal_start[a + 1])):
        k = index(bal_asset[b])
        collateral += balance_usd(asset_px[k], bal_amount[b], asset_cw[k], asset_bw[k])
    upnl_sum, option_sum, im_sum, mm_sum, gross, iso_equity, n_iso_liq = sums
    return collateral, upnl_sum, option_sum, im_sum, mm_sum, gross, iso_equity, n_iso_liq


@kernel(parallel=True)
def account_margin(out, status, n_positions, n_iso_liq, pos_start, pos_instrument, quantity, entry_price,
                   isolated, isolated_margin, bal_start, bal_asset, bal_amount, inst, tiers, price, forward,
                   settle_px, asset_px, asset_cw, asset_bw, option_margin, margin_call_ratio):
    """Cross-margin account risk of every account (SPEC §3), written into one row per account of
    ``out`` [11, a] (columns in ``ACCOUNT_FLOAT_COLUMNS`` order), ``status`` [a] int8, ``n_positions``
    [a] int32 and ``n_iso_liq`` [a] int32.

    The outputs are allocated by the caller (``tables.empty``, memory Arrow's pool recycles between calls):
    allocating them in here costs a page fault per 4 KiB, taken under a lock shared by the threads.
    """
    n = pos_start.shape[0] - 1
    for a in prange(n):
        coll, upnl, optv, im, mm, gross, iso_eq, iso_liq = account_figures(
            a, pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start,
            bal_asset, bal_amount, inst, tiers, price, forward, settle_px, asset_px, asset_cw, asset_bw,
            option_margin)
        equity = coll + upnl + optv
        ratio, st = account_status(equity, mm, margin_call_ratio)
        leverage = per_equity(gross, equity)
        out[0, a] = coll
        out[1, a] = upnl
        out[2, a] = optv
        out[3, a] = equity
        out[4, a] = im
        out[5, a] = mm
        out[6, a] = ratio
        out[7, a] = equity - im
        out[8, a] = gross
        out[9, a] = leverage
        out[10, a] = iso_eq
        status[a] = st
        n_positions[a] = pos_start[a + 1] - pos_start[a]
        n_iso_liq[a] = iso_liq


@kernel(parallel=True, nrt=False)
def account_equity(out, live, left, iso_left, before, book, inst, val, weights):
    """A cascade's end, per account, into ``out`` [2, a]: its equity after (USD) and its loss, ``before`` [a]
    minus that. Equity after: its cross and isolated equity at the valuation ``val = (price, forward,
    settle_px, asset_px)`` (the final prices), except a liquidated cross bucket (``live`` [a] 0), which keeps
    what it had ``left`` [a] at close-out; ``iso_left`` [a] is added (its closed isolated positions' left-overs
    less what they are worth in the isolated equity at ``val``). Summed as ``account_figures`` sums them, from
    ``value_usd``: the whole ``position_usd``, margins left for the compiler to drop, was 38 % slower (the tier
    lookup stays)."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, \
        bal_amount = book
    price, settle_px, asset_px = val[0], val[2], val[3]
    for a in prange(pos_start.shape[0] - 1):
        sums = NO_POSITIONS
        for p in range(index(pos_start[a]), index(pos_start[a + 1])):
            i = index(pos_instrument[p])
            sums = add_position(sums, value_usd(p, i, price[i], settle_px[i], quantity, entry_price, isolated,
                                                isolated_margin, inst))
        upnl, optv, _, _, _, iso_eq, _ = sums
        coll = 0.0
        for b in range(index(bal_start[a]), index(bal_start[a + 1])):
            k = index(bal_asset[b])
            coll += balance_usd(asset_px[k], bal_amount[b], weights[0][k], weights[1][k])
        cross = coll + upnl + optv if live[a] else left[a]
        after = cross + (iso_eq + iso_left[a])
        out[0, a] = after
        out[1, a] = before[a] - after


@chunked
def position_margin(out, tier, liq, pos_instrument, quantity, entry_price, isolated, isolated_margin, inst,
                    tiers, price, forward, settle_px, greeks, option_margin, n_chunks):
    """Per-position figures in USD (SPEC §3 ``position_risk``).

    Writes ``out`` [11, p]: notional_usd, upnl_usd, value_usd, initial_margin, maintenance_margin, isolated
    equity (0 for cross positions), mark price (options: the value), delta (underlying units: q*c times the
    instrument's delta, q*c/P for an inverse future, whose USD face is an exposure of that many units), gamma,
    vega and theta (q*c*S times the instrument's, USD); ``tier`` [p] int16 and ``liq`` [p] uint8 (isolated
    positions only). ``greeks = (delta, gamma, vega, theta)`` per instrument (``valuation``). Outputs are
    allocated by the caller (see ``account_margin``): in one pass, where NumPy's gathers and products made a
    temporary array of 10M rows each (2.9 s of a 1M-account run's position_risk, page faults included).
    """
    kind, size, tier_first, tier_last, option_type, strike = inst
    n = quantity.shape[0]
    for c in prange(n_chunks):
        for p in range(index(c * n // n_chunks), index((c + 1) * n // n_chunks)):
            i = index(pos_instrument[p])
            notional, upnl, value, im, mm, t = position_figures(
                kind[i], quantity[p], size[i], price[i], forward[i], entry_price[p], tier_first[i],
                tier_last[i], option_type[i], strike[i], tiers, option_margin)
            px = settle_px[i]
            out[0, p] = notional * px
            out[1, p] = upnl * px
            out[2, p] = value * px
            out[3, p] = im * px
            out[4, p] = mm * px
            if isolated[p]:
                out[5, p], liq[p] = isolated_bucket(isolated_margin[p], value, mm, px)
            else:
                out[5, p] = 0.0
                liq[p] = 0
            tier[p] = t
            units = quantity[p] * size[i]
            usd = units * px
            out[6, p] = price[i]
            out[7, p] = units / price[i] if kind[i] == INVERSE else units * greeks[0][i]
            out[8, p] = units * greeks[1][i]
            out[9, p] = usd * greeks[2][i]
            out[10, p] = usd * greeks[3][i]
