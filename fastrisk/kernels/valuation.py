"""Per-instrument valuation at given per-underlying price multipliers (SPEC §2).

Everything that is a property of an instrument (its mark at moved prices, its option value and greeks,
the USD price of its settle asset) is computed here once per instrument, never per position. Stress
scenarios, liquidation prices and cascades call the same code with other multipliers;
``scenario_instrument_prices`` prices every instrument under many scenarios in one parallel pass, with the
same formula (``black76_value``).

Index letters: a = assets, u = underlyings, i = instruments, s = scenarios.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ..codes import CALL, OPTION
from ._jit import chunked, helper, kernel

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_DAYS_PER_YEAR = 365.0


@kernel
def normal_cdf(x):
    # erfc keeps full relative precision in the lower tail, where 0.5*(1+erf) would cancel.
    return 0.5 * math.erfc(-x / _SQRT2)


@kernel
def black76_value(forward, strike, log_moneyness, sd, disc, sign):
    """The Black-76 value of a live option (``years > 0``) from its per-instrument terms: ``log_moneyness``
    = ln(F/K), ``sd`` = vol * sqrt(years), ``disc`` = exp(-rate * years), ``sign`` = +1 call / -1 put.

    The price formula lives here only: ``black76`` calls it, and ``scenario_instrument_prices`` calls it
    with the terms that do not change across scenarios computed once per instrument.
    Returns ``(value, d1, N(sign*d1))``.
    """
    d1 = (log_moneyness + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    n1 = normal_cdf(sign * d1)
    return disc * sign * (forward * n1 - strike * normal_cdf(sign * d2)), d1, n1


@kernel
def black76(forward, strike, years, vol, is_call, rate):
    """Black-76 value and greeks of one European option per unit of underlying.

    Returns ``(value, delta, gamma, vega, theta)``: delta = dV/dF, gamma = d2V/dF2, vega per 1.00 of
    vol, theta per calendar day (the change in value as one day passes). Expired options (``years <= 0``)
    are worth their intrinsic value with delta 1/0 (at the money: 0.5) and no gamma, vega or theta.
    Source: Black (1976); Hull, *Options, Futures and Other Derivatives*, ch. 18.
    """
    sign = 1.0 if is_call else -1.0
    if years <= 0.0:
        intrinsic = max(sign * (forward - strike), 0.0)
        itm = sign * (forward - strike)
        delta = sign * (1.0 if itm > 0.0 else (0.5 if itm == 0.0 else 0.0))
        return intrinsic, delta, 0.0, 0.0, 0.0
    disc = math.exp(-rate * years)
    sqrt_years = math.sqrt(years)
    sd = vol * sqrt_years
    value, d1, n1 = black76_value(forward, strike, math.log(forward / strike), sd, disc, sign)
    pdf = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    delta = disc * sign * n1
    gamma = disc * pdf / (forward * sd)
    vega = disc * forward * pdf * sqrt_years
    # dV/dT = -r V + e^{-rT} F pdf(d1) vol / (2 sqrt T), for calls and puts alike.
    dv_dyears = -rate * value + disc * forward * pdf * vol / (2.0 * sqrt_years)
    return value, delta, gamma, vega, -dv_dyears / _DAYS_PER_YEAR


@helper
def marked_value(mark, model, model_base):
    """An option's price: the model's where no mark is given (``mark`` NaN); otherwise the mark moved by
    the model's change from its base, so that a given mark never creates a spurious loss (SPEC §2)."""
    if np.isnan(mark):
        return model
    return mark + (model - model_base)


@kernel
def model_base_values(kind, underlying, index_price, option_type, strike, expiry_years, implied_vol, rate):
    """Black-76 value of every option at today's index and implied vol (NaN for futures): the base a given
    mark is moved from when the underlying moves (see ``marked_value``). A property of the instrument,
    computed once, so that kernels moving one underlying per account never re-price the base."""
    n = kind.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        if kind[i] == OPTION:
            out[i] = black76(index_price[underlying[i]], strike[i], expiry_years[i], implied_vol[i],
                             option_type[i] == CALL, rate)[0]
    return out


