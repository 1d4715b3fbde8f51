"""Exchange-wide liquidation cascade (SPEC §6): a shock, then rounds of forced liquidation and price impact.

(The module is not called ``cascade`` so that importing it never shadows the function ``fastrisk.cascade``.)
Conventions, formulas and an example are in ``docs/liquidation.md``; the screen that keeps a round from
costing a sweep is described in ``kernels/cascade.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .book import Book
from .errors import InputError
from .parameters import check_parameters, parameter_error
from .market import Market
from .risk import OPTION_MARGIN, kernel_market, value_instruments
from .tables import bitmap, empty, full, merge_by_account, with_validity

__all__ = ["cascade", "CascadeResult", "format_rounds", "shock_multipliers", "IMPACT_MODELS"]

IMPACT_MODELS = ("sqrt", "linear", "none")
LIQUIDATION_FEE = 0.005   # of the notional closed, Binance-like clearance fee; goes to the insurance fund
SQRT_IMPACT_K = 1.0       # square-root law coefficient (Almgren et al. 2005; Toth et al. 2011: order 1)
# The moves from the shocked prices over which the screen's fall rates hold (kernels/cascade.py): narrower
# than the liquidation-price range, so that a future's bound spans only the brackets it can reach.
SCREEN_WINDOW = (0.5, 2.0)
# The first horizon of the screen's watch lists (kernels/cascade.py): the largest move since the shock before they
# are rebuilt. Far enough that a cascade rebuilds them a few times, near enough that they hold few buckets.
WATCH_HORIZON = 1.0 / 32.0


@dataclass(frozen=True)
class CascadeResult:
    """What a cascade did.

    rounds : pa.Table
        One row per round: round 0 is the shock itself, rounds 1.. each liquidated at least one bucket.
        Columns: round, accounts_liquidated, isolated_liquidated, notional_closed, fees, bad_debt,
        insurance_fund_left, shortfall (USD; this round's), then ``price_<underlying>`` for every underlying
        (the index price after the round's impact: round r's buckets were closed at round r-1's prices).
    accounts : pa.Table
        Every account, sorted: account_id, round_liquidated (null if its cross bucket survived),
        equity_before (pre-shock, cross + isolated), equity_at_liquidation (cross equity at close-out, null
        if not liquidated), fee_paid, bad_debt, isolated_liquidated (isolated positions closed),
        equity_after (liquidated buckets: what was left after the fee, in USD at close-out; others at the
        final prices), loss = equity_before - equity_after.
    path : pa.Table
        Long form of the price path: round, underlying, price, forced_flow_usd (signed, + = longs closed,
        i.e. forced selling), impact (the return applied; round 0: the shock).
    stopped : str
        ``"no liquidations"`` (a round found nobody) or ``"max_rounds"``.
    """

    rounds: pa.Table
    accounts: pa.Table
    path: pa.Table
    stopped: str


def shock_multipliers(market: Market, shock) -> np.ndarray:
    """``{underlying: relative move}`` as per-underlying price factors, validated (InputError on an unknown
    underlying or a move that is not a finite number > -1)."""
    names = market.underlying_names.to_pylist()
    mult = np.ones(len(names))
    items = list(dict(shock).items())
    unknown = [u for u, _ in items if u not in names]
    if unknown:
        raise InputError("shock", "underlying", f"must be one of underlyings.underlying ({len(names)} known)",
                         count=len(unknown), examples=[repr(u) for u in unknown[:5]])
    bad = [(u, v) for u, v in items if not (isinstance(v, (int, float)) and math.isfinite(v) and v > -1.0)]
    if bad:
        raise InputError("shock", "price_shock", "must be a finite relative move > -1", count=len(bad),
                         examples=[f"{u}={v!r}" for u, v in bad[:5]])
    for u, v in items:
        mult[names.index(u)] = 1.0 + float(v)
    return mult


def _check_parameters(impact, insurance_fund, liquidation_fee, max_rounds, k):
    def fail(column, rule, value):
        raise parameter_error("cascade", column, rule, value)

    if impact not in IMPACT_MODELS:
        fail("impact", f"must be one of {', '.join(IMPACT_MODELS)}", impact)
    if not (math.isfinite(insurance_fund) and insurance_fund >= 0):
        fail("insurance_fund", "must be a finite amount >= 0 (USD)", insurance_fund)
    if not (0.0 <= liquidation_fee < 1.0):
        fail("liquidation_fee", "must be in [0, 1)", liquidation_fee)
    if int(max_rounds) != max_rounds or max_rounds < 1:
        fail("max_rounds", "must be an integer >= 1", max_rounds)
    if not (math.isfinite(k) and k >= 0):
        fail("k", "must be a finite number >= 0", k)


def impact_returns(flow: np.ndarray, impact: str, depth, adv, daily_vol, k: float) -> np.ndarray:
    """Price return of each underlying caused by a forced flow (signed USD, + = selling), SPEC §6:
    linear ``-0.01 * flow / depth_usd``; square-root ``-sign(flow) * k * daily_vol * sqrt(|flow| / adv_usd)``;
    floored at -0.99. An underlying without the liquidity figures its model needs (null) does not move."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if impact == "linear":
            r = -0.01 * flow / depth
        elif impact == "sqrt":
            r = -np.sign(flow) * k * daily_vol * np.sqrt(np.abs(flow) / adv)
        else:
            r = np.zeros_like(flow)
    r = np.where(np.isnan(r), 0.0, r)
    return np.maximum(r, -0.99)


def cascade(market: Market, book: Book, shock, impact: str = "sqrt", insurance_fund: float = 0.0,
            liquidation_fee: float = LIQUIDATION_FEE, max_rounds: int = 50, k: float = SQRT_IMPACT_K, *,
            rate: float = 0.0, option_margin=OPTION_MARGIN) -> CascadeResult:
    """Liquidation cascade after a price shock (SPEC §6).

    The shock moves each named underlying (index, marks, options re-valued, assets following it) by
    ``1 + shock[u]``. Then, each round: every live bucket that is liquidatable at the current prices
    (an account's cross bucket: MM > 0 and equity <= MM; an isolated position on its own) is closed out at
    those prices. The fee ``liquidation_fee * notional`` is paid while equity lasts and goes to the insurance
    fund; negative equity is bad debt, drawn from the fund, and what the fund cannot cover is shortfall
    (socialised). The closed positions' signed USD notional per underlying (options by delta) is forced
    flow, which moves the price by the impact model; the next round revalues at the new prices. It stops
    when a round liquidates nobody or after ``max_rounds`` rounds. Collateral is not sold.

    Parameters
    ----------
    market, book : Market, Book
    shock : mapping
        ``{underlying: relative move}``, e.g. ``{"BTC": -0.2}``; moves > -1.
    impact : {"sqrt", "linear", "none"}
        ``"linear"``: r = -0.01 * flow / depth_usd; ``"sqrt"``: r = -sign(flow) * k * daily_vol *
        sqrt(|flow| / adv_usd); both floored at -0.99; ``"none"``: prices move only by the shock.
    insurance_fund : float
        USD available for bad debt before the cascade.
    liquidation_fee : float
        Fraction of the notional closed charged to the liquidated bucket (while its equity lasts).
    max_rounds : int
    k : float
        Square-root impact coefficient.
    rate, option_margin
        As in ``account_risk``.

    Returns
    -------
    CascadeResult
        ``rounds``, ``accounts``, ``path`` tables and why it ``stopped``. Deterministic: per-bucket figures
        never depend on the thread count, and round totals are summed item by item in account order
        (``run_rounds``), so they do not depend on how the book is partitioned either (``distributed``).

    Examples
    --------
    >>> import fastrisk as fr
    >>> market, book = fr.generate.exchange(500, seed=1)
    >>> result = fr.cascade(market, book, {"BTC": -0.2})
    >>> int(result.rounds.column("round")[0].as_py())
    0
    """
    mult0, insurance_fund, liquidation_fee, k = cascade_parameters(market, shock, impact, insurance_fund,
                                                                   liquidation_fee, max_rounds, k, rate, option_margin)
    part = CascadeBook(market, book, mult0, liquidation_fee, int(max_rounds), rate=rate, option_margin=option_margin)
    return run_rounds(market, lambda method, *args: [getattr(part, method)(*args)], mult0, impact, insurance_fund,
                      int(max_rounds), k)


def cascade_parameters(market: Market, shock, impact, insurance_fund, liquidation_fee, max_rounds, k, rate,
                       option_margin):
    """``cascade``'s arguments checked (InputError): ``(shock multipliers [u], insurance_fund, liquidation_fee,
    k)`` as floats."""
    mult0 = shock_multipliers(market, shock)
    insurance_fund, liquidation_fee, k = float(insurance_fund), float(liquidation_fee), float(k)
    _check_parameters(impact, insurance_fund, liquidation_fee, max_rounds, k)
    check_parameters("cascade", rate=rate, option_margin=option_margin)
    return mult0, insurance_fund, liquidation_fee, k


def run_rounds(market: Market, call, mult0: np.ndarray, impact: str, insurance_fund: float, max_rounds: int,
               k: float) -> CascadeResult:
    """The cascade's rounds over the books ``call`` reaches (``call(method, *args)`` calls a ``CascadeBook``
    method on each, in order, and returns their results): the venue's, or its partitions' (``distributed``).
    Each round every book closes out what the prices liquidate (``CascadeBook.round``); this sums their forced
    flow, fees and bad debt item by item in account order (``round_totals``), so that the totals, and with them
    the price path, do not depend on how the accounts are partitioned; moves the prices by the impact model and
    draws bad debt from the fund."""
    und = market.underlyings
    depth, adv, vol = (und.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                       for c in ("depth_usd", "adv_usd", "daily_vol"))
    n_u = len(mult0)
    mult = mult0.copy()
    fund = insurance_fund
    rounds = [dict(round=0, accounts_liquidated=0, isolated_liquidated=0, notional_closed=0.0, fees=0.0,
                   bad_debt=0.0, insurance_fund_left=fund, shortfall=0.0, mult=mult.copy())]
    path = [(0, u, mult[u], 0.0, mult0[u] - 1.0) for u in range(n_u)]
    stopped = "max_rounds"
    for rnd in range(1, max_rounds + 1):
        closed = merge_rounds(call("round", rnd, mult))
        if len(closed.accounts) == 0 and len(closed.iso_accounts) == 0:
            stopped = "no liquidations"
            break
        fees, bad, notional, flow = round_totals(closed, n_u)
        fund += fees
        drawn = min(bad, fund)
        fund -= drawn
        r = impact_returns(flow, impact, depth, adv, vol, k)
        mult = mult * (1.0 + r)
        rounds.append(dict(round=rnd, accounts_liquidated=len(closed.accounts),
                           isolated_liquidated=len(closed.iso_accounts), notional_closed=notional, fees=fees,
                           bad_debt=bad, insurance_fund_left=fund, shortfall=bad - drawn, mult=mult.copy()))
        path += [(rnd, u, mult[u], flow[u], r[u]) for u in range(n_u)]
    accounts = call("accounts", mult)
    return CascadeResult(_rounds_table(market, rounds), accounts[0] if len(accounts) == 1 else
                         merge_by_account(accounts), _path_table(market, path), stopped)


@dataclass(frozen=True)
class Closed:
    """What a book closed out in one round (``CascadeBook.round``), in account order: cross buckets, then isolated
    positions (their account and rank among its positions); each one's fee, bad debt and notional; and the
    positions closed, as flow items (``kernels.cascade.flow_contributions``): each cross bucket's ``n_items``
    items, then one per isolated position."""

    accounts: np.ndarray      # [d] account_id of each cross bucket closed
    n_items: np.ndarray       # [d] its flow items (its positions)
    iso_accounts: np.ndarray  # [e] account_id of each isolated position closed
    iso_rank: np.ndarray      # [e] the position's rank in its account
    charged: np.ndarray       # [3, d + e] fee, bad debt and notional closed of each bucket, cross ones first
    underlying: np.ndarray    # [f] the flow items: underlying (-1: none) ...
    usd: np.ndarray           # [f] ... and signed USD notional


def merge_rounds(parts: list[Closed]) -> Closed:
    """The books' closed buckets as one venue's, in account order (each account lies in one book)."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts], axis=-1)
    accounts, n_items, iso_accounts, iso_rank = cat("accounts"), cat("n_items"), cat("iso_accounts"), cat("iso_rank")
    cross = np.argsort(accounts, kind="stable")
    iso = np.lexsort((iso_rank, iso_accounts))
    d = [len(p.accounts) for p in parts]
    charged = np.concatenate([np.concatenate([p.charged[:, :n] for p, n in zip(parts, d)], axis=1)[:, cross],
                              np.concatenate([p.charged[:, n:] for p, n in zip(parts, d)], axis=1)[:, iso]], axis=1)
    f = [int(p.n_items.sum()) for p in parts]
    items = np.argsort(np.repeat(accounts, n_items), kind="stable")  # an account's items stay together, in order
    flows = []
    for name in ("underlying", "usd"):
        cross_items = np.concatenate([getattr(p, name)[:m] for p, m in zip(parts, f)])[items]
        iso_items = np.concatenate([getattr(p, name)[m:] for p, m in zip(parts, f)])[iso]
        flows.append(np.concatenate([cross_items, iso_items]))
    return Closed(accounts[cross], n_items[cross], iso_accounts[iso], iso_rank[iso], charged, *flows)


def round_totals(closed: Closed, n_u: int):
    """``(fees, bad_debt, notional, flow [u])`` of a round: each summed item by item in the order of ``closed``."""
    from .kernels.cascade import add_flows

    # cumsum adds in order, as a loop would (np.sum adds pairwise).
    fees, bad, notional = (float(np.cumsum(closed.charged[j])[-1]) if closed.charged.shape[1] else 0.0
                           for j in range(3))
    flow = np.zeros(n_u)
    add_flows(flow, closed.underlying, closed.usd)
    return fees, bad, notional, flow


class CascadeBook:
    """One book's side of a cascade (the venue's, or a partition's: ``distributed``): its screen, its live
    buckets and per-account results. ``round(rnd, mult)`` closes out what round ``rnd``'s prices liquidate;
    ``accounts(mult)`` is its accounts table at the final prices."""

    def __init__(self, market: Market, book: Book, mult0: np.ndarray, liquidation_fee: float, max_rounds: int, *,
                 rate: float = 0.0, option_margin=OPTION_MARGIN):
        from .liquidation import kernel_book, screen_buckets

        self.market, self.mult0, self.fee, self.rate = market, mult0, liquidation_fee, rate
        self.bound = bound = book.bind(market)
        n = len(bound.book.account_id)
        self.option_margin = tuple(float(x) for x in option_margin)
        self.inst, self.tiers = kernel_market(market)
        self.kbook = kernel_book(bound)
        M = market.arrays
        self.weights = (M.asset_cw, M.asset_bw)
        # The screen's excess and fall rates from the shocked prices (kernels/cascade.py).
        self.shocked = value_instruments(market, mult0, rate=rate)
        self.bk = bk = screen_buckets(market, bound, self.shocked, rate=rate, option_margin=self.option_margin,
                                      window=SCREEN_WINDOW)
        self.ref_account = full(n, 0, np.int32)
        self.hist = np.ones((max_rounds, len(mult0)))  # the moves since the shock at which round k + 1 looked
        self.iso_ref = np.zeros(len(bk.iso_position), np.int32)  # isolated positions j = 0, 1, ...
        self.iso_live = np.ones(len(bk.iso_position), np.uint8)
        self.flag_account = empty(n, np.uint8)  # every flag is written
        self.flag_iso = np.zeros(len(bk.iso_position), np.uint8)
        self.reach = np.full(max_rounds, np.inf)
        self.in_window = True
        self.horizon = -1.0  # the watch lists are built in round 1
        self.watched = self.watched_dead = 0
        # Per account: Arrow's pool hands a second call memory already mapped (tables.empty).
        self.account_live = full(n, 1, np.uint8)
        self.round_of = full(n, -1, np.int32)
        self.eq_at = full(n, np.nan)
        self.fee_paid = full(n, 0.0)
        self.bad_debt = full(n, 0.0)
        self.left = full(n, 0.0)           # cross equity left after a liquidation (USD)
        self.iso_count = full(n, 0, np.int32)
        self.iso_dead = []                 # (positions, their accounts, what they left) per round, for equity after

    def round(self, rnd: int, mult: np.ndarray) -> Closed:
        """Close out every live bucket liquidatable at the prices ``mult`` (round ``rnd``; its totals are the
        caller's: ``run_rounds``)."""
        from .kernels._jit import n_chunks
        from .kernels.cascade import (check_accounts, check_isolated, close_out, flow_contributions,
                                      screen_accounts, screen_isolated, watch_accounts, watch_isolated)

        bk, kbook, inst, tiers, option_margin = self.bk, self.kbook, self.inst, self.tiers, self.option_margin
        hist, reach = self.hist, self.reach
        val = self.shocked if rnd == 1 else value_instruments(self.market, mult, rate=self.rate)
        vt = (val.price, val.forward, val.settle_px, val.asset_px)
        hist[rnd - 1] = mult / self.mult0
        x = hist[rnd - 1]
        reach[:rnd] = np.abs(x - hist[:rnd]).max(axis=1)
        # Once outside the window, references can be too: from then on every round checks everyone.
        self.in_window = self.in_window and bool(np.all((x >= SCREEN_WINDOW[0]) & (x <= SCREEN_WINDOW[1])))
        if self.in_window:
            top = float(reach[:rnd].max())
            # The buckets the screen may flag until the moves pass the horizon: rebuilt when they do (with a horizon
            # twice as far); when most are gone (a crash's first round liquidates most of them), the rest kept.
            if 2 * self.watched_dead > self.watched and top <= self.horizon:
                keep, iso_keep = np.flatnonzero(self.w_live.view(bool)), np.flatnonzero(self.iw_live.view(bool))
                self.watch, self.w_g, self.w_fall, self.w_ref, self.w_live, self.w_always = (
                    np.take(c, keep) for c in (self.watch, self.w_g, self.w_fall, self.w_ref, self.w_live,
                                               self.w_always))
                (self.iso_watch, self.iw_u, self.iw_down, self.iw_up, self.iw_g, self.iw_ref, self.iw_live,
                 self.iw_always) = (np.take(c, iso_keep) for c in (
                    self.iso_watch, self.iw_u, self.iw_down, self.iw_up, self.iw_g, self.iw_ref, self.iw_live,
                    self.iw_always))
                self.watched, self.watched_dead = len(self.watch) + len(self.iso_watch), 0
            if top > self.horizon:
                self.horizon = max(2.0 * top, WATCH_HORIZON)
                watch_accounts(self.horizon, bk.n_cross, bk.fall_total, bk.g_account, self.account_live, bk.always,
                               self.flag_account)
                watch_isolated(self.horizon, bk.iso_down, bk.iso_up, bk.iso_always, bk.iso_excess, self.iso_live,
                               self.flag_iso)
                # 0/1 flags read as bools, gathers by np.take: each half the time of the usual spelling.
                self.watch = np.flatnonzero(self.flag_account.view(bool))
                self.iso_watch = np.flatnonzero(self.flag_iso.view(bool))
                # Their figures, gathered (kept in step below): a round reads them contiguously.
                self.w_g, self.w_fall, self.w_ref, self.w_live, self.w_always = (
                    np.take(c, self.watch) for c in (bk.g_account, bk.fall_total, self.ref_account,
                                                     self.account_live, bk.always))
                self.iw_u, self.iw_down, self.iw_up, self.iw_g, self.iw_ref, self.iw_live, self.iw_always = (
                    np.take(c, self.iso_watch) for c in (bk.iso_underlying, bk.iso_down, bk.iso_up, bk.iso_excess,
                                                         self.iso_ref, self.iso_live, bk.iso_always))
                self.found, self.iso_found = np.empty_like(self.watch), np.empty_like(self.iso_watch)
                self.watched, self.watched_dead = len(self.watch) + len(self.iso_watch), 0
            slots = self.found[:screen_accounts(reach, self.w_g, self.w_fall, self.w_ref, self.w_live, self.w_always,
                                                self.found)]
            iso_slots = self.iso_found[:screen_isolated(x, hist, self.iw_u, self.iw_down, self.iw_up, self.iw_g,
                                                        self.iw_ref, self.iw_live, self.iw_always, self.iso_found)]
            cand, iso_cand_k = self.watch[slots], self.iso_watch[iso_slots]
        else:  # beyond the window the fall rates hold over: every live bucket is checked
            cand, iso_cand_k = np.flatnonzero(self.account_live), np.flatnonzero(self.iso_live)
        iso_cand = bk.iso_position[iso_cand_k]
        if rnd == 1:  # at the shocked prices: the screen's pass computed them
            out = np.take(bk.exact, cand, axis=1)  # half the time of bk.exact[:, cand]
        else:
            out = np.empty((3, len(cand)))
            check_accounts(cand, out, kbook, inst, tiers, vt, self.weights, option_margin,
                           n_chunks(len(cand), 1 << 8))
        out_iso = np.empty((3, len(iso_cand)))
        check_isolated(iso_cand, out_iso, kbook, inst, tiers, vt, option_margin)
        liq = (out[1] > 0) & (out[0] <= out[1])
        liq_iso = (out_iso[1] > 0) & (out_iso[0] <= out_iso[1])
        # Survivors are their own new reference: g known exactly at this round's moves.
        alive, alive_k = cand[~liq], iso_cand_k[~liq_iso]
        bk.g_account[alive] = g_alive = np.where(out[1, ~liq] > 0, out[0, ~liq] - out[1, ~liq], np.inf)
        self.ref_account[alive] = rnd - 1
        bk.iso_excess[alive_k] = g_alive_k = np.where(out_iso[1, ~liq_iso] > 0,
                                                      out_iso[0, ~liq_iso] - out_iso[1, ~liq_iso], np.inf)
        self.iso_ref[alive_k] = rnd - 1
        dead, dead_pos = cand[liq], iso_cand[liq_iso]
        if self.in_window:  # the watched copies
            self.w_g[slots[~liq]], self.w_ref[slots[~liq]], self.w_live[slots[liq]] = g_alive, rnd - 1, 0
            self.iw_g[iso_slots[~liq_iso]], self.iw_ref[iso_slots[~liq_iso]] = g_alive_k, rnd - 1
            self.iw_live[iso_slots[liq_iso]] = 0
            self.watched_dead += len(dead) + len(dead_pos)
        # Close-out: the fee while equity lasts, negative equity as bad debt (SPEC §6).
        owners = bk.iso_account[iso_cand_k[liq_iso]]
        rest = np.empty(len(dead_pos))
        charged = np.empty((3, len(dead) + len(dead_pos)))
        close_out(self.fee, rnd, dead, out, liq, owners, out_iso, liq_iso, self.round_of, self.eq_at, self.fee_paid,
                  self.bad_debt, self.left, self.iso_count, rest, charged)
        self.iso_dead.append((dead_pos, owners, rest))
        self.account_live[dead] = 0
        self.iso_live[iso_cand_k[liq_iso]] = 0
        pos_start = self.bound.book.pos_start
        n_items = (pos_start[dead + 1] - pos_start[dead]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_items)])
        underlying, usd = np.empty(offsets[-1] + len(dead_pos), np.int32), np.empty(offsets[-1] + len(dead_pos))
        flow_contributions(dead, offsets, dead_pos, underlying, usd, kbook, inst, vt, val.delta,
                           self.market.arrays.underlying)
        account_id = self.bound.book.account_id
        return Closed(account_id[dead], n_items, account_id[owners], dead_pos - pos_start[owners], charged,
                      underlying, usd)

    def accounts(self, mult: np.ndarray) -> pa.Table:
        """The accounts table (``CascadeResult.accounts``) at the final prices ``mult``: survivors valued there;
        liquidated buckets keep what was left at close-out."""
        from .kernels.cascade import check_isolated
        from .kernels.margin import account_equity

        bk, n = self.bk, len(self.bound.book.account_id)
        final = value_instruments(self.market, mult, rate=self.rate)
        vf = (final.price, final.forward, final.settle_px, final.asset_px)
        iso_left = full(n, 0.0)  # what closed isolated positions left, less what they are worth at the final prices
        for dead_pos, owners, rest in self.iso_dead:
            out_iso = np.empty((3, len(dead_pos)))
            check_isolated(dead_pos, out_iso, self.kbook, self.inst, self.tiers, vf, self.option_margin)
            np.add.at(iso_left, owners, rest - out_iso[0])
        after = empty((2, n))  # equity after, loss
        account_equity(after, self.account_live, self.left, iso_left, bk.equity_today, self.kbook, self.inst, vf,
                       self.weights)
        return _accounts_table(self.bound.book.account_id, self.round_of, bk.equity_today, self.eq_at, self.fee_paid,
                               self.bad_debt, self.iso_count, after[0], after[1])


def _rounds_table(market: Market, rounds) -> pa.Table:
    index = market.arrays.index_price
    names = market.underlying_names.to_pylist()
    columns = {"round": pa.array([r["round"] for r in rounds], pa.int32())}
    for c in ("accounts_liquidated", "isolated_liquidated"):
        columns[c] = pa.array([r[c] for r in rounds], pa.int64())
    for c in ("notional_closed", "fees", "bad_debt", "insurance_fund_left", "shortfall"):
        columns[c] = pa.array([r[c] for r in rounds], pa.float64())
    for u, name in enumerate(names):
        columns[f"price_{name}"] = pa.array([index[u] * r["mult"][u] for r in rounds], pa.float64())
    return pa.table(columns)


def _accounts_table(account_id, round_of, equity_before, eq_at, fee_paid, bad_debt, iso_count, equity_after, loss):
    liquidated = round_of >= 0
    bits = bitmap(liquidated)
    return pa.table({
        "account_id": account_id,
        "round_liquidated": with_validity(pa.int32(), round_of, bits, liquidated),
        "equity_before": equity_before,
        "equity_at_liquidation": with_validity(pa.float64(), eq_at, bits, liquidated),
        "fee_paid": fee_paid,
        "bad_debt": bad_debt,
        "isolated_liquidated": iso_count,
        "equity_after": equity_after,
        "loss": loss,
    })


def _path_table(market: Market, path) -> pa.Table:
    index = market.arrays.index_price
    return pa.table({
        "round": pa.array([p[0] for p in path], pa.int32()),
        "underlying": pa.DictionaryArray.from_arrays(pa.array([p[1] for p in path], pa.int32()),
                                                     market.underlying_names),
        "price": pa.array([index[p[1]] * p[2] for p in path], pa.float64()),
        "forced_flow_usd": pa.array([p[3] for p in path], pa.float64()),
        "impact": pa.array([p[4] for p in path], pa.float64()),
    })


def format_rounds(result: CascadeResult, max_underlyings: int = 4) -> str:
    """The round-by-round path as text, for the CLI: per round the buckets liquidated, notional closed, bad
    debt, insurance fund and shortfall, and the prices of the underlyings that moved most (in % from before
    the shock, the first row being the shock)."""
    rounds = result.rounds.to_pydict()
    price_cols = [c for c in result.rounds.column_names if c.startswith("price_")]
    n = len(rounds["round"])
    if n == 0:
        return "no rounds"
    base = {}
    for row in result.path.filter(pc.equal(result.path["round"], 0)).to_pylist():
        base[f"price_{row['underlying']}"] = row["price"] / (1.0 + row["impact"])
    moved = sorted(price_cols, key=lambda c: -abs(rounds[c][-1] / base[c] - 1.0))[:max_underlyings]
    moved = [c for c in moved if rounds[c][-1] != base[c]] or price_cols[:1]
    head = ["round", "accounts", "isolated", "notional closed", "bad debt", "fund left", "shortfall"]
    head += [c[len("price_"):] for c in moved]
    lines = []
    for j in range(n):
        cells = [str(rounds["round"][j]), f"{rounds['accounts_liquidated'][j]:,}",
                 f"{rounds['isolated_liquidated'][j]:,}", _usd(rounds["notional_closed"][j]),
                 _usd(rounds["bad_debt"][j]), _usd(rounds["insurance_fund_left"][j]), _usd(rounds["shortfall"][j])]
        cells += [f"{rounds[c][j]:,.6g} ({100 * (rounds[c][j] / base[c] - 1):+.2f}%)" for c in moved]
        lines.append(cells)
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    total = sum(rounds["accounts_liquidated"])
    text = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines]
    text.append(f"{n - 1} liquidation round(s), {total:,} accounts liquidated; stopped: {result.stopped}; "
                f"bad debt {_usd(sum(rounds['bad_debt']))}, shortfall {_usd(sum(rounds['shortfall']))}")
    return "\n".join(text)


def _usd(x: float) -> str:
    a = abs(x)
    if a >= 1e9:
        return f"${x / 1e9:,.2f}B"
    if a >= 1e6:
        return f"${x / 1e6:,.2f}M"
    if a >= 1e3:
        return f"${x / 1e3:,.1f}k"
    return f"${x:,.0f}"
