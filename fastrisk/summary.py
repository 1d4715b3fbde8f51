"""Venue totals of a risk run: JSON-ready dicts for ``summary.json``, text for a terminal, and the per-underlying
aggregations the report plots. Everything is aggregated here, in pyarrow/NumPy over whole columns, once.

Each ``*_summary`` function turns one step's tables into the dict that step adds to ``summary.json``; the
columns it reads are those of the engine's results (``fastrisk.liquidation``, ``scenario_risk``, ``exposure``,
``liquidation_cascade``, ``cross_contagion``).
"""

from __future__ import annotations

import datetime as dt
import math
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import codes as C

def _f64(table: pa.Table, column: str) -> np.ndarray:
    """A float column as NumPy; nulls become NaN (callers decide what a null means)."""
    col = table.column(column)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.to_numpy().astype(np.float64) if col.null_count == 0 else \
        pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()


def _strings(table: pa.Table, column: str) -> list[str]:
    col = table.column(column)
    col = col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
    return [str(x) for x in col.to_pylist()]


def _sum(table: pa.Table, column: str) -> float:
    return float(pc.sum(table.column(column)).as_py() or 0.0)


def _groups(table: pa.Table, column: str, rows=None):
    """(names, codes): the distinct values of a string column in dictionary order (a plain string column's:
    first appearance), and each row's code; of the rows flagged in ``rows`` (bool) only, when given. Counted,
    not sorted: O(n) over millions of rows."""
    col = table.column(column).combine_chunks()
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    dictionary = col.dictionary.to_pylist()
    codes = col.indices.to_numpy(zero_copy_only=False)
    if rows is not None:
        codes = codes[rows]
    used = np.flatnonzero(np.bincount(codes, minlength=len(dictionary)))  # a dictionary may hold unused values
    renumber = np.zeros(len(dictionary), np.int64)
    renumber[used] = np.arange(len(used))
    return [dictionary[k] for k in used], renumber[codes]


