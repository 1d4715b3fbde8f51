"""Input schemas (SPEC §1), declared once, and the conversion of Arrow input into validated tables and arrays.

Every column is declared here with its type, rule, unit and meaning. Validation reads each column once
(numeric bounds in one compiled pass per column) and raises :class:`~fastrisk.errors.InputError` naming
the table, the column, the rule and up to five offending rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError

INF = math.inf
UTC_US = pa.timestamp("us", tz="UTC")

# Every finite float input is at most LARGEST in magnitude, and one that must be > 0 at least SMALLEST
# (docs/conventions.md). The formulas multiply up to six inputs (quantity, contract size, price, settle price,
# a scenario's move, a search factor) and divide by prices; within these limits every figure, and every sum
# of ten million of them, stays far inside float64's range (1.8e308), so nothing overflows to inf and no
# inf - inf becomes a NaN in the results. Beyond them, an input is an error.
LARGEST = 1e30
SMALLEST = 1e-30


@dataclass(frozen=True)
class Column:
    """One column of an input table.

    ``lo``/``hi`` bound numeric values (``lo_open``/``hi_open`` exclude the bound); ``finite`` rejects
    inf (NaN is always rejected); ``nullable`` allows nulls; ``required=False`` lets the column be absent,
    in which case it is added filled with ``default`` (or nulls).
    """

    name: str
    type: pa.DataType
    doc: str
    unit: str = ""
    nullable: bool = False
    required: bool = True
    default: float | None = None
    lo: float = -INF
    lo_open: bool = False
    hi: float = INF
    hi_open: bool = False
    finite: bool = True
    unique: bool = False
    choices: tuple[str, ...] = ()

    @property
    def is_string(self) -> bool:
        return pa.types.is_string(self.type)

    @property
    def positive(self) -> bool:
        """Whether the rule is ``> 0``: a finite such column is at least ``SMALLEST``."""
        return self.lo == 0 and self.lo_open

    def closed_bounds(self) -> tuple[float, float]:
        """The rule as a closed interval [lo, hi]: open bounds moved to the next float inward, and
        finiteness folded in as the magnitude limits (``LARGEST``, ``SMALLEST``). NaN is outside every
        interval."""
        lo_closed = float(np.nextafter(self.lo, INF)) if self.lo_open else self.lo
        hi_closed = float(np.nextafter(self.hi, -INF)) if self.hi_open else self.hi
        if self.finite:
            lo_closed, hi_closed = max(lo_closed, SMALLEST if self.positive else -LARGEST), min(hi_closed, LARGEST)
        return lo_closed, hi_closed

    def rule(self) -> str:
        """The column's numeric rule in words, for error messages."""
        parts = []
        if self.lo > -INF and self.hi < INF:
            parts.append(f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}")
        elif self.lo > -INF:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        elif self.hi < INF:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        if not self.finite:
            return "must be " + " and ".join(parts + ["not NaN"])
        limits = f"between {SMALLEST:g} and {LARGEST:g}" if self.positive else f"at most {LARGEST:g}"
        return "must be " + " and ".join(parts + ["finite"]) + f" ({limits} in magnitude)"


