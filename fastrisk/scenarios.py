"""Scenario tables (SPEC §5): generators and validation.

A scenarios table has one row per (scenario, underlying moved): ``scenario_id`` (int32), ``underlying``,
``price_shock`` (relative, > -1: every instrument on the underlying, its index and every asset that follows
it move by the factor ``1 + price_shock``), ``vol_shock`` (absolute vol points added to the implied vol of
the underlying's options, the result floored at 1e-4) and ``weight`` (the fraction of the scenario's loss
that counts, one value per scenario). A scenario is all rows with one id; underlyings it does not name stay
put. The generators below return such tables; :func:`prepare` validates one against a market and turns it
into the per-scenario multipliers the kernels take.

Generators:

* :func:`span` -- the 16 CME SPAN scenarios of each underlying (price scan range and vol scan range from the
  underlyings table), with the two extreme moves weighted 0.35.
* :func:`grid` -- a price x vol grid per underlying (Deribit's portfolio margin simulates 9 price moves x 3
  vol states).
* :func:`historical` -- joint scenarios from a history of daily returns, one per date (or per overlapping
  window of ``horizon`` days), every underlying moving as it did that day.
* :func:`top_underlyings` -- the underlyings that carry the most open interest in a book, to choose which
  ones to scan.

Scenario ids are consecutive from 0 in the order the generator lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .tables import SCENARIOS, UNDERLYINGS, codes, conform, examples

__all__ = ["span", "grid", "historical", "top_underlyings", "prepare", "Scenarios", "SPAN_EXTREME_WEIGHT",
           "SCENARIO_SCHEMA"]

SPAN_EXTREME_WEIGHT = 0.35  # CME SPAN: extreme moves count for 35 % of their loss
SCENARIO_SCHEMA = pa.schema([(c.name, c.type) for c in SCENARIOS.columns])

# The CME SPAN risk array of one underlying, in the exchange's order:
# (fraction of the price scan range, vol direction (+1 up, -1 down, 0 unchanged), extreme move).
_SPAN_ARRAY = (
    (0.0, +1, False), (0.0, -1, False),
    (+1 / 3, +1, False), (+1 / 3, -1, False), (-1 / 3, +1, False), (-1 / 3, -1, False),
    (+2 / 3, +1, False), (+2 / 3, -1, False), (-2 / 3, +1, False), (-2 / 3, -1, False),
    (+1.0, +1, False), (+1.0, -1, False), (-1.0, +1, False), (-1.0, -1, False),
    (+1.0, 0, True), (-1.0, 0, True),
)


# ------------------------------------------------------------------------------------------------ generators

def span(underlyings, extreme_multiple: float = 2.0, *, market=None,
         extreme_weight: float = SPAN_EXTREME_WEIGHT) -> pa.Table:
    """The 16 CME SPAN scenarios of each underlying.

    Per underlying with scan ranges R (``price_range``) and V (``vol_range``): price unchanged, up and down
    1/3, 2/3 and 3/3 of R, each with vol up V and vol down V (14 scenarios, weight 1), then up and down
    ``extreme_multiple`` x R with vol unchanged, weight ``extreme_weight`` (the textbook SPAN risk array:
    extreme moves of twice the range counting for 35 % of their loss; some exchanges' files use 3x).

    Parameters
    ----------
    underlyings : Market, underlyings table, or sequence of underlying names
        A ``Market`` scans all its underlyings; a table (any SPEC §1 underlyings source) scans its rows;
        names scan those underlyings of ``market``, in the order given (see :func:`top_underlyings`).
    extreme_multiple : float
        Size of the two extreme moves in price ranges (> 0; a move down must stay above -100 %).
    market : Market, optional
        Needed when ``underlyings`` are names.
    extreme_weight : float
        Weight of the extreme scenarios, in [0, 1].

    Returns
    -------
    pa.Table
        The scenarios table: 16 scenarios per underlying, ids ``16*k + j`` for the k-th underlying and the
        j-th entry of the risk array (order above).

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = span(pa.table({"underlying": ["BTC"], "index_price": [50000.0], "price_range": [0.15]}))
    >>> t.num_rows, round(t["price_shock"].to_pylist()[2], 12), t["weight"].to_pylist()[-1]
    (16, 0.05, 0.35)
    """
    names, price_range, vol_range = _scan_ranges(underlyings, market)
    if not extreme_multiple > 0:
        raise ValueError("extreme_multiple must be > 0")
    if not 0.0 <= extreme_weight <= 1.0:
        raise ValueError("extreme_weight must be in [0, 1]")
    rows = []
    for k, (name, r, v) in enumerate(zip(names, price_range, vol_range)):
        for j, (frac, vol_dir, extreme) in enumerate(_SPAN_ARRAY):
            shock = frac * r * (extreme_multiple if extreme else 1.0)
            rows.append((16 * k + j, name, shock, vol_dir * v, extreme_weight if extreme else 1.0))
    return _check_moves(_table(rows), "extreme_multiple")


def grid(underlyings, price_points=None, vol_points=None, *, market=None, n_price: int = 9) -> pa.Table:
    """A price x vol grid of scenarios per underlying, each moving one underlying, weight 1.

    Parameters
    ----------
    underlyings : Market, underlyings table, or sequence of names (with ``market``), as in :func:`span`.
    price_points : sequence of float, optional
        Relative price moves, the same for every underlying. Default: ``n_price`` moves evenly spaced from
        -R to +R, R the underlying's ``price_range`` (Deribit-style 9 buckets).
    vol_points : sequence of float, optional
        Absolute vol shifts. Default: ``(-V, 0, +V)``, V the underlying's ``vol_range``.
    n_price : int
        Number of default price points (odd, so that "unchanged" is one of them).

    Returns
    -------
    pa.Table
        The scenarios table, per underlying every price point (outer) with every vol point (inner).
    """
    names, price_range, vol_range = _scan_ranges(underlyings, market)
    if price_points is None and (n_price < 1 or n_price % 2 == 0):
        raise ValueError("n_price must be odd and >= 1")
    rows = []
    sid = 0
    for name, r, v in zip(names, price_range, vol_range):
        prices = np.linspace(-r, r, n_price) if price_points is None else np.asarray(price_points, np.float64)
        vols = np.array([-v, 0.0, v]) if vol_points is None else np.asarray(vol_points, np.float64)
        for dp in prices:
            for dv in vols:
                rows.append((sid, name, float(dp), float(dv), 1.0))
                sid += 1
    return _check_moves(_table(rows), "price_points")


def historical(returns, window: int | None = None, *, horizon: int = 1, market=None,
               date_column: str = "date") -> pa.Table:
    """Joint scenarios from a history of daily returns: every underlying moves as it did together.

    Parameters
    ----------
    returns : table source
        Either *wide*: a ``date`` column and one float column of simple daily returns per underlying (the
        column name is the underlying), or *long*: columns ``date``, ``underlying``, ``return``. Returns
        are simple (``P_t / P_{t-1} - 1``), finite and > -1. The panel must be complete: a missing or null
        return is an error (fill a gap explicitly, e.g. with 0, rather than let the engine guess).
    window : int, optional
        Use only the last ``window`` dates (the look-back); default all.
    horizon : int
        Days per scenario: the compound return over ``horizon`` consecutive days, windows overlapping by
        one day (``horizon=2``: two-day moves, a common margin period of risk).
    market : Market, optional
        When given, every underlying must be one of its underlyings.
    date_column : str
        Name of the date column.

    Returns
    -------
    pa.Table
        The scenarios table with one scenario per date (the last day of its window), ids 0.. in date
        order, each naming every underlying (vol_shock 0: a return history says nothing about vols;
        weight 1), plus a ``date`` column (ignored by :func:`prepare`, kept to label the scenario).
    """
    from .tables import read

    t = read(returns, "returns")
    if date_column not in t.column_names:
        raise InputError("returns", date_column, f"missing column (the table has: {', '.join(t.column_names)})")
    if horizon < 1:
        raise ValueError("horizon must be >= 1")
    if {"underlying", "return"} <= set(t.column_names):
        dates, names, r = _long_returns(t, date_column)
    else:
        dates, names, r = _wide_returns(t, date_column)
    if market is not None:
        known = set(market.underlying_names.to_pylist())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError("returns", unknown[0], "every underlying must be one of underlyings.underlying; "
                             f"unknown: {', '.join(unknown[:5])}")
    if window is not None:
        if window < 1:
            raise ValueError("window must be >= 1")
        dates, r = dates[-window:], r[-window:]
    n_dates = len(dates)
    n_scen = max(n_dates - horizon + 1, 0)
    if horizon == 1 or not n_scen:
        shocks = r[:n_scen]  # one day: the returns as given, bit for bit
    else:  # the compound return of each window of `horizon` consecutive days
        windows = np.lib.stride_tricks.sliding_window_view(1.0 + r, horizon, axis=0)
        shocks = windows.prod(axis=-1) - 1.0
    n_u = len(names)
    out = pa.table({
        "scenario_id": pa.array(np.repeat(np.arange(n_scen, dtype=np.int32), n_u)),
        "underlying": pa.array(np.tile(np.array(names, dtype=object), n_scen), pa.string()),
        "price_shock": pa.array(shocks.reshape(-1), pa.float64()),
        "vol_shock": pa.array(np.zeros(n_scen * n_u)),
        "weight": pa.array(np.ones(n_scen * n_u)),
        "date": pa.array(np.repeat(dates[horizon - 1:], n_u)) if n_scen else pa.array([], dates.type),
    })
    return _check_moves(out, "horizon")


def top_underlyings(market, book, n: int = 3) -> list[str]:
    """The ``n`` underlyings with the largest open interest in ``book``: gross USD notional of every
    position on them (futures and options, cross and isolated; SPEC §2 notional), largest first, ties in
    market order. A cheap way to choose which underlyings to scan (SPAN scenarios of the top three cover
    most of a crypto venue's risk)."""
    from .risk import position_risk

    pos = position_risk(market, book)
    inst_u = market.arrays.underlying[market.arrays.id_to_index[pos.column("instrument_id").to_numpy()]]
    oi = np.bincount(inst_u, weights=pos.column("notional_usd").to_numpy(),
                     minlength=len(market.underlying_names))
    order = np.argsort(-oi, kind="stable")
    names = market.underlying_names.to_pylist()
    return [names[u] for u in order[:n] if oi[u] > 0]


# ------------------------------------------------------------------------------------------------ validation

@dataclass(frozen=True)
class Scenarios:
    """A scenarios table validated against a market, as the arrays the kernels take.

    Index letters: s = scenarios (sorted by scenario_id), u = the market's underlyings, r = named rows.
    """

    table: pa.Table          # the conformed table (SPEC columns only), rows in input order
    ids: np.ndarray          # [s] int32 scenario ids, ascending
    weight: np.ndarray       # [s]
    price_shock: np.ndarray  # [s, u] relative move as given (0 where not named)
    mult: np.ndarray         # [s, u] price multiplier 1 + price_shock (1 where not named)
    vol_shift: np.ndarray    # [s, u] absolute vol shift (0 where not named)
    named_start: np.ndarray  # [s+1] int64: scenario s names underlyings named_u[named_start[s]:named_start[s+1]]
    named_u: np.ndarray      # [r] int32 underlying codes, ascending within a scenario

    @property
    def n(self) -> int:
        return len(self.ids)

    def descriptions(self, market) -> list[str]:
        """A short label per scenario: ``"BTC -5% vol +10"``; joint scenarios of more than three
        underlyings are labelled by their count."""
        names = market.underlying_names.to_pylist()
        out = []
        for s in range(self.n):
            us = self.named_u[self.named_start[s]:self.named_start[s + 1]]
            if len(us) > 3:
                out.append(f"{len(us)} underlyings")
                continue
            parts = []
            for u in us:
                label = f"{names[u]} {100 * self.price_shock[s, u]:+.4g}%"
                if self.vol_shift[s, u] != 0:
                    label += f" vol {100 * self.vol_shift[s, u]:+.4g}"
                parts.append(label)
            out.append("; ".join(parts) if parts else "no move")
        return out


def prepare(scenarios, market) -> Scenarios:
    """Validate a scenarios table (SPEC §5) against ``market``.

    Rules beyond the column schema: every underlying is one of the market's; at most one row per
    (scenario_id, underlying); the weight is the same on every row of a scenario. Raises
    :class:`~fastrisk.InputError` naming the table (``scenarios``), the column and the offending rows.
    """
    t = conform(scenarios, SCENARIOS)
    n_u = len(market.underlying_names)
    u = codes(t.column("underlying"), market.underlying_names, "scenarios", "underlying", t, SCENARIOS)
    sid = t.column("scenario_id").to_numpy().astype(np.int64)
    shock = t.column("price_shock").to_numpy()
    vol = t.column("vol_shock").to_numpy()
    w = t.column("weight").to_numpy()
    # Rows by (scenario_id, underlying): duplicates sit next to each other, a scenario's rows are one run.
    order = np.lexsort((u, sid))
    s_sorted, u_sorted = sid[order], u[order]
    same_scenario = s_sorted[1:] == s_sorted[:-1]
    dup = np.sort(order[1:][same_scenario & (u_sorted[1:] == u_sorted[:-1])])
    if len(dup):
        raise InputError("scenarios", "underlying", "at most one row per (scenario_id, underlying): a scenario "
                         "moves an underlying once", dup, len(dup), examples(t, SCENARIOS, "underlying", dup))
    w_sorted = w[order]
    mixed = np.sort(order[1:][same_scenario & (w_sorted[1:] != w_sorted[:-1])])
    if len(mixed):
        raise InputError("scenarios", "weight", "must be the same on every row of a scenario", mixed, len(mixed),
                         examples(t, SCENARIOS, "weight", mixed))
    first = np.concatenate([[True], ~same_scenario]) if len(order) else np.zeros(0, bool)
    ids = s_sorted[first].astype(np.int32)
    scen_of_row = np.cumsum(first) - 1
    n_s = len(ids)
    price_shock = np.zeros((n_s, n_u))
    vol_shift = np.zeros((n_s, n_u))
    price_shock[scen_of_row, u_sorted] = shock[order]
    vol_shift[scen_of_row, u_sorted] = vol[order]
    named_start = np.concatenate([np.flatnonzero(first), [len(order)]]).astype(np.int64)
    return Scenarios(table=t, ids=ids, weight=np.ascontiguousarray(w_sorted[first]), price_shock=price_shock,
                     mult=1.0 + price_shock,
                     vol_shift=vol_shift, named_start=named_start,
                     named_u=np.ascontiguousarray(u_sorted, dtype=np.int32))


# ------------------------------------------------------------------------------------------------ helpers

def _table(rows) -> pa.Table:
    cols = list(zip(*rows)) if rows else [[] for _ in SCENARIO_SCHEMA]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, SCENARIO_SCHEMA)], schema=SCENARIO_SCHEMA)