def _segments(code: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: the rows grouped by code, in row order within a group (group k is
    ``order[starts[k]:starts[k+1]]``), by a stable counting sort (radix for 16-bit codes)."""
    key = code.astype(np.uint16) if n_groups <= np.iinfo(np.uint16).max else code
    order = np.argsort(key, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(code, minlength=n_groups))])
    return order, starts


# --------------------------------------------------------------------------------------------- run metadata
def run_metadata(market, book, *, source: str, parameters: dict) -> dict:
    """Who/what/when of a run: version, input, as_of, input row counts, parameters."""
    from . import __version__

    return {
        "fastrisk_version": __version__,
        "source": source,
        "as_of": market.as_of.isoformat() if market.as_of else None,
        "run_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": {"assets": market.assets.num_rows, "underlyings": market.underlyings.num_rows,
                 "instruments": market.instruments.num_rows, "tiers": market.tiers.num_rows,
                 "positions": book.n_positions, "balances": book.n_balances},
        "parameters": parameters,
    }


# --------------------------------------------------------------------------------------------- accounts
def status_counts(status_column) -> dict[str, int]:
    """Accounts per status, every status present (0 when none), in severity order."""
    by_status = {name: 0 for name in C.STATUS_NAMES}
    col = status_column.combine_chunks() if isinstance(status_column, pa.ChunkedArray) else status_column
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    for item in pc.value_counts(col).to_pylist():
        by_status[item["values"]] = by_status.get(item["values"], 0) + item["counts"]
    return by_status


def account_summary(accounts: pa.Table) -> dict:
    """Venue totals and accounts by status (every money figure in USD): the headline of ``summary.json``."""
    equity = accounts.column("equity")
    return {
        "accounts": accounts.num_rows,
        "accounts_by_status": status_counts(accounts.column("status")),
        "totals_usd": {
            "collateral": _sum(accounts, "collateral"),
            "equity": _sum(accounts, "equity"),
            "initial_margin": _sum(accounts, "initial_margin"),
            "maintenance_margin": _sum(accounts, "maintenance_margin"),
            "gross_notional": _sum(accounts, "gross_notional"),
            "isolated_equity": _sum(accounts, "isolated_equity"),
            # What the insurance fund would absorb if every account were closed at today's marks.
            "negative_equity": float(pc.sum(pc.min_element_wise(equity, 0.0)).as_py() or 0.0),
        },
        "accounts_negative_equity": int(pc.sum(pc.less(equity, 0.0)).as_py() or 0),
        "isolated_positions_liquidatable": int(pc.sum(accounts.column("n_isolated_liquidatable")).as_py() or 0),
    }


def riskiest(accounts: pa.Table, n: int = 10) -> pa.Table:
    """The ``n`` accounts with the highest margin ratio (bankrupt and liquidatable first), then lowest
    equity."""
    order = pc.sort_indices(accounts, sort_keys=[("margin_ratio", "descending"), ("equity", "ascending")])
    return accounts.take(order[:n])


def margin_ratio_quantiles(accounts: pa.Table, qs=(0.5, 0.9, 0.99, 0.999)) -> dict:
    """Quantiles of the margin ratio over accounts that carry maintenance margin (inf included: it sorts
    last)."""
    mm = _f64(accounts, "maintenance_margin")
    ratio = _f64(accounts, "margin_ratio")[mm > 0]
    out = {"accounts_with_margin": int(len(ratio)), "infinite": int(np.isinf(ratio).sum())}
    if len(ratio):
        ordered = np.sort(ratio)
        for q in qs:  # nearest rank: a quantile is always a ratio some account has
            out[f"p{q * 100:g}"] = float(ordered[min(len(ordered) - 1, int(math.ceil(q * len(ordered))) - 1)])
    return out


# --------------------------------------------------------------------------------------------- liquidation
LIQ_THRESHOLDS = (0.02, 0.05, 0.10, 0.20)


def _distances(liq: pa.Table, side: str) -> np.ndarray:
    """distance_down/up as a positive fraction of the index; no liquidation price within range -> +inf."""
    d = np.abs(_f64(liq, f"distance_{side}"))
    d[np.isnan(d)] = np.inf
    return d


def cross_rows(liq: pa.Table) -> dict:
    """The per-(account, underlying) cross rows of a liquidation-price table, as NumPy: ``account_id``,
    ``names`` and ``code`` (the underlying, ``_groups``), ``down`` and ``up`` (``_distances``). SPEC §4 also
    gives isolated positions their own price (``isolated`` true); they are a different question (one position,
    not the account) and are left out of account-level figures. Masked in NumPy, not filtered as a table: a
    table filter copies every column of 8.6M rows (0.4 s at 1M accounts), once per figure.

    The last table's arrays are kept while it lives (a job's summary and report ask three times, 0.6 s each
    at 1M accounts); read-only, as every caller shares them."""
    table, arrays = _last_cross
    if table() is liq:
        return arrays
    rows = ~liq.column("isolated").to_numpy()
    names, code = _groups(liq, "underlying", rows)
    arrays = {"account_id": liq.column("account_id").to_numpy()[rows], "names": tuple(names), "code": code,
              "down": _distances(liq, "down")[rows], "up": _distances(liq, "up")[rows]}
    for values in arrays.values():
        if isinstance(values, np.ndarray):
            values.flags.writeable = False
    _last_cross[:] = weakref.ref(liq), arrays
    weakref.finalize(liq, _forget_cross)  # the arrays go with the table
    return arrays


def _forget_cross() -> None:
    """A table's finaliser: drop the kept arrays if they are its own (its weak reference is dead by now), not
    those of a later table kept since."""
    if _last_cross[0]() is None:
        _last_cross[:] = [lambda: None, None]


_last_cross = [lambda: None, None]  # (weak reference to the table, its cross_rows)


def nearest_liquidation(liq: pa.Table) -> pa.Table:
    """Per account: the smallest adverse move (either side, any underlying) that liquidates it, and where.

    Columns: account_id, distance (fraction of the index; inf if none in range), underlying, side.
    """
    cross = cross_rows(liq)
    down, up, accounts, code = cross["down"], cross["up"], cross["account_id"], cross["code"]
    if np.any(accounts[1:] < accounts[:-1]):  # a liquidation table is sorted by account; anything else: sort
        order = np.argsort(accounts, kind="stable")
        down, up, accounts, code = down[order], up[order], accounts[order], code[order]
    nearest = np.minimum(down, up)
    # Per account run, the first row holding the run's least distance.
    starts = _run_starts(accounts)
    run = np.cumsum(starts) - 1
    least = np.minimum.reduceat(nearest, np.flatnonzero(starts)) if len(nearest) else nearest
    at_least = np.flatnonzero(nearest == least[run])
    take = at_least[_run_starts(run[at_least])]
    names = np.array(cross["names"], dtype=object)
    return pa.table({"account_id": accounts[take], "distance": nearest[take],
                     "underlying": pa.array(names[code[take]], pa.string()),
                     "side": np.where(down[take] <= up[take], "down", "up")})


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Flags the rows where a run of equal values begins."""
    return np.concatenate([[True], values[1:] != values[:-1]])[:len(values)]


