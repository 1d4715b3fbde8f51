"""The oracle for SPEC §5: stress tests and portfolio margin, by building each shocked market by hand.

For every scenario a new market is written out explicitly, table by table (index prices, futures marks,
the prices of the assets that follow a moved underlying, option vols, and given option marks moved by the
model's change), and :func:`fastrisk.reference.account.account_risk` / ``position_risk`` are run on it. Loss
= today's cross equity minus the scenario's (USD). Nothing is shared with the kernels but the SPEC.
"""

from __future__ import annotations

import math

import pyarrow as pa

from fastrisk.codes import STATUS_NAMES

from .account import ACCOUNT_SCHEMA, account_risk, black76, position_risk, year_fraction

__all__ = ["shocked_market", "stress", "portfolio_account_risk", "scenario_moves"]

VOL_FLOOR = 1e-4  # SPEC §5: sigma' = max(sigma + shock, 1e-4)
LIQUIDATABLE, BANKRUPT = STATUS_NAMES.index("liquidatable"), STATUS_NAMES.index("bankrupt")


class _Market:
    """Just what the reference reads of a market: its four tables and ``as_of``."""

    def __init__(self, assets, underlyings, instruments, tiers, as_of):
        self.assets, self.underlyings, self.instruments, self.tiers, self.as_of = (
            assets, underlyings, instruments, tiers, as_of)


def scenario_moves(scenarios):
    """``[(scenario_id, weight, {underlying: (price_shock, vol_shock)})]`` sorted by scenario_id, from the rows
    of a scenarios table (vol_shock and weight default to 0 and 1 when the columns are absent)."""
    by_id = {}
    for row in scenarios.to_pylist():
        sid = row["scenario_id"]
        weight = row.get("weight")
        entry = by_id.setdefault(sid, [1.0 if weight is None else weight, {}])
        vol = row.get("vol_shock")
        entry[1][row["underlying"]] = (row["price_shock"], 0.0 if vol is None else vol)
    return [(sid, w, moves) for sid, (w, moves) in sorted(by_id.items())]


def shocked_market(market, moves, rate=0.0):
    """A copy of ``market`` with every underlying in ``moves`` ({name: (price_shock, vol_shock)}) moved by hand.

    Index price x (1 + shock); assets that follow it x (1 + shock); futures marks x (1 + shock); options
    on it: implied vol + vol_shock (floored at 1e-4), and a given mark moved by the Black-76 change
    (model at the moved forward and vol minus model today), so that only the model's change counts.
    """
    index = {r["underlying"]: r["index_price"] for r in market.underlyings.to_pylist()}

    def factor(u):
        return 1.0 + moves[u][0] if u in moves else 1.0

    assets = market.assets.to_pylist()
    for a in assets:
        a["price"] = a["price"] * factor(a.get("underlying"))
    underlyings = market.underlyings.to_pylist()
    for u in underlyings:
        u["index_price"] = u["index_price"] * factor(u["underlying"])
    instruments = market.instruments.to_pylist()
    for ins in instruments:
        u = ins["underlying"]
        if u not in moves:
            continue
        m, vol_shock = 1.0 + moves[u][0], moves[u][1]
        if ins["kind"] != "option":
            ins["mark_price"] = ins["mark_price"] * m
            continue
        sigma = ins["implied_vol"]
        shocked_sigma = max(sigma + vol_shock, VOL_FLOOR)
        if ins.get("mark_price") is not None:
            T = year_fraction(ins["expiry"], market.as_of)
            is_call = ins["option_type"] == "call"
            change = (black76(index[u] * m, ins["strike"], T, shocked_sigma, is_call, rate)[0]
                      - black76(index[u], ins["strike"], T, sigma, is_call, rate)[0])
            ins["mark_price"] = ins["mark_price"] + change
        ins["implied_vol"] = shocked_sigma
    return _Market(pa.Table.from_pylist(assets, schema=market.assets.schema),
                   pa.Table.from_pylist(underlyings, schema=market.underlyings.schema),
                   pa.Table.from_pylist(instruments, schema=market.instruments.schema), market.tiers, market.as_of)


def _label(moves):
    """The scenario's description, as ``fastrisk.scenarios.Scenarios.descriptions`` writes it."""
    if len(moves) > 3:
        return f"{len(moves)} underlyings"
    parts = []
    for u, (price_shock, vol_shock) in moves.items():
        label = f"{u} {100 * price_shock:+.4g}%"
        if vol_shock != 0:
            label += f" vol {100 * vol_shock:+.4g}"
        parts.append(label)
    return "; ".join(parts) if parts else "no move"


