"""Venue totals of a risk run, as a JSON-ready dict and as text for a terminal."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pyarrow.compute as pc

from . import codes as C


def summarize(market, book, accounts: pa.Table, positions: pa.Table, *, timings: dict, source: str) -> dict:
    """Venue totals, accounts by status and run metadata (every money figure in USD)."""
    from . import __version__

    status = accounts.column("status").combine_chunks()
    counts = pc.value_counts(status.indices).to_pylist()
    by_status = {name: 0 for name in C.STATUS_NAMES}
    for item in counts:
        by_status[C.STATUS_NAMES[item["values"]]] = item["counts"]
    total = lambda t, c: float(pc.sum(t.column(c)).as_py() or 0.0)
    equity = accounts.column("equity")
    return {
        "fastrisk_version": __version__,
        "source": source,
        "as_of": market.as_of.isoformat() if market.as_of else None,
        "run_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": {"assets": market.assets.num_rows, "underlyings": market.underlyings.num_rows,
                 "instruments": market.instruments.num_rows, "tiers": market.tiers.num_rows,
                 "positions": book.positions.num_rows, "balances": book.balances.num_rows},
        "accounts": accounts.num_rows,
        "accounts_by_status": by_status,
        "totals_usd": {
            "collateral": total(accounts, "collateral"),
            "equity": total(accounts, "equity"),
            "initial_margin": total(accounts, "initial_margin"),
            "maintenance_margin": total(accounts, "maintenance_margin"),
            "gross_notional": total(accounts, "gross_notional"),
            "isolated_equity": total(accounts, "isolated_equity"),
            "negative_equity": float(pc.sum(pc.min_element_wise(equity, 0.0)).as_py() or 0.0),
        },
        "isolated_positions_liquidatable": int(pc.sum(accounts.column("n_isolated_liquidatable")).as_py() or 0),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }


def riskiest(accounts: pa.Table, n: int = 10) -> pa.Table:
    """The ``n`` accounts with the highest margin ratio (bankrupt and liquidatable first), then lowest equity."""
    order = pc.sort_indices(accounts, sort_keys=[("margin_ratio", "descending"), ("equity", "ascending")])
    return accounts.take(order[:n])


def _usd(x: float) -> str:
    if not math.isfinite(x):
        return "inf"
    for unit, scale in (("bn", 1e9), ("m", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"${x / scale:,.2f}{unit}"
    return f"${x:,.2f}"


def format_summary(summary: dict, accounts: pa.Table) -> str:
    t = summary["totals_usd"]
    lines = [f"fastrisk {summary['fastrisk_version']} - {summary['accounts']:,} accounts, "
             f"{summary['rows']['positions']:,} positions, as of {summary['as_of']}", "",
             "accounts by status:"]
    for name, count in summary["accounts_by_status"].items():
        share = count / max(summary["accounts"], 1)
        lines.append(f"  {name:<13} {count:>12,}  {share:7.2%}")
    lines += ["", "venue totals (cross margin):",
              f"  equity              {_usd(t['equity']):>16}",
              f"  collateral          {_usd(t['collateral']):>16}",
              f"  initial margin      {_usd(t['initial_margin']):>16}",
              f"  maintenance margin  {_usd(t['maintenance_margin']):>16}",
              f"  gross notional      {_usd(t['gross_notional']):>16}",
              f"  negative equity     {_usd(t['negative_equity']):>16}  (bad debt if closed now)",
              f"  isolated equity     {_usd(t['isolated_equity']):>16}  "
              f"({summary['isolated_positions_liquidatable']:,} isolated positions liquidatable)",
              "", "riskiest accounts:",
              f"  {'account_id':>12} {'status':<13} {'equity':>14} {'maint. margin':>14} {'margin ratio':>12} "
              f"{'leverage':>9}"]
    for row in riskiest(accounts).to_pylist():
        lines.append(f"  {row['account_id']:>12} {row['status']:<13} {_usd(row['equity']):>14} "
                     f"{_usd(row['maintenance_margin']):>14} {row['margin_ratio']:>12.3g} {row['leverage']:>9.3g}")
    timings = summary["timings_s"]
    if timings:
        lines += ["", "timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())]
    return "\n".join(lines)