def liquidation_by_underlying(liq: pa.Table, thresholds=LIQ_THRESHOLDS) -> list[dict]:
    """Per underlying: accounts exposed, accounts liquidated by a move of at most each threshold down and up,
    median distances. Sorted by accounts exposed, most first."""
    cross = cross_rows(liq)
    names, code = cross["names"], cross["code"]
    order, starts = _segments(code, len(names))
    rows = []
    for k, name in enumerate(names):
        seg = order[starts[k]:starts[k + 1]]
        d, u = cross["down"][seg], cross["up"][seg]
        row = {"underlying": name, "accounts": int(len(d)), "liquidatable_now": int(((d == 0) | (u == 0)).sum())}
        for t in thresholds:
            row[f"down_{t:g}"] = int(np.count_nonzero(d <= t))
            row[f"up_{t:g}"] = int(np.count_nonzero(u <= t))
        # Medians over the accounts with a price on that side: a net long has none above, and counting
        # its inf would make every median inf.
        for side, values in (("down", d), ("up", u)):
            finite = values[np.isfinite(values)]
            mid = (len(finite) - 1) // 2
            row[f"median_distance_{side}"] = float(np.partition(finite, mid)[mid]) if len(finite) else None
        rows.append(row)
    rows.sort(key=lambda r: (-r["accounts"], r["underlying"]))
    return rows


def liquidation_curves(liq: pa.Table, underlyings, moves: np.ndarray) -> dict:
    """``{(underlying, side): accounts liquidated}`` if that underlying alone moves by each of ``moves``
    (fractions) in direction ``side`` (down, up), for each of ``underlyings``."""
    cross = cross_rows(liq)
    order, starts = _segments(cross["code"], len(cross["names"]))
    where = {name: k for k, name in enumerate(cross["names"])}
    curves = {}
    for name in underlyings:
        k = where.get(name)
        seg = order[starts[k]:starts[k + 1]] if k is not None else order[:0]
        for side in ("down", "up"):
            curves[name, side] = np.searchsorted(np.sort(cross[side][seg]), moves, side="right")
    return curves


def liquidation_summary(liq: pa.Table) -> dict:
    nearest = nearest_liquidation(liq)
    d = np.sort(nearest.column("distance").to_numpy())
    return {"liquidation": {
        "rows": liq.num_rows,
        "accounts_with_exposure": nearest.num_rows,
        "accounts_within": {f"{t:g}": int(np.searchsorted(d, t, side="right")) for t in LIQ_THRESHOLDS},
        "by_underlying": liquidation_by_underlying(liq),
    }}


# --------------------------------------------------------------------------------------------- stress
def scenario_labels(scenarios: pa.Table) -> dict[int, str]:
    """A short description of each scenario: ``BTC -15% vol +10pt`` (several underlyings joined by ``, ``)."""
    ids = scenarios.column("scenario_id").to_pylist()
    und = _strings(scenarios, "underlying")
    price, vol, weight = (_f64(scenarios, c) for c in ("price_shock", "vol_shock", "weight"))
    parts: dict[int, list[str]] = {}
    w: dict[int, float] = {}
    for k, sid in enumerate(ids):
        text = f"{und[k]} {price[k] * 100:+.4g}%"
        if np.isfinite(vol[k]) and vol[k] != 0:
            text += f" vol {vol[k] * 100:+.3g}pt"  # vol shocks are absolute: 0.10 = 10 vol points
        parts.setdefault(sid, []).append(text)
        if np.isfinite(weight[k]) and weight[k] != 1:
            w[sid] = weight[k]
    return {sid: ", ".join(p) + (f" (weight {w[sid]:g})" if sid in w else "") for sid, p in parts.items()}


def stress_summary(stress_accounts: pa.Table, stress_scenarios: pa.Table) -> dict:
    out = {"scenarios": stress_scenarios.num_rows}
    if stress_scenarios.num_rows:
        losses = _f64(stress_scenarios, "total_loss")
        worst = int(np.nanargmax(losses))
        out["worst_scenario"] = stress_scenarios.column("scenario_id")[worst].as_py()
        out["worst_scenario_loss_usd"] = float(losses[worst])
        for key, col in (("liquidatable", "accounts_liquidatable"), ("bankrupt", "accounts_bankrupt"),
                         ("bad_debt", "bad_debt")):
            out[f"worst_scenario_{key}"] = stress_scenarios.column(col)[worst].as_py()
    worst_loss = stress_accounts.column("worst_loss")
    out["accounts_with_loss"] = int(pc.sum(pc.greater(worst_loss, 0.0)).as_py() or 0)
    # Each account's own worst scenario: an upper bound on any single scenario's loss, not a venue loss.
    out["sum_account_worst_loss_usd"] = _sum(stress_accounts, "worst_loss")
    out["accounts_by_status_after"] = status_counts(stress_accounts.column("status_after"))
    return {"stress": out}