@dataclass(frozen=True)
class Schema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # columns shown beside an offending row, to find it in the source

    def __getitem__(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


F64, I64, I32, STR = pa.float64(), pa.int64(), pa.int32(), pa.string()

ASSETS = Schema("assets", (
    Column("asset", STR, "collateral asset name", unique=True),
    Column("price", F64, "price in the valuation currency", "USD", lo=0, lo_open=True),
    Column("collateral_weight", F64, "haircut factor on positive balances", lo=0, hi=1),
    Column("borrow_weight", F64, "liability add-on factor on negative balances", lo=1),
    Column("underlying", STR, "underlying whose shocks this asset's price follows", nullable=True, required=False),
), key=("asset",))

UNDERLYINGS = Schema("underlyings", (
    Column("underlying", STR, "risk factor name", unique=True),
    Column("index_price", F64, "index price", "USD", lo=0, lo_open=True),
    Column("price_range", F64, "SPAN price scan range", "fraction", required=False, default=0.15, lo=0, lo_open=True),
    Column("vol_range", F64, "SPAN volatility scan range", "vol points", required=False, default=0.10, lo=0),
    Column("depth_usd", F64, "notional that moves the price by 1 % (linear impact)", "USD",
           nullable=True, required=False, lo=0, lo_open=True),
    Column("adv_usd", F64, "average daily traded notional (square-root impact)", "USD",
           nullable=True, required=False, lo=0, lo_open=True),
    Column("daily_vol", F64, "daily return volatility (square-root impact)", "fraction",
           nullable=True, required=False, lo=0),
), key=("underlying",))

INSTRUMENTS = Schema("instruments", (
    Column("instrument_id", I32, "instrument identifier", lo=0, unique=True),
    Column("symbol", STR, "instrument symbol", unique=True),
    Column("kind", STR, "contract kind", choices=("linear", "inverse", "option")),
    Column("underlying", STR, "risk factor (in underlyings)"),
    Column("settle_asset", STR, "asset margin and PnL are paid in (in assets)"),
    Column("contract_size", F64, "underlying units (linear, option) or USD (inverse) per contract",
           lo=0, lo_open=True),
    Column("mark_price", F64, "mark price; for options null means priced with Black-76", "settle",
           nullable=True, lo=0, lo_open=True),
    Column("tier_schedule", STR, "schedule in tiers (futures)", nullable=True, required=False),
    Column("imf", F64, "flat initial margin fraction", nullable=True, required=False, lo=0, lo_open=True, hi=1),
    Column("mmf", F64, "flat maintenance margin fraction", nullable=True, required=False, lo=0, lo_open=True, hi=1),
    Column("strike", F64, "option strike", "settle", nullable=True, required=False, lo=0, lo_open=True),
    Column("expiry", UTC_US, "option expiry", nullable=True, required=False),
    Column("option_type", STR, "call or put", nullable=True, required=False, choices=("call", "put")),
    Column("implied_vol", F64, "annualised implied volatility", nullable=True, required=False, lo=0, lo_open=True),
), key=("instrument_id", "symbol"))

TIERS = Schema("tiers", (
    Column("schedule", STR, "schedule name"),
    Column("notional_cap", F64, "upper bound of the bracket (last is +inf)", "settle", lo=0, lo_open=True,
           finite=False),
    Column("imf", F64, "initial margin fraction", lo=0, lo_open=True, hi=1),
    Column("mmf", F64, "maintenance margin fraction", lo=0, lo_open=True, hi=1),
    Column("maintenance_amount", F64, "cumulative maintenance amount", "settle", nullable=True, required=False),
), key=("schedule", "notional_cap"))

POSITIONS = Schema("positions", (
    Column("account_id", I64, "account"),
    Column("instrument_id", I32, "instrument (in instruments)", lo=0),
    Column("quantity", F64, "signed contracts, long > 0"),
    Column("entry_price", F64, "entry price (futures > 0; options premium >= 0)", "settle", lo=0),
    Column("isolated_margin", F64, "null = cross; else the isolated position's margin", "settle",
           nullable=True, required=False, lo=0),
), key=("account_id", "instrument_id"))

BALANCES = Schema("balances", (
    Column("account_id", I64, "account"),
    Column("asset", STR, "asset (in assets)"),
    Column("amount", F64, "signed balance, negative = borrowed", "asset units"),
), key=("account_id", "asset"))

SCENARIOS = Schema("scenarios", (
    Column("scenario_id", I32, "scenario identifier: a scenario is all rows with one id"),
    Column("underlying", STR, "underlying the row moves (in underlyings); the others stay put"),
    Column("price_shock", F64, "relative move of the underlying, its instruments and the assets that follow it",
           "fraction", lo=-1, lo_open=True),
    Column("vol_shock", F64, "absolute implied-vol shift of the underlying's options (vol floored at 1e-4)",
           "vol points", required=False, default=0.0),
    Column("weight", F64, "fraction of the scenario's loss that counts (one value per scenario_id)",
           required=False, default=1.0, lo=0, hi=1),
), key=("scenario_id", "underlying"))

# ------------------------------------------------------------------------------------------- outputs
# Every implementation (kernels, reference, peers) returns exactly these schemas.

STATUS_TYPE = pa.dictionary(pa.int8(), pa.string())

ACCOUNT_RISK = pa.schema([
    ("account_id", I64), ("collateral", F64), ("unrealized_pnl", F64), ("option_value", F64), ("equity", F64),
    ("initial_margin", F64), ("maintenance_margin", F64), ("margin_ratio", F64), ("free_collateral", F64),
    ("gross_notional", F64), ("leverage", F64), ("status", STATUS_TYPE), ("n_positions", I32),
    ("isolated_equity", F64), ("n_isolated_liquidatable", I32),
])

POSITION_RISK = pa.schema([
    ("account_id", I64), ("instrument_id", I32), ("isolated", pa.bool_()), ("quantity", F64),
    ("mark_price", F64), ("notional_usd", F64), ("upnl_usd", F64), ("value_usd", F64), ("tier", pa.int16()),
    ("initial_margin", F64), ("maintenance_margin", F64), ("isolated_equity", F64), ("liquidatable", pa.bool_()),
    ("delta", F64), ("gamma", F64), ("vega", F64), ("theta", F64),
])


SCHEMAS = {s.name: s for s in (ASSETS, UNDERLYINGS, INSTRUMENTS, TIERS, POSITIONS, BALANCES, SCENARIOS)}


# ---------------------------------------------------------------------------------------------- reading

def read(source, table: str) -> pa.Table:
    """Any supported source as a ``pa.Table``: Table, RecordBatch, Parquet file or dataset directory,
    Arrow IPC file, or an object exposing ``__arrow_c_stream__`` (Polars, pandas, DuckDB results...)."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source), table)
    if hasattr(source, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(source).read_all()
    if hasattr(source, "__arrow_c_array__"):
        return pa.Table.from_batches([pa.record_batch(source)])
    raise InputError(table, "*", f"cannot read a table from {type(source).__name__}: expected a pyarrow "
                                 "Table or RecordBatch, a Parquet/Arrow path, or an Arrow-compatible frame")


def _read_path(path: Path, table: str) -> pa.Table:
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(table, "*", f"no such file or directory: {path}")
    try:
        if path.is_dir() or path.suffix == ".parquet":
            return pq.read_table(path)
        with pa.memory_map(str(path)) as f:
            try:
                return pa.ipc.open_file(f).read_all()
            except pa.ArrowInvalid:
                f.seek(0)
                return pa.ipc.open_stream(f).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(table, "*", f"cannot read {path}: {e}") from None


def find_table_file(directory: Path, table: str) -> Path:
    """``directory/table.parquet``, ``.arrow``, or a ``table`` dataset directory."""
    for candidate in (directory / f"{table}.parquet", directory / f"{table}.arrow", directory / table):
        if candidate.exists():
            return candidate
    raise InputError(table, "*", f"missing: expected {table}.parquet, {table}.arrow or a {table}/ "
                                 f"directory in {directory}")


# ---------------------------------------------------------------------------------------------- conform

def conform(source, schema: Schema, *, check_bounds: bool = True) -> pa.Table:
    """The source as a single-chunk table of exactly the schema's columns, types converted losslessly,
    nulls and (unless the caller fuses them into its own pass) numeric bounds checked. Foreign keys and
    cross-column rules are checked by the callers."""
    t = read(source, schema.name)
    columns = {}
    for col in schema.columns:
        if col.name in t.column_names:
            arr = t.column(col.name)
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
            arr = _convert(arr, col, schema, t)
        elif col.required:
            raise InputError(schema.name, col.name, f"missing column (the table has: {', '.join(t.column_names)})")
        elif col.default is not None:
            arr = pa.array(np.full(t.num_rows, col.default), col.type)
        else:
            arr = pa.nulls(t.num_rows, col.type)
        columns[col.name] = arr
    out = pa.table(columns)
    for col in schema.columns:
        _check_nulls(out, col, schema)
        if check_bounds and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            check_range(out, col, schema)
        if col.choices:
            _check_choices(out, col, schema)
        if col.unique:
            check_unique(out, col.name, schema)
    return out


def _convert(arr: pa.Array, col: Column, schema: Schema, t: pa.Table) -> pa.Array:
    if col.is_string:
        # Dictionary-encoded strings stay encoded (cheap codes); large and view strings (Polars exports
        # string_view) become plain strings, which every Arrow compute function accepts.
        if pa.types.is_dictionary(arr.type):
            if pa.types.is_string(arr.type.value_type):
                return arr
            if pa.types.is_large_string(arr.type.value_type) or pa.types.is_string_view(arr.type.value_type):
                return pa.DictionaryArray.from_arrays(arr.indices, arr.dictionary.cast(pa.string()))
        elif pa.types.is_string(arr.type):
            return arr
        elif pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
            return arr.cast(pa.string())
        raise InputError(schema.name, col.name, f"must be a string column, got {arr.type}")
    if arr.type == col.type:
        return arr
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_timestamp(col.type) and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
        # Naive timestamps are taken as UTC (documented in docs/conventions.md).
        arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
    try:
        return pc.cast(arr, col.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        back = pc.cast(pc.cast(arr, col.type, safe=False), arr.type, safe=False)
        bad = pc.fill_null(pc.not_equal(back, arr), False).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(schema.name, col.name, f"must be {col.type}; cannot convert {arr.type}") from None
    rows = np.flatnonzero(bad)
    raise InputError(schema.name, col.name, f"must be {col.type}; converting {arr.type} loses information",
                     rows, len(rows), examples(t, schema, col.name, rows))


def _check_nulls(t: pa.Table, col: Column, schema: Schema) -> None:
    arr = t.column(col.name)
    if col.nullable or arr.null_count == 0:
        return
    rows = np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))
    raise InputError(schema.name, col.name, "must not be null", rows, len(rows),
                     examples(t, schema, col.name, rows))


def numeric_values(arr) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)`` NumPy views of a primitive column: values without a copy when Arrow allows
    it, and ``valid`` a uint8 mask (empty when the column has no nulls; null slots hold arbitrary values)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=True), np.empty(0, np.uint8)
    dtype = arr.type.to_pandas_dtype()
    bitmap, data = arr.buffers()[0], arr.buffers()[1]
    values = np.frombuffer(data, dtype=dtype, count=len(arr) + arr.offset)[arr.offset:]
    # Arrow validity bitmaps are LSB-first: one table-driven unpack, far faster than a per-row loop.
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    valid = np.ascontiguousarray(bits[arr.offset:arr.offset + len(arr)])
    return values, valid


def empty(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised C-contiguous array in memory from Arrow's pool, for large results and scratch.

    NumPy takes large arrays from fresh, zeroed pages of the OS and returns them on free, so every call
    pays a page fault per page it writes (about as long as writing the array twice). Arrow's pool keeps
    freed memory and hands it out again: the next call writes to pages already mapped. Tables built
    from such arrays wrap them without a copy, as for any NumPy array.
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(pa.allocate_buffer(size * dtype.itemsize), dtype, size).reshape(shape)


def full(shape, value, dtype=np.float64) -> np.ndarray:
    """``np.full`` in memory from Arrow's pool (see ``empty``), filled in parallel (``kernels.arrays.fill``)."""
    from .kernels.arrays import fill

    out = empty(shape, dtype)
    flat = out.reshape(-1)
    fill(flat, flat.dtype.type(value))
    return out


def bitmap(valid: np.ndarray) -> pa.Buffer:
    """A 0/1 (uint8 or bool) array as an Arrow validity bitmap (LSB first)."""
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def with_validity(type_, values: np.ndarray, bits: pa.Buffer, valid: np.ndarray) -> pa.Array:
    """``values`` as an Arrow array of ``type_``, null where ``valid`` is 0 (``bits`` its ``bitmap``), without
    a copy (booleans: packed into Arrow's bit layout): ``pa.array(values, mask=...)`` converts the mask and
    copies (6 ms for a cascade's accounts table of 1M rows against 0.6)."""
    n = len(values)
    nulls = n - int(np.count_nonzero(valid))
    data = bitmap(values) if pa.types.is_boolean(type_) else pa.py_buffer(values)
    return pa.Array.from_buffers(type_, n, [bits if nulls else None, data], null_count=nulls)


def account_order(tables: list[pa.Table]) -> np.ndarray | None:
    """The rows of ``tables`` (each with an account_id column), concatenated, in account_id order (stable: an
    account's rows keep their order); None when they already are."""
    ids = np.concatenate([t.column("account_id").to_numpy() for t in tables])
    if len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1])):
        return None
    return np.argsort(ids, kind="stable")


