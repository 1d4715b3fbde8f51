"""Account and position risk (SPEC §2–3): validated tables in, kernels, Arrow tables out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import codes as C
from .book import Book, BoundBook
from .market import Market
from .parameters import check_parameters, parameter_error
from .tables import ACCOUNT_RISK, POSITION_RISK, ReadOnlyArrays, bitmap, empty, with_validity

OPTION_MARGIN = (0.15, 0.10, 0.075)  # Deribit-shaped short-option margin: IM fraction, IM floor, MM fraction
MARGIN_CALL_RATIO = 0.8


@dataclass(frozen=True)
class Valuation(ReadOnlyArrays):
    """Every instrument and asset priced at one set of per-underlying multipliers (arrays indexed by
    instrument ``i`` or asset ``a``)."""

    price: np.ndarray
    forward: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    settle_px: np.ndarray   # [i] USD price of each instrument's settle asset
    asset_px: np.ndarray    # [a] USD price of each asset


def value_instruments(market: Market, mult_u=None, vol_shift_u=None, rate: float = 0.0) -> Valuation:
    """Value every instrument with each underlying's price times ``mult_u`` (default: today's prices)."""
    from .kernels.valuation import asset_prices, instrument_prices

    M = market.arrays
    n_u = len(M.index_price)
    mult_u = np.ones(n_u) if mult_u is None else np.ascontiguousarray(mult_u, dtype=np.float64)
    vol_shift_u = np.zeros(n_u) if vol_shift_u is None else np.ascontiguousarray(vol_shift_u, dtype=np.float64)
    price, forward, delta, gamma, vega, theta = instrument_prices(
        M.kind, M.underlying, M.mark, M.index_price, M.option_type, M.strike, M.expiry_years, M.implied_vol,
        mult_u, vol_shift_u, float(rate))
    asset_px = asset_prices(M.asset_price, M.asset_underlying, mult_u)
    return Valuation(price, forward, delta, gamma, vega, theta, asset_px[M.settle], asset_px)


def kernel_market(market: Market):
    """The market's per-instrument and tier arrays as the tuples kernels take."""
    M = market.arrays
    inst = (M.kind, M.contract_size, M.tier_first, M.tier_last, M.option_type, M.strike)
    tiers = (M.tier_cap, M.tier_imf, M.tier_mmf, M.tier_amount)
    return inst, tiers


def _account_outputs(market: Market, bound: BoundBook, val: Valuation, option_margin, margin_call_ratio):
    from .kernels.margin import N_ACCOUNT_FLOATS, account_margin

    B, M = bound.book, market.arrays
    inst, tiers = kernel_market(market)
    n = len(B.account_id)
    out = (empty((N_ACCOUNT_FLOATS, n)), empty(n, np.int8), empty(n, np.int32), empty(n, np.int32))
    account_margin(*out, B.pos_start, bound.pos_instrument, B.quantity, B.entry_price, B.isolated,
                          B.isolated_margin, B.bal_start, bound.bal_asset, B.bal_amount, inst, tiers, val.price,
                          val.forward, val.settle_px, val.asset_px, M.asset_cw, M.asset_bw,
                          tuple(float(x) for x in option_margin), float(margin_call_ratio))
    return out


def status_array(status: np.ndarray) -> pa.DictionaryArray:
    # Kernels write valid codes only: no need for Arrow to check every index.
    return pa.DictionaryArray.from_arrays(pa.array(status, pa.int8()), pa.array(C.STATUS_NAMES), safe=False)