def portfolio_summary(cross: pa.Table, portfolio: pa.Table) -> dict:
    return {"portfolio_margin": {
        "initial_margin": _sum(portfolio, "initial_margin"),
        "maintenance_margin": _sum(portfolio, "maintenance_margin"),
        "cross_initial_margin": _sum(cross, "initial_margin"),
        "cross_maintenance_margin": _sum(cross, "maintenance_margin"),
        "accounts_by_status": status_counts(portfolio.column("status")),
    }}


# --------------------------------------------------------------------------------------------- exposures
def exposure_by_underlying(exposures: pa.Table, top: int = 10) -> list[dict]:
    """Per underlying: accounts, long/short/net/gross delta in USD, delta, gamma and vega sums, and the share
    of the gross held by its ``top`` largest accounts (how concentrated the underlying is in a few hands).
    Sorted by gross, largest first."""
    if exposures.num_rows == 0:
        return []
    names, code = _groups(exposures, "underlying")
    delta = np.nan_to_num(_f64(exposures, "delta_usd"))
    # Sums per underlying counted in one pass each (delta in underlying units, gamma and vega as the exposures
    # give them), not gathered per underlying.
    extra = {c: np.bincount(code, weights=np.nan_to_num(_f64(exposures, c)), minlength=len(names))
             for c in ("delta", "gamma", "gamma_usd", "vega")}
    order, starts = _segments(code, len(names))
    rows = []
    for k, name in enumerate(names):
        seg = order[starts[k]:starts[k + 1]]
        d = delta[seg]
        size = np.abs(d)
        gross = float(size.sum())
        # The top largest sizes, summed largest first: a partition, not a sort of every row.
        largest = np.sort(size if len(size) <= top else np.partition(size, len(size) - top)[-top:])[::-1]
        row = {"underlying": name, "accounts": int(len(seg)), "long_usd": float(d[d > 0].sum()),
               "short_usd": float(d[d < 0].sum()), "net_usd": float(d.sum()), "gross_usd": gross,
               f"top{top}_share": float(largest.sum() / gross) if gross > 0 else 0.0}
        row.update({c: float(sums[k]) for c, sums in extra.items()})
        rows.append(row)
    rows.sort(key=lambda r: (-r["gross_usd"], r["underlying"]))
    return rows


def exposure_summary(exposures: pa.Table) -> dict:
    rows = exposure_by_underlying(exposures)
    net = np.array([abs(r["net_usd"]) for r in rows])
    # SPEC §5: concentration = max_u |delta_usd_u| / sum_u |delta_usd_u|, here over the venue's net deltas.
    concentration = float(net.max() / net.sum()) if len(net) and net.sum() > 0 else 0.0
    return {"exposures": {"rows": exposures.num_rows, "net_delta_usd": float(sum(r["net_usd"] for r in rows)),
                          "gross_delta_usd": float(sum(r["gross_usd"] for r in rows)),
                          "concentration": concentration, "by_underlying": rows}}


# --------------------------------------------------------------------------------------------- cascade
def cascade_prices(rounds: pa.Table) -> dict[str, np.ndarray]:
    """Price per round of each underlying (its ``price_<underlying>`` column in a cascade's rounds table)."""
    return {c.removeprefix("price_"): _f64(rounds, c) for c in rounds.column_names if c.startswith("price_")}


def cascade_summary(rounds: pa.Table, accounts: pa.Table, shock: dict) -> dict:
    # Round 0 is the shock itself (SPEC §6), so liquidation rounds are the rows after it.
    return {"cascade": {
        "shock": dict(shock),
        "rounds": max(rounds.num_rows - 1, 0),
        "accounts_liquidated": int(_sum(rounds, "accounts_liquidated")),
        "notional_closed_usd": _sum(rounds, "notional_closed"),
        "bad_debt_usd": _sum(rounds, "bad_debt"),
        "insurance_fund_left_usd": float(rounds.column("insurance_fund_left")[-1].as_py()),
        "accounts_liquidated_in_accounts_table": accounts.num_rows - accounts.column("round_liquidated").null_count,
        "account_loss_usd": _sum(accounts, "loss"),
    }}


