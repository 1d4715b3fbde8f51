"""Stress tests (SPEC §5): every account of the venue revalued under every scenario.

(``fastrisk.stress`` is the function; the module has another name so that importing it never replaces the
package's ``stress`` attribute with a module.) ``revalue`` and the chunk helpers are shared with portfolio
margin and exposures.

``stress(market, book, scenarios)`` moves, per scenario, every instrument on the named underlyings, their
index and the assets that follow them (``value_scenarios``: what ``risk.value_instruments`` gives per
scenario, bit for bit, for all scenarios in one parallel pass over the instruments), then
takes each account through all scenarios with the account margin code of ``account_risk``
(``kernels.scenarios.stress_accounts``). Tiers are re-bracketed at the shocked notionals; options are
re-priced with Black-76 at the shocked forward and vol.

Loss: an account's loss in a scenario is its cross equity today minus its cross equity in the scenario, in
USD (positive = it loses). Isolated positions are their own buckets: they are not in the loss (nor in
equity_after / status_after); the scenarios table counts the isolated positions liquidatable after each
scenario and their bad debt separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .parameters import check_parameters
from .risk import MARGIN_CALL_RATIO, OPTION_MARGIN, kernel_market, status_array, value_instruments
from .tables import bitmap, empty, readonly, with_validity

__all__ = ["stress", "StressResult"]


@dataclass(frozen=True)
class StressResult:
    """The result of :func:`stress`.

    Attributes
    ----------
    accounts : pa.Table
        One row per account (every account, sorted by account_id): ``account_id``; ``equity``,
        ``maintenance_margin`` and ``status`` today (cross bucket, SPEC §3); ``worst_loss`` = max over
        scenarios of weight x loss, 0 if no scenario loses; ``worst_scenario`` (scenario_id, null if none
        loses; ties go to the smallest id); ``equity_after``, ``maintenance_margin_after``, ``status_after``
        in that scenario (today's figures when none loses).
    scenarios : pa.Table
        One row per scenario, by scenario_id: ``scenario_id``, ``description``, ``weight``; ``total_loss``
        (Σ of the losses of the accounts that lose, unweighted, USD), ``net_loss`` (Σ of all losses; negative
        when accounts gain in aggregate), ``accounts_losing``, ``accounts_liquidatable`` and
        ``accounts_bankrupt`` after the scenario (status exactly liquidatable / bankrupt, accounts already in
        that state today included), ``newly_liquidatable`` (liquidatable or bankrupt after, neither today),
        ``bad_debt`` (Σ of negative cross equity, USD), ``isolated_liquidatable`` (isolated positions at or
        below their maintenance margin) and ``isolated_bad_debt`` (Σ of negative isolated equity, USD).
    loss_matrix : np.ndarray or None
        With ``loss_matrix=True``: every loss, float64 [accounts, scenarios], rows in the order of
        ``accounts``, columns in the order of ``scenarios``.
    """

    accounts: pa.Table
    scenarios: pa.Table
    loss_matrix: np.ndarray | None = None


@dataclass(frozen=True)
class Revaluation:
    """Every instrument and asset priced today (``base``) and under each scenario (``shocked``, arrays
    [s, i] / [s, k]), and the scenarios grouped by what they move (see ``kernels.scenarios``)."""

    base: tuple
    shocked: tuple
    groups: tuple


def scenario_prices(market, scen, rate: float = 0.0) -> np.ndarray:
    """The price of every instrument of ``market`` under every scenario of ``scen`` (a
    ``scenarios.Scenarios``), float64 [s, i]: row ``s`` is
    ``risk.value_instruments(market, scen.mult[s], scen.vol_shift[s], rate).price``, bit for bit
    (``kernels.valuation.scenario_instrument_prices``: instruments in parallel chunks, scenarios inside)."""
    from .kernels._jit import n_chunks
    from .kernels.valuation import scenario_instrument_prices

    M = market.arrays
    n_s, n_u, n_i = scen.n, len(M.index_price), len(M.kind)
    price = np.empty((n_s, n_i))
    # Chunks by the count of evaluations: a function of the sizes only, never of the thread count.
    scenario_instrument_prices(price, M.kind, M.underlying, M.mark, M.index_price, M.option_type, M.strike,
                               M.expiry_years, M.implied_vol, _rows(scen.mult, n_s, n_u),
                               _rows(scen.vol_shift, n_s, n_u), float(rate), n_chunks(n_i * n_s))
    return price


def value_scenarios(market, scen, rate: float = 0.0) -> tuple:
    """Every instrument and asset of ``market`` valued under every scenario of ``scen``:
    ``(price, forward, settle_px, asset_px)``, float64 [s, i] / [s, k], row ``s`` of each what
    ``risk.value_instruments(market, scen.mult[s], scen.vol_shift[s], rate)`` gives, bit for bit."""
    from .kernels.valuation import asset_prices, scenario_moves

    M = market.arrays
    n_s, n_u, n_i = scen.n, len(M.index_price), len(M.kind)
    mult = _rows(scen.mult, n_s, n_u)
    asset_px = np.empty((n_s, len(M.asset_price)))
    for s in range(n_s):
        asset_px[s] = asset_prices(M.asset_price, M.asset_underlying, mult[s])
    forward, settle_px = np.empty((n_s, n_i)), np.empty((n_s, n_i))
    scenario_moves(forward, settle_px, M.underlying, M.index_price, M.settle, mult, asset_px)
    return scenario_prices(market, scen, rate), forward, settle_px, asset_px


def _rows(x, n_s: int, n_u: int) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64).reshape(n_s, n_u)


def revalue(market, scen, rate: float = 0.0) -> Revaluation:
    """Value the market today and under every scenario of ``scen`` (a ``scenarios.Scenarios``), once per
    instrument, and group scenarios by the exact set of instruments and assets whose price, forward or
    settle price differs from today's: a row none of its group's scenarios touches keeps its base figures."""
    val = value_instruments(market, rate=rate)
    base = (val.price, val.forward, val.settle_px, val.asset_px)
    shocked = value_scenarios(market, scen, rate)
    n_s, n_i, n_k = scen.n, len(val.price), len(val.asset_px)
    moved = np.concatenate([(shocked[0] != base[0]) | (shocked[1] != base[1]) | (shocked[2] != base[2]),
                            shocked[3] != base[3]], axis=1)
    # Group ids by first appearance of each moved set (hashing the packed bits: np.unique over rows of
    # 100k instruments would sort them); the order of the groups does not change any result.
    group_of = np.empty(n_s, np.int64)
    first_scenario: dict[bytes, int] = {}
    for s in range(n_s):
        group_of[s] = first_scenario.setdefault(np.packbits(moved[s]).tobytes(), len(first_scenario))
    keys = moved[np.unique(group_of, return_index=True)[1]]  # group g's moved set, from its first scenario
    # Inside a group, scenarios with the same price moves side by side (a vol-up / vol-down pair), so that
    # an instrument priced exactly as in the previous scenario is not re-evaluated (``repeat``).
    group_scen = np.lexsort(tuple(scen.mult.T[::-1]) + (group_of,)).astype(np.int64) if n_s else \
        np.zeros(0, np.int64)
    group_start = np.searchsorted(group_of[group_scen], np.arange(len(keys) + 1)).astype(np.int64)
    same = np.ones((n_s, n_i), bool)
    for values in shocked[:3]:  # price, forward, settle price
        same[1:] &= values[group_scen[1:]] == values[group_scen[:-1]]
    same[group_start[:-1]] = False  # the first of a group has no predecessor
    repeat = np.ascontiguousarray(same, dtype=np.uint8)
    # Bit g of word g // 64: group g moves this instrument (asset).
    words = np.zeros((n_i + n_k, max((len(keys) + 63) // 64, 1)), np.uint64)
    for g in range(len(keys)):
        words[keys[g], g // 64] |= np.uint64(1) << np.uint64(g % 64)
    groups = (group_start, group_scen, np.ascontiguousarray(keys[:, :n_i], dtype=np.uint8),
              np.ascontiguousarray(keys[:, n_i:], dtype=np.uint8), np.ascontiguousarray(words[:n_i]),
              np.ascontiguousarray(words[n_i:]), repeat)
    return Revaluation(base, shocked, groups)


SCENARIO_COUNTS = {"accounts_losing", "accounts_liquidatable", "accounts_bankrupt", "newly_liquidatable",
                   "isolated_liquidatable"}


def scenario_table(scen, market, totals: dict) -> pa.Table:
    """The per-scenario result table: id, description, weight, then each venue total (counts as int64)."""
    return pa.table({
        "scenario_id": pa.array(scen.ids, pa.int32()),
        "description": pa.array(scen.descriptions(market), pa.string()),
        "weight": scen.weight,
        **{name: np.asarray(col).astype(np.int64) if name in SCENARIO_COUNTS else np.asarray(col, np.float64)
           for name, col in totals.items()},
    })


def kernel_book(bound):
    """The bound book as the (read-only) tuple the scenario kernels take."""
    B = bound.book
    return readonly((B.pos_start, bound.pos_instrument, B.quantity, B.entry_price, B.isolated, B.isolated_margin,
                     B.bal_start, bound.bal_asset, B.bal_amount))


def account_chunks(n_accounts: int) -> int:
    """Chunks of accounts for the scenario kernels: a function of the account count only (so totals never
    depend on the thread count), a few thousand accounts each so that threads balance."""
    from .kernels._jit import n_chunks

    return n_chunks(n_accounts, min_rows=4096)


def chunk_scratch(bound, n_chunks: int, rev: Revaluation):
    """Per-chunk scratch for one account at a time: its rows' cached contributions, the lists of rows a
    scenario group moves (sized for the largest account), its group mask, and the moved rows' contributions
    in the previous scenario."""
    from .kernels.arrays import longest

    B = bound.book
    max_pos = max(int(longest(B.pos_start)), 1)
    max_bal = max(int(longest(B.bal_start)), 1)
    return (np.empty((n_chunks, max_pos, 4)), np.empty((n_chunks, max_pos, 2), np.int8),
            np.empty((n_chunks, max_bal)), np.empty((n_chunks, max_pos), np.int64),
            np.empty((n_chunks, max_bal), np.int64), np.empty((n_chunks, rev.groups[4].shape[1]), np.uint64),
            np.empty((n_chunks, max_pos, 4)), np.empty((n_chunks, max_pos, 2), np.int8))


def stress(market, book, scenarios, *, loss_matrix: bool = False, margin_call_ratio: float = MARGIN_CALL_RATIO,
           rate: float = 0.0, option_margin=OPTION_MARGIN) -> StressResult:
    """Revalue every account under every scenario (SPEC §5).

    Parameters
    ----------
    market, book : Market, Book
    scenarios : table source
        A SPEC §5 scenarios table (see :mod:`fastrisk.scenarios` for generators); validated against the
        market (unknown underlyings, duplicate rows, inconsistent weights raise ``InputError``).
    loss_matrix : bool
        Also return every account's loss in every scenario, [accounts, scenarios] float64.
    margin_call_ratio, rate, option_margin
        As in :func:`fastrisk.account_risk`.

    Returns
    -------
    StressResult
        ``accounts`` (every account, sorted by account_id), ``scenarios`` (by scenario_id) and optionally
        ``loss_matrix``; see :class:`StressResult`. Loss = today's cross equity minus the scenario's, USD.

    Examples
    --------
    >>> import fastrisk as fr
    >>> market, book = fr.generate.exchange(500, seed=1)
    >>> result = fr.stress(market, book, fr.scenarios.span(["BTC", "ETH"], market=market))
    >>> result.accounts.num_rows == book.n_accounts, result.scenarios.num_rows
    (True, 32)
    """
    from .kernels.scenarios import SCENARIO_TOTALS, STRESS_FLOATS, STRESS_INTS, stress_accounts
    from .scenarios import prepare

    check_parameters("stress", rate=rate, margin_call_ratio=margin_call_ratio, option_margin=option_margin)
    scen = prepare(scenarios, market)
    bound = book.bind(market)
    rev = revalue(market, scen, rate)
    inst, tiers = kernel_market(market)
    M = market.arrays
    n = len(bound.book.account_id)
    k = account_chunks(n)
    acc_f, acc_i = empty((len(STRESS_FLOATS), n)), empty((len(STRESS_INTS), n), np.int32)
    totals = np.zeros((k, scen.n, len(SCENARIO_TOTALS)))
    matrix = np.empty((n, scen.n)) if loss_matrix else np.empty((0, 0))
    stress_accounts(acc_f, acc_i, totals, matrix, kernel_book(bound), *readonly((inst, tiers)),
                    tuple(float(x) for x in option_margin), float(margin_call_ratio),
                    *readonly((rev.base, rev.shocked, M.asset_cw, M.asset_bw, scen.weight, rev.groups)),
                    *chunk_scratch(bound, k, rev), np.zeros((k, len(rev.groups[0]) - 1, len(SCENARIO_TOTALS))))

    f = dict(zip(STRESS_FLOATS, acc_f))
    i = dict(zip(STRESS_INTS, acc_i))
    worst = i["worst_scenario"]
    has_worst = worst >= 0
    accounts = pa.table({
        "account_id": bound.book.account_id,
        "equity": f["equity"],
        "maintenance_margin": f["maintenance_margin"],
        "status": status_array(i["status"].astype(np.int8)),
        "worst_loss": f["worst_loss"],
        "worst_scenario": with_validity(pa.int32(), scen.ids[np.maximum(worst, 0)] if scen.n else
                                        np.zeros(n, np.int32), bitmap(has_worst), has_worst),
        "equity_after": f["equity_after"],
        "maintenance_margin_after": f["maintenance_margin_after"],
        "status_after": status_array(i["status_after"].astype(np.int8)),
    })
    venue = totals.sum(axis=0)  # chunks in order: the same sums whatever the thread count
    per_scenario = scenario_table(scen, market, {name: venue[:, j] for j, name in enumerate(SCENARIO_TOTALS)})
    return StressResult(accounts, per_scenario, matrix if loss_matrix else None)