def _check_moves(t: pa.Table, parameter: str) -> pa.Table:
    """A generated table passes the scenarios schema (a move of -100 % or more is an error naming the
    parameter that produced it)."""
    shock = t.column("price_shock").to_numpy()
    bad = np.flatnonzero(~(shock > -1.0) | ~np.isfinite(shock))
    if len(bad):
        raise InputError("scenarios", "price_shock", f"must be > -1 and finite (check {parameter})", bad, len(bad),
                         examples(t, SCENARIOS, "price_shock", bad))
    return t


def _scan_ranges(underlyings, market):
    """(names, price_range, vol_range) of the underlyings to scan."""
    from .market import Market

    if isinstance(underlyings, Market):
        t = underlyings.underlyings
    elif isinstance(underlyings, (list, tuple)) or (isinstance(underlyings, np.ndarray) and underlyings.ndim == 1):
        if market is None:
            raise ValueError("underlying names need market=... for their price and vol ranges")
        names = [str(n) for n in underlyings]
        t = market.underlyings
        idx = pc.index_in(pa.array(names, pa.string()), value_set=market.underlying_names).to_pylist()
        unknown = [n for n, i in zip(names, idx) if i is None]
        if unknown:
            raise InputError("scenarios", "underlying", "must be one of underlyings.underlying; unknown: "
                             + ", ".join(repr(n) for n in unknown[:5]))
        t = t.take(pa.array(idx, pa.int64()))
    else:
        t = conform(underlyings, UNDERLYINGS)
    return (t.column("underlying").to_pylist(), t.column("price_range").to_numpy(),
            t.column("vol_range").to_numpy())