@kernel
def asset_prices(asset_price, asset_underlying, mult_u):
    """USD price of each asset, moved with the underlying it follows."""
    out = np.empty(asset_price.shape[0])
    for a in range(asset_price.shape[0]):
        u = asset_underlying[a]
        out[a] = asset_price[a] * (mult_u[u] if u >= 0 else 1.0)
    return out


@kernel
def instrument_prices(kind, underlying, mark, index_price, option_type, strike, expiry_years, implied_vol,
                      mult_u, vol_shift_u, rate):
    """Price, forward and greeks of every instrument with underlying ``u`` moved by ``mult_u[u]`` and its
    vol by ``vol_shift_u[u]`` (absolute; the shocked vol is floored at 1e-4, SPEC §5).

    Futures: price = mark * m, delta = 1 (per contract unit). Options: model value at the moved forward;
    a given mark is the base and moves by model(moved) - model(base), so a mark never creates a
    spurious scenario loss. ``forward`` is the underlying's index price times m.
    Returns ``(price, forward, delta, gamma, vega, theta)``, each [i].
    """
    n = kind.shape[0]
    price = np.empty(n)
    forward = np.empty(n)
    delta = np.zeros(n)
    gamma = np.zeros(n)
    vega = np.zeros(n)
    theta = np.zeros(n)
    for i in range(n):
        u = underlying[i]
        m = mult_u[u]
        forward[i] = index_price[u] * m
        if kind[i] != OPTION:
            price[i] = mark[i] * m
            delta[i] = 1.0
            continue
        is_call = option_type[i] == CALL
        vol = max(implied_vol[i] + vol_shift_u[u], 1e-4)
        v, d, g, ve, th = black76(forward[i], strike[i], expiry_years[i], vol, is_call, rate)
        base = v
        if not np.isnan(mark[i]):
            base = black76(index_price[u], strike[i], expiry_years[i], implied_vol[i], is_call, rate)[0]
        price[i] = marked_value(mark[i], v, base)
        delta[i], gamma[i], vega[i], theta[i] = d, g, ve, th
    return price, forward, delta, gamma, vega, theta


_BLOCK = 256  # instruments whose per-instrument terms are held while the scenarios pass over them


