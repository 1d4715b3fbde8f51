"""Validation of a public call's parameters (the numbers passed beside the tables), as inputs are validated.

A parameter breaking its rule raises ``InputError`` named after the call and the parameter, e.g.
``account_risk.rate: must be ...``. Unchecked, a NaN rate or option-margin fraction reached every figure as
NaN, and a rate of -1e300 overflowed every discount factor.
"""

from __future__ import annotations

import math

from .errors import InputError


def parameter_error(call: str, name: str, rule: str, value) -> InputError:
    return InputError(call, name, rule, count=1, examples=[repr(value)])


def check_parameters(call: str, *, rate=None, margin_call_ratio=None, option_margin=None,
                     im_factor=None) -> None:
    """Check the valuation and margin parameters ``call`` was given (``None``: not a parameter of it).

    ``rate``: a continuously compounded rate in [-1, 1] (with expiries at most 100 years out, every discount
    factor stays within e^+-100); ``margin_call_ratio``: finite and > 0; ``option_margin``: three fractions in
    [0, 1]; ``im_factor``: finite and >= 1 (portfolio IM is at least its MM).
    """
    if rate is not None and not -1.0 <= rate <= 1.0:
        raise parameter_error(call, "rate", "must be a continuously compounded rate in [-1, 1]", rate)
    if margin_call_ratio is not None and not 0.0 < margin_call_ratio < math.inf:
        raise parameter_error(call, "margin_call_ratio", "must be finite and > 0", margin_call_ratio)
    if option_margin is not None and (len(option_margin) != 3 or not all(0.0 <= x <= 1.0 for x in option_margin)):
        raise parameter_error(call, "option_margin", "must be three fractions in [0, 1] (IM, IM floor, MM)",
                              option_margin)
    if im_factor is not None and not 1.0 <= im_factor < math.inf:
        raise parameter_error(call, "im_factor", "must be finite and >= 1", im_factor)