def merge_by_account(tables: list[pa.Table]) -> pa.Table:
    """Per-account results of disjoint sets of accounts (partitions of a book) as one table: one chunk, rows by
    account_id, as a single run over the whole book returns them."""
    order = account_order(tables)
    merged = pa.concat_tables(tables).combine_chunks()
    return merged if order is None else merged.take(order).combine_chunks()


def check_range(t: pa.Table, col: Column, schema: Schema) -> None:
    """Numeric bounds of one column in one compiled pass."""
    from .kernels import checks

    values, valid = numeric_values(t.column(col.name))
    if pa.types.is_integer(col.type) and col.lo == -INF and col.hi == INF:
        return  # integers are finite: nothing to check
    lo_closed, hi_closed = col.closed_bounds()
    count, rows = checks.violations(len(values), checks.outside, checks.outside_rows, values, valid,
                                    lo_closed, hi_closed)
    if count:
        raise InputError(schema.name, col.name, col.rule(), rows, count,
                         examples(t, schema, col.name, rows))


def _check_choices(t: pa.Table, col: Column, schema: Schema) -> None:
    arr = t.column(col.name)
    bad = pc.and_(pc.is_valid(arr), pc.invert(pc.is_in(arr, value_set=pa.array(col.choices))))
    rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
    if len(rows):
        raise InputError(schema.name, col.name, f"must be one of {', '.join(col.choices)}", rows, len(rows),
                         examples(t, schema, col.name, rows))


