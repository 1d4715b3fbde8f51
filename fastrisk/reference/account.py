"""The oracle: SPEC §2-3 written plainly, one position and one account at a time.

This module is what the compiled kernels are tested against (kernel == reference to 1e-12 relative) and the
slow baseline of the benchmarks. It is meant to be read by a risk officer next to the SPEC: every figure is
computed straight from its formula, with Python floats, dicts and loops. It reads only the validated Arrow
tables of a market and a book (``market.assets``, ``market.underlyings``, ``market.instruments``,
``market.tiers``, ``market.as_of``, ``book.positions``, ``book.balances``) and never imports Numba or a kernel.
Option prices use ``scipy.stats.norm`` so that they are independent of the kernel's ``math.erf``.

Units: "settle" means units of the instrument's settle asset; "USD" means settle units × the settle asset's
price (SPEC §2). Conventions where the SPEC is silent are those of ``docs/conventions.md``.
"""

from __future__ import annotations

import math
from datetime import timezone

import pyarrow as pa
from scipy.stats import norm

from fastrisk.tables import ACCOUNT_RISK, POSITION_RISK
from fastrisk.codes import STATUS_NAMES  # ("healthy", "margin_call", "liquidatable", "bankrupt"), index = code

__all__ = ["account_risk", "position_risk", "black76", "tier_margin", "year_fraction", "derive_amounts"]

SECONDS_PER_YEAR = 365 * 86400  # SPEC §2: T in years of 365 days
DAYS_PER_YEAR = 365  # theta is per calendar day

ACCOUNT_SCHEMA, POSITION_SCHEMA = ACCOUNT_RISK, POSITION_RISK  # declared once, in fastrisk.tables


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------

def black76(F, K, T, sigma, is_call, rate=0.0):
    """Black-76 price and greeks of a European option on a forward, per unit of underlying.

    Parameters
    ----------
    F, K : float
        Forward (the underlying's index price) and strike, in settle-asset units.
    T : float
        Time to expiry in years of 365 days. ``T <= 0`` means expired.
    sigma : float
        Annualised implied volatility (> 0).
    is_call : bool
        True for a call, False for a put.
    rate : float
        Continuously compounded discount rate; the price is discounted by ``exp(-rate*T)``.

    Returns
    -------
    (value, delta, gamma, vega, theta) : tuple of float
        value in settle units; delta = dV/dF; gamma = d²V/dF²; vega = dV/dσ per 1.00 of vol;
        theta = change of value as one calendar day passes, ``-(dV/dT) / 365``, with F held fixed.

    Notes
    -----
    Black (1976); Hull, *Options, Futures and Other Derivatives*, "Black's model":
    ``c = e^{-rT}[F N(d1) - K N(d2)]``, ``p = e^{-rT}[K N(-d2) - F N(-d1)]``,
    ``d1 = (ln(F/K) + σ²T/2)/(σ√T)``, ``d2 = d1 - σ√T``.

    Greeks: delta = e^{-rT} N(d1) (call), -e^{-rT} N(-d1) (put); gamma = e^{-rT} φ(d1) / (F σ √T);
    vega = e^{-rT} F φ(d1) √T. For the time derivative, the undiscounted price B satisfies
    ∂B/∂T = F φ(d1) σ / (2√T) for calls and puts alike, so with V = e^{-rT} B:
    ∂V/∂T = -r V + e^{-rT} F φ(d1) σ / (2√T), and theta = -∂V/∂T / 365.

    An expired option (T <= 0) is worth its intrinsic value, undiscounted: max(F-K, 0) for a call,
    max(K-F, 0) for a put. Its delta is the limit of the live delta: 1 (call in the money), 0 (out of the
    money), -1 / 0 for puts; exactly at the money it is +0.5 (call) / -0.5 (put), the mid-point of the
    jump. Gamma, vega and theta of an expired option are 0.

    Examples
    --------
    Hull's Black-Scholes call S=42, K=40, r=10%, σ=20%, T=0.5 is a Black-76 call on F = S·e^{rT}:

    >>> round(black76(42 * math.exp(0.05), 40, 0.5, 0.2, True, rate=0.1)[0], 2)
    4.76
    """
    F, K, T, sigma, rate = float(F), float(K), float(T), float(sigma), float(rate)
    if T <= 0.0:
        if is_call:
            value = max(F - K, 0.0)
            delta = 1.0 if F > K else (0.0 if F < K else 0.5)
        else:
            value = max(K - F, 0.0)
            delta = -1.0 if F < K else (0.0 if F > K else -0.5)
        return value, delta, 0.0, 0.0, 0.0

    sqrt_t = math.sqrt(T)
    sig_sqrt_t = sigma * sqrt_t
    d1 = (math.log(F / K) + 0.5 * sigma * sigma * T) / sig_sqrt_t
    d2 = d1 - sig_sqrt_t
    disc = math.exp(-rate * T)
    pdf_d1 = float(norm.pdf(d1))
    if is_call:
        value = disc * (float(norm.cdf(d1)) * F - float(norm.cdf(d2)) * K)
        delta = disc * float(norm.cdf(d1))
    else:
        value = disc * (float(norm.cdf(-d2)) * K - float(norm.cdf(-d1)) * F)
        delta = -disc * float(norm.cdf(-d1))
    gamma = disc * pdf_d1 / (F * sig_sqrt_t)
    vega = disc * F * pdf_d1 * sqrt_t
    dv_dt = -rate * value + disc * F * pdf_d1 * sigma / (2.0 * sqrt_t)
    theta = -dv_dt / DAYS_PER_YEAR
    return value, delta, gamma, vega, theta


