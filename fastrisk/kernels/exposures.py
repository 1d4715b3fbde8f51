"""Exposures (SPEC §5): per account and underlying, the sensitivities of the account's USD equity.

Index letters: a = accounts, p = positions, b = balances, i = instruments, k = assets, u = underlyings,
c = chunks of accounts, r = output rows (one per account and underlying it is exposed to).

Let m_u be a common multiplier on underlying u's prices (what a scenario moves). A position's USD value is
``value(m_u) * px(m_v)``: its value in settle units (futures PnL q*c*(P - E) or q*c*(1/E - 1/P); options
q*c*V(F)) times the USD price of its settle asset, which follows underlying v (or nothing). Exposures are the
derivatives at m = 1, summed over the account's positions (cross and isolated; an isolated position's
margin is held in its settle asset and moves with it) and balances (which enter equity at their collateral
or borrow weight):

* ``delta_usd`` = dE/dm_u (USD per 100 % move; a move of r gains about delta_usd*r); ``delta`` =
  delta_usd / S_u, in underlying units (dE/dS_u);
* ``gamma_usd`` = d2E/dm_u2; ``gamma`` = gamma_usd / S_u^2 (d2E/dS_u2);
* ``vega`` = dE/dsigma_u per 1.00 of implied vol, USD.

Per unit of q*c, d(value)/dm is P (linear), 1/P (inverse: value = 1/E - 1/(P*m)) and Delta*F (options), and
d2(value)/dm2 is 0, -2/P and Gamma*F^2. When the settle asset follows the position's own underlying (a
coin-margined inverse perpetual) the product rule adds value*px to delta and 2*d(value)/dm*px to gamma: a
coin-margined inverse position of face q*c USD has delta q*c/E coins and no gamma (its USD PnL is
q*c*(P/E - 1) in the coin's price), not the q*c/P of its coin face.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..codes import INVERSE, LINEAR
from ._jit import helper, index, inline, kernel
from .margin import balance_usd, position_value

# Float columns of an exposure row (rows of ``out``).
EXPOSURE_FLOATS = ("delta", "delta_usd", "gamma", "gamma_usd", "vega", "concentration")
_D, _G, _V = 0, 1, 2


@inline
def value_sensitivities(kind, price, forward, delta, gamma):
    """First and second derivatives, at m = 1, of an instrument's value per contract unit (settle units)
    with respect to the multiplier m of its underlying: ``(dV/dm, d2V/dm2)``."""
    if kind == LINEAR:
        return price, 0.0
    if kind == INVERSE:
        return 1.0 / price, -2.0 / price
    return delta * forward, gamma * forward * forward


@inline
def _touch(u, acc, touched, order, n):
    """First sight of underlying ``u`` in this account: zero its sums and list it. Returns the new count."""
    v = index(u)
    if touched[v]:
        return n
    touched[v] = 1
    acc[v, _D] = 0.0
    acc[v, _G] = 0.0
    acc[v, _V] = 0.0
    order[index(n)] = u
    return n + 1


@helper
def _account_exposures(a, book, inst, val, asset_cw, asset_bw, row_underlying, acc, touched, order):
    """Sensitivities of account ``a`` per underlying into ``acc`` [u, 3] (delta_usd, gamma_usd, vega), the
    underlyings it touches listed ascending in ``order``; returns how many. ``touched`` [u] is all 0 on entry
    and on exit (only the account's own underlyings are reset, not all of them)."""
    pos_start, pos_instrument, quantity, entry_price, isolated, isolated_margin, bal_start, bal_asset, bal_amount = book
    kind, size = inst[0], inst[1]
    price, forward, settle_px, asset_px, delta, gamma, vega = val
    inst_und, settle_und, asset_und = row_underlying
    n = 0
    for p in range(index(pos_start[a]), index(pos_start[a + 1])):
        i = index(pos_instrument[p])
        _, value = position_value(kind[i], quantity[p], size[i], price[i], entry_price[p])
        units = quantity[p] * size[i]
        d1, d2 = value_sensitivities(kind[i], price[i], forward[i], delta[i], gamma[i])
        px = settle_px[i]
        u = inst_und[i]
        v = settle_und[i]
        n = _touch(u, acc, touched, order, n)
        # A coin-margined inverse future's USD value q*c*S*(m/E - 1/P) is linear in m: delta q*c*S/E, no gamma.
        # Written so: the product rule's q*c*S/P + upnl*S cancels to it, losing digits when the mark is far
        # below the entry (1e-9 of the delta at P = 1e-3, E = 5630).
        coin_inverse = kind[i] == INVERSE and v == u
        if coin_inverse:
            acc[index(u), _D] += units * px / entry_price[p]
        else:
            acc[index(u), _D] += units * d1 * px
            acc[index(u), _G] += units * d2 * px
        acc[index(u), _V] += units * vega[i] * px
        if v >= 0:
            n = _touch(v, acc, touched, order, n)
            margin = isolated_margin[p] if isolated[p] else 0.0  # settle units moving with v
            acc[index(v), _D] += (margin if coin_inverse else value + margin) * px
            if v == u and not coin_inverse:
                acc[index(u), _G] += 2.0 * units * d1 * px
    for b in range(index(bal_start[a]), index(bal_start[a + 1])):
        k = index(bal_asset[b])
        v = asset_und[k]
        if v >= 0:
            n = _touch(v, acc, touched, order, n)
            acc[index(v), _D] += balance_usd(asset_px[k], bal_amount[b], asset_cw[k], asset_bw[k])
    for q in range(1, n):  # underlyings ascending (an account touches a few: insertion sort)
        u = order[q]
        r = q - 1
        while r >= 0 and order[r] > u:
            order[r + 1] = order[r]
            r -= 1
        order[r + 1] = u
    for q in range(n):
        touched[order[q]] = 0
    return n


@kernel(parallel=True)
def exposure_counts(counts, book, inst, val, asset_cw, asset_bw, row_underlying, acc, touched, order):
    """Rows per account: ``counts[a]`` = the underlyings account ``a`` is exposed to. Scratch per chunk:
    ``acc`` [c, u, 3], ``touched`` [c, u] uint8 (zeroed by the caller), ``order`` [c, u] int64 (the chunk
    count is their first axis)."""
    n = counts.shape[0]
    n_chunks = acc.shape[0]
    for c in prange(n_chunks):
        for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            counts[a] = _account_exposures(a, book, inst, val, asset_cw, asset_bw, row_underlying, acc[c],
                                           touched[c], order[c])


@kernel(parallel=True)
def exposure_rows(out, out_u, offsets, book, inst, val, asset_cw, asset_bw, row_underlying, index_price, acc,
                  touched, order):
    """Exposure rows of every account at ``offsets[a]:offsets[a+1]`` (from ``exposure_counts``), underlyings
    ascending: ``out_u`` [r] int32 and ``out`` [6, r] (``EXPOSURE_FLOATS``; concentration = max_u
    |delta_usd| / Σ_u |delta_usd| of the account, NaN when it has no delta)."""
    n = offsets.shape[0] - 1
    n_chunks = acc.shape[0]
    for c in prange(n_chunks):
        sens = acc[c]
        listed = order[c]
        for a in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = _account_exposures(a, book, inst, val, asset_cw, asset_bw, row_underlying,
                                   sens, touched[c], listed)
            largest = 0.0
            total = 0.0
            for q in range(m):
                d = abs(sens[index(listed[q]), _D])
                largest = max(largest, d)
                total += d
            concentration = largest / total if total > 0.0 else np.nan
            for q in range(m):
                u = index(listed[q])
                r = index(offsets[a] + q)
                s = index_price[u]
                out_u[r] = u
                out[0, r] = sens[u, _D] / s
                out[1, r] = sens[u, _D]
                out[2, r] = sens[u, _G] / (s * s)
                out[3, r] = sens[u, _G]
                out[4, r] = sens[u, _V]
                out[5, r] = concentration
