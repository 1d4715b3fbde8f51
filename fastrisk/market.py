"""The market side of a venue: assets, underlyings, instruments and tier schedules (SPEC §1), validated
and turned into contiguous arrays and integer codes for the kernels."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import codes as C
from .errors import InputError
from .tables import (ASSETS, INSTRUMENTS, TIERS, UNDERLYINGS, ReadOnlyArrays, codes, conform, examples,
                     find_table_file, timestamp_us)

_YEAR_US = 365 * 86400 * 1_000_000  # option time in years of 365 days (SPEC §2)
MAX_EXPIRY_YEARS = 100           # options further out are an input error (see _options)
AS_OF_KEY = b"fastrisk.as_of"       # schema metadata carrying as_of in a venue directory


@dataclass(frozen=True)
class MarketArrays(ReadOnlyArrays):
    """Everything the kernels need to know about the market, as plain arrays.

    Index letters: a = assets, u = underlyings, i = instruments (dense, in table order),
    s = tier schedules, t = tier brackets (schedule ``s`` owns ``t`` in ``sched_start[s]:sched_start[s+1]``).
    """

    asset_price: np.ndarray        # [a] USD
    asset_cw: np.ndarray           # [a] collateral weight
    asset_bw: np.ndarray           # [a] borrow weight
    asset_underlying: np.ndarray   # [a] int32 code of the underlying the asset follows, -1 for none
    index_price: np.ndarray        # [u] USD
    kind: np.ndarray               # [i] int8 codes.LINEAR / INVERSE / OPTION
    underlying: np.ndarray         # [i] int32
    settle: np.ndarray             # [i] int32 asset code
    contract_size: np.ndarray      # [i]
    mark: np.ndarray               # [i] mark price (settle units); NaN where an option is model-priced
    schedule: np.ndarray           # [i] int32 schedule code (flat imf/mmf get a one-bracket schedule)
    tier_first: np.ndarray         # [i] int32 first bracket of the instrument's schedule (0 for options)
    tier_last: np.ndarray          # [i] int32 last bracket (the +inf one)
    strike: np.ndarray             # [i] options only
    expiry_years: np.ndarray       # [i] options only: (expiry - as_of) in years of 365 days
    option_type: np.ndarray        # [i] int8 codes.CALL / PUT, codes.NO_OPTION for futures
    implied_vol: np.ndarray        # [i]
    sched_start: np.ndarray        # [s+1] int64
    tier_cap: np.ndarray           # [t] settle units, last of each schedule +inf
    tier_imf: np.ndarray           # [t]
    tier_mmf: np.ndarray           # [t]
    tier_amount: np.ndarray        # [t] maintenance amount, derived by the continuity rule
    id_to_index: np.ndarray        # instrument_id -> dense index, -1 for unknown ids


class Market:
    """Validated market tables (SPEC §1) and their kernel arrays.

    Parameters
    ----------
    assets, underlyings, instruments, tiers
        Any supported table source: ``pa.Table``, ``RecordBatch``, a Parquet/Arrow path, or an object
        with ``__arrow_c_stream__``.
    as_of : datetime, optional
        Valuation time (tz-aware, or naive meaning UTC). Needed when there are options.

    Raises
    ------
    InputError
        Naming the table, column, rule and example rows of the first violation found.
    """

    def __init__(self, assets, underlyings, instruments, tiers, as_of=None):
        self.assets = conform(assets, ASSETS)
        self.underlyings = conform(underlyings, UNDERLYINGS)
        self.instruments = conform(instruments, INSTRUMENTS)
        self.tiers = conform(tiers, TIERS)
        self.as_of = None if as_of is None else _utc(as_of)
        self.asset_names = self.assets.column("asset").combine_chunks().cast(pa.string())
        self.underlying_names = self.underlyings.column("underlying").combine_chunks().cast(pa.string())
        self.arrays = self._build_arrays()

    # --------------------------------------------------------------------------------- construction
    def _build_arrays(self) -> MarketArrays:
        a, u, ins = self.assets, self.underlyings, self.instruments
        asset_underlying = codes(a.column("underlying"), self.underlying_names, "assets", "underlying", a, ASSETS,
                                 nullable=True)
        kind = codes(ins.column("kind"), pa.array(C.KIND_NAMES), "instruments", "kind", ins, INSTRUMENTS).astype(np.int8)
        inst_u = codes(ins.column("underlying"), self.underlying_names, "instruments", "underlying", ins, INSTRUMENTS)
        settle = codes(ins.column("settle_asset"), self.asset_names, "instruments", "settle_asset", ins, INSTRUMENTS)
        is_option = kind == C.OPTION
        schedule, sched_start, cap, imf, mmf, amount = self._schedules(is_option)
        option_type, strike, expiry_years, implied_vol = self._options(is_option)
        mark = _f64(ins.column("mark_price"))
        self._require(~is_option & np.isnan(mark), "mark_price", "must not be null for futures")
        ids = ins.column("instrument_id").to_numpy().astype(np.int64)
        id_to_index = _id_lookup(ids)
        return MarketArrays(
            asset_price=_f64(a.column("price")), asset_cw=_f64(a.column("collateral_weight")),
            asset_bw=_f64(a.column("borrow_weight")), asset_underlying=asset_underlying,
            index_price=_f64(u.column("index_price")), kind=kind, underlying=inst_u, settle=settle,
            contract_size=_f64(ins.column("contract_size")), mark=mark, schedule=schedule,
            tier_first=np.where(is_option, 0, sched_start[schedule]).astype(np.int32),
            tier_last=np.where(is_option, 0, sched_start[schedule + 1] - 1).astype(np.int32), strike=strike,
            expiry_years=expiry_years, option_type=option_type, implied_vol=implied_vol,
            sched_start=sched_start, tier_cap=cap, tier_imf=imf, tier_mmf=mmf, tier_amount=amount,
            id_to_index=id_to_index)

    def _require(self, bad: np.ndarray, column: str, rule: str) -> None:
        rows = np.flatnonzero(bad)
        if len(rows):
            raise InputError("instruments", column, rule, rows, len(rows),
                             examples(self.instruments, INSTRUMENTS, column, rows))

    def _schedules(self, is_option):
        """Tier schedules as one flat bracket array; flat-margin futures become one-bracket schedules."""
        t, ins = self.tiers, self.instruments
        names = pc.unique(t.column("schedule").combine_chunks().cast(pa.string()))
        sched = codes(t.column("schedule"), names, "tiers", "schedule", t, TIERS)
        cap, imf, mmf = (_f64(t.column(c)) for c in ("notional_cap", "imf", "mmf"))
        order = np.lexsort((cap, sched))
        bad = np.flatnonzero(mmf > imf)
        if len(bad):
            raise InputError("tiers", "mmf", "must be <= imf", bad, len(bad), examples(t, TIERS, "mmf", bad))
        s_sorted, cap_sorted = sched[order], cap[order]
        same = s_sorted[1:] == s_sorted[:-1]
        dup = order[1:][same & (cap_sorted[1:] == cap_sorted[:-1])]
        if len(dup):
            raise InputError("tiers", "notional_cap", "must be strictly increasing within a schedule "
                             "(duplicate cap)", dup, len(dup), examples(t, TIERS, "notional_cap", dup))
        last = np.append(~same, True)
        wrong_last = order[(last & np.isfinite(cap_sorted)) | (~last & ~np.isfinite(cap_sorted))]
        if len(wrong_last):
            raise InputError("tiers", "notional_cap", "the last bracket of a schedule must be +inf and only "
                             "the last", wrong_last, len(wrong_last),
                             examples(t, TIERS, "notional_cap", wrong_last))
        imf_s, mmf_s = imf[order], mmf[order]
        first = np.append(True, ~same)
        amount = _continuity_amounts(cap_sorted, mmf_s, first)
        supplied, valid = _f64(t.column("maintenance_amount")), t.column("maintenance_amount").is_valid()
        valid = valid.to_numpy(zero_copy_only=False)[order]
        off = valid & (np.abs(supplied[order] - amount) > 1e-9 * np.maximum(np.abs(amount), 1.0))
        if off.any():
            rows = order[off]
            raise InputError("tiers", "maintenance_amount", "must satisfy continuity: amount[0] = 0, amount[i] = "
                             "amount[i-1] + cap[i-1]*(mmf[i]-mmf[i-1]) (1e-9 relative); expected "
                             + ", ".join(f"{x:.10g}" for x in amount[off][:5]), rows, len(rows),
                             examples(t, TIERS, "maintenance_amount", rows))
        # A supplied amount (within 1e-9 of continuity) is used as given, so that a venue's published
        # figures are reproduced exactly; absent ones are derived.
        amount = np.where(valid, supplied[order], amount)
        starts = list(np.flatnonzero(first)) + [len(order)]

        # Instruments -> schedule codes; flat-margin futures get their own one-bracket schedule.
        n_sched = len(names)
        inst_sched = codes(ins.column("tier_schedule"), names, "instruments", "tier_schedule", ins, INSTRUMENTS,
                           nullable=True)
        flat_imf, flat_mmf = _f64(ins.column("imf")), _f64(ins.column("mmf"))
        has_flat = ~np.isnan(flat_imf) | ~np.isnan(flat_mmf)
        futures = ~is_option
        self._require(futures & (inst_sched >= 0) & has_flat, "tier_schedule",
                      "a future has either a tier_schedule or imf and mmf, not both")
        self._require(futures & (inst_sched < 0) & (np.isnan(flat_imf) | np.isnan(flat_mmf)), "tier_schedule",
                      "a future needs a tier_schedule or both imf and mmf")
        self._require(futures & (flat_mmf > flat_imf), "mmf", "must be <= imf")
        flat = np.flatnonzero(futures & (inst_sched < 0))
        inst_sched = inst_sched.copy()
        inst_sched[flat] = n_sched + np.arange(len(flat), dtype=np.int32)
        sched_start = np.array(starts + list(len(order) + 1 + np.arange(len(flat))), np.int64)
        cat = lambda sorted_vals, extra: np.ascontiguousarray(np.concatenate([sorted_vals, extra]))
        return (inst_sched, sched_start, cat(cap_sorted, np.full(len(flat), np.inf)),
                cat(imf_s, flat_imf[flat]), cat(mmf_s, flat_mmf[flat]), cat(amount, np.zeros(len(flat))))

    def _options(self, is_option):
        ins = self.instruments
        n = ins.num_rows
        for column in ("strike", "expiry", "option_type", "implied_vol"):
            self._require(is_option & pc.is_null(ins.column(column)).to_numpy(zero_copy_only=False), column,
                          "must not be null for options")
        option_type = np.full(n, C.NO_OPTION, np.int8)
        opt = ins.column("option_type").combine_chunks()
        if is_option.any():
            is_put = pc.fill_null(pc.equal(opt, "put"), False).to_numpy(zero_copy_only=False)
            option_type[is_option] = np.where(is_put[is_option], C.PUT, C.CALL)
            if self.as_of is None:
                raise InputError("instruments", "expiry", "options need a valuation time: pass as_of to Market")
        expiry = pc.fill_null(ins.column("expiry").combine_chunks().cast(pa.int64()), 0).to_numpy()
        as_of_us = 0 if self.as_of is None else timestamp_us(self.as_of)
        expiry_years = np.where(is_option, (expiry - as_of_us) / _YEAR_US, np.nan)
        # Discount factors exp(-rate * years), |rate| <= 1 (parameters.check_parameters), stay within e^+-100.
        self._require(is_option & (expiry_years > MAX_EXPIRY_YEARS), "expiry",
                      f"must be at most {MAX_EXPIRY_YEARS} years after as_of (options)")
        return option_type, _f64(ins.column("strike")), expiry_years, _f64(ins.column("implied_vol"))

    # --------------------------------------------------------------------------------- directory I/O
    @classmethod
    def from_dir(cls, path, as_of=None) -> "Market":
        """Read ``assets``, ``underlyings``, ``instruments`` and ``tiers`` from a venue directory (SPEC §1).
        ``as_of`` defaults to the one recorded by :meth:`to_dir` in the instruments file's metadata."""
        path = Path(path)
        if not path.is_dir():
            raise InputError("market", "*", f"not a directory: {path}")
        from .tables import read

        tables = {name: read(find_table_file(path, name), name)
                  for name in ("assets", "underlyings", "instruments", "tiers")}
        if as_of is None:
            meta = tables["instruments"].schema.metadata or {}
            if AS_OF_KEY in meta:
                as_of = dt.datetime.fromisoformat(meta[AS_OF_KEY].decode())
        return cls(as_of=as_of, **tables)

    def to_dir(self, path) -> None:
        """Write the market tables as Parquet in the directory layout of SPEC §1 (atomically per file)."""
        from .io import write_parquet

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {AS_OF_KEY: self.as_of.isoformat().encode()} if self.as_of is not None else {}
        for name in ("assets", "underlyings", "tiers"):
            write_parquet(getattr(self, name), path / f"{name}.parquet")
        write_parquet(self.instruments.replace_schema_metadata(meta), path / "instruments.parquet")

    def __repr__(self) -> str:
        return (f"Market({self.assets.num_rows} assets, {self.underlyings.num_rows} underlyings, "
                f"{self.instruments.num_rows} instruments, {self.tiers.num_rows} tier brackets, "
                f"as_of={self.as_of})")


def _utc(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        value = pa.scalar(value).cast(pa.timestamp("us", tz="UTC")).as_py()
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _f64(column) -> np.ndarray:
    """A float64 column as a contiguous array with NaN where null (market tables are small)."""
    return np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _continuity_amounts(cap, mmf, first) -> np.ndarray:
    """Maintenance amounts by the continuity rule, per schedule (``first`` marks each schedule's first bracket)."""
    amount = np.zeros(len(cap))
    for t in range(len(cap)):
        if not first[t]:
            amount[t] = amount[t - 1] + cap[t - 1] * (mmf[t] - mmf[t - 1])
    return amount


def _id_lookup(ids: np.ndarray) -> np.ndarray:
    """Dense lookup table instrument_id -> row; ids are validated >= 0 and unique."""
    size = int(ids.max()) + 1 if len(ids) else 0
    if size > max(1 << 24, 8 * len(ids)):
        raise InputError("instruments", "instrument_id", f"ids up to {size - 1} are too sparse for "
                         f"{len(ids)} instruments (at most {max(1 << 24, 8 * len(ids))} supported)")
    lookup = np.full(size, -1, np.int32)
    lookup[ids] = np.arange(len(ids), dtype=np.int32)
    return lookup
