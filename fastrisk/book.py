"""The account side of a venue: positions and balances (SPEC §1), validated and laid out by account.

Positions are kept sorted by ``(account_id, instrument_id, isolated)`` and balances by ``account_id``, so
that every account owns one contiguous segment of each: kernels run in parallel over accounts, and sum
sequentially inside one, which makes results independent of the thread count.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import codes as C
from .errors import InputError
from .tables import (BALANCES, POSITIONS, SMALLEST, ReadOnlyArrays, conform, empty, examples, find_table_file,
                     numeric_values, read, readonly)


@dataclass(frozen=True)
class BookArrays(ReadOnlyArrays):
    """Positions and balances by account. Index letters: a = accounts, p = positions, b = balances;
    account ``a`` owns positions ``pos_start[a]:pos_start[a+1]`` and balances ``bal_start[a]:bal_start[a+1]``."""

    account_id: np.ndarray        # [a] int64, sorted, unique
    pos_start: np.ndarray         # [a+1] int64
    instrument_id: np.ndarray     # [p] int32
    quantity: np.ndarray          # [p] contracts
    entry_price: np.ndarray       # [p] settle units
    isolated: np.ndarray          # [p] uint8: 1 = isolated
    isolated_margin: np.ndarray   # [p] settle units; arbitrary for cross positions (read only where isolated)
    pos_row: np.ndarray           # [p] int64 row in the input table; empty when rows are in input order
    bal_start: np.ndarray         # [a+1] int64
    bal_asset: np.ndarray         # [b] int32 code into ``bal_asset_names``
    bal_amount: np.ndarray        # [b] asset units
    bal_row: np.ndarray           # [b] int64 row in the input table; empty when rows are in input order
    bal_asset_names: pa.Array     # the distinct asset names the balances use
    least_entry: float            # the least entry price: below SMALLEST is allowed for options only
    bal_duplicates: int           # balances whose asset an earlier balance of the account has: an error


@dataclass(frozen=True)
class BoundBook(ReadOnlyArrays):
    """A book resolved against one market: instrument rows and asset codes in the market's numbering."""

    book: BookArrays
    pos_instrument: np.ndarray    # [p] int32 dense instrument index
    bal_asset: np.ndarray         # [b] int32 market asset code