def tier_margin(notional, brackets):
    """Bracket, initial and maintenance margin of a futures notional under a leverage-bracket schedule.

    Parameters
    ----------
    notional : float
        Notional in settle-asset units (coin for inverse contracts), >= 0.
    brackets : sequence of (cap, imf, mmf, amount)
        The schedule sorted by cap; the last cap is +inf. ``amount`` is the maintenance ("cum") amount.

    Returns
    -------
    (tier, im, mm) : (int, float, float)
        ``tier`` is 1-based; bracket t covers notional in (cap[t-1], cap[t]], the first starts at 0 (so a zero
        notional is in bracket 1). ``im = notional·imf_t``, ``mm = notional·mmf_t − amount_t`` (SPEC §2).
    """
    for t, (cap, imf, mmf, amount) in enumerate(brackets, start=1):
        if notional <= cap:
            return t, notional * imf, notional * mmf - amount
    # Unreachable for a validated schedule (its last cap is +inf); kept so a hand-made list still answers.
    t = len(brackets)
    cap, imf, mmf, amount = brackets[-1]
    return t, notional * imf, notional * mmf - amount


def derive_amounts(caps, mmfs):
    """Maintenance amounts from the continuity rule (SPEC §1, tiers).

    ``amount[0] = 0``, ``amount[i] = amount[i-1] + cap[i-1]·(mmf[i] − mmf[i-1])``: at each cap the
    maintenance margin computed with either neighbouring bracket is the same.
    """
    amounts = []
    for i in range(len(caps)):
        if i == 0:
            amounts.append(0.0)
        else:
            amounts.append(amounts[i - 1] + caps[i - 1] * (mmfs[i] - mmfs[i - 1]))
    return amounts


def year_fraction(expiry, as_of):
    """(expiry − as_of) in years of 365 days; naive datetimes are taken as UTC."""
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=timezone.utc)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone.utc)
    return (expiry - as_of).total_seconds() / SECONDS_PER_YEAR


# ----------------------------------------------------------------------------------------------------------
# Reading the validated tables into plain dicts
# ----------------------------------------------------------------------------------------------------------

def _rows(table):
    return [] if table is None else table.to_pylist()


