"""Contagion: what cross margin costs and saves under a shock (SPEC §6).

(The module is not called ``contagion`` so that importing it never shadows the function ``fastrisk.contagion``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .book import Book
from .market import Market
from .parameters import check_parameters
from .risk import OPTION_MARGIN, kernel_market, value_instruments

__all__ = ["contagion", "ContagionResult"]


@dataclass(frozen=True)
class ContagionResult:
    """Per account and venue totals of cross margin against its isolated counterfactual.

    accounts : pa.Table
        Every account, sorted: account_id, n_positions (cross positions with a quantity), liquidated_cross,
        positions_lost_cross, positions_lost_isolated, contagion_positions (lost only because of cross),
        efficiency_positions (saved only because of cross), and the same in USD notional at the shocked
        prices: notional_lost_cross, notional_lost_isolated, contagion_notional, efficiency_notional.
    summary : pa.Table
        One row of venue totals: accounts (with cross positions), positions, accounts_liquidated_cross,
        accounts_liquidated_isolated (at least one position lost), positions and notional lost under each
        regime, contagion and efficiency accounts, positions and notional.
    """

    accounts: pa.Table
    summary: pa.Table


def contagion(market: Market, book: Book, shock, *, rate: float = 0.0, option_margin=OPTION_MARGIN) -> ContagionResult:
    """Cross margin versus the isolated counterfactual under a shock (SPEC §6); no price impact.

    Cross: an account whose cross bucket is liquidatable after the shock loses all its cross positions.
    Isolated counterfactual: each cross position with a quantity stands alone with a share of the account's
    pre-shock cross equity in proportion to its initial margin (equal shares when none has any); after the
    shock its equity is that share of (pre-shock equity + the collateral's change) plus its own change of
    value, so the isolated buckets add up to the cross equity; it is lost when its MM > 0 and equity <= MM.
    Contagion = positions lost under cross but not isolated; efficiency = lost isolated but not under cross.
    Isolated positions of the book are the same under both regimes and are not counted.

    Parameters
    ----------
    market, book : Market, Book
    shock : mapping
        ``{underlying: relative move}`` (validated as for ``cascade``).

    Returns
    -------
    ContagionResult
    """
    from .kernels._jit import n_chunks
    from .kernels.cascade import CONTAGION_COUNTS, CONTAGION_NOTIONALS, contagion_accounts
    from .liquidation import kernel_book
    from .liquidation_cascade import shock_multipliers

    check_parameters("contagion", rate=rate, option_margin=option_margin)
    mult = shock_multipliers(market, shock)
    M = market.arrays
    bound = book.bind(market)
    n = len(bound.book.account_id)
    inst, tiers = kernel_market(market)
    v0, v1 = value_instruments(market, rate=rate), value_instruments(market, mult, rate=rate)
    counts, notionals, liquidated = np.empty((5, n), np.int32), np.empty((4, n)), np.empty(n, np.uint8)
    contagion_accounts(counts, notionals, liquidated, kernel_book(bound), inst, tiers,
                       (v0.price, v0.forward, v0.settle_px, v0.asset_px),
                       (v1.price, v1.forward, v1.settle_px, v1.asset_px), (M.asset_cw, M.asset_bw),
                       tuple(float(x) for x in option_margin), n_chunks(n, 1 << 12))
    c = dict(zip(CONTAGION_COUNTS, counts))
    x = dict(zip(CONTAGION_NOTIONALS, notionals))
    accounts = pa.table({
        "account_id": bound.book.account_id, "n_positions": c["n_positions"],
        "liquidated_cross": liquidated.astype(bool), "positions_lost_cross": c["positions_lost_cross"],
        "positions_lost_isolated": c["positions_lost_isolated"], "contagion_positions": c["contagion_positions"],
        "efficiency_positions": c["efficiency_positions"], **x})
    return ContagionResult(accounts, contagion_summary(accounts))


def contagion_summary(accounts: pa.Table) -> pa.Table:
    """The venue totals of ``ContagionResult.summary`` from its accounts table (one row)."""
    c = {name: accounts.column(name).to_numpy() for name in accounts.column_names}
    return pa.table({
        "accounts": [int((c["n_positions"] > 0).sum())],
        "positions": [int(c["n_positions"].sum())],
        "accounts_liquidated_cross": [int(c["liquidated_cross"].sum())],
        "accounts_liquidated_isolated": [int((c["positions_lost_isolated"] > 0).sum())],
        "positions_lost_cross": [int(c["positions_lost_cross"].sum())],
        "positions_lost_isolated": [int(c["positions_lost_isolated"].sum())],
        "notional_lost_cross": [float(c["notional_lost_cross"].sum())],
        "notional_lost_isolated": [float(c["notional_lost_isolated"].sum())],
        "contagion_accounts": [int((c["contagion_positions"] > 0).sum())],
        "contagion_positions": [int(c["contagion_positions"].sum())],
        "contagion_notional": [float(c["contagion_notional"].sum())],
        "efficiency_accounts": [int((c["efficiency_positions"] > 0).sum())],
        "efficiency_positions": [int(c["efficiency_positions"].sum())],
        "efficiency_notional": [float(c["efficiency_notional"].sum())],
    })
