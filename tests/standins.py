"""A stand-in engine for the run and report tests (``run(..., engine=...)``, SPEC §10).

``StandInEngine`` answers every name the real ``fastrisk`` package has and replaces ``liquidation_prices``,
``scenarios.span``, ``stress``, ``account_risk(mode="portfolio")``, ``exposures``, ``cascade`` and
``contagion`` with functions whose results have the columns the job reads from the real ones. The figures
are simple linear approximations from ``position_risk`` (delta exposure per account and underlying),
deterministic and internally consistent (a scenario's loss is the sum of its accounts' losses, a cascade
liquidates accounts whose distance to liquidation the price path crosses), which is all the pipeline and
report tests need: they check the plumbing and the aggregation, not the risk formulas (the engine's own
tests do that).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import fastrisk
from fastrisk.codes import STATUS_NAMES


class StandInEngine:
    def __init__(self):
        self.scenarios = SimpleNamespace(span=span)
        self.calls: list[str] = []

    def __getattr__(self, name):  # everything else: the real package
        return getattr(fastrisk, name)

    def account_risk(self, market, book, mode="cross", scenarios=None, **kw):
        self.calls.append(f"account_risk:{mode}")
        cross = fastrisk.account_risk(market, book, **kw)
        if mode == "cross":
            return cross
        pairs = _pairs(market, book)
        mm = np.zeros(cross.num_rows)
        for u, rows in _by_underlying(pairs, scenarios):
            weighted = np.max(rows["loss"] * rows["weight"], axis=1)  # per pair: worst weighted loss
            np.add.at(mm, rows["account"], np.maximum(weighted, 0.0))
        equity = cross.column("equity").to_numpy()
        return _with_margin(cross, 1.25 * mm, mm, equity, kw.get("margin_call_ratio", 0.8))

    def exposures(self, market, book):
        self.calls.append("exposures")
        p = _pairs(market, book)
        return pa.table({"account_id": p["account_id"], "underlying": p["underlying"], "delta": p["delta"],
                         "delta_usd": p["delta_usd"], "gamma": p["gamma"], "gamma_usd": p["gamma"] * p["index"] ** 2,
                         "vega": p["vega"]})

    def stress(self, market, book, scenarios):
        self.calls.append("stress")
        accounts = fastrisk.account_risk(market, book)
        equity = accounts.column("equity").to_numpy()
        mm = accounts.column("maintenance_margin").to_numpy()
        n = len(equity)
        worst, worst_id = np.zeros(n), np.full(n, -1, np.int64)
        equity_after = equity.copy()
        ids, losses, liq_after, bank_after, bad_debt = [], [], [], [], []
        base_liq = int(((mm > 0) & (equity <= mm) & (equity >= 0)).sum())
        base_bank = int((equity < 0).sum())
        for u, rows in _by_underlying(_pairs(market, book), scenarios):
            a = rows["account"]
            for k, sid in enumerate(rows["ids"]):
                loss = rows["loss"][:, k]
                w = rows["weight"][k]
                after = equity[a] - loss
                better = w * loss > worst[a]
                worst[a[better]] = w * loss[better]
                worst_id[a[better]] = sid
                equity_after[a[better]] = after[better]
                ids.append(sid)
                losses.append(float(loss.sum()))
                was_liq = (mm[a] > 0) & (equity[a] <= mm[a]) & (equity[a] >= 0)
                is_liq = (mm[a] > 0) & (after <= mm[a]) & (after >= 0)
                liq_after.append(base_liq - int(was_liq.sum()) + int(is_liq.sum()))
                bank_after.append(base_bank - int((equity[a] < 0).sum()) + int((after < 0).sum()))
                bad_debt.append(float(np.minimum(after, 0).sum() + np.minimum(np.delete(equity, a), 0).sum()))
        ratio = mm / np.maximum(equity_after, 1e-300)
        status = np.where(equity_after < 0, 3, np.where((mm > 0) & (equity_after <= mm), 2,
                                                        np.where((mm > 0) & (ratio >= 0.8), 1, 0)))
        acc = pa.table({"account_id": accounts.column("account_id"), "worst_loss": worst,
                        "worst_scenario": pa.array(worst_id, mask=worst_id < 0).cast(pa.int32()),
                        "equity_after": equity_after,
                        "status_after": pa.DictionaryArray.from_arrays(pa.array(status, pa.int8()),
                                                                       pa.array(STATUS_NAMES))})
        sc = pa.table({"scenario_id": pa.array(ids, pa.int32()), "total_loss": losses,
                       "accounts_liquidatable": liq_after, "accounts_bankrupt": bank_after, "bad_debt": bad_debt})
        return SimpleNamespace(accounts=acc, scenarios=sc.take(pc.sort_indices(sc, [("scenario_id", "ascending")])))

    def liquidation_prices(self, market, book):
        self.calls.append("liquidation_prices")
        p = _pairs(market, book)
        cushion = p["equity"] - p["mm"]
        d = p["delta_usd"]
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(cushion <= 0, 0.0, cushion / np.abs(d))
        down = np.where((d > 0) | (cushion <= 0), dist, np.nan)
        up = np.where((d < 0) | (cushion <= 0), dist, np.nan)
        down[down >= 1] = np.nan  # a fall of 100 % or more: no price
        idx = p["index"]
        return pa.table({"account_id": p["account_id"], "underlying": p["underlying"],
                         "isolated": np.zeros(len(d), bool), "instrument_id": pa.nulls(len(d), pa.int32()),
                         "liq_price_down": pa.array(idx * (1 - down), from_pandas=True),
                         "liq_price_up": pa.array(idx * (1 + up), from_pandas=True),
                         "distance_down": pa.array(down, from_pandas=True),
                         "distance_up": pa.array(up, from_pandas=True)})

    def cascade(self, market, book, shock, impact="linear", insurance_fund=1e6, max_rounds=50):
        self.calls.append("cascade")
        p = _pairs(market, book)
        accounts = fastrisk.account_risk(market, book)
        ids = accounts.column("account_id").to_numpy()
        names = market.underlying_names.to_pylist()
        index = market.underlyings.column("index_price").to_numpy()
        depth = (market.underlyings.column("depth_usd").to_numpy() if "depth_usd" in market.underlyings.column_names
                 else np.full(len(names), 1e6))
        u_code = np.array([names.index(u) for u in p["underlying"]], np.int64)
        mult = np.ones(len(names))
        for u, move in shock.items():
            mult[names.index(u)] *= 1 + move
        liquidated_in = np.full(len(ids), -1)
        loss = np.zeros(len(ids))
        fund = float(insurance_fund)
        rows = [dict(round=0, mult=mult.copy(), accounts=0, notional=0.0, bad_debt=0.0, fund=fund)]
        for r in range(1, max_rounds + 1):
            pnl = np.zeros(len(ids))
            np.add.at(pnl, p["account"], p["delta_usd"] * (mult[u_code] - 1))
            eq = accounts.column("equity").to_numpy() + pnl
            mm = accounts.column("maintenance_margin").to_numpy()
            hit = (liquidated_in < 0) & (mm > 0) & (eq <= mm)
            if not hit.any():
                break
            liquidated_in[hit] = r
            loss[hit] = np.maximum(-eq[hit], 0)
            bad = float(loss[hit].sum())
            fund = max(fund - bad, 0.0)
            closing = hit[p["account"]]
            flow = np.zeros(len(names))
            np.add.at(flow, u_code[closing], -p["delta_usd"][closing])  # closing a long sells
            mult = mult * np.maximum(1 + 0.01 * flow / depth, 0.01)
            rows.append(dict(round=r, mult=mult.copy(), accounts=int(hit.sum()),
                             notional=float(np.abs(p["delta_usd"][closing]).sum()), bad_debt=bad, fund=fund))
        # The columns of liquidation_cascade.CascadeResult.rounds that the job reads, in its order.
        cols = {"round": pa.array([x["round"] for x in rows], pa.int32()),
                "accounts_liquidated": [x["accounts"] for x in rows],
                "notional_closed": [x["notional"] for x in rows],
                "bad_debt": [x["bad_debt"] for x in rows], "insurance_fund_left": [x["fund"] for x in rows]}
        cols.update({f"price_{u}": [float(index[k] * x["mult"][k]) for x in rows] for k, u in enumerate(names)})
        rounds = pa.table(cols)
        acc = pa.table({"account_id": ids, "round_liquidated": pa.array(liquidated_in, mask=liquidated_in < 0),
                        "loss": loss})
        return SimpleNamespace(rounds=rounds, accounts=acc)

    def contagion(self, market, book, shock):
        self.calls.append("contagion")
        result = self.cascade(market, book, shock, max_rounds=1)
        lost = pc.is_valid(result.accounts.column("round_liquidated")).to_numpy(zero_copy_only=False)
        n_pos = fastrisk.account_risk(market, book).column("n_positions").to_numpy()
        iso = np.floor(n_pos * 0.5).astype(np.int64) * lost  # half of them would have survived alone
        accounts = pa.table({"account_id": result.accounts.column("account_id"),
                             "positions_lost_cross": n_pos * lost, "positions_lost_isolated": iso})
        summary = pa.table({"accounts_liquidated_cross": [int(lost.sum())],
                            "accounts_liquidated_isolated": [int((iso > 0).sum())],
                            "contagion_positions": [int((n_pos * lost - iso).sum())], "efficiency_positions": [0]})
        return SimpleNamespace(accounts=accounts, summary=summary)


def span(underlyings: pa.Table, extreme_multiple: float = 2.0) -> pa.Table:
    """The 16 SPAN scenarios per underlying (SPEC §5)."""
    names = underlyings.column("underlying").to_pylist()
    ranges = (underlyings.column("price_range").to_pylist() if "price_range" in underlyings.column_names
              else [0.15] * len(names))
    rows = []
    sid = 0
    for u, pr in zip(names, ranges):
        pr = 0.15 if pr is None else pr
        for frac in (0, 1 / 3, -1 / 3, 2 / 3, -2 / 3, 1, -1):
            for vol in (0.1, -0.1):
                rows.append((sid, u, frac * pr, vol, 1.0))
                sid += 1
        for sign in (1, -1):
            rows.append((sid, u, sign * extreme_multiple * pr, 0.0, 0.35))
            sid += 1
    cols = list(zip(*rows))
    return pa.table({"scenario_id": pa.array(cols[0], pa.int32()), "underlying": pa.array(cols[1]),
                     "price_shock": pa.array(cols[2], pa.float64()), "vol_shock": pa.array(cols[3], pa.float64()),
                     "weight": pa.array(cols[4], pa.float64())})


def _pairs(market, book) -> dict:
    """Cross delta exposure per (account, underlying), with the account's equity and MM."""
    pos = fastrisk.position_risk(market, book)
    pos = pos.filter(pc.invert(pos.column("isolated")))
    ins = market.instruments.select(["instrument_id", "underlying"])
    pos = pos.join(ins, "instrument_id")
    index = dict(zip(market.underlyings.column("underlying").to_pylist(),
                     market.underlyings.column("index_price").to_pylist()))
    pos = pos.append_column("index", pa.array([index[u] for u in pos.column("underlying").to_pylist()]))
    pos = pos.append_column("delta_usd", pc.multiply(pos.column("delta"), pos.column("index")))
    g = pos.group_by(["account_id", "underlying"]).aggregate(
        [("delta", "sum"), ("delta_usd", "sum"), ("gamma", "sum"), ("vega", "sum"), ("index", "max")])
    g = g.take(pc.sort_indices(g, [("account_id", "ascending"), ("underlying", "ascending")]))
    accounts = fastrisk.account_risk(market, book)
    ids = accounts.column("account_id").to_numpy()
    a = np.searchsorted(ids, g.column("account_id").to_numpy())
    return {"account_id": g.column("account_id").to_numpy(), "account": a,
            "underlying": g.column("underlying").to_pylist(), "delta": g.column("delta_sum").to_numpy(),
            "delta_usd": g.column("delta_usd_sum").to_numpy(), "gamma": g.column("gamma_sum").to_numpy(),
            "vega": g.column("vega_sum").to_numpy(), "index": g.column("index_max").to_numpy(),
            "equity": accounts.column("equity").to_numpy()[a],
            "mm": accounts.column("maintenance_margin").to_numpy()[a]}


