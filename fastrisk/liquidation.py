"""Liquidation prices (SPEC §4): at what price of each underlying is each margin bucket liquidated.

A *bucket* is what is liquidated as a whole: an account's cross bucket (all its cross positions and its
collateral), seen once from every underlying it has exposure to, or one isolated position. The formulas,
conventions and the root finding are in ``docs/liquidation.md`` and ``kernels/liquidation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import codes as C
from .book import Book, BoundBook
from .market import Market
from .parameters import check_parameters
from .risk import OPTION_MARGIN, Valuation, kernel_market, value_instruments
from .tables import bitmap, empty, with_validity

__all__ = ["liquidation_prices", "LIQUIDATION_SCHEMA"]

LIQUIDATION_SCHEMA = pa.schema([
    ("account_id", pa.int64()),
    ("underlying", pa.dictionary(pa.int32(), pa.string())),
    ("isolated", pa.bool_()),
    ("instrument_id", pa.int32()),
    ("index_price", pa.float64()),
    ("liq_price_down", pa.float64()),
    ("liq_price_up", pa.float64()),
    ("distance_down", pa.float64()),
    ("distance_up", pa.float64()),
])


@dataclass(frozen=True)
class Buckets:
    """Every bucket's figures for the cascade's screen (``kernels.cascade.screen_figures``; index letters: a =
    accounts, j = isolated positions, in account then position order)."""

    fall_total: np.ndarray  # [a] the sum over the account's cross rows of the fastest fall down or up
    g_account: np.ndarray   # [a] the excess of the account's cross bucket (inf without cross rows)
    n_cross: np.ndarray     # [a] int32 the underlyings its cross bucket moves with (its liquidation table rows)
    always: np.ndarray      # [a] uint8: cross rows and an equity that does not separate by underlying
                            # (kernels.cascade.screen_figures): checked whenever alive
    iso_underlying: np.ndarray  # [j] int32 the isolated position's underlying
    iso_position: np.ndarray    # [j] int64 position index
    iso_down: np.ndarray        # [j] the fastest its excess can fall per unit of m moved down
    iso_up: np.ndarray          # [j] ... and up (inf where unbounded)
    iso_excess: np.ndarray      # [j] its excess equity - MM
    iso_always: np.ndarray      # [j] uint8: settled in a coin following another underlying (does not separate)
    iso_account: np.ndarray     # [j] int64 its account (index)
    equity_today: np.ndarray    # [a] cross + isolated equity at today's prices (the cascade's equity_before)
    exact: np.ndarray           # [3, a] cross equity, MM and gross notional at the valuation screened, as
                                # kernels.cascade.check_accounts computes them


def kernel_moving(market: Market, rate: float = 0.0):
    """What the kernels need to move one underlying by itself (``margin.moved_instrument``'s ``moving``)."""
    from .kernels.valuation import model_base_values

    M = market.arrays
    model_base = model_base_values(M.kind, M.underlying, M.index_price, M.option_type, M.strike, M.expiry_years,
                                   M.implied_vol, float(rate))
    # The model vol is floored as in valuation.instrument_prices (SPEC §5: sigma' = max(sigma + shock, 1e-4)).
    vol = np.maximum(M.implied_vol, 1e-4)
    settle_underlying = np.ascontiguousarray(M.asset_underlying[M.settle], dtype=np.int32)
    return (M.underlying, settle_underlying, M.asset_underlying, M.mark, model_base, M.expiry_years, vol,
            float(rate))


def kernel_book(bound: BoundBook):
    """The bound book as the tuple the liquidation and cascade kernels take."""
    B = bound.book
    return (B.pos_start, bound.pos_instrument, B.quantity, B.entry_price, B.isolated, B.isolated_margin,
            B.bal_start, bound.bal_asset, B.bal_amount)


def tier_terms(market: Market):
    """Per instrument ``(mm_convex, mmf_max, amount_min, amount_max)``: uint8, its maintenance fraction never
    falls from one bracket to the next (then its MM is convex in notional; kernels.liquidation uses it to know
    a bucket's excess is concave), and the largest mmf and the range of maintenance amounts of its schedule
    (the kernel bounds a bucket's slope with them). Options: 1, 0, 0, 0."""
    M = market.arrays
    rising = np.append(np.diff(M.tier_mmf) >= 0.0, True)
    # Bracket t is followed by t+1 within the instrument's schedule for t in tier_first..tier_last-1.
    falls_at = np.concatenate([[0], np.cumsum(~rising)])
    falls = falls_at[M.tier_last] - falls_at[M.tier_first]
    is_option = M.kind == C.OPTION
    convex = np.ascontiguousarray((falls == 0) | is_option, dtype=np.uint8)
    # A schedule is a contiguous bracket range [tier_first, tier_last]: reduce each range once.
    ranges, of = np.unique(np.stack([M.tier_first, M.tier_last], 1), axis=0, return_inverse=True)
    per = np.array([(M.tier_mmf[f:l + 1].max(), M.tier_amount[f:l + 1].min(), M.tier_amount[f:l + 1].max())
                    for f, l in ranges], np.float64).reshape(-1, 3)
    terms = per[of.ravel()]
    terms[is_option] = 0.0
    return (convex,) + tuple(np.ascontiguousarray(terms[:, j]) for j in range(3))


def screen_buckets(market: Market, bound: BoundBook, val: Valuation, *, rate: float = 0.0,
                   option_margin=OPTION_MARGIN, window=None) -> Buckets:
    """The cascade's screen: every bucket's excess g at the valuation ``val`` and how fast g can fall per unit
    of m moved down and up, one underlying at a time, for m in ``window`` (default: the whole search range;
    see ``kernels.cascade.screen_figures``)."""
    from .kernels._jit import n_chunks
    from .kernels.cascade import chunk_isolated, screen_figures
    from .kernels.liquidation import M_MAX, M_MIN

    w_lo, w_hi = (M_MIN, M_MAX) if window is None else window
    M, B = market.arrays, bound.book
    n, n_u = len(B.account_id), len(M.index_price)
    chunks = n_chunks(n, 1 << 12)
    iso_chunk = np.zeros(chunks + 1, np.int64)
    chunk_isolated(iso_chunk[1:], B.pos_start, B.isolated, chunks)
    np.cumsum(iso_chunk, out=iso_chunk)
    j = int(iso_chunk[-1])
    accounts = (empty(n), empty(n), empty(n, np.int32), empty(n, np.uint8), empty(n), empty((3, n)))
    isolated = (empty(j, np.int32), empty(j, np.int64), empty(j), empty(j), empty(j), empty(j, np.uint8),
                empty(j, np.int64))
    scratch = (np.zeros((chunks, n_u)), np.zeros((chunks, n_u)), np.zeros((chunks, n_u), np.int64),
               np.zeros((chunks, n_u), np.uint8))
    inst, tiers = kernel_market(market)
    today = value_instruments(market, rate=rate)
    screen_figures(accounts, isolated, iso_chunk, scratch, kernel_book(bound), inst,
                   tier_terms(market) + (float(w_lo), float(w_hi)), tiers,
                   (val.price, val.forward, val.settle_px, val.asset_px),
                   (today.price, today.forward, today.settle_px, today.asset_px), (M.asset_cw, M.asset_bw),
                   tuple(float(x) for x in option_margin), kernel_moving(market, rate), chunks)
    g, fall, n_cross, always, equity_today, exact = accounts
    return Buckets(fall, g, n_cross, always, *isolated, equity_today, exact)


def _liquidation_rows(market: Market, bound: BoundBook, val: Valuation, rate: float, option_margin):
    """The SPEC §4 columns as ``kernels.liquidation.liquidation_factors`` writes them (its ``out``), run on every
    account moving one underlying at a time from the valuation ``val``, allocated here."""
    from .kernels._jit import n_chunks
    from .kernels.liquidation import (FIGURES, GRID_K, M_MAX, M_MIN, count_rows, liquidation_factors,
                                      row_offsets)

    M, B = market.arrays, bound.book
    book = kernel_book(bound)
    moving = kernel_moving(market, rate)
    vt = (val.price, val.forward, val.settle_px, val.asset_px)
    # The options' prices and their slopes in m at the walks' grid points, kept as they are first computed
    # (kernels.liquidation).
    is_option = M.kind == C.OPTION
    grid_row = np.full(len(M.kind), -1, np.int64)
    grid_row[is_option] = np.arange(int(is_option.sum()))
    grid_prices, grid_slopes = (np.full((int(is_option.sum()), 2 * GRID_K + 1), np.nan) for _ in range(2))
    n, n_pos, n_u = len(B.account_id), len(B.quantity), len(M.index_price)
    # Small account chunks: heavy-tailed accounts balance over the threads; each chunk has its own scratch.
    chunks = n_chunks(n, 1 << 12)
    n_rows, n_cross = empty(n, np.int64), empty(n, np.int32)
    exposure = empty((n, (n_u + 63) // 64), np.uint64)
    count_rows(n_rows, n_cross, exposure, book, moving)
    row_start = empty(n + 1, np.int64)
    most_positions = int(row_offsets(n_rows, B.pos_start, row_start))
    r = int(row_start[-1])
    out = (empty(r, np.int32), empty(r, np.int64), empty(r, np.int32), empty(r), empty((2, r)), empty((2, r)),
           empty((3, r), np.uint8))
    scratch = (np.empty((chunks, n_u), np.int64), np.empty((chunks, n_u), np.int64),
               np.empty((chunks, n_u, FIGURES)), np.empty((chunks, most_positions, FIGURES)),
               np.empty((chunks, most_positions, 2), np.int64))
    inst, tiers = kernel_market(market)
    liquidation_factors(row_start, n_cross, exposure, empty(n_pos, np.int64), scratch, out,
                        (B.account_id, B.instrument_id, M.index_price), book, inst,
                        tier_terms(market) + (M_MIN, M_MAX), tiers, vt, (M.asset_cw, M.asset_bw),
                        tuple(float(x) for x in option_margin), moving + (grid_row, grid_prices, grid_slopes), chunks)
    return out


def liquidation_prices(market: Market, book: Book, *, rate: float = 0.0,
                       option_margin=OPTION_MARGIN) -> pa.Table:
    """Liquidation prices of every margin bucket (SPEC §4).

    For every (account, underlying) the account's cross bucket moves with (a cross position with a quantity
    on the underlying or settled in an asset that follows it, or a balance in such an asset; accounts
    without a cross position with a quantity have no cross rows), and for every isolated position: the
    underlying's index price at which the bucket becomes liquidatable when that underlying alone moves by
    one factor m (its index, every mark on it, every option re-valued at the moved forward, every asset
    following it), everything else unchanged. Tiers re-bracket at the moved notionals.

    Parameters
    ----------
    market, book : Market, Book
    rate : float
        Continuously compounded rate for option discounting (as in ``account_risk``).
    option_margin : (float, float, float)
        Short-option IM fraction, IM floor, MM fraction (as in ``account_risk``).

    Returns
    -------
    pa.Table
        ``LIQUIDATION_SCHEMA``, sorted by account_id; within an account the cross rows first (by underlying,
        in the order of the underlyings table), then its isolated positions (by instrument_id).
        ``underlying``: the underlying moved (an isolated position's own). ``isolated`` / ``instrument_id``:
        the isolated position (null instrument_id for a cross row). ``index_price``: today's.
        ``liq_price_down``: the largest price below today's at which the bucket is liquidatable,
        ``liq_price_up``: the smallest above it; null where there is none with m in [1e-4, 1e4] (or the
        bucket carries no maintenance margin: long options only). ``distance_down = 1 - down/index``,
        ``distance_up = up/index - 1`` (fractions of today's price, >= 0). A bucket liquidatable now has
        both prices equal to today's index and both distances 0.

    Examples
    --------
    >>> import fastrisk as fr
    >>> market, book = fr.generate.exchange(200, seed=1)
    >>> table = fr.liquidation_prices(market, book)
    >>> table.column_names[:4]
    ['account_id', 'underlying', 'isolated', 'instrument_id']
    """
    check_parameters("liquidation_prices", rate=rate, option_margin=option_margin)
    bound = book.bind(market)
    underlying, account_id, instrument_id, index, price, distance, valid = _liquidation_rows(
        market, bound, value_instruments(market, rate=rate), rate, option_margin)
    n = len(underlying)
    down_ok, up_ok, isolated = (bitmap(v) for v in valid)
    return pa.table({
        "account_id": account_id,
        # Codes the kernel wrote from the market's own: not re-checked (a pass over every row).
        "underlying": pa.DictionaryArray.from_arrays(pa.array(underlying, pa.int32()), market.underlying_names,
                                                     safe=False),
        "isolated": pa.Array.from_buffers(pa.bool_(), n, [None, isolated]),
        "instrument_id": with_validity(pa.int32(), instrument_id, isolated, valid[2]),
        "index_price": index,
        "liq_price_down": with_validity(pa.float64(), price[0], down_ok, valid[0]),
        "liq_price_up": with_validity(pa.float64(), price[1], up_ok, valid[1]),
        "distance_down": with_validity(pa.float64(), distance[0], down_ok, valid[0]),
        "distance_up": with_validity(pa.float64(), distance[1], up_ok, valid[1]),
    }, schema=LIQUIDATION_SCHEMA)