def check_unique(t: pa.Table, name: str, schema: Schema) -> None:
    values = t.column(name).to_pylist()
    seen: dict = {}
    dup_rows = []
    for r, v in enumerate(values):
        if v in seen:
            dup_rows.append(r)
        else:
            seen[v] = r
    if dup_rows:
        raise InputError(schema.name, name, "must be unique", dup_rows, len(dup_rows),
                         examples(t, schema, name, dup_rows))


def codes(values, names, table: str, column: str, t: pa.Table, schema: Schema, *, nullable=False) -> np.ndarray:
    """Integer codes (positions in ``names``) of a string column; -1 for nulls when ``nullable``.
    A value not in ``names`` is an error naming the rows (a foreign-key check)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(arr.type):
        # Map the (small) dictionary once, then gather by index: no per-row string work.
        dict_codes = pc.index_in(arr.dictionary, value_set=names).fill_null(-1).to_numpy(
            zero_copy_only=False).astype(np.int32)
        idx, valid = numeric_values(arr.indices)
        if len(valid):
            idx = np.where(valid.astype(bool), idx, 0)
        out = dict_codes[idx]
        missing = out < 0
        if len(valid):
            missing &= valid.astype(bool)
            out[~valid.astype(bool)] = -1
    else:
        idx = pc.index_in(arr, value_set=names)
        out = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        missing = pc.and_(pc.is_valid(arr), pc.is_null(idx)).to_numpy(zero_copy_only=False)
    if not nullable and arr.null_count:
        missing = missing | pc.is_null(arr).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(missing)
    if len(rows):
        raise InputError(table, column, f"must be one of {table_of(column)} ({len(names)} known)", rows,
                         len(rows), examples(t, schema, column, rows))
    return out


def table_of(column: str) -> str:
    """Where a foreign-key column's values must come from, for messages."""
    return {"underlying": "underlyings.underlying", "settle_asset": "assets.asset", "asset": "assets.asset",
            "tier_schedule": "tiers.schedule", "instrument_id": "instruments.instrument_id"}.get(column, column)


