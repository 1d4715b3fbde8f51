"""report.html: self-contained (no network), every section present with its plots, sections following the
tables present; and the aggregations behind it, on hand-made tables."""

from __future__ import annotations

import base64
import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import fastrisk as fr
from fastrisk import report
from fastrisk import run as R
from fastrisk import summary as S

from standins import StandInEngine

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
ALL_IDS = ["venue", "margin-ratio", "riskiest", "liquidation", "stress", "portfolio", "exposures", "cascade",
           "contagion", "run"]
PLOTTED = {"venue", "margin-ratio", "liquidation", "stress", "exposures", "cascade"}


class Page(HTMLParser):
    """The parts of a page the tests look at: sections (with their images), links, every src/href."""

    def __init__(self, html: str):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.urls: list[tuple[str, str, str]] = []
        self.anchors: list[str] = []
        self.ids: set[str] = set()
        self.tables = 0
        self._section = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section] = []
        for key in ("src", "href", "action", "data", "poster"):
            if key in a:
                self.urls.append((tag, key, a[key]))
        if tag == "img" and self._section:
            self.sections[self._section].append(a["src"])
        if tag == "a":
            self.anchors.append(a.get("href", ""))
        if tag == "table":
            self.tables += 1
        if tag in ("script", "link", "iframe"):
            self.urls.append((tag, "tag", ""))  # none of these belong in the report

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    market, book = fr.generate.exchange(600, seed=5)
    out = tmp_path_factory.mktemp("report") / "out"
    options = R.Options(shock={"BTC": -0.2, "ETH": -0.1}, portfolio_margin=True)
    result = R.run(market, book, out, options, engine=StandInEngine())
    return market, book, out, result


def _assert_self_contained(page: Page) -> None:
    for tag, key, url in page.urls:
        assert tag not in ("script", "link", "iframe"), f"<{tag}> in the report"
        if tag == "img":
            assert url.startswith("data:image/png;base64,"), url[:40]
            assert base64.b64decode(url.split(",", 1)[1]).startswith(PNG)
        else:  # links are in-page only
            assert url.startswith("#") and url[1:] in page.ids, (tag, key, url)


def test_report_has_every_section_with_its_plots_and_needs_no_network(full_run):
    market, book, out, result = full_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "url(" not in html
    page = Page(html)
    _assert_self_contained(page)
    assert list(page.sections) == ALL_IDS
    for sid in ALL_IDS:
        assert (len(page.sections[sid]) >= 1) == (sid in PLOTTED), sid
    assert page.anchors == [f"#{sid}" for sid in ALL_IDS]  # the table of contents
    assert len(html.encode()) < 1_500_000


def test_sections_follow_the_tables_present(full_run):
    market, book, out, result = full_run
    core = {k: result.tables[k] for k in ("account_risk", "position_risk")}
    page = Page(report.render(result.summary, core, market))
    assert list(page.sections) == ["venue", "margin-ratio", "riskiest", "run"]
    _assert_self_contained(page)
    # The riskiest accounts gain a nearest-liquidation column once liquidation prices exist.
    with_liq = dict(core, liquidation_prices=result.tables["liquidation_prices"])
    html = report.render(result.summary, with_liq, market, [report.riskiest_section])
    assert "nearest liquidation" in html and "nearest liquidation" not in report.render(
        result.summary, core, market, [report.riskiest_section])


def test_riskiest_accounts_show_their_largest_positions(full_run):
    market, book, out, result = full_run
    section = report.riskiest_section(report.Page(result.summary, result.tables, market), n=5, per_account=2)
    accounts = S.riskiest(result.tables["account_risk"], 5).column("account_id").to_pylist()
    positions = result.tables["position_risk"].to_pylist()
    symbols = dict(zip(market.instruments.column("instrument_id").to_pylist(),
                       market.instruments.column("symbol").to_pylist()))
    for account in accounts:
        assert f"<td class=\"\">{account}</td>" in section.html
        mine = sorted((p for p in positions if p["account_id"] == account and p["quantity"] != 0),
                      key=lambda p: -p["notional_usd"])
        for p in mine[:2]:
            assert f"{symbols[p['instrument_id']]} {'long' if p['quantity'] > 0 else 'short'}" in section.html
        if len(mine) > 2:  # only the largest two
            third = mine[2]
            assert S.usd(third["notional_usd"]) not in section.html or third["notional_usd"] == mine[1]["notional_usd"]


def test_cascade_section_shows_every_round_of_a_real_cascade(full_run):
    market, book, out, result = full_run
    cascade = fr.cascade(market, book, {"BTC": -0.2})
    btc = market.underlyings.filter(pc.equal(market.underlyings["underlying"], "BTC"))["index_price"][0].as_py()
    assert S.cascade_prices(cascade.rounds)["BTC"][0] == pytest.approx(btc * 0.8)  # round 0: the shock
    summary = dict(result.summary, **S.cascade_summary(cascade.rounds, cascade.accounts, {"BTC": -0.2}))
    tables = {"cascade_rounds": cascade.rounds, "cascade_accounts": cascade.accounts}
    html = report.cascade_section(report.Page(summary, tables, market)).html
    assert "<img" in html and "BTC price" in html
    n = cascade.rounds.num_rows
    listed = n if n <= report.CASCADE_ROWS else report.CASCADE_ROWS + 1  # first and last rounds, "…" between
    assert html[html.index("<tbody>"):].count("<tr>") == listed


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_a_headless_browser(full_run, tmp_path):
    market, book, out, result = full_run
    shot = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
           (out / "report.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    from PIL import Image  # matplotlib depends on Pillow

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1280)
    # Not a blank page: the dark header band on top, and plots (many grey levels) further down.
    assert img[:40].mean() < 90 and len(np.unique(img[200:].astype(int))) > 64


