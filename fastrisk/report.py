"""``report.html``: the page a risk officer reads at the end of the day (SPEC §9).

One self-contained file: inline CSS, plots embedded as base64 PNG, in-page links only; it opens offline.
Each section is a function of the run's tables (``Page``) returning a :class:`Section`, or None when the
tables it shows are not there; the run asks each of its steps for its sections, so a section appears exactly
when its step ran. Figures are aggregated in NumPy/pyarrow first (histograms, quantiles, per-underlying
sums; :mod:`fastrisk.summary` does the aggregating), so a plot never holds more than a few hundred points
however large the venue.

matplotlib is an optional dependency (``pip install 'fastrisk[report]'``), imported only while rendering,
and used through its object API on an Agg canvas: no pyplot state, no change to the caller's backend.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from dataclasses import dataclass
from html import escape

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import codes as C
from . import summary as S

# Colours by meaning, used the same way in every plot and table.
STATUS_COLOURS = {"healthy": "#4c9a5b", "margin_call": "#e0a526", "liquidatable": "#d9642b", "bankrupt": "#b3202a"}
LONG, SHORT, NEUTRAL, ACCENT = "#2f7d4f", "#b3202a", "#5b6f8a", "#1f4e79"
SERIES = ("#1f4e79", "#d9642b", "#4c9a5b", "#8e5ea2", "#e0a526", "#3aa6b9", "#7f7f7f", "#b3202a")


def available() -> bool:
    """Whether the report can be drawn (matplotlib is installed and imports)."""
    try:
        import matplotlib  # noqa: F401 - rendering needs it anyway, so the import is not wasted
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Page:
    """What sections read: the run summary, its tables by output name, and the market (for symbols and
    index prices; may be None)."""

    summary: dict
    tables: dict[str, pa.Table]
    market: object = None


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    html: str


# ------------------------------------------------------------------------------------------------- rendering
def render(summary: dict, tables: dict[str, pa.Table], market=None, sections=None, *, progress=None) -> str:
    """The report as one HTML string. ``sections`` default to every section; those whose tables are
    missing are left out. ``progress.advance()`` is called once per section."""
    import matplotlib

    page = Page(summary, tables, market)
    built = []
    with matplotlib.rc_context(_STYLE):
        for build in (ALL_SECTIONS if sections is None else sections):
            section = build(page)
            if section is not None:
                built.append(section)
            if progress is not None:
                progress.advance()
    built.append(run_details_section(page))
    return _document(summary, built)


def write(path, summary: dict, tables: dict[str, pa.Table], market=None, sections=None):
    """Render and write atomically to ``path``."""
    from pathlib import Path

    from .io import atomic_write

    html = render(summary, tables, market, sections)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))


_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.labelsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e4e7eb",
    "grid.linewidth": 0.6, "axes.axisbelow": True, "axes.edgecolor": "#8a94a3", "xtick.color": "#3b4452",
    "ytick.color": "#3b4452", "legend.frameon": False, "legend.fontsize": 8, "figure.facecolor": "white",
}


def _figure(width: float = 10.0, height: float = 3.4, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _img(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _usd_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda x, _: _short_usd(x)))


def _short_usd(x: float) -> str:
    for unit, scale in (("bn", 1e9), ("m", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{'-' if x < 0 else ''}${abs(x) / scale:g}{unit}"
    return f"{'-' if x < 0 else ''}${abs(x):g}"


def _pct_axis(axis, decimals: int = 0) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


# ------------------------------------------------------------------------------------------------- html bits
def _int(x) -> str:
    return "-" if x is None else f"{int(x):,}"


def _pct(x, digits: int = 1) -> str:
    if x is None or not np.isfinite(x):
        return "-" if x is None or np.isnan(x) else "inf"
    return f"{x:.{digits}%}"


def _ratio(x) -> str:
    if x is None or np.isnan(x):
        return "-"
    return "inf" if np.isinf(x) else f"{x:.3g}"


def _table(header, rows, numeric=None, caption: str = "") -> str:
    """An HTML table; ``numeric`` marks right-aligned columns (default: all but the first)."""
    numeric = set(range(1, len(header))) if numeric is None else set(numeric)
    head = "".join(f'<th class="{"num" if k in numeric else ""}">{escape(str(h))}</th>' for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if k in numeric else ""}">{c}</td>' for k, c in enumerate(r))
                   + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tiles(items) -> str:
    """Headline figures: (label, value, note, tone) with tone '' | 'bad' | 'warn'."""
    cells = "".join(f'<div class="tile {tone}"><div class="label">{escape(label)}</div>'
                    f'<div class="value">{escape(value)}</div><div class="note">{escape(note)}</div></div>'
                    for label, value, note, tone in items)
    return f'<div class="tiles">{cells}</div>'


def _status_badge(status: str) -> str:
    return f'<span class="badge" style="background:{STATUS_COLOURS.get(status, NEUTRAL)}">{escape(status)}</span>'


def _p(text: str) -> str:
    return f'<p class="note">{text}</p>'


# ------------------------------------------------------------------------------------------------- sections
def venue_section(page: Page) -> Section | None:
    """Venue totals, accounts by status and insurance-fund exposure (account_risk)."""
    accounts = page.tables.get("account_risk")
    if accounts is None:
        return None
    s = page.summary
    t = s.get("totals_usd") or S.account_summary(accounts)["totals_usd"]
    by_status = s.get("accounts_by_status") or S.status_counts(accounts.column("status"))
    n = max(accounts.num_rows, 1)
    at_risk = by_status.get("liquidatable", 0) + by_status.get("bankrupt", 0)
    n_negative = s.get("accounts_negative_equity", int(pc.sum(pc.less(accounts["equity"], 0.0)).as_py() or 0))
    coverage = t["equity"] / t["maintenance_margin"] if t["maintenance_margin"] > 0 else float("inf")
    tiles = _tiles([
        ("Equity", S.usd(t["equity"]), f"collateral {S.usd(t['collateral'])}", ""),
        ("Initial margin", S.usd(t["initial_margin"]),
         f"free collateral {S.usd(t['equity'] - t['initial_margin'])}", ""),
        ("Maintenance margin", S.usd(t["maintenance_margin"]), f"equity covers it {coverage:.1f}x", ""),
        ("Gross notional", S.usd(t["gross_notional"]), "cross positions", ""),
        ("Insurance-fund exposure", S.usd(-t["negative_equity"]),
         f"negative equity of {n_negative:,} accounts if closed now", "bad" if t["negative_equity"] < 0 else ""),
        ("Liquidatable or bankrupt", f"{at_risk:,}", f"{at_risk / n:.2%} of {accounts.num_rows:,} accounts",
         "bad" if at_risk else ""),
    ])
    # Per status: accounts, equity and maintenance margin (grouped once over the status codes).
    status = accounts.column("status").combine_chunks()
    names = status.dictionary.to_pylist() if pa.types.is_dictionary(status.type) else list(C.STATUS_NAMES)
    codes = (status.indices if pa.types.is_dictionary(status.type)
             else pc.index_in(status, value_set=pa.array(names))).to_numpy(zero_copy_only=False)
    equity, mm = S._f64(accounts, "equity"), S._f64(accounts, "maintenance_margin")
    rows, labels, counts, margins = [], [], [], []
    for name in C.STATUS_NAMES:
        k = names.index(name) if name in names else -1
        mask = codes == k
        count = int(mask.sum())
        rows.append([_status_badge(name), f"{count:,}", _pct(count / n, 2), S.usd(float(equity[mask].sum())),
                     S.usd(float(mm[mask].sum()))])
        labels.append(name.replace("_", " "))
        counts.append(count)
        margins.append(float(mm[mask].sum()))
    fig, (ax1, ax2) = _figure(10, 2.6, 2)
    colours = [STATUS_COLOURS[c] for c in C.STATUS_NAMES]
    y = np.arange(len(labels))[::-1]
    ax1.barh(y, np.maximum(counts, 0.8), color=colours)  # log axis: an empty status still gets a stub
    ax1.set_xscale("log")
    ax1.set_yticks(y, labels)
    ax1.set_xlabel("accounts (log scale)")
    ax1.set_title("Accounts by status")
    for yy, c in zip(y, counts):
        ax1.annotate(f"{c:,}", (max(c, 0.8), yy), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax1.margins(x=0.15)
    ax2.barh(y, margins, color=colours)
    ax2.set_yticks(y, labels)
    _usd_axis(ax2.xaxis)
    ax2.set_xlabel("maintenance margin (USD)")
    ax2.set_title("Maintenance margin by status")
    html = (tiles + _img(fig, "accounts and maintenance margin by status")
            + _table(["status", "accounts", "share", "equity", "maintenance margin"], rows)
            + _p(f"Cross-margin figures in USD. Isolated positions: equity {S.usd(t['isolated_equity'])}, "
                 f"{s.get('isolated_positions_liquidatable', 0):,} liquidatable."))
    return Section("venue", "Venue totals", html)


def margin_ratio_section(page: Page) -> Section | None:
    """Distribution of margin ratios (MM / equity) over accounts carrying margin."""
    accounts = page.tables.get("account_risk")
    if accounts is None:
        return None
    mcr = (page.summary.get("parameters") or {}).get("margin_call_ratio", 0.8)
    mm = S._f64(accounts, "maintenance_margin")
    ratio = S._f64(accounts, "margin_ratio")[mm > 0]
    if not len(ratio):
        return Section("margin-ratio", "Margin ratios", _p("No account carries maintenance margin."))
    top = 1.5
    width = 0.05
    edges = np.arange(0.0, top + width / 2, width)
    counts, _ = np.histogram(np.clip(ratio[np.isfinite(ratio)], 0, top - 1e-12), bins=edges)
    overflow = int((ratio >= top).sum())    # includes inf: negative equity
    fig, ax = _figure(10, 3.0)
    centres = edges[:-1] + width / 2
    colours = [STATUS_COLOURS["healthy"] if c < mcr else STATUS_COLOURS["margin_call"] if c < 1
               else STATUS_COLOURS["liquidatable"] for c in centres]
    ax.bar(centres, np.maximum(counts, 0), width=width * 0.92, color=colours)
    # Everything at or beyond `top` (equity <= 0 gives inf) in one bar, set apart from the regular bins.
    ax.bar([top + 2 * width], [overflow], width=width * 0.92, color=STATUS_COLOURS["bankrupt"])
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)
    ax.axvline(mcr, color="#7a5a00", lw=1, ls="--")
    ax.axvline(1.0, color=STATUS_COLOURS["bankrupt"], lw=1, ls="--")
    ax.annotate(f"margin call {mcr:g}", (mcr, 1), xycoords=("data", "axes fraction"), xytext=(-3, -3),
                textcoords="offset points", ha="right", va="top", fontsize=8)
    ax.annotate("liquidation 1.0", (1.0, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                textcoords="offset points", ha="left", va="top", fontsize=8)
    ticks = list(np.arange(0, top - 0.01, 0.25))
    ax.set_xticks(ticks + [top + 2 * width], [f"{x:g}" for x in ticks] + [f"≥{top:g}\nor inf"])
    ax.set_xlabel("margin ratio = maintenance margin / equity")
    ax.set_ylabel("accounts (log scale)")
    ax.set_title(f"Margin ratio of the {len(ratio):,} accounts with maintenance margin")
    q = S.margin_ratio_quantiles(accounts)
    keys = [k for k in q if k.startswith("p")]
    table = _table(["accounts with margin", *[f"{k[1:]}th pct" for k in keys], "infinite (equity ≤ 0)"],
                   [[f"{q['accounts_with_margin']:,}", *[_ratio(q[k]) for k in keys], f"{q['infinite']:,}"]],
                   numeric=range(1 + len(keys) + 1))
    note = _p(f"{accounts.num_rows - len(ratio):,} accounts carry no maintenance margin (balances only or "
              "long options) and are not shown.")
    return Section("margin-ratio", "Margin ratios", _img(fig, "histogram of margin ratios") + table + note)


def riskiest_section(page: Page, n: int = 15, per_account: int = 3) -> Section | None:
    """The riskiest accounts with their largest positions (account_risk + position_risk)."""
    accounts, positions = page.tables.get("account_risk"), page.tables.get("position_risk")
    if accounts is None or positions is None:
        return None
    worst = S.riskiest(accounts, n)
    ids = worst.column("account_id")
    mine = positions.filter(pc.is_in(positions.column("account_id"), value_set=ids.combine_chunks()))
    order = pc.sort_indices(mine, sort_keys=[("account_id", "ascending"), ("notional_usd", "descending")])
    mine = mine.take(order)
    symbols = _symbols(page.market)
    largest: dict[int, list[str]] = {}
    for row in mine.select(["account_id", "instrument_id", "quantity", "notional_usd", "upnl_usd",
                            "isolated"]).to_pylist():
        items = largest.setdefault(row["account_id"], [])
        if len(items) < per_account and row["quantity"] != 0:
            side = "long" if row["quantity"] > 0 else "short"
            iso = " isolated" if row["isolated"] else ""
            items.append(f"{escape(symbols.get(row['instrument_id'], str(row['instrument_id'])))} {side}{iso} "
                         f"{S.usd(row['notional_usd'])} <span class=\"muted\">(uPnL {S.usd(row['upnl_usd'])})</span>")
    nearest = {}
    liq = page.tables.get("liquidation_prices")
    header = ["account", "status", "equity", "maint. margin", "margin ratio", "leverage"]
    if liq is not None:
        near = S.nearest_liquidation(liq.filter(pc.is_in(liq.column("account_id"), value_set=ids.combine_chunks())))
        nearest = {r["account_id"]: r for r in near.to_pylist()}
        header.append("nearest liquidation")
    header.append(f"largest positions (by notional, up to {per_account})")
    rows = []
    for r in worst.to_pylist():
        row = [str(r["account_id"]), _status_badge(r["status"]), S.usd(r["equity"]), S.usd(r["maintenance_margin"]),
               _ratio(r["margin_ratio"]), _ratio(r["leverage"])]
        if nearest:
            near = nearest.get(r["account_id"])
            if near is None or not np.isfinite(near["distance"]):
                row.append("-")
            elif near["distance"] == 0:
                row.append("now")
            else:
                sign = "−" if near["side"] == "down" else "+"
                row.append(f"{escape(near['underlying'])} {sign}{near['distance']:.1%}")
        row.append("<br>".join(largest.get(r["account_id"], [])) or "-")
        rows.append(row)
    numeric = set(range(2, 6)) | ({6} if nearest else set())
    html = (_table(header, rows, numeric=numeric)
            + _p("Ordered by margin ratio (highest first), then by equity (most negative first): bankrupt accounts "
                 "with the largest hole lead. Nearest liquidation: the smallest move of one underlying that "
                 "makes the account liquidatable."))
    return Section("riskiest", f"Riskiest {len(rows)} accounts", html)


def liquidation_section(page: Page, moves_up_to: float = 0.5, n_lines: int = 6, n_rows: int = 15) -> Section | None:
    """Distance to liquidation per underlying (liquidation_prices)."""
    liq = page.tables.get("liquidation_prices")
    if liq is None:
        return None
    rows = (page.summary.get("liquidation") or {}).get("by_underlying") or S.liquidation_by_underlying(liq)
    if not rows:
        return Section("liquidation", "Distance to liquidation", _p("No account has cross exposure to an underlying."))
    within = (page.summary.get("liquidation") or S.liquidation_summary(liq)["liquidation"])["accounts_within"]
    moves = np.linspace(0, moves_up_to, 101)
    curves = S.liquidation_curves(liq, [r["underlying"] for r in rows[:n_lines]], moves)
    fig, axes = _figure(10, 3.4, 2)
    for ax, side, word in ((axes[0], "down", "fall"), (axes[1], "up", "rise")):
        for k, r in enumerate(rows[:n_lines]):
            curve = curves[r["underlying"], side]
            ax.plot(moves, curve / max(r["accounts"], 1), color=SERIES[k % len(SERIES)], lw=1.6,
                    label=f"{r['underlying']} ({r['accounts']:,})")
        _pct_axis(ax.xaxis)
        _pct_axis(ax.yaxis)
        ax.set_xlim(0, moves_up_to)
        ax.set_ylim(0, None)
        ax.set_xlabel(f"{word} of the underlying alone (% of today's index)")
        ax.set_ylabel("accounts liquidated (% of exposed)")
        ax.set_title(f"Accounts liquidated by a price {word}")
    axes[0].legend(title="underlying (accounts exposed)", loc="upper left", fontsize=7, title_fontsize=7)
    thresholds = S.LIQ_THRESHOLDS
    header = (["underlying", "accounts exposed", "liquidatable now"]
              + [f"≤{t:.0%} down" for t in thresholds] + [f"≤{t:.0%} up" for t in thresholds]
              + ["median distance down*", "median distance up*"])
    body = [[escape(r["underlying"]), _int(r["accounts"]), _int(r["liquidatable_now"]),
             *[_int(r[f"down_{t:g}"]) for t in thresholds], *[_int(r[f"up_{t:g}"]) for t in thresholds],
             _pct(r["median_distance_down"]), _pct(r["median_distance_up"])] for r in rows[:n_rows]]
    tiles = _tiles([(f"Liquidated by a {float(k):.0%} move", f"{v:,}", "accounts, one underlying at a time",
                     "warn" if v else "") for k, v in within.items()])
    note = _p("Each underlying moved alone, everything else unchanged (SPEC §4); distances are fractions of "
              "today's index. An account liquidatable now is at distance 0. *Median over the accounts that have "
              "a liquidation price on that side (a net long has none above)."
              + (f" Showing the {n_rows} underlyings with most accounts of {len(rows)}." if len(rows) > n_rows else ""))
    return Section("liquidation", "Distance to liquidation", tiles + _img(fig, "accounts liquidated by price moves")
                   + _table(header, body) + note)


def stress_section(page: Page, n_worst: int = 15) -> Section | None:
    """Loss per stress scenario (stress_scenarios, stress_accounts, scenarios)."""
    scen = page.tables.get("stress_scenarios")
    if scen is None:
        return None
    if scen.num_rows == 0:
        return Section("stress", "Stress losses by scenario", _p("No scenarios."))
    labels = S.scenario_labels(page.tables["scenarios"]) if "scenarios" in page.tables else {}
    if not labels and "description" in scen.column_names:  # the stress result's own labels
        labels = dict(zip(scen.column("scenario_id").to_pylist(), scen.column("description").to_pylist()))
    loss = S._f64(scen, "total_loss")
    order = np.argsort(-loss, kind="stable")[:n_worst]
    ids = scen.column("scenario_id").to_pylist()
    extra = [("accounts_liquidatable", "liquidatable after"), ("accounts_bankrupt", "bankrupt after"),
             ("bad_debt", "bad debt")]
    fig, ax = _figure(10, 0.6 + 0.24 * max(len(order), 1))
    y = np.arange(len(order))[::-1]
    ax.barh(y, loss[order], color=[SHORT if v > 0 else LONG for v in loss[order]])
    ax.set_yticks(y, [f"#{ids[k]} {labels.get(ids[k], '')}" for k in order], fontsize=8)
    _usd_axis(ax.xaxis)
    ax.set_xlabel("venue loss in the scenario (USD)")
    ax.set_title(f"The {len(order)} worst of {scen.num_rows:,} scenarios")
    s = (page.summary.get("stress") or {})
    tiles = []
    if "worst_scenario_loss_usd" in s:
        tiles.append(("Worst scenario loss", S.usd(s["worst_scenario_loss_usd"]),
                      f"#{s['worst_scenario']} {labels.get(s['worst_scenario'], '')}", "bad"))
    if "accounts_with_loss" in s:
        tiles.append(("Accounts losing in some scenario", f"{s['accounts_with_loss']:,}",
                      f"sum of each one's worst: {S.usd(s['sum_account_worst_loss_usd'])}", ""))
    after = s.get("accounts_by_status_after")
    if after:
        tiles.append(("Liquidatable or bankrupt after own worst", f"{after['liquidatable'] + after['bankrupt']:,}",
                      f"of which bankrupt {after['bankrupt']:,}", "warn"))
    rows = []
    for k in order:
        row = [f"#{ids[k]}", escape(labels.get(ids[k], "")), S.usd(float(loss[k]))]
        for c, _ in extra:
            v = scen.column(c)[int(k)].as_py()
            row.append(S.usd(v) if c == "bad_debt" else _int(v))
        rows.append(row)
    table = _table(["scenario", "shocks", "loss", *[name for _, name in extra]], rows,
                   numeric=range(2, 3 + len(extra)))
    return Section("stress", "Stress losses by scenario",
                   _tiles(tiles) + _img(fig, "loss per stress scenario") + table
                   + _p("Loss is the fall in venue equity under the scenario; weights as in the scenario table "
                        "(SPAN extreme moves count 35 %). Vol shocks are in vol points."))


def portfolio_section(page: Page) -> Section | None:
    """Cross vs portfolio margin (account_risk_portfolio)."""
    pm, cross = page.tables.get("account_risk_portfolio"), page.tables.get("account_risk")
    if pm is None or cross is None:
        return None
    a, b = S.account_summary(cross), S.account_summary(pm)
    rows = [["initial margin", S.usd(a["totals_usd"]["initial_margin"]), S.usd(b["totals_usd"]["initial_margin"])],
            ["maintenance margin", S.usd(a["totals_usd"]["maintenance_margin"]),
             S.usd(b["totals_usd"]["maintenance_margin"])]]
    rows += [[_status_badge(k), f"{a['accounts_by_status'][k]:,}", f"{b['accounts_by_status'][k]:,}"]
             for k in C.STATUS_NAMES]
    return Section("portfolio", "Portfolio margin vs cross margin",
                   _table(["", "cross margin (tiers)", "portfolio margin (SPAN scenarios)"], rows)
                   + _p("Portfolio margin: maintenance margin is the worst weighted scenario loss per underlying "
                        "(SPEC §5); initial margin a multiple of it."))


def exposure_section(page: Page, n_rows: int = 15) -> Section | None:
    """Delta exposure and concentration per underlying (exposures)."""
    exp = page.tables.get("exposures")
    if exp is None:
        return None
    e = page.summary.get("exposures") or S.exposure_summary(exp)["exposures"]
    rows = e["by_underlying"]
    if not rows:
        return Section("exposures", "Exposure and concentration by underlying", _p("No account has exposure."))
    shown = rows[:n_rows]
    fig, ax = _figure(10, 0.7 + 0.26 * max(len(shown), 1))
    y = np.arange(len(shown))[::-1]
    ax.barh(y, [r["long_usd"] for r in shown], color=LONG, alpha=0.85, label="long")
    ax.barh(y, [r["short_usd"] for r in shown], color=SHORT, alpha=0.85, label="short")
    ax.scatter([r["net_usd"] for r in shown], y, color="black", marker="D", s=14, zorder=3, label="net")
    ax.axvline(0, color="#3b4452", lw=0.8)
    ax.set_yticks(y, [r["underlying"] for r in shown])
    _usd_axis(ax.xaxis)
    ax.set_xlabel("delta exposure (USD): accounts' long and short positions, collateral included")
    ax.set_title(f"Exposure by underlying ({len(shown)} largest by gross)")
    ax.legend(loc="lower right", ncols=3)
    # Greeks in the units a desk quotes: the change of delta_usd for a 1 % move (gamma_usd is d2E/dm2 per
    # 100 % move squared) and USD per vol point (vega is per 1.00 of vol).
    greeks = [("gamma_usd", "gamma (Δdelta per 1% move)", 0.01), ("vega", "vega (per vol point)", 0.01)]
    header = ["underlying", "accounts", "long", "short", "net", "gross", "top-10 accounts' share of gross"]
    header += [title for _, title, _ in greeks]
    body = []
    for r in shown:
        row = [escape(r["underlying"]), _int(r["accounts"]), S.usd(r["long_usd"]), S.usd(r["short_usd"]),
               S.usd(r["net_usd"]), S.usd(r["gross_usd"]), _pct(r["top10_share"])]
        row += [S.usd(r[c] * scale) if r[c] else "-" for c, _, scale in greeks]
        body.append(row)
    tiles = _tiles([("Net delta", S.usd(e["net_delta_usd"]), "all underlyings", ""),
                    ("Gross delta", S.usd(e["gross_delta_usd"]), "sum of |account delta|", ""),
                    ("Concentration", f"{e['concentration']:.2f}",
                     "largest underlying's |net| / sum of |net| (SPEC §5)",
                     "warn" if e["concentration"] > 0.5 else "")])
    return Section("exposures", "Exposure and concentration by underlying",
                   tiles + _img(fig, "delta exposure by underlying") + _table(header, body)
                   + _p("The venue's accounts' exposure (the venue itself is flat: every long has a short "
                        "counterparty). Top-10 share: how much of an underlying's gross exposure sits with its ten "
                        "largest accounts, the ones whose liquidation would move its price."))


CASCADE_LABELLED = 12  # rounds whose bars all carry their account count
CASCADE_ROWS = 18      # rounds listed in full; a longer cascade lists its first and last rounds


def cascade_section(page: Page) -> Section | None:
    """The cascade path: price and liquidated notional per round (cascade_rounds, cascade_accounts)."""
    rounds = page.tables.get("cascade_rounds")
    if rounds is None:
        return None
    index = _index_prices(page.market)
    prices = S.cascade_prices(rounds)
    r = rounds.column("round").to_numpy()
    fig, (ax1, ax2) = _figure(10, 3.2, 2)
    shocked = (page.summary.get("parameters") or {}).get("shock") or {}
    moved = {u: prices[u] for u in S.moved_underlyings(prices, index, shocked)}
    for k, (u, p) in enumerate(moved.items()):
        ax1.plot(r, p / index.get(u, p[0]), marker="o", ms=3, lw=1.6, color=SERIES[k % len(SERIES)], label=u)
    ax1.axhline(1.0, color="#8a94a3", lw=0.8, ls="--")
    _pct_axis(ax1.yaxis)
    ax1.set_xlabel("round (0 = the shock)")
    ax1.set_ylabel("price (% of pre-shock index)")
    ax1.set_title("Price path")
    if moved:
        ax1.legend(loc="best")
    values = S._f64(rounds, "notional_closed")
    ax2.bar(r, values, color=SHORT, width=0.7)
    _usd_axis(ax2.yaxis)
    # Past a dozen rounds the labels would overlap: only the largest rounds are labelled.
    counts = rounds.column("accounts_liquidated").to_pylist()
    labelled = range(len(r)) if len(r) <= CASCADE_LABELLED else np.argsort(-values)[:3]
    for k in labelled:
        ax2.annotate(f"{counts[k]:,}", (r[k], values[k]), xytext=(0, 2), textcoords="offset points",
                     ha="center", fontsize=7)
    ax2.set_xlabel("round")
    ax2.set_ylabel("notional closed (USD)")
    ax2.set_title("Liquidated notional per round (labels: accounts)")
    ax2.set_xticks(r if len(r) <= 20 else r[:: max(1, len(r) // 10)])
    cols = [("accounts_liquidated", "accounts liquidated"), ("notional_closed", "notional closed"),
            ("bad_debt", "bad debt"), ("insurance_fund_left", "insurance fund left")]
    price_names = list(moved)[:4]
    body = []
    n = rounds.num_rows
    shown = range(n) if n <= CASCADE_ROWS else [*range(CASCADE_ROWS - 3), *range(n - 3, n)]
    for k in shown:
        if n > CASCADE_ROWS and k == n - 3:
            body.append(["…", *["…"] * (len(cols) + len(price_names))])
        row = [str(int(r[k]))]
        for c, _ in cols:
            v = rounds.column(c)[k].as_py()
            row.append(_int(v) if c == "accounts_liquidated" else S.usd(v))
        row += [f"{moved[u][k]:,.6g}" for u in price_names]
        body.append(row)
    c = page.summary.get("cascade") or {}
    shock = c.get("shock") or (page.summary.get("parameters") or {}).get("shock") or {}
    tiles = _tiles([
        ("Shock", ", ".join(f"{u} {v:+.1%}" for u, v in shock.items()) or "-", "applied before round 1", ""),
        ("Accounts liquidated", _int(c.get("accounts_liquidated")), f"in {c.get('rounds', n - 1)} rounds",
         "bad" if c.get("accounts_liquidated") else ""),
        ("Notional closed", S.usd(c.get("notional_closed_usd")), "forced flow", ""),
        ("Bad debt", S.usd(c.get("bad_debt_usd")), f"insurance fund left {S.usd(c.get('insurance_fund_left_usd'))}",
         "bad" if c.get("bad_debt_usd") else ""),
    ])
    return Section("cascade", "Liquidation cascade",
                   tiles + _img(fig, "cascade price path and liquidated notional")
                   + _table(["round", *[name for _, name in cols], *[f"{u} price" for u in price_names]], body)
                   + _p("Each round closes every liquidatable account at current marks; the forced flow moves "
                        "prices (SPEC §6) and the next round starts from them."
                        + (f" Rounds {CASCADE_ROWS - 3} to {n - 4} are not listed here; cascade_rounds.parquet "
                           "has every round." if n > CASCADE_ROWS else "")))


def contagion_section(page: Page) -> Section | None:
    """Cross vs isolated counterfactual under the shock (contagion_summary)."""
    table = page.tables.get("contagion_summary")
    if table is None:
        return None
    totals = S.contagion_summary(table)["contagion"]
    rows = [[escape(str(k).replace("_", " ")),
             S.usd(v) if isinstance(v, float) and ("notional" in k or "usd" in k) else
             (f"{v:,}" if isinstance(v, int) else escape(str(v)))] for k, v in totals.items()]
    return Section("contagion", "Contagion: cross vs isolated margin under the shock",
                   _table(["", "value"], rows)
                   + _p("Contagion: positions lost only because cross margin pooled them with a failing one; "
                        "efficiency: positions saved only because it did (SPEC §6)."))


def run_details_section(page: Page) -> Section:
    """Inputs, parameters, timings, outputs and the state of each step (always present)."""
    s = page.summary
    rows = [[escape(k), f"{v:,}"] for k, v in (s.get("rows") or {}).items()]
    params = [[escape(k), escape(", ".join(f"{u} {m:+.1%}" for u, m in v.items()) if isinstance(v, dict) else str(v))]
              for k, v in (s.get("parameters") or {}).items() if v is not None]
    timings = [[escape(k), f"{v:.2f} s"] for k, v in (s.get("timings_s") or {}).items()]
    steps = [[escape(k), escape(v)] for k, v in (s.get("steps") or {}).items()]
    outputs = [[escape(k), f"{v:,}"] for k, v in (s.get("outputs") or {}).items()]
    html = ('<div class="cols">'
            + _table(["input", "rows"], rows, caption="Inputs")
            + _table(["step", "seconds"], timings, caption="Timings")
            + _table(["output", "rows"], outputs, caption="Tables written")
            + '</div><div class="cols">'
            + _table(["step", "state"], steps, numeric=(), caption="Steps")
            + (_table(["parameter", "value"], params, numeric=(), caption="Parameters") if params else "")
            + "</div>")
    return Section("run", "Run details", html)


ALL_SECTIONS = (venue_section, margin_ratio_section, riskiest_section, liquidation_section, stress_section,
                portfolio_section, exposure_section, cascade_section, contagion_section)


def _symbols(market) -> dict[int, str]:
    if market is None:
        return {}
    ins = market.instruments
    return dict(zip(ins.column("instrument_id").to_pylist(), ins.column("symbol").to_pylist()))


def _index_prices(market) -> dict[str, float]:
    if market is None:
        return {}
    u = market.underlyings
    return dict(zip(u.column("underlying").to_pylist(), u.column("index_price").to_pylist()))


# ------------------------------------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2430;margin:0;
background:#f4f6f8;font-size:14px}
main{max-width:1080px;margin:0 auto;padding:20px 24px 48px}
header{background:#1f2d3d;color:#fff;padding:18px 24px}
header .inner{max-width:1080px;margin:0 auto}
header h1{margin:0 0 4px;font-size:22px}
header .meta{color:#c7d0db;font-size:13px}
nav{max-width:1080px;margin:0 auto;padding:8px 24px 0;font-size:13px}
nav a{color:#1f4e79;margin-right:14px;text-decoration:none}
section{background:#fff;border:1px solid #dfe3e8;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px;color:#1f2d3d}
img{max-width:100%;display:block;margin:8px 0}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
caption{text-align:left;font-weight:600;padding:2px 0 4px;color:#3b4452}
th,td{padding:3px 10px;border-bottom:1px solid #eceff2;text-align:left;vertical-align:top}
th{background:#f4f6f8;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(155px,1fr));gap:10px;margin:4px 0 8px}
.tile{border:1px solid #dfe3e8;border-left:4px solid #5b6f8a;border-radius:4px;padding:8px 10px}
.tile.bad{border-left-color:#b3202a}.tile.warn{border-left-color:#e0a526}
.tile .label{font-size:12px;color:#5b6677}.tile .value{font-size:20px;font-weight:650;margin:2px 0}
.tile .note{font-size:11.5px;color:#6b7685}
.badge{color:#fff;border-radius:3px;padding:1px 6px;font-size:11.5px;white-space:nowrap}
.muted{color:#7a8594}
p.note{color:#5b6677;font-size:12.5px;margin:6px 0 0}
.cols{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
code{font-size:12px}
"""


def _document(summary: dict, sections: list[Section]) -> str:
    title = "End-of-day risk report"
    as_of = summary.get("as_of") or "-"
    meta = (f"as of {escape(str(as_of))} · {summary.get('accounts', 0):,} accounts · "
            f"{(summary.get('rows') or {}).get('positions', 0):,} positions · "
            f"source {escape(str(summary.get('source', '')))} · "
            f"fastrisk {escape(str(summary.get('fastrisk_version', '')))} · run at "
            f"{escape(str(summary.get('run_at') or dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')))}")
    nav = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{escape(s.title)}</h2>{s.html}</section>' for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title} - {escape(str(as_of))}</title><style>{_CSS}</style></head><body>"
            f'<header><div class="inner"><h1>{title}</h1><div class="meta">{meta}</div></div></header>'
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")
