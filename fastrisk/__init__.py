"""fastrisk: cross-margin risk for every account of a derivatives venue, from Arrow tables through
compiled Numba kernels to Arrow tables. Importing the package compiles nothing."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "Market", "Book", "account_risk", "position_risk", "stress", "StressResult", "exposures",
           "scenarios", "liquidation_prices", "cascade", "CascadeResult", "contagion", "ContagionResult", "generate", "reference", "__version__"]

_LAZY = {"Market": ("market", "Market"), "Book": ("book", "Book"), "account_risk": ("risk", "account_risk"),
         "position_risk": ("risk", "position_risk"), "generate": ("generate", None),
         "reference": ("reference", None), "stress": ("scenario_risk", "stress"),
         "StressResult": ("scenario_risk", "StressResult"), "exposures": ("exposure", "exposures"),
         "scenarios": ("scenarios", None), "liquidation_prices": ("liquidation", "liquidation_prices"),
         "cascade": ("liquidation_cascade", "cascade"), "CascadeResult": ("liquidation_cascade", "CascadeResult"),
         "contagion": ("cross_contagion", "contagion"), "ContagionResult": ("cross_contagion", "ContagionResult")}

if TYPE_CHECKING:  # pragma: no cover
    from . import generate, reference, scenarios
    from .book import Book
    from .exposure import exposures
    from .liquidation import liquidation_prices
    from .cross_contagion import ContagionResult, contagion
    from .liquidation_cascade import CascadeResult, cascade
    from .market import Market
    from .risk import account_risk, position_risk
    from .scenario_risk import StressResult, stress


def __getattr__(name: str):
    # Lazy so that `fastrisk --help` and `import fastrisk` stay instant: pyarrow and numba load on use.
    if name not in _LAZY:
        raise AttributeError(f"module 'fastrisk' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