class Book:
    """Validated positions and balances (SPEC §1).

    Parameters
    ----------
    positions, balances
        Any supported table source. Rows need not be sorted. ``balances`` may be omitted (no collateral).

    Raises
    ------
    InputError
        Naming the table, column, rule and example rows of the first violation found. Rules that need
        the market (instrument ids, asset names, futures' entry prices) are checked when the book is
        first used with a market.
    """

    def __init__(self, positions, balances=None):
        if balances is None:
            balances = pa.table({"account_id": pa.array([], pa.int64()), "asset": pa.array([], pa.string()),
                                 "amount": pa.array([], pa.float64())})
        self.positions = conform(positions, POSITIONS, check_bounds=False)  # fused into _layout's scan
        self.balances = conform(balances, BALANCES)
        self.arrays = self._layout()
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _layout(self) -> BookArrays:
        from .kernels import checks
        from .kernels._jit import n_chunks

        p, b = self.positions, self.balances
        acc, _ = numeric_values(p.column("account_id"))
        inst, _ = numeric_values(p.column("instrument_id"))
        qty, _ = numeric_values(p.column("quantity"))
        entry, _ = numeric_values(p.column("entry_price"))
        n = len(acc)
        iso_column = p.column("isolated_margin")
        if iso_column.null_count == n:  # no isolated positions (Arrow may hold no value buffer at all)
            iso_margin, isolated = np.zeros(n), np.zeros(n, np.uint8)
        else:
            # Null slots of iso_margin hold arbitrary values: kernels read it only where isolated.
            iso_margin, isolated = numeric_values(iso_column)
            if len(isolated) == 0:
                isolated = np.ones(n, np.uint8)

        # One read of every column: bounds of each, key order, and where accounts start.
        k = n_chunks(n)
        names = ("instrument_id", "quantity", "entry_price", "isolated_margin")
        bounds = np.array([POSITIONS[c].closed_bounds() for c in names])
        # Scratch for the rows beginning an account run and their accounts, recorded per row chunk.
        starts = empty(n, np.int64), empty(n, np.int64)
        outside, not_increasing, least_entry, chunk_starts = checks.position_scan(
            acc, inst, qty, entry, iso_margin, isolated, bounds, *starts, k)
        for j in np.flatnonzero(outside):
            col = POSITIONS[names[j]]
            mask = isolated if col.name == "isolated_margin" else np.empty(0, np.uint8)
            values = (inst, qty, entry, iso_margin)[j]
            count, rows = checks.violations(n, checks.outside, checks.outside_rows, values, mask, *bounds[j])
            raise InputError("positions", col.name, col.rule(), rows, count, examples(p, POSITIONS, col.name, rows))

        pos_row = np.empty(0, np.int64)  # empty = rows are in input order
        if not_increasing:
            pos_row = checks.stable_order(acc)
            acc, inst, isolated = (_take(x, pos_row) for x in (acc, inst, isolated))
            checks.sort_within_accounts(pos_row, acc, inst, isolated)
            qty, entry, iso_margin = (_take(x, pos_row) for x in (qty, entry, iso_margin))
            # Sorted: a key not above the previous one is a duplicate.
            not_increasing, chunk_starts = checks.run_starts(acc, inst, isolated, *starts, k)
        n_dup = 0
        if not_increasing:
            n_dup, dup_rows = checks.duplicate_key_rows(acc, inst, isolated, checks.MAX_EXAMPLES)
        if n_dup:
            dup_rows = _input_rows(pos_row, dup_rows)
            raise InputError("positions", "instrument_id", "at most one row per (account_id, instrument_id, "
                             "margin mode): entry prices cannot be netted silently", dup_rows, n_dup,
                             examples(p, POSITIONS, "instrument_id", dup_rows))

        bacc, _ = numeric_values(b.column("account_id"))
        amount, _ = numeric_values(b.column("amount"))
        asset_col = b.column("asset").chunk(0)  # conform leaves every column in one chunk
        if pa.types.is_dictionary(asset_col.type) and \
                len(pc.unique(asset_col.dictionary)) < len(asset_col.dictionary):
            asset_col = asset_col.dictionary_decode()  # one code per name: duplicate balances are found by code
        encoded = asset_col if pa.types.is_dictionary(asset_col.type) else pc.dictionary_encode(asset_col)
        bal_asset, _ = numeric_values(encoded.indices)
        bal_row = np.empty(0, np.int64)
        bal_accounts, bal_offsets = empty(len(bacc), np.int64), empty(len(bacc) + 1, np.int64)
        n_bal_runs, decreasing = checks.account_runs(bacc, bal_accounts, bal_offsets)
        if decreasing:
            bal_row = checks.stable_order(bacc)
            bacc, amount, bal_asset = (_take(x, bal_row) for x in (bacc, amount, bal_asset))
            n_bal_runs, _ = checks.account_runs(bacc, bal_accounts, bal_offsets)
        bal_accounts, bal_offsets = bal_accounts[:n_bal_runs], bal_offsets[:n_bal_runs + 1]
        # Raised by bind, after unknown asset names, as the market-dependent rules are.
        n_duplicate = checks.duplicate_codes(bacc, bal_asset, n_chunks(len(bacc)))

        most = int(chunk_starts.sum()) + n_bal_runs
        accounts, pos_start, bal_start = empty(most, np.int64), empty(most + 1, np.int64), empty(most + 1, np.int64)
        m = checks.merge_runs(*starts, chunk_starts, bal_accounts, bal_offsets, accounts, pos_start, bal_start)
        accounts, pos_start, bal_start = accounts[:m], pos_start[:m + 1], bal_start[:m + 1]
        return BookArrays(
            account_id=accounts, pos_start=pos_start, instrument_id=inst, quantity=qty, entry_price=entry,
            isolated=isolated, isolated_margin=iso_margin, pos_row=pos_row, bal_start=bal_start,
            bal_asset=bal_asset.astype(np.int32, copy=False), bal_amount=amount, bal_row=bal_row,
            bal_asset_names=encoded.dictionary.cast(pa.string()), least_entry=float(least_entry),
            bal_duplicates=int(n_duplicate))

    def bind(self, market) -> BoundBook:
        """Resolve instrument ids and asset names against ``market`` (cached per market)."""
        bound = self._bound.get(market)
        if bound is None:
            bound = self._bind(market)
            self._bound[market] = bound
        return bound

    def _bind(self, market) -> BoundBook:
        from .kernels import checks
        from .kernels._jit import n_chunks

        A, M = self.arrays, market.arrays
        n = len(A.instrument_id)
        pos_instrument = empty(n, np.int32)
        missing = checks.resolve_codes(A.instrument_id, M.id_to_index, pos_instrument, n_chunks(n))
        if missing:
            rows = _input_rows(A.pos_row, checks.first_rows_where(pos_instrument < 0, checks.MAX_EXAMPLES))
            raise InputError("positions", "instrument_id", "must be one of instruments.instrument_id", rows,
                             missing, examples(self.positions, POSITIONS, "instrument_id", rows))
        if A.least_entry < SMALLEST:  # an option's premium may be 0; a future's price is a divisor (inverse PnL)
            flags = (M.kind[pos_instrument] != C.OPTION) & (A.entry_price < SMALLEST)
            bad_entry = int(flags.sum())
            if bad_entry:
                rows = _input_rows(A.pos_row, checks.first_rows_where(flags, checks.MAX_EXAMPLES))
                raise InputError("positions", "entry_price", f"must be > 0 for futures (at least {SMALLEST:g})", rows,
                                 bad_entry, examples(self.positions, POSITIONS, "entry_price", rows))
        local_to_market = pc.index_in(A.bal_asset_names, value_set=market.asset_names).fill_null(-1)
        bal_asset = empty(len(A.bal_asset), np.int32)
        unknown = checks.resolve_codes(A.bal_asset, local_to_market.to_numpy(zero_copy_only=False).astype(np.int32),
                                       bal_asset, n_chunks(len(bal_asset)))
        if unknown:
            rows = _input_rows(A.bal_row, checks.first_rows_where(bal_asset < 0, checks.MAX_EXAMPLES))
            raise InputError("balances", "asset", "must be one of assets.asset", rows, unknown,
                             examples(self.balances, BALANCES, "asset", rows))
        if A.bal_duplicates:
            _, rows = checks.duplicates_in_segments(A.bal_start, bal_asset)
            rows = _input_rows(A.bal_row, rows)
            raise InputError("balances", "asset", "at most one row per (account_id, asset)", rows, A.bal_duplicates,
                             examples(self.balances, BALANCES, "asset", rows))
        return BoundBook(A, pos_instrument, bal_asset)

    # --------------------------------------------------------------------------------- directory I/O
    @classmethod
    def from_dir(cls, path) -> "Book":
        """Read ``positions`` and ``balances`` (files or Parquet dataset directories) from a venue directory."""
        path = Path(path)
        if not path.is_dir():
            raise InputError("book", "*", f"not a directory: {path}")
        return cls(positions=read(find_table_file(path, "positions"), "positions"),
                   balances=read(find_table_file(path, "balances"), "balances"))

    def to_dir(self, path) -> None:
        """Write positions and balances as Parquet in the directory layout of SPEC §1."""
        from .io import write_parquet

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_parquet(self.positions, path / "positions.parquet")
        write_parquet(self.balances, path / "balances.parquet")

    @property
    def n_accounts(self) -> int:
        return len(self.arrays.account_id)

    @property
    def n_positions(self) -> int:
        return self.positions.num_rows

    @property
    def n_balances(self) -> int:
        return self.balances.num_rows

    def __repr__(self) -> str:
        return (f"Book({self.n_accounts} accounts, {self.positions.num_rows} positions, "
                f"{self.balances.num_rows} balances)")


def _take(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values[order]``, by ``checks.take``."""
    from .kernels.checks import take
    from .kernels._jit import n_chunks

    out = empty(len(order), values.dtype)
    take(readonly(values), order, out, n_chunks(len(order)))  # read-only: one compilation per dtype
    return out


def _input_rows(order: np.ndarray, rows) -> np.ndarray:
    """Rows of the laid-out arrays as rows of the input table (``order`` empty: the same)."""
    rows = np.asarray(rows, np.int64)
    return order[rows] if len(order) else rows