def _by_underlying(pairs: dict, scenarios: pa.Table):
    """Per underlying: its pairs' accounts and the (pairs x scenarios) loss matrix of a linear revaluation."""
    und = np.array(pairs["underlying"], dtype=object)
    s_und = np.array(scenarios.column("underlying").to_pylist(), dtype=object)
    for u in sorted(set(s_und)):
        mine = und == u
        if not mine.any():
            continue
        sel = s_und == u
        shocks = scenarios.column("price_shock").to_numpy()[sel]
        yield u, {"account": pairs["account"][mine], "ids": scenarios.column("scenario_id").to_numpy()[sel],
                  "weight": scenarios.column("weight").to_numpy()[sel],
                  "loss": -np.outer(pairs["delta_usd"][mine], shocks)}


def _with_margin(cross: pa.Table, im, mm, equity, mcr) -> pa.Table:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mm == 0, 0.0, np.where(equity <= 0, np.inf, mm / equity))
    status = np.where(equity < 0, 3, np.where((mm > 0) & (equity <= mm), 2, np.where(ratio >= mcr, 1, 0)))
    t = cross
    for name, values in (("initial_margin", im), ("maintenance_margin", mm), ("margin_ratio", ratio),
                         ("free_collateral", equity - im)):
        t = t.set_column(t.column_names.index(name), name, pa.array(values))
    return t.set_column(t.column_names.index("status"), "status",
                        pa.DictionaryArray.from_arrays(pa.array(status, pa.int8()),
                                                       pa.array(STATUS_NAMES)))