def _schedules(tiers):
    """{schedule name: [(cap, imf, mmf, amount), ...] sorted by cap}; amounts derived when not supplied."""
    by_name = {}
    for row in _rows(tiers):
        by_name.setdefault(row["schedule"], []).append(row)
    schedules = {}
    for name, rows in by_name.items():
        rows.sort(key=lambda r: r["notional_cap"])
        caps = [r["notional_cap"] for r in rows]
        mmfs = [r["mmf"] for r in rows]
        derived = derive_amounts(caps, mmfs)
        brackets = []
        for r, amount in zip(rows, derived):
            # A supplied amount has passed validation (continuity within 1e-9 relative) and is used as given.
            supplied = r.get("maintenance_amount")
            brackets.append((r["notional_cap"], r["imf"], r["mmf"], amount if supplied is None else supplied))
        schedules[name] = brackets
    return schedules


class _MarketView:
    """The market as dicts keyed by name / id: everything a single position needs to be valued."""

    def __init__(self, market):
        self.as_of = market.as_of
        self.assets = {r["asset"]: r for r in _rows(market.assets)}
        self.index_price = {r["underlying"]: r["index_price"] for r in _rows(market.underlyings)}
        self.instruments = {r["instrument_id"]: r for r in _rows(market.instruments)}
        self.schedules = _schedules(market.tiers)

    def settle_price(self, inst):
        return self.assets[inst["settle_asset"]]["price"]

    def brackets(self, inst):
        """The instrument's schedule; flat imf/mmf behave as one bracket with amount 0 (conventions)."""
        name = inst.get("tier_schedule")
        if name is not None:
            return self.schedules[name]
        return [(math.inf, inst["imf"], inst["mmf"], 0.0)]


# ----------------------------------------------------------------------------------------------------------
# One position
# ----------------------------------------------------------------------------------------------------------

def _value_position(pos, view, rate, option_margin):
    """Every SPEC §2 figure of one position, as a dict (USD unless the key says settle)."""
    inst = view.instruments[pos["instrument_id"]]
    q = pos["quantity"]
    c = inst["contract_size"]
    E = pos["entry_price"]
    px = view.settle_price(inst)  # USD per settle unit
    kind = inst["kind"]
    out = {
        "account_id": pos["account_id"],
        "instrument_id": pos["instrument_id"],
        "isolated": pos.get("isolated_margin") is not None,
        "isolated_margin": pos.get("isolated_margin"),
        "quantity": q,
        "is_option": kind == "option",
        "settle_price": px,
    }

    if kind in ("linear", "inverse"):
        P = inst["mark_price"]
        if kind == "linear":
            notional = abs(q) * c * P  # settle units
            upnl = q * c * (P - E)
            delta = q * c  # underlying units
        else:
            notional = abs(q) * c / P  # coin
            upnl = q * c * (1.0 / E - 1.0 / P)
            delta = q * c / P  # underlying units
        tier, im, mm = tier_margin(notional, view.brackets(inst))
        out.update(
            mark_price=P,
            notional_usd=notional * px,
            upnl_settle=upnl,
            upnl_usd=upnl * px,
            value_settle=upnl,  # a future adds its PnL to its bucket's equity
            value_usd=upnl * px,
            tier=tier,
            initial_margin=im * px,
            maintenance_margin=mm * px,
            delta=delta, gamma=0.0, vega=0.0, theta=0.0,
        )
        return out

    if kind != "option":
        raise ValueError(f"unknown instrument kind {kind!r}")

    F = view.index_price[inst["underlying"]]
    K = inst["strike"]
    T = year_fraction(inst["expiry"], view.as_of)
    is_call = inst["option_type"] == "call"
    v_model, d_unit, g_unit, vega_unit, th_unit = black76(F, K, T, inst["implied_vol"], is_call, rate)
    mark = inst.get("mark_price")
    V = v_model if mark is None else mark  # a given mark is the base value (SPEC §2)
    value = q * c * V
    upnl = q * c * (V - E)  # informational (conventions): the option enters equity through its value

    f_im, f_min, f_mm = option_margin
    if q < 0:
        otm = max(K - F, 0.0) if is_call else max(F - K, 0.0)
        im = abs(q) * c * F * max(f_im - otm / F, f_min)
        mm = abs(q) * c * F * f_mm
    else:
        im = mm = 0.0  # long options carry no margin
    out.update(
        mark_price=V,
        notional_usd=abs(q) * c * F * px,
        upnl_settle=upnl,
        upnl_usd=upnl * px,
        value_settle=value,
        value_usd=value * px,
        tier=None,
        initial_margin=im * px,
        maintenance_margin=mm * px,
        # delta and gamma in underlying units (q·c·dV/dF), so they add up with futures deltas on the same
        # underlying; vega (per 1.00 vol) and theta (per day) are money, in USD.
        delta=q * c * d_unit,
        gamma=q * c * g_unit,
        vega=q * c * vega_unit * px,
        theta=q * c * th_unit * px,
    )
    return out


