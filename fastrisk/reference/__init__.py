"""Plain, obviously correct implementations of the SPEC's formulas: the oracle for tests and the
baseline for benchmarks. Nothing here is compiled; every figure is computed one account at a time."""

from .account import (ACCOUNT_SCHEMA, POSITION_SCHEMA, account_risk, black76, derive_amounts, position_risk,
                      tier_margin, year_fraction)
from .exposures import exposures
from .cascade import cascade, contagion
from .liquidation import liquidation_prices, moved_market
from .stress import portfolio_account_risk, shocked_market, stress

__all__ = ["ACCOUNT_SCHEMA", "POSITION_SCHEMA", "account_risk", "black76", "derive_amounts", "position_risk",
           "tier_margin", "year_fraction", "stress", "portfolio_account_risk", "shocked_market", "exposures",
           "liquidation_prices", "moved_market", "cascade", "contagion"]
