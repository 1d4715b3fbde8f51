"""Per-instrument valuation at given per-underlying price multipliers (SPEC §2).

Everything that is a property of an instrument (its mark at moved prices, its option value and greeks,
the USD price of its settle asset) is computed here once per instrument, never per position. Stress
scenarios, liquidation prices and cascades call the same code with other multipliers.

Index letters: a = assets, u = underlyings, i = instruments.
"""

from __future__ import annotations

import math

import numpy as np

from ..codes import CALL, OPTION
from ._jit import inline, kernel

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_DAYS_PER_YEAR = 365.0


@kernel
def normal_cdf(x):
    # erfc keeps full relative precision in the lower tail, where 0.5*(1+erf) would cancel.
    return 0.5 * math.erfc(-x / _SQRT2)


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
    sd = vol * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    value = disc * sign * (forward * normal_cdf(sign * d1) - strike * normal_cdf(sign * d2))
    pdf = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    delta = disc * sign * normal_cdf(sign * d1)
    gamma = disc * pdf / (forward * sd)
    vega = disc * forward * pdf * math.sqrt(years)
    # dV/dT = -r V + e^{-rT} F pdf(d1) vol / (2 sqrt T), for calls and puts alike.
    dv_dyears = -rate * value + disc * forward * pdf * vol / (2.0 * math.sqrt(years))
    return value, delta, gamma, vega, -dv_dyears / _DAYS_PER_YEAR


@inline
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