def _isolated_bucket(p):
    """An isolated position's own bucket: equity (isolated_margin + upnl or option value) in USD, and
    whether it is liquidatable (MM > 0 and equity <= MM)."""
    equity = (p["isolated_margin"] + p["value_settle"]) * p["settle_price"]
    return equity, p["maintenance_margin"] > 0 and equity <= p["maintenance_margin"]


def _with_isolated_columns(p):
    equity, liquidatable = _isolated_bucket(p) if p["isolated"] else (None, None)
    return dict(p, isolated_equity=equity, liquidatable=liquidatable)


def _sorted_positions(book):
    rows = _rows(book.positions)
    rows.sort(key=lambda r: (r["account_id"], r["instrument_id"], r.get("isolated_margin") is not None))
    return rows


def position_risk(market, book, *, rate=0.0, option_margin=(0.15, 0.10, 0.075)) -> pa.Table:
    """SPEC §2 per position, one row per position, sorted by (account_id, instrument_id, isolated).

    Parameters
    ----------
    market, book
        Validated ``fastrisk.Market`` and ``fastrisk.Book`` (only their Arrow tables and ``as_of`` are read).
    rate : float
        Discount rate of the Black-76 option prices.
    option_margin : (f_im, f_min, f_mm)
        Fractions of the Deribit-shaped short-option margin.

    Returns
    -------
    pa.Table
        Columns of ``POSITION_SCHEMA``. ``mark_price`` is the futures mark, or the option value per unit
        used (the given mark, else Black-76). ``tier`` is the 1-based bracket, null for options. Greeks:
        delta in underlying units: linear futures q·c, inverse futures q·c/P (a USD face of q·c is that many
        coins), options q·c·dV/dF; gamma in underlying units per settle unit of F, q·c·d²V/dF² (0 for
        futures); vega (per 1.00 vol) and theta (per calendar day) in USD, q·c·greek_per_unit × price(settle)
        (0 for futures). Option greeks are the model's (at implied_vol) even when a mark is given.
    """
    view = _MarketView(market)
    rows = [_with_isolated_columns(_value_position(p, view, rate, option_margin)) for p in _sorted_positions(book)]
    return pa.table({f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in POSITION_SCHEMA},
                    schema=POSITION_SCHEMA)


# ----------------------------------------------------------------------------------------------------------
# One account
# ----------------------------------------------------------------------------------------------------------

def _collateral(balances, assets):
    """Σ price·amount·(collateral_weight if amount > 0 else borrow_weight), in USD (SPEC §3)."""
    total = 0.0
    for b in balances:
        a = assets[b["asset"]]
        amount = b["amount"]
        weight = a["collateral_weight"] if amount > 0 else a["borrow_weight"]
        total += a["price"] * amount * weight
    return total


