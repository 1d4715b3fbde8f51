"""Comparison of result tables, shared by the tests and the benchmarks (which check before they time)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def assert_tables_close(actual: pa.Table, expected: pa.Table, rtol: float = 1e-12, *, key: str = "account_id",
                        columns=None, atol: float = 0.0) -> None:
    """Equal column names and keys; equal non-float columns; float columns null in the same rows and
    otherwise equal within ``rtol`` relative
    to the larger of the two values, with an absolute floor of ``rtol`` times the column's largest finite
    magnitude (so that a cancellation to ~0 is not judged by its own tiny size), and at least ``atol``.
    Infinities must match exactly; a NaN anywhere fails.
    """
    columns = columns or expected.column_names
    missing = [c for c in columns if c not in actual.column_names]
    assert not missing, f"missing columns {missing}"
    assert actual.num_rows == expected.num_rows, f"{actual.num_rows} rows, expected {expected.num_rows}"
    ka, ke = actual.column(key).to_numpy(), expected.column(key).to_numpy()
    assert np.array_equal(ka, ke), f"{key} differs at rows {np.flatnonzero(ka != ke)[:5]}"
    for c in columns:
        a, e = actual.column(c), expected.column(c)
        if pa.types.is_floating(e.type):
            a_null = a.is_null().to_numpy(zero_copy_only=False)
            e_null = e.is_null().to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(a_null != e_null)
            assert not len(rows), f"{c}: null in one table only, at {key}={ke[rows[:5]]}"
            a = a.fill_null(0.0).to_numpy(zero_copy_only=False).astype(float)
            e = e.fill_null(0.0).to_numpy(zero_copy_only=False).astype(float)
            assert not np.isnan(a).any(), f"{c}: NaN in actual at rows {np.flatnonzero(np.isnan(a))[:5]}"
            assert not np.isnan(e).any(), f"{c}: NaN in expected at rows {np.flatnonzero(np.isnan(e))[:5]}"
            inf = np.isinf(a) | np.isinf(e)
            bad = inf & (a != e)
            finite = ~inf
            scale = np.max(np.abs(e[finite]), initial=0.0)
            tol = np.maximum(rtol * np.maximum(np.maximum(np.abs(a), np.abs(e)), scale), atol)
            with np.errstate(invalid="ignore"):  # inf - inf where both are inf: judged above
                bad |= finite & ~(np.abs(a - e) <= tol)
            rows = np.flatnonzero(bad)
            assert not len(rows), (f"{c}: {len(rows)} rows differ beyond rtol={rtol}, e.g. "
                                   + ", ".join(f"{key}={ke[r]}: {a[r]!r} vs {e[r]!r}" for r in rows[:5]))
        else:
            av, ev = a.to_pylist(), e.to_pylist()
            rows = [r for r in range(len(ev)) if av[r] != ev[r]]
            assert not rows, f"{c}: rows {rows[:5]} differ: " + ", ".join(f"{av[r]!r} vs {ev[r]!r}" for r in rows[:5])