def contagion_summary(summary_table: pa.Table) -> dict:
    """A contagion result's venue totals (its one-row summary table) as a flat dict."""
    return {"contagion": summary_table.to_pylist()[0]}


# --------------------------------------------------------------------------------------------- text
def usd(x: float) -> str:
    """``$1.23m``-style USD figure for people."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    for unit, scale in (("bn", 1e9), ("m", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"${x / scale:,.2f}{unit}".replace("$-", "-$")
    return f"${x:,.2f}".replace("$-", "-$")


def format_summary(summary: dict, accounts: pa.Table) -> str:
    t = summary["totals_usd"]
    lines = [f"fastrisk {summary['fastrisk_version']} - {summary['accounts']:,} accounts, "
             f"{summary['rows']['positions']:,} positions, as of {summary['as_of']}", "",
             "accounts by status:"]
    for name, count in summary["accounts_by_status"].items():
        share = count / max(summary["accounts"], 1)
        lines.append(f"  {name:<13} {count:>12,}  {share:7.2%}")
    lines += ["", "venue totals (cross margin):",
              f"  equity              {usd(t['equity']):>16}",
              f"  collateral          {usd(t['collateral']):>16}",
              f"  initial margin      {usd(t['initial_margin']):>16}",
              f"  maintenance margin  {usd(t['maintenance_margin']):>16}",
              f"  gross notional      {usd(t['gross_notional']):>16}",
              f"  negative equity     {usd(t['negative_equity']):>16}  (insurance-fund exposure if closed now)",
              f"  isolated equity     {usd(t['isolated_equity']):>16}  "
              f"({summary['isolated_positions_liquidatable']:,} isolated positions liquidatable)",
              "", "riskiest accounts:",
              f"  {'account_id':>12} {'status':<13} {'equity':>14} {'maint. margin':>14} {'margin ratio':>12} "
              f"{'leverage':>9}"]
    for row in riskiest(accounts).to_pylist():
        lines.append(f"  {row['account_id']:>12} {row['status']:<13} {usd(row['equity']):>14} "
                     f"{usd(row['maintenance_margin']):>14} {row['margin_ratio']:>12.3g} {row['leverage']:>9.3g}")
    lines += _format_steps(summary)
    timings = summary.get("timings_s") or {}
    if timings:
        lines += ["", "timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())]
    return "\n".join(lines)


def _format_steps(summary: dict) -> list[str]:
    lines = []
    if "liquidation" in summary:
        within = summary["liquidation"]["accounts_within"]
        lines += ["", "liquidation distance (accounts liquidated by a move of one underlying of at most):",
                  "  " + ", ".join(f"{float(k):.0%}: {v:,}" for k, v in within.items())]
    if "stress" in summary and "worst_scenario" in summary["stress"]:
        s = summary["stress"]
        lines += ["", f"stress: {s['scenarios']:,} scenarios; the worst, #{s['worst_scenario']} "
                      f"{s.get('worst_scenario_label', '')}, loses {usd(s['worst_scenario_loss_usd'])}"]
    if "exposures" in summary:
        e = summary["exposures"]
        lines += ["", f"exposures: net delta {usd(e['net_delta_usd'])}, gross {usd(e['gross_delta_usd'])}, "
                      f"concentration {e['concentration']:.2f}"]
    if "cascade" in summary:
        c = summary["cascade"]
        shock = ", ".join(f"{u} {v:+.1%}" for u, v in c["shock"].items())
        lines += ["", f"cascade after {shock}: {c['rounds']} rounds, {c['accounts_liquidated']:,} accounts "
                      f"liquidated, {usd(c['notional_closed_usd'])} closed, bad debt {usd(c['bad_debt_usd'])}"]
    return lines


def moved_underlyings(prices: dict[str, np.ndarray], index: dict[str, float], shocked=(),
                      limit: int = 6) -> list[str]:
    """The underlyings worth showing in a cascade's path: the shocked ones, then those the forced flow moved
    most (by more than 1 bp), at most ``limit``; a dozen flat lines tell a reader nothing."""
    shocked = set(shocked)
    move = {u: float(np.max(np.abs(p / index.get(u, p[0]) - 1))) if len(p) else 0.0 for u, p in prices.items()}
    ranked = sorted((u for u in prices if u in shocked or move[u] > 1e-4),
                    key=lambda u: (u not in shocked, -move[u], u))
    return ranked[:limit]
