"""Exposures (SPEC §5): delta, gamma and vega of every account per underlying, venue totals, concentration.

(``fastrisk.exposures`` is the function; the module is named ``exposure`` so that importing it never replaces
the package attribute with a module.)

:func:`exposures` returns one row per (account, underlying the account is exposed to); :func:`venue_exposures`
sums it per underlying and :func:`account_concentration` gives every account one row. The sensitivities are
those of the account's USD equity (cross equity plus its isolated buckets) to a common move of everything
that follows the underlying: its instruments, its index, coin-settled contracts' settle asset and the
collateral that follows it (at its collateral or borrow weight, as it counts in equity). Formulas and units:
``fastrisk.kernels.exposures`` and docs/stress.md.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .parameters import check_parameters
from .risk import kernel_market, value_instruments

__all__ = ["exposures", "venue_exposures", "account_concentration", "EXPOSURES_SCHEMA"]

EXPOSURES_SCHEMA = pa.schema([
    ("account_id", pa.int64()), ("underlying", pa.dictionary(pa.int32(), pa.string())), ("delta", pa.float64()),
    ("delta_usd", pa.float64()),
    ("gamma", pa.float64()), ("gamma_usd", pa.float64()), ("vega", pa.float64()), ("concentration", pa.float64()),
])


def exposures(market, book, *, rate: float = 0.0) -> pa.Table:
    """Delta, gamma and vega of every account per underlying (SPEC §5).

    Returns
    -------
    pa.Table
        One row per (account, underlying) the account holds something of that moves with the underlying (a
        position on it, a position settled in an asset that follows it, a balance in such an asset), sorted
        by account_id, then underlying in the market's order (``underlying`` is dictionary-encoded, its
        dictionary the market's underlyings). Columns:

        - ``delta_usd``: dE/dm, the USD gain of the account's equity per 100 % move of the underlying (a move
          of r changes equity by about delta_usd*r); ``delta`` = delta_usd / index price, underlying units.
        - ``gamma_usd``: d2E/dm2 (E ~ E0 + delta_usd*r + gamma_usd*r^2/2); ``gamma`` = gamma_usd / index^2.
        - ``vega``: dE/dsigma, USD per 1.00 (100 vol points) of the underlying's implied vols.
        - ``concentration``: the account's max_u |delta_usd_u| / Σ_u |delta_usd_u| (repeated on each of its
          rows; null when the account has no delta at all).

    Examples
    --------
    >>> import fastrisk as fr
    >>> market, book = fr.generate.exchange(300, seed=2, options=True)
    >>> table = fr.exposures(market, book)
    >>> table.column_names[:4]
    ['account_id', 'underlying', 'delta', 'delta_usd']
    """
    from .kernels.exposures import EXPOSURE_FLOATS, exposure_counts, exposure_rows
    from .scenario_risk import account_chunks, kernel_book
    from .tables import readonly

    check_parameters("exposures", rate=rate)
    bound = book.bind(market)
    M = market.arrays
    val = value_instruments(market, rate=rate)
    inst, _ = kernel_market(market)
    n, n_u = len(bound.book.account_id), len(M.index_price)
    k = account_chunks(n)
    args = (kernel_book(bound), readonly(inst),
            *readonly(((val.price, val.forward, val.settle_px, val.asset_px, val.delta, val.gamma, val.vega),
                       M.asset_cw, M.asset_bw, (M.underlying, np.ascontiguousarray(M.asset_underlying[M.settle]),
                                                M.asset_underlying))))
    scratch = (np.empty((k, n_u, 3)), np.zeros((k, n_u), np.uint8), np.empty((k, n_u), np.int64))
    counts = np.empty(n, np.int64)
    exposure_counts(counts, *args, *scratch)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = int(offsets[-1])
    out, out_u = np.empty((len(EXPOSURE_FLOATS), rows)), np.empty(rows, np.int32)
    exposure_rows(out, out_u, readonly(offsets), *args, readonly(M.index_price), *scratch)
    names = market.underlying_names
    return pa.table({
        "account_id": np.repeat(bound.book.account_id, counts),
        # dictionary-encoded over the market's underlyings: millions of rows, a few dozen names
        "underlying": pa.DictionaryArray.from_arrays(pa.array(out_u), names),
        **{c: out[j] for j, c in enumerate(EXPOSURE_FLOATS) if c != "concentration"},
        "concentration": pa.array(out[-1], pa.float64(), mask=np.isnan(out[-1])),
    }, schema=EXPOSURES_SCHEMA)


def venue_exposures(table: pa.Table, market=None) -> pa.Table:
    """Venue totals per underlying of an :func:`exposures` table.

    Columns: ``underlying``, ``accounts`` (exposed to it), ``delta``, ``delta_usd`` (net), ``long_delta_usd``
    and ``short_delta_usd`` (Σ of the positive / negative account deltas), ``gamma``, ``gamma_usd``,
    ``vega``. One row per underlying of ``market`` (in its order) when given, else per underlying present,
    by first appearance. Sums run in the table's row order (deterministic).
    """
    und = table.column("underlying").combine_chunks()
    if pa.types.is_dictionary(und.type):
        und = und.dictionary_decode()
    names = market.underlying_names if market is not None else und.unique()
    code = pc.index_in(und, value_set=names).to_numpy(zero_copy_only=False).astype(np.int64)
    n_u = len(names)
    col = {c: table.column(c).to_numpy() for c in ("delta", "delta_usd", "gamma", "gamma_usd", "vega")}
    d = col["delta_usd"]
    def total(w):  # sequential, in row order; float even for an empty table (bincount would give int64)
        return np.bincount(code, weights=w, minlength=n_u).astype(np.float64)

    return pa.table({
        "underlying": names,
        "accounts": np.bincount(code, minlength=n_u).astype(np.int64),
        "delta": total(col["delta"]),
        "delta_usd": total(d),
        "long_delta_usd": total(np.maximum(d, 0.0)),
        "short_delta_usd": total(np.minimum(d, 0.0)),
        "gamma": total(col["gamma"]),
        "gamma_usd": total(col["gamma_usd"]),
        "vega": total(col["vega"]),
    })


def account_concentration(table: pa.Table, book) -> pa.Table:
    """Every account of ``book`` (sorted by account_id) with its ``net_delta_usd`` (Σ_u delta_usd),
    ``gross_delta_usd`` (Σ_u |delta_usd|), ``top_underlying`` (largest |delta_usd|, null if none) and
    ``concentration`` (max_u |delta_usd_u| / Σ_u |delta_usd_u|, null when the gross is 0), from an
    :func:`exposures` table of the same book."""
    ids = book.arrays.account_id
    acc = np.searchsorted(ids, table.column("account_id").to_numpy())
    d = table.column("delta_usd").to_numpy()
    n = len(ids)
    net = np.bincount(acc, weights=d, minlength=n).astype(np.float64)  # float even when empty
    gross = np.bincount(acc, weights=np.abs(d), minlength=n).astype(np.float64)
    # Rows are sorted by account: the first row of each account's largest |delta| is its top underlying.
    order = np.lexsort((-np.abs(d), acc))
    first = np.ones(len(order), bool)
    first[1:] = acc[order][1:] != acc[order][:-1]
    top_row = np.full(n, -1, np.int64)
    top_row[acc[order][first]] = order[first]
    has = (top_row >= 0) & (gross > 0)
    top = table.column("underlying").combine_chunks().take(pa.array(np.maximum(top_row, 0))).cast(pa.string())
    largest = np.where(has, np.abs(d[np.maximum(top_row, 0)]) if len(d) else 0.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        conc = largest / gross
    return pa.table({
        "account_id": ids,
        "net_delta_usd": net,
        "gross_delta_usd": gross,
        "top_underlying": pa.array(top.to_pylist() if len(d) else [None] * n, pa.string(), mask=~has),
        "concentration": pa.array(np.where(has, conc, 0.0), pa.float64(), mask=~has),
    })