def examples(t: pa.Table, schema: Schema, column: str, rows, limit: int = 5) -> list[str]:
    """``row 17 (account_id=5, quantity=nan)`` for the first offending rows."""
    out = []
    shown = [c for c in schema.key if c in t.column_names and c != column]
    if column in t.column_names:
        shown.append(column)
    for r in list(rows)[:limit]:
        r = int(r)
        vals = ", ".join(f"{c}={t.column(c)[r].as_py()!r}" for c in shown)
        out.append(f"row {r} ({vals})")
    return out


def readonly(arrays):
    """The same arrays (nested in tuples) as read-only views, without a copy.

    Numba compiles one machine-code version per argument type, and a read-only array (a zero-copy view of an
    Arrow buffer) is another type than a writable one. Inputs arrive either way depending on the data (a
    column with nulls is copied, one without is not), so the scenario kernels take every input read-only:
    one compilation instead of one per combination.
    """
    if isinstance(arrays, tuple):
        return tuple(readonly(a) for a in arrays)
    if isinstance(arrays, np.ndarray):
        view = arrays.view()
        view.flags.writeable = False
        return view
    return arrays


class ReadOnlyArrays:
    """Mixin for frozen dataclasses of kernel inputs: every array field becomes a read-only view, so each
    kernel compiles once (see :func:`readonly`)."""

    def __post_init__(self):
        for name, value in vars(self).items():
            if isinstance(value, (np.ndarray, tuple)):
                object.__setattr__(self, name, readonly(value))


def timestamp_us(value) -> int:
    """A datetime, numpy datetime64 or Arrow timestamp scalar as microseconds since the epoch, UTC."""
    scalar = pa.scalar(value)
    if pa.types.is_timestamp(scalar.type) and scalar.type.tz is None:
        scalar = scalar.cast(pa.timestamp(scalar.type.unit, tz="UTC"))
    return scalar.cast(UTC_US).value