def account_risk(market: Market, book: Book, mode: str = "cross", scenarios=None, *,
                 margin_call_ratio: float = MARGIN_CALL_RATIO, rate: float = 0.0,
                 option_margin=OPTION_MARGIN, im_factor: float = 1.25) -> pa.Table:
    """Cross-margin risk of every account (SPEC §3), or its portfolio margin (SPEC §5).

    Parameters
    ----------
    market, book : Market, Book
    mode : {"cross", "portfolio"}
        ``"portfolio"``: IM and MM from scenario losses (``fastrisk.portfolio``); every other column as in
        cross mode, margin_ratio, free_collateral and status derived from the portfolio margins.
    scenarios : table source, optional
        Portfolio mode: the SPEC §5 scenarios; default ``fastrisk.scenarios.span`` of every underlying.
    margin_call_ratio : float
        ``margin_ratio`` at or above which a solvent account is in ``margin_call``.
    rate : float
        Continuously compounded rate for option discounting.
    option_margin : (float, float, float)
        Short-option IM fraction, IM floor fraction, MM fraction (Deribit: 0.15, 0.10, 0.075).
    im_factor : float
        Portfolio mode: IM = im_factor x MM.

    Returns
    -------
    pa.Table
        One row per account (the union of positions' and balances' account_ids), sorted by account_id;
        money columns in USD. Columns: account_id, collateral, unrealized_pnl, option_value, equity,
        initial_margin, maintenance_margin, margin_ratio, free_collateral, gross_notional, leverage,
        status, n_positions, isolated_equity, n_isolated_liquidatable.
    """
    if mode not in ("cross", "portfolio"):
        raise parameter_error("account_risk", "mode", "must be 'cross' or 'portfolio'", mode)
    check_parameters("account_risk", rate=rate, margin_call_ratio=margin_call_ratio, option_margin=option_margin,
                     im_factor=im_factor)
    from .kernels.margin import ACCOUNT_FLOAT_COLUMNS

    bound = book.bind(market)
    if mode == "portfolio":
        from .portfolio import portfolio_outputs

        outputs = portfolio_outputs(market, bound, scenarios, rate=rate, option_margin=option_margin,
                                    margin_call_ratio=margin_call_ratio, im_factor=im_factor)
    else:
        outputs = _account_outputs(market, bound, value_instruments(market, rate=rate), option_margin,
                                   margin_call_ratio)
    floats, status, n_positions, n_iso_liq = outputs
    col = {name: floats[k] for k, name in enumerate(ACCOUNT_FLOAT_COLUMNS)}
    return pa.table({
        "account_id": bound.book.account_id,
        **{name: col[name] for name in ACCOUNT_FLOAT_COLUMNS if name != "isolated_equity"},
        "status": status_array(status),
        "n_positions": n_positions,
        "isolated_equity": col["isolated_equity"],
        "n_isolated_liquidatable": n_iso_liq,
    }, schema=ACCOUNT_RISK)


def position_risk(market: Market, book: Book, *, rate: float = 0.0, option_margin=OPTION_MARGIN) -> pa.Table:
    """Per-position risk in USD (SPEC §3), sorted by (account_id, instrument_id, isolated).

    Columns: account_id, instrument_id, isolated, quantity, mark_price (options: the value V used),
    notional_usd, upnl_usd, value_usd (what the position adds to its bucket's equity), tier (1-based
    bracket, null for options), initial_margin, maintenance_margin, isolated_equity (null for cross),
    liquidatable (isolated positions; null for cross), and greeks delta (underlying units), gamma,
    vega and theta (USD per 1.00 vol and per day).
    """
    from .kernels._jit import n_chunks
    from .kernels.arrays import repeat_segments
    from .kernels.margin import position_margin

    check_parameters("position_risk", rate=rate, option_margin=option_margin)
    bound = book.bind(market)
    B = bound.book
    val = value_instruments(market, rate=rate)
    inst, tiers = kernel_market(market)
    n = len(B.quantity)
    floats, tier, liq = empty((11, n)), empty(n, np.int16), empty(n, np.uint8)
    position_margin(floats, tier, liq, bound.pos_instrument, B.quantity, B.entry_price, B.isolated,
                    B.isolated_margin, inst, tiers, val.price, val.forward, val.settle_px,
                    (val.delta, val.gamma, val.vega, val.theta), tuple(float(x) for x in option_margin), n_chunks(n))
    account_of_position = empty(n, np.int64)
    repeat_segments(B.account_id, B.pos_start, account_of_position)
    is_future = tier != 0  # options have no bracket (position_figures)
    iso_bits = bitmap(B.isolated)
    return pa.table({
        "account_id": account_of_position,
        "instrument_id": B.instrument_id,
        "isolated": pa.Array.from_buffers(pa.bool_(), n, [None, iso_bits]),
        "quantity": B.quantity,
        "mark_price": floats[6],
        "notional_usd": floats[0],
        "upnl_usd": floats[1],
        "value_usd": floats[2],
        "tier": with_validity(pa.int16(), tier, bitmap(is_future), is_future),
        "initial_margin": floats[3],
        "maintenance_margin": floats[4],
        "isolated_equity": with_validity(pa.float64(), floats[5], iso_bits, B.isolated),
        "liquidatable": with_validity(pa.bool_(), liq, iso_bits, B.isolated),
        "delta": floats[7],
        "gamma": floats[8],
        "vega": floats[9],
        "theta": floats[10],
    }, schema=POSITION_RISK)