def stress(market, book, scenarios, *, loss_matrix=False, margin_call_ratio=0.8, rate=0.0,
           option_margin=(0.15, 0.10, 0.075)):
    """SPEC §5 stress, scenario by scenario on explicitly shocked markets.

    Returns an object with ``accounts``, ``scenarios`` and ``loss_matrix`` (a list of rows, one per account,
    or None) as :class:`fastrisk.stress.StressResult` documents them.
    """
    from types import SimpleNamespace

    kw = dict(margin_call_ratio=margin_call_ratio, rate=rate, option_margin=option_margin)
    base = account_risk(market, book, **kw).to_pylist()
    ids = [r["account_id"] for r in base]
    underlying_order = [r["underlying"] for r in market.underlyings.to_pylist()]
    worst = [dict(loss=0.0, scenario=None, equity=r["equity"], mm=r["maintenance_margin"], status=r["status"])
             for r in base]
    matrix = [[] for _ in base]
    rows = []
    for sid, weight, moves in scenario_moves(scenarios):
        shocked = shocked_market(market, moves, rate)
        after = account_risk(shocked, book, **kw).to_pylist()
        positions = position_risk(shocked, book, rate=rate, option_margin=option_margin).to_pylist()
        total = dict(total_loss=0.0, net_loss=0.0, accounts_losing=0, accounts_liquidatable=0, accounts_bankrupt=0,
                     newly_liquidatable=0, bad_debt=0.0, isolated_liquidatable=0, isolated_bad_debt=0.0)
        for a, (b, r) in enumerate(zip(base, after)):
            loss = b["equity"] - r["equity"]
            matrix[a].append(loss)
            if weight * loss > worst[a]["loss"]:  # strictly larger: ties keep the earlier scenario
                worst[a] = dict(loss=weight * loss, scenario=sid, equity=r["equity"], mm=r["maintenance_margin"],
                                status=r["status"])
            status = STATUS_NAMES.index(r["status"])
            was = STATUS_NAMES.index(b["status"])
            total["total_loss"] += max(loss, 0.0)
            total["net_loss"] += loss
            total["accounts_losing"] += loss > 0
            total["accounts_liquidatable"] += status == LIQUIDATABLE
            total["accounts_bankrupt"] += status == BANKRUPT
            total["newly_liquidatable"] += status >= LIQUIDATABLE and was < LIQUIDATABLE
            total["bad_debt"] += max(-r["equity"], 0.0)
            total["isolated_liquidatable"] += r["n_isolated_liquidatable"]
        for p in positions:
            if p["isolated"]:
                total["isolated_bad_debt"] += max(-p["isolated_equity"], 0.0)
        moves = {u: moves[u] for u in underlying_order if u in moves}
        rows.append(dict(scenario_id=sid, description=_label(moves), weight=weight, **total))

    status_type = pa.dictionary(pa.int8(), pa.string())

    def statuses(names):
        return pa.DictionaryArray.from_arrays(pa.array([STATUS_NAMES.index(s) for s in names], pa.int8()),
                                              pa.array(list(STATUS_NAMES))).cast(status_type)

    accounts = pa.table({
        "account_id": pa.array(ids, pa.int64()),
        "equity": pa.array([r["equity"] for r in base], pa.float64()),
        "maintenance_margin": pa.array([r["maintenance_margin"] for r in base], pa.float64()),
        "status": statuses([r["status"] for r in base]),
        "worst_loss": pa.array([w["loss"] for w in worst], pa.float64()),
        "worst_scenario": pa.array([w["scenario"] for w in worst], pa.int32()),
        "equity_after": pa.array([w["equity"] for w in worst], pa.float64()),
        "maintenance_margin_after": pa.array([w["mm"] for w in worst], pa.float64()),
        "status_after": statuses([w["status"] for w in worst]),
    })
    counts = ("accounts_losing", "accounts_liquidatable", "accounts_bankrupt", "newly_liquidatable",
              "isolated_liquidatable")
    columns = {"scenario_id": pa.int32(), "description": pa.string(), "weight": pa.float64(),
               **{name: pa.int64() if name in counts else pa.float64() for name in
                  ("total_loss", "net_loss", *counts[:4], "bad_debt", "isolated_liquidatable", "isolated_bad_debt")}}
    per_scenario = pa.table({name: pa.array([r[name] for r in rows], t) for name, t in columns.items()})
    return SimpleNamespace(accounts=accounts, scenarios=per_scenario, loss_matrix=matrix if loss_matrix else None)


