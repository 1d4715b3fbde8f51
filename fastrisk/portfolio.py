"""Portfolio margin (SPEC §5): margin from scenario losses instead of per-position rates.

``account_risk(market, book, mode="portfolio", scenarios=...)`` lands here. Per account and underlying u,
``loss_u`` = max over the scenarios that name u of weight x (loss of the account's cross positions and
collateral that move with u); ``MM = Σ_u max(loss_u, 0)``; ``IM = im_factor x MM``; status as SPEC §3.

What "moves with u" means: positions on instruments whose underlying is u, positions whose settle asset
follows u (coin-settled contracts), and balances in assets that follow u. A position's loss is its USD value
today minus its USD value in the scenario, so a coin-margined inverse perpetual's loss includes the move of
its coin. For a scenario that names one underlying this is the account's whole cross loss in it, as in
:func:`fastrisk.stress`.

Choices where the SPEC is silent (docs/stress.md):

* A scenario that names several underlyings (a joint, e.g. historical, scenario) counts for each of them
  with the loss of that underlying's rows under the joint move. Offsets between underlyings are never
  credited (the margin is a sum over underlyings, as SPAN adds up its combined commodities without
  inter-commodity credits); a row that moves with two named underlyings (a quanto) counts for both.
* Cross positions on an underlying that no scenario names keep their standard SPEC §2 IM and MM, added to the
  portfolio figures: a partial scenario set never leaves risk unmargined.
* Isolated positions keep their own buckets and SPEC §2 margin, exactly as in cross mode.
"""

from __future__ import annotations

import numpy as np

from .risk import MARGIN_CALL_RATIO, OPTION_MARGIN, _account_outputs, kernel_market, value_instruments

__all__ = ["portfolio_outputs", "IM_FACTOR"]

IM_FACTOR = 1.25  # IM = 1.25 x MM (SPEC §5 default)


def portfolio_outputs(market, bound, scenarios=None, *, rate: float = 0.0, option_margin=OPTION_MARGIN,
                      margin_call_ratio: float = MARGIN_CALL_RATIO, im_factor: float = IM_FACTOR):
    """The account outputs of ``risk.account_risk`` (``(floats [11, a], status, n_positions, n_iso_liq)``)
    with portfolio IM and MM, and margin_ratio, free_collateral and status derived from them.

    ``scenarios`` defaults to :func:`fastrisk.scenarios.span` of every underlying of the market.
    """
    from .kernels.margin import ACCOUNT_FLOAT_COLUMNS
    from .kernels.scenarios import apply_margin, portfolio_losses
    from .scenarios import prepare, span
    from .scenario_risk import account_chunks, chunk_scratch, kernel_book, revalue
    from .tables import readonly

    if not im_factor >= 1.0:
        raise ValueError("im_factor must be >= 1 (initial margin is at least maintenance margin)")
    assert ACCOUNT_FLOAT_COLUMNS[3:8] == ("equity", "initial_margin", "maintenance_margin", "margin_ratio",
                                          "free_collateral"), "apply_margin writes these rows"
    scen = prepare(span(market) if scenarios is None else scenarios, market)
    option_margin = tuple(float(x) for x in option_margin)
    outputs = _account_outputs(market, bound, value_instruments(market, rate=rate), option_margin,
                               margin_call_ratio)
    rev = revalue(market, scen, rate)
    M = market.arrays
    inst, tiers = kernel_market(market)
    n, n_u = len(bound.book.account_id), len(M.index_price)
    k = account_chunks(n)
    covered = np.zeros(n_u, np.uint8)
    covered[scen.named_u] = 1
    row_underlying = (M.underlying, np.ascontiguousarray(M.asset_underlying[M.settle]), M.asset_underlying)
    losses = np.empty((3, n))
    portfolio_losses(losses, kernel_book(bound), *readonly((inst, tiers)), option_margin,
                     *readonly((rev.base, rev.shocked, M.asset_cw, M.asset_bw, scen.weight, rev.groups,
                                (scen.named_start, scen.named_u), row_underlying, covered)),
                     *chunk_scratch(bound, k, rev), np.zeros((k, 2, n_u)), np.zeros((k, n_u), np.uint8))
    floats, status = outputs[0], outputs[1]
    mm = losses[0] + losses[2]
    im = im_factor * losses[0] + losses[1]
    apply_margin(floats, status, im, mm, float(margin_call_ratio))
    return outputs
