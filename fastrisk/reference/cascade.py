"""The oracle for SPEC §6 (cascade and contagion): plain loops over every account, every round.

No screen: each round re-values every live bucket from scratch at the round's prices (the reference's
market view moved by every underlying's factor) and closes out the liquidatable ones, with the same
conventions as ``fastrisk.cascade`` / ``fastrisk.contagion`` (``docs/liquidation.md``).
"""

from __future__ import annotations

import math

import pyarrow as pa

from .account import _MarketView, _rows, _sorted_positions, _value_position
from .liquidation import bucket_excess, moved_view

__all__ = ["cascade", "contagion"]


def _accounts(book):
    by_account = {}
    for p in _sorted_positions(book):
        by_account.setdefault(p["account_id"], ([], []))[0].append(p)
    for b in _rows(book.balances):
        by_account.setdefault(b["account_id"], ([], []))[1].append(b)
    return by_account


def _equity(bucket, view, rate, option_margin):
    g, mm = bucket_excess(bucket, view, rate, option_margin)
    return g + mm, mm


def _notional(positions, view, rate, option_margin):
    return sum(_value_position(p, view, rate, option_margin)["notional_usd"] for p in positions)


def _flow(positions, view, rate, option_margin):
    """Signed USD notional per underlying of closing these positions (+ = longs closed; options by delta)."""
    flow = {}
    for p in positions:
        if p["quantity"] == 0:
            continue
        v = _value_position(p, view, rate, option_margin)
        inst = view.instruments[p["instrument_id"]]
        u = inst["underlying"]
        if v["is_option"]:
            signed = v["delta"] * view.index_price[u] * v["settle_price"]
        else:
            signed = math.copysign(v["notional_usd"], p["quantity"])
        flow[u] = flow.get(u, 0.0) + signed
    return flow


def cascade(market, book, shock, impact="sqrt", insurance_fund=0.0, liquidation_fee=0.005, max_rounds=50, k=1.0,
            *, rate=0.0, option_margin=(0.15, 0.10, 0.075)):
    """SPEC §6 cascade, every bucket every round. Returns ``(rounds, accounts)`` as lists of dicts: rounds
    with round, accounts_liquidated, isolated_liquidated, notional_closed, fees, bad_debt,
    insurance_fund_left, shortfall, prices ({u: index price}); accounts with account_id, round_liquidated,
    equity_before, equity_at_liquidation, fee_paid, bad_debt, isolated_liquidated, equity_after, loss."""
    base = _MarketView(market)
    und = {r["underlying"]: r for r in _rows(market.underlyings)}
    mult = {u: 1.0 + shock.get(u, 0.0) for u in base.index_price}
    accounts = _accounts(book)
    state = {}
    for a, (positions, balances) in accounts.items():
        cross = [p for p in positions if p.get("isolated_margin") is None]
        iso = [p for p in positions if p.get("isolated_margin") is not None]
        before = _equity(("cross", cross, balances), base, rate, option_margin)[0]
        before += sum(_equity(("isolated", p), base, rate, option_margin)[0] for p in iso)
        state[a] = dict(cross=cross, balances=balances, iso=iso, live=True, iso_live=[True] * len(iso),
                        iso_left=[0.0] * len(iso), round=None, eq_at=None, fee=0.0, bad=0.0, n_iso=0, left=0.0,
                        before=before)
    fund = insurance_fund
    rounds = [dict(round=0, accounts_liquidated=0, isolated_liquidated=0, notional_closed=0.0, fees=0.0,
                   bad_debt=0.0, insurance_fund_left=fund, shortfall=0.0,
                   prices={u: base.index_price[u] * mult[u] for u in mult})]
    for rnd in range(1, max_rounds + 1):
        view = moved_view(base, mult, rate)
        n_acc = n_iso = 0
        notional = fees = bad = 0.0
        flow = {}
        for a in sorted(state):
            s = state[a]
            closed = []
            if s["live"] and any(p["quantity"] != 0 for p in s["cross"]):
                eq, mm = _equity(("cross", s["cross"], s["balances"]), view, rate, option_margin)
                if mm > 0 and eq <= mm:
                    n_acc += 1
                    size = _notional(s["cross"], view, rate, option_margin)
                    fee = min(liquidation_fee * size, max(eq, 0.0))
                    s.update(live=False, round=rnd, eq_at=eq, left=max(eq - fee, 0.0))
                    s["fee"] += fee
                    s["bad"] += max(-eq, 0.0)
                    notional += size
                    fees += fee
                    bad += max(-eq, 0.0)
                    closed += s["cross"]
            for j, p in enumerate(s["iso"]):
                if not s["iso_live"][j]:
                    continue
                eq, mm = _equity(("isolated", p), view, rate, option_margin)
                if mm > 0 and eq <= mm:
                    n_iso += 1
                    size = _notional([p], view, rate, option_margin)
                    fee = min(liquidation_fee * size, max(eq, 0.0))
                    s["iso_live"][j] = False
                    s["iso_left"][j] = max(eq - fee, 0.0)
                    s["fee"] += fee
                    s["bad"] += max(-eq, 0.0)
                    s["n_iso"] += 1
                    notional += size
                    fees += fee
                    bad += max(-eq, 0.0)
                    closed.append(p)
            for u, f in _flow(closed, view, rate, option_margin).items():
                flow[u] = flow.get(u, 0.0) + f
        if n_acc == 0 and n_iso == 0:
            break
        fund += fees
        drawn = min(bad, fund)
        fund -= drawn
        for u, f in flow.items():
            r = und[u]
            if impact == "linear" and r.get("depth_usd") is not None:
                ret = -0.01 * f / r["depth_usd"]
            elif impact == "sqrt" and r.get("adv_usd") is not None and r.get("daily_vol") is not None:
                ret = -math.copysign(1.0, f) * k * r["daily_vol"] * math.sqrt(abs(f) / r["adv_usd"]) if f else 0.0
            else:
                ret = 0.0
            mult[u] *= 1.0 + max(ret, -0.99)
        rounds.append(dict(round=rnd, accounts_liquidated=n_acc, isolated_liquidated=n_iso, notional_closed=notional,
                           fees=fees, bad_debt=bad, insurance_fund_left=fund, shortfall=bad - drawn,
                           prices={u: base.index_price[u] * mult[u] for u in mult}))
    view = moved_view(base, mult, rate)
    out = []
    for a in sorted(state):
        s = state[a]
        after = s["left"] if not s["live"] else _equity(("cross", s["cross"], s["balances"]), view, rate,
                                                        option_margin)[0]
        for j, p in enumerate(s["iso"]):
            after += s["iso_left"][j] if not s["iso_live"][j] else _equity(("isolated", p), view, rate,
                                                                             option_margin)[0]
        out.append(dict(account_id=a, round_liquidated=s["round"], equity_before=s["before"],
                        equity_at_liquidation=s["eq_at"], fee_paid=s["fee"], bad_debt=s["bad"],
                        isolated_liquidated=s["n_iso"], equity_after=after, loss=s["before"] - after))
    return rounds, out