@chunked
def scenario_instrument_prices(price, kind, underlying, mark, index_price, option_type, strike, expiry_years,
                               implied_vol, mult_su, vol_shift_su, rate, n_chunks):
    """The price of every instrument under every scenario, into ``price`` [s, i]: row ``s`` is
    ``instrument_prices(..., mult_su[s], vol_shift_su[s], rate)[0]``, bit for bit (the greeks are not
    computed).

    Index letters: s = scenarios, i = instruments, u = underlyings. Parallel over instrument chunks. What
    does not change with the scenario (sqrt(years), the discount, today's price and the model base a mark
    moves from) is computed once per instrument, and ln(F/K) once per distinct forward in a run of
    scenarios (a vol-up / vol-down pair shares it). A chunk goes through blocks of ``_BLOCK`` instruments,
    scenarios outside, so that ``price`` is written along its rows; inside a block the instruments are
    taken by underlying, so that those of an underlying the scenario leaves unmoved (multiplier 1, no vol
    shift) keep today's price (copied along the row first) without a branch per instrument. Each entry
    depends only on its own instrument and scenario: the result does not depend on the chunk or thread
    count.
    """
    n_s, n_i = price.shape
    for c in prange(n_chunks):
        # Per-instrument terms of the current block, by position j in the block.
        sqrt_years = np.empty(_BLOCK)
        disc = np.empty(_BLOCK)
        sign = np.empty(_BLOCK)
        base = np.empty(_BLOCK)
        today = np.empty(_BLOCK)
        f_last = np.empty(_BLOCK)
        log_fk = np.empty(_BLOCK)
        # The block's positions by underlying (a stable counting sort): run r is underlying run_u[r], at
        # order[run_start[r]:run_start[r + 1]]; run_of[u] is -1 outside the block being sorted.
        run_of = np.full(index_price.shape[0], -1, np.int64)
        run_u = np.empty(_BLOCK, np.int64)
        run_start = np.zeros(_BLOCK + 1, np.int64)
        fill = np.empty(_BLOCK, np.int64)
        order = np.empty(_BLOCK, np.int64)
        hi = (c + 1) * n_i // n_chunks
        for lo in range(c * n_i // n_chunks, hi, _BLOCK):
            top = min(lo + _BLOCK, hi)
            n_runs = 0
            for i in range(lo, top):
                u = underlying[i]
                if run_of[u] < 0:
                    run_of[u], run_u[n_runs], run_start[n_runs + 1] = n_runs, u, 0
                    n_runs += 1
                run_start[run_of[u] + 1] += 1
            for r in range(n_runs):
                run_start[r + 1] += run_start[r]
                fill[r] = run_start[r]
            for i in range(lo, top):
                r = run_of[underlying[i]]
                order[fill[r]] = i - lo
                fill[r] += 1
            for r in range(n_runs):
                run_of[run_u[r]] = -1
            for i in range(lo, top):
                j = i - lo
                f0 = index_price[underlying[i]]
                if kind[i] != OPTION:
                    today[j] = mark[i] * 1.0
                    continue
                k, years, iv, is_call = strike[i], expiry_years[i], implied_vol[i], option_type[i] == CALL
                # Today: the model at the floored vol (an unmoved scenario's value) and at the implied vol
                # (the base a given mark moves from); the two differ only for a vol below the floor.
                vol_today = max(iv + 0.0, 1e-4)
                if years <= 0.0:
                    model = black76(f0, k, years, vol_today, is_call, rate)[0]
                    base[j] = black76(f0, k, years, iv, is_call, rate)[0]
                else:
                    sign[j] = 1.0 if is_call else -1.0
                    sqrt_years[j] = math.sqrt(years)
                    disc[j] = math.exp(-rate * years)
                    f_last[j], log_fk[j] = f0, math.log(f0 / k)
                    model = black76_value(f0, k, log_fk[j], vol_today * sqrt_years[j], disc[j], sign[j])[0]
                    base[j] = model if vol_today == iv else \
                        black76_value(f0, k, log_fk[j], iv * sqrt_years[j], disc[j], sign[j])[0]
                today[j] = marked_value(mark[i], model, base[j])
            for s in range(n_s):
                price[s, lo:top] = today[:top - lo]  # then the runs the scenario moves are re-priced
                for r in range(n_runs):
                    u = run_u[r]
                    m, shift = mult_su[s, u], vol_shift_su[s, u]
                    if m == 1.0 and shift == 0.0:
                        continue
                    f = index_price[u] * m
                    for q in range(run_start[r], run_start[r + 1]):
                        j = order[q]
                        i = lo + j
                        if kind[i] != OPTION:
                            price[s, i] = mark[i] * m
                            continue
                        vol = max(implied_vol[i] + shift, 1e-4)
                        if expiry_years[i] <= 0.0:  # expired: intrinsic value
                            v = black76(f, strike[i], expiry_years[i], vol, option_type[i] == CALL, rate)[0]
                        else:
                            if f != f_last[j]:
                                f_last[j], log_fk[j] = f, math.log(f / strike[i])
                            v = black76_value(f, strike[i], log_fk[j], vol * sqrt_years[j], disc[j], sign[j])[0]
                        price[s, i] = marked_value(mark[i], v, base[j])


@kernel
def scenario_moves(forward, settle_px, underlying, index_price, settle, mult_su, asset_px_sk):
    """Forward and USD settle-asset price of every instrument under every scenario, into ``forward`` and
    ``settle_px`` [s, i] (what ``instrument_prices`` and ``asset_prices`` give per scenario), for
    ``asset_px_sk`` [s, k] each asset's USD price per scenario. Index letters as in
    ``scenario_instrument_prices``; k = assets."""
    n_s, n_i = forward.shape
    for s in range(n_s):
        for i in range(n_i):
            forward[s, i] = index_price[underlying[i]] * mult_su[s, underlying[i]]
            settle_px[s, i] = asset_px_sk[s, settle[i]]