def _status(equity, mm, margin_ratio, margin_call_ratio):
    """SPEC §3, first rule that applies; returns the index into STATUS_NAMES."""
    if equity < 0:
        return STATUS_NAMES.index("bankrupt")
    if mm > 0 and equity <= mm:
        return STATUS_NAMES.index("liquidatable")
    if margin_ratio >= margin_call_ratio:
        return STATUS_NAMES.index("margin_call")
    return STATUS_NAMES.index("healthy")


def _per_equity(x, equity):
    """x / equity for margin ratio and leverage (conventions): 0 when x is 0; +inf when equity <= 0."""
    if x == 0:
        return 0.0
    if equity <= 0:
        return math.inf
    return x / equity


def _account(account_id, positions, balances, view, margin_call_ratio):
    """SPEC §3 for one account, from its valued positions (see _value_position) and its balance rows."""
    collateral = _collateral(balances, view.assets)
    upnl = option_value = im = mm = gross = 0.0
    iso_equity = 0.0
    n_iso_liq = 0
    for p in positions:
        if p["isolated"]:
            eq_iso, liquidatable = _isolated_bucket(p)
            iso_equity += eq_iso
            n_iso_liq += liquidatable
            continue
        if p["is_option"]:
            option_value += p["value_usd"]
        else:
            upnl += p["upnl_usd"]
        im += p["initial_margin"]
        mm += p["maintenance_margin"]
        gross += p["notional_usd"]

    equity = collateral + upnl + option_value
    margin_ratio = _per_equity(mm, equity)
    leverage = _per_equity(gross, equity)
    return {
        "account_id": account_id,
        "collateral": collateral,
        "unrealized_pnl": upnl,
        "option_value": option_value,
        "equity": equity,
        "initial_margin": im,
        "maintenance_margin": mm,
        "margin_ratio": margin_ratio,
        "free_collateral": equity - im,
        "gross_notional": gross,
        "leverage": leverage,
        "status": _status(equity, mm, margin_ratio, margin_call_ratio),
        "n_positions": len(positions),
        "isolated_equity": iso_equity,
        "n_isolated_liquidatable": n_iso_liq,
    }


def account_risk(market, book, *, margin_call_ratio=0.8, rate=0.0, option_margin=(0.15, 0.10, 0.075)) -> pa.Table:
    """SPEC §3 cross-margin account risk, one row per account (union of positions and balances), sorted.

    Parameters
    ----------
    market, book
        Validated ``fastrisk.Market`` and ``fastrisk.Book``.
    margin_call_ratio : float
        ``margin_ratio`` at or above which a solvent, non-liquidatable account is in ``margin_call``.
    rate, option_margin
        As in :func:`position_risk`.

    Returns
    -------
    pa.Table
        Columns of ``ACCOUNT_SCHEMA``, all money in USD. ``unrealized_pnl`` sums cross futures PnL,
        ``option_value`` cross option values (q·c·V); ``equity = collateral + unrealized_pnl + option_value``.
        ``status`` is dictionary-encoded with the dictionary ``STATUS_NAMES`` (index = code).
    """
    view = _MarketView(market)
    positions_by_account = {}
    for p in _sorted_positions(book):
        positions_by_account.setdefault(p["account_id"], []).append(
            _value_position(p, view, rate, option_margin))
    balances_by_account = {}
    for b in _rows(book.balances):
        balances_by_account.setdefault(b["account_id"], []).append(b)

    accounts = sorted(set(positions_by_account) | set(balances_by_account))
    rows = [_account(a, positions_by_account.get(a, []), balances_by_account.get(a, []), view, margin_call_ratio)
            for a in accounts]

    columns = {}
    for f in ACCOUNT_SCHEMA:
        if f.name == "status":
            codes = pa.array([r["status"] for r in rows], type=pa.int8())
            columns[f.name] = pa.DictionaryArray.from_arrays(codes, pa.array(list(STATUS_NAMES), type=pa.string()))
        else:
            columns[f.name] = pa.array([r[f.name] for r in rows], type=f.type)
    return pa.table(columns, schema=ACCOUNT_SCHEMA)