# --------------------------------------------------------------------------------------------- aggregations
def test_liquidation_by_underlying_hand_computed():
    liq = pa.table({"account_id": [1, 1, 2, 3, 4],
                    "underlying": ["BTC", "ETH", "BTC", "BTC", "ETH"], "isolated": [False] * 5,
                    "distance_down": [0.04, None, 0.0, 0.30, 0.5],
                    "distance_up": [None, 0.15, 0.0, None, -0.02]})  # sign ignored: distances are sizes
    rows = {r["underlying"]: r for r in S.liquidation_by_underlying(liq)}
    btc, eth = rows["BTC"], rows["ETH"]
    assert (btc["accounts"], btc["liquidatable_now"], btc["down_0.05"], btc["down_0.2"], btc["up_0.2"]) == (
        3, 1, 2, 2, 1)
    assert btc["median_distance_down"] == 0.04   # of 0, 0.04, 0.30
    assert btc["median_distance_up"] == 0.0      # only account 2 has a price above
    assert (eth["accounts"], eth["up_0.02"], eth["up_0.1"], eth["median_distance_down"]) == (2, 1, 1, 0.5)
    near = S.nearest_liquidation(liq).to_pylist()
    assert [(r["account_id"], r["distance"], r["underlying"]) for r in near] == [
        (1, 0.04, "BTC"), (2, 0.0, "BTC"), (3, 0.30, "BTC"), (4, 0.02, "ETH")]
    assert near[3]["side"] == "up"
    assert S.liquidation_summary(liq)["liquidation"]["accounts_within"] == {
        "0.02": 2, "0.05": 3, "0.1": 3, "0.2": 3}
    # Isolated rows stay out of account-level figures.
    marked = liq.set_column(2, "isolated", pa.array([False, False, False, True, False]))
    assert S.nearest_liquidation(marked).column("account_id").to_pylist() == [1, 2, 4]


def test_exposure_by_underlying_hand_computed():
    deltas = [100.0, -40.0, 30.0, -5.0, 1.0] + [1.0] * 10
    exp = pa.table({"account_id": list(range(15)), "underlying": ["BTC"] * 4 + ["ETH"] * 11,
                    "delta": [d / 10 for d in deltas], "delta_usd": deltas, "gamma": [0.0] * 15,
                    "gamma_usd": [2.0] * 15, "vega": [0.0] * 15})
    rows = {r["underlying"]: r for r in S.exposure_by_underlying(exp)}
    btc, eth = rows["BTC"], rows["ETH"]
    assert (btc["long_usd"], btc["short_usd"], btc["net_usd"], btc["gross_usd"]) == (130.0, -45.0, 85.0, 175.0)
    assert btc["top10_share"] == 1.0 and eth["top10_share"] == 10 / 11
    assert (btc["delta"], btc["gamma_usd"], eth["gamma_usd"]) == (8.5, 8.0, 22.0)  # sums per underlying
    assert S.exposure_summary(exp)["exposures"]["concentration"] == 85 / (85 + 11)


def test_scenario_labels_and_margin_ratio_quantiles():
    scen = pa.table({"scenario_id": pa.array([0, 1, 2, 2], pa.int32()), "underlying": ["BTC", "BTC", "BTC", "ETH"],
                     "price_shock": [-0.15, 0.30, -0.1, -0.2], "vol_shock": [0.1, 0.0, 0.0, 0.0],
                     "weight": [1.0, 0.35, 1.0, 1.0]})
    assert S.scenario_labels(scen) == {0: "BTC -15% vol +10pt", 1: "BTC +30% (weight 0.35)", 2: "BTC -10%, ETH -20%"}
    accounts = pa.table({"maintenance_margin": [0.0, 1.0, 1.0, 1.0, 1.0],
                         "margin_ratio": [0.0, 0.1, 0.5, 0.9, math.inf]})
    q = S.margin_ratio_quantiles(accounts)
    assert (q["accounts_with_margin"], q["infinite"], q["p50"], q["p90"]) == (4, 1, 0.5, math.inf)


def test_usd_formatting():
    assert [S.usd(x) for x in (1234.5, -2.5e6, 3e9, 12.0, math.inf, None)] == [
        "$1.23k", "-$2.50m", "$3.00bn", "$12.00", "inf", "-"]


def test_degenerate_venues_render_without_warnings(tmp_path):
    import warnings

    t = fr.generate.exchange_tables(200, seed=1)
    market = fr.Market(t["assets"], t["underlyings"], t["instruments"], t["tiers"], as_of=t["as_of"])
    books = {"balances only": fr.Book(t["positions"].slice(0, 0), t["balances"]),
             "one position": fr.Book(t["positions"].slice(0, 1), t["balances"].slice(0, 0))}
    for name, book in books.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an empty histogram or legend would warn
            result = R.run(market, book, tmp_path / name.replace(" ", "_"),
                           R.Options(shock={"BTC": -0.5}, portfolio_margin=True), engine=StandInEngine())
        page = Page(result.report.read_text(encoding="utf-8"))
        _assert_self_contained(page)
        assert list(page.sections) == ALL_IDS, name


def test_cross_rows_are_kept_for_the_latest_table_while_it_lives():
    # summary.cross_rows keeps the arrays of the last table asked for, while that table lives: a table collected
    # earlier must not drop a later one's, and the arrays go with their own table.
    import gc

    market, book = fr.generate.exchange(200, seed=1)
    first, second = fr.liquidation_prices(market, book), fr.liquidation_prices(market, book)
    S.cross_rows(first)
    kept = S.cross_rows(second)
    del first
    gc.collect()
    assert S.cross_rows(second) is kept
    assert not kept["down"].flags.writeable
    del second
    gc.collect()
    assert S._last_cross[1] is None