def _wide_returns(t: pa.Table, date_column: str):
    names = [c for c in t.column_names if c != date_column]
    if not names:
        raise InputError("returns", "*", "no underlying columns: expected date + one column of returns per "
                         "underlying, or long columns date, underlying, return")
    dates = t.column(date_column).combine_chunks()
    _unique_dates(dates, date_column)
    cols = []
    for name in names:
        col = t.column(name)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            raise InputError("returns", name, f"must be a numeric column of returns, got {col.type}")
        cols.append(_returns_column(col.cast(pa.float64()), name, t, date_column))
    order = pc.sort_indices(dates).to_numpy()  # rows are checked (and reported) in input order, then sorted
    return dates.take(pa.array(order)), names, np.column_stack(cols)[order]


def _long_returns(t: pa.Table, date_column: str):
    for c in ("underlying", "return"):
        if t.column(c).null_count:
            rows = np.flatnonzero(pc.is_null(t.column(c)).to_numpy(zero_copy_only=False))
            raise InputError("returns", c, "must not be null", rows, len(rows), _ret_examples(t, date_column, c, rows))
    values = _returns_column(t.column("return").cast(pa.float64()), "return", t, date_column)
    und = t.column("underlying").cast(pa.string()).to_pylist()
    names = sorted(set(und))
    dates = pc.unique(t.column(date_column).combine_chunks()).sort()
    d_idx = pc.index_in(t.column(date_column), value_set=dates).to_numpy(zero_copy_only=False)
    u_of = {n: k for k, n in enumerate(names)}
    u_idx = np.array([u_of[x] for x in und], np.int64)
    panel = np.full((len(dates), len(names)), np.nan)
    seen = np.zeros((len(dates), len(names)), bool)
    key = d_idx.astype(np.int64) * len(names) + u_idx
    order = np.argsort(key, kind="stable")
    dup = np.sort(order[1:][key[order][1:] == key[order][:-1]])
    if len(dup):
        raise InputError("returns", "underlying", "at most one row per (date, underlying)", dup, len(dup),
                         _ret_examples(t, date_column, "underlying", dup))
    panel[d_idx, u_idx] = values
    seen[d_idx, u_idx] = True
    if not seen.all():
        d, k = np.argwhere(~seen)[0]
        raise InputError("returns", "return", f"the history must be complete: no return for {names[k]!r} on "
                         f"{dates[d].as_py()} ({int((~seen).sum())} (date, underlying) pairs missing)")
    return dates, names, panel


def _returns_column(col, name: str, t: pa.Table, date_column: str) -> np.ndarray:
    values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.flatnonzero(~(values > -1.0) | ~np.isfinite(values))  # NaN (or null) fails both
    if len(bad):
        raise InputError("returns", name, "must be a simple return > -1, finite and not null", bad, len(bad),
                         _ret_examples(t, date_column, name, bad))
    return values


def _unique_dates(dates, date_column: str) -> None:
    if dates.null_count:
        raise InputError("returns", date_column, "must not be null")
    if len(pc.unique(dates)) != len(dates):
        raise InputError("returns", date_column, "must be unique (one row per date in the wide layout)")


def _ret_examples(t: pa.Table, date_column: str, column: str, rows) -> list[str]:
    return [f"row {int(r)} ({date_column}={t.column(date_column)[int(r)].as_py()!r}, "
            f"{column}={t.column(column)[int(r)].as_py()!r})" for r in list(rows)[:5]]