def contagion(market, book, shock, *, rate=0.0, option_margin=(0.15, 0.10, 0.075)):
    """SPEC §6 contagion, one account at a time: list of dicts with account_id, n_positions,
    liquidated_cross, positions_lost_cross, positions_lost_isolated, notional_lost_cross,
    notional_lost_isolated, contagion_positions, contagion_notional, efficiency_positions,
    efficiency_notional (see ``fastrisk.contagion``)."""
    base = _MarketView(market)
    view = moved_view(base, {u: 1.0 + shock.get(u, 0.0) for u in base.index_price}, rate)
    out = []
    for a, (positions, balances) in sorted(_accounts(book).items()):
        cross = [p for p in positions if p.get("isolated_margin") is None and p["quantity"] != 0]
        if not cross:
            continue
        eq0, _ = _equity(("cross", cross, balances), base, rate, option_margin)
        eq1, mm1 = _equity(("cross", cross, balances), view, rate, option_margin)
        coll0 = _equity(("cross", [], balances), base, rate, option_margin)[0]
        coll1 = _equity(("cross", [], balances), view, rate, option_margin)[0]
        v0 = [_value_position(p, base, rate, option_margin) for p in cross]
        v1 = [_value_position(p, view, rate, option_margin) for p in cross]
        value = lambda v: v["value_usd"] if v["is_option"] else v["upnl_usd"]
        im = [v["initial_margin"] for v in v0]
        total_im = sum(im)
        share = [x / total_im if total_im > 0 else 1.0 / len(cross) for x in im]
        lost_iso = []
        for j in range(len(cross)):
            # This position alone, with its share of today's equity: share * (equity today + collateral's
            # change) + its own change of value.
            eq = share[j] * (eq0 + (coll1 - coll0)) + (value(v1[j]) - value(v0[j]))
            mm = v1[j]["maintenance_margin"]
            lost_iso.append(mm > 0 and eq <= mm)
        notional = [v["notional_usd"] for v in v1]
        liquidated = mm1 > 0 and eq1 <= mm1
        lost_cross = [liquidated] * len(cross)
        out.append(dict(
            account_id=a, n_positions=len(cross), liquidated_cross=liquidated,
            positions_lost_cross=sum(lost_cross), positions_lost_isolated=sum(lost_iso),
            notional_lost_cross=sum(n for n, l in zip(notional, lost_cross) if l),
            notional_lost_isolated=sum(n for n, l in zip(notional, lost_iso) if l),
            contagion_positions=sum(c and not i for c, i in zip(lost_cross, lost_iso)),
            contagion_notional=sum(n for n, c, i in zip(notional, lost_cross, lost_iso) if c and not i),
            efficiency_positions=sum(i and not c for c, i in zip(lost_cross, lost_iso)),
            efficiency_notional=sum(n for n, c, i in zip(notional, lost_cross, lost_iso) if i and not c)))
    return out