def portfolio_account_risk(market, book, scenarios=None, *, im_factor=1.25, margin_call_ratio=0.8, rate=0.0,
                           option_margin=(0.15, 0.10, 0.075)):
    """SPEC §5 portfolio margin: the ``account_risk`` table with IM and MM from scenario losses.

    Per account and underlying u: loss_u = max over the scenarios naming u of weight x Σ (value today -
    value in the scenario) of the cross positions that move with u (instrument on u, or settle asset
    following u) and the balances in assets following u; MM = Σ_u max(loss_u, 0) plus the standard margin of
    cross positions on underlyings no scenario names; IM = im_factor x Σ_u max(loss_u, 0) plus their standard
    IM. margin_ratio, free_collateral and status follow SPEC §3.
    """
    if scenarios is None:
        from fastrisk.scenarios import span

        scenarios = span(market)
    follows = {r["asset"]: r.get("underlying") for r in market.assets.to_pylist()}
    instruments = {r["instrument_id"]: r for r in market.instruments.to_pylist()}
    kw = dict(rate=rate, option_margin=option_margin)
    base_pos = position_risk(market, book, **kw).to_pylist()
    balances = book.balances.to_pylist()
    prices = {r["asset"]: r for r in market.assets.to_pylist()}

    def collateral(b, asset_rows):
        a = asset_rows[b["asset"]]
        return a["price"] * b["amount"] * (a["collateral_weight"] if b["amount"] > 0 else a["borrow_weight"])

    def moves_with(p, u):
        ins = instruments[p["instrument_id"]]
        return ins["underlying"] == u or follows[ins["settle_asset"]] == u

    moves_list = scenario_moves(scenarios)
    covered = {u for _, _, moves in moves_list for u in moves}
    worst = {}  # (account_id, u) -> max weighted loss
    for sid, weight, moves in moves_list:
        shocked = shocked_market(market, moves, rate)
        pos = position_risk(shocked, book, **kw).to_pylist()
        shocked_assets = {r["asset"]: r for r in shocked.assets.to_pylist()}
        for u in moves:
            loss = {}
            for p0, p1 in zip(base_pos, pos):
                if not p0["isolated"] and moves_with(p0, u):
                    loss[p0["account_id"]] = loss.get(p0["account_id"], 0.0) + p0["value_usd"] - p1["value_usd"]
            for b in balances:
                if follows[b["asset"]] == u:
                    loss[b["account_id"]] = (loss.get(b["account_id"], 0.0) + collateral(b, prices)
                                             - collateral(b, shocked_assets))
            for acc, x in loss.items():
                worst[acc, u] = max(worst.get((acc, u), 0.0), weight * x)
    rows = account_risk(market, book, margin_call_ratio=margin_call_ratio, **kw).to_pylist()
    order = {r["underlying"]: k for k, r in enumerate(market.underlyings.to_pylist())}
    scenario_mm = {}  # Σ_u in the market's order of underlyings
    for (acc, _), x in sorted(worst.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        scenario_mm[acc] = scenario_mm.get(acc, 0.0) + max(x, 0.0)
    std = {}
    for p in base_pos:
        if not p["isolated"] and instruments[p["instrument_id"]]["underlying"] not in covered:
            im, mm = std.get(p["account_id"], (0.0, 0.0))
            std[p["account_id"]] = (im + p["initial_margin"], mm + p["maintenance_margin"])
    for r in rows:
        pm = scenario_mm.get(r["account_id"], 0.0)
        im_std, mm_std = std.get(r["account_id"], (0.0, 0.0))
        mm = pm + mm_std
        im = im_factor * pm + im_std
        equity = r["equity"]
        ratio = 0.0 if mm == 0 else (math.inf if equity <= 0 else mm / equity)
        if equity < 0:
            status = "bankrupt"
        elif mm > 0 and equity <= mm:
            status = "liquidatable"
        elif ratio >= margin_call_ratio:
            status = "margin_call"
        else:
            status = "healthy"
        r.update(initial_margin=im, maintenance_margin=mm, margin_ratio=ratio, free_collateral=equity - im,
                 status=status)
    schema = ACCOUNT_SCHEMA
    columns = {}
    for f in schema:
        if f.name == "status":
            columns[f.name] = pa.DictionaryArray.from_arrays(
                pa.array([STATUS_NAMES.index(r["status"]) for r in rows], pa.int8()), pa.array(list(STATUS_NAMES)))
        else:
            columns[f.name] = pa.array([r[f.name] for r in rows], f.type)
    return pa.table(columns, schema=schema)
