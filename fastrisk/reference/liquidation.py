"""The oracle for SPEC §4 (liquidation prices): brute force on the reference's own account valuation.

Nothing clever: a market moved by a factor is a copy of the reference's market view with the underlying's
index, every mark on it, every option re-valued at the moved forward (a given mark moving by the model's
change) and every asset following it multiplied by m; the account is re-valued from scratch at each trial
with ``reference.account``'s functions. The nearest crossing in each direction is found by walking a
geometric grid (``STEP`` = 3 % per step, finer than the kernel's 3.7 % grid for non-linear buckets) outward
from m = 1 over [1e-4, 1e4] and bisecting the first cell that becomes liquidatable down to 1e-12 relative.
``moved_market`` builds the same moved market as a real ``fastrisk.Market``, for tests that check a reported
price with ``account_risk``.
"""

from __future__ import annotations

import copy

import pyarrow as pa

from .account import _MarketView, _rows, _sorted_positions, _value_position, black76, year_fraction

__all__ = ["liquidation_prices", "moved_market", "bucket_excess", "moved_view"]

M_MIN, M_MAX = 1e-4, 1e4
STEP = 1.03
BISECT_REL = 1e-12


def moved_view(view, moves, rate=0.0):
    """A copy of a ``_MarketView`` with each underlying ``u`` of ``moves`` ({u: m}) moved by the factor m.
    (Only what moves is copied: the instruments on each underlying are listed once per view.)"""
    if not hasattr(view, "on_underlying"):
        view.on_underlying = {}
        for iid, inst in view.instruments.items():
            view.on_underlying.setdefault(inst["underlying"], []).append(iid)
    v = copy.copy(view)
    v.index_price = {u: p * moves.get(u, 1.0) for u, p in view.index_price.items()}
    v.assets = {}
    for name, a in view.assets.items():
        m = moves.get(a.get("underlying"), 1.0)
        v.assets[name] = dict(a, price=a["price"] * m) if m != 1.0 else a
    v.instruments = dict(view.instruments)
    for u, m in moves.items():
        for iid in view.on_underlying.get(u, ()) if m != 1.0 else ():
            inst = view.instruments[iid]
            if inst["kind"] != "option":
                v.instruments[iid] = dict(inst, mark_price=inst["mark_price"] * m)
            elif inst.get("mark_price") is not None:
                # A given mark moves by the model's change (SPEC §2): model(moved) - model(today).
                T = year_fraction(inst["expiry"], view.as_of)
                args = (inst["strike"], T, inst["implied_vol"], inst["option_type"] == "call", rate)
                change = black76(view.index_price[u] * m, *args)[0] - black76(view.index_price[u], *args)[0]
                v.instruments[iid] = dict(inst, mark_price=inst["mark_price"] + change)
            # model-priced options need nothing: the moved index is their forward
    return v


def moved_market(market, moves, rate=0.0):
    """A ``fastrisk.Market`` with each underlying of ``moves`` ({u: m}) moved by its factor (see module)."""
    import fastrisk as fr

    view = moved_view(_MarketView(market), moves, rate)
    und = market.underlyings
    und = und.set_column(und.schema.get_field_index("index_price"), "index_price",
                         pa.array([view.index_price[u] for u in und.column("underlying").to_pylist()], pa.float64()))
    assets = market.assets
    assets = assets.set_column(assets.schema.get_field_index("price"), "price",
                               pa.array([view.assets[a]["price"] for a in assets.column("asset").to_pylist()],
                                        pa.float64()))
    inst = market.instruments
    marks = [view.instruments[i]["mark_price"] for i in inst.column("instrument_id").to_pylist()]
    inst = inst.set_column(inst.schema.get_field_index("mark_price"), "mark_price", pa.array(marks, pa.float64()))
    return fr.Market(assets=assets, underlyings=und, instruments=inst, tiers=market.tiers, as_of=market.as_of)


def _cross_excess(positions, balances, view, rate, option_margin):
    """``(equity - MM, MM)`` of a cross bucket (SPEC §3) at the view's prices, in USD."""
    equity = 0.0
    mm = 0.0
    for b in balances:
        a = view.assets[b["asset"]]
        amount = b["amount"]
        equity += a["price"] * amount * (a["collateral_weight"] if amount > 0 else a["borrow_weight"])
    for p in positions:
        v = _value_position(p, view, rate, option_margin)
        equity += v["value_usd"] if v["is_option"] else v["upnl_usd"]
        mm += v["maintenance_margin"]
    return equity - mm, mm


def _isolated_excess(position, view, rate, option_margin):
    """``(equity - MM, MM)`` of an isolated position's own bucket (SPEC §3), in USD."""
    v = _value_position(position, view, rate, option_margin)
    equity = (position["isolated_margin"] + v["value_settle"]) * v["settle_price"]
    return equity - v["maintenance_margin"], v["maintenance_margin"]


def bucket_excess(bucket, view, rate=0.0, option_margin=(0.15, 0.10, 0.075)):
    """``(equity - MM, MM)`` of a bucket: ``("cross", positions, balances)`` or ``("isolated", position)``."""
    if bucket[0] == "cross":
        return _cross_excess(bucket[1], bucket[2], view, rate, option_margin)
    return _isolated_excess(bucket[1], view, rate, option_margin)


def _liquidatable(bucket, view, u, m, rate, option_margin):
    g, mm = bucket_excess(bucket, moved_view(view, {u: m}, rate), rate, option_margin)
    return mm > 0 and g <= 0


def _crossing(bucket, view, u, down, rate, option_margin):
    """The nearest factor below (``down``) or above 1 at which the bucket is liquidatable, or None."""
    near = 1.0
    while True:
        far = max(near / STEP, M_MIN) if down else min(near * STEP, M_MAX)
        if _liquidatable(bucket, view, u, far, rate, option_margin):
            break
        if far in (M_MIN, M_MAX):
            return None
        near = far
    while abs(near - far) > BISECT_REL * far:
        mid = 0.5 * (near + far)
        if _liquidatable(bucket, view, u, mid, rate, option_margin):
            far = mid
        else:
            near = mid
    return far


def _exposures(positions, balances, view):
    """Underlyings a cross bucket moves with, in the order of the underlyings table."""
    order = list(view.index_price)
    found = set()
    for p in positions:
        if p["quantity"] != 0:
            inst = view.instruments[p["instrument_id"]]
            found.add(inst["underlying"])
            follows = view.assets[inst["settle_asset"]].get("underlying")
            if follows is not None:
                found.add(follows)
    for b in balances:
        follows = view.assets[b["asset"]].get("underlying")
        if b["amount"] != 0 and follows is not None:
            found.add(follows)
    return [u for u in order if u in found]


def liquidation_prices(market, book, *, rate=0.0, option_margin=(0.15, 0.10, 0.075)) -> pa.Table:
    """SPEC §4, one bucket at a time (same table as ``fastrisk.liquidation_prices``)."""
    from fastrisk.liquidation import LIQUIDATION_SCHEMA

    view = _MarketView(market)
    names = list(view.index_price)
    by_account = {}
    for p in _sorted_positions(book):
        by_account.setdefault(p["account_id"], ([], []))[0].append(p)
    for b in _rows(book.balances):
        by_account.setdefault(b["account_id"], ([], []))[1].append(b)
    rows = []
    for account in sorted(by_account):
        positions, balances = by_account[account]
        cross = [p for p in positions if p.get("isolated_margin") is None]
        buckets = []
        if any(p["quantity"] != 0 for p in cross):
            buckets += [(("cross", cross, balances), u, None) for u in _exposures(cross, balances, view)]
        buckets += [(("isolated", p), view.instruments[p["instrument_id"]]["underlying"], p["instrument_id"])
                    for p in positions if p.get("isolated_margin") is not None]
        for bucket, u, instrument_id in buckets:
            g, mm = bucket_excess(bucket, view, rate, option_margin)
            if mm <= 0:
                down = up = None
            elif g <= 0:
                down = up = 1.0
            else:
                down = _crossing(bucket, view, u, True, rate, option_margin)
                up = _crossing(bucket, view, u, False, rate, option_margin)
            index = view.index_price[u]
            rows.append({
                "account_id": account, "underlying": names.index(u), "isolated": instrument_id is not None,
                "instrument_id": instrument_id, "index_price": index,
                "liq_price_down": None if down is None else index * down,
                "liq_price_up": None if up is None else index * up,
                "distance_down": None if down is None else 1.0 - down,
                "distance_up": None if up is None else up - 1.0,
            })
    columns = {}
    for f in LIQUIDATION_SCHEMA:
        values = [r[f.name] for r in rows]
        if f.name == "underlying":
            columns[f.name] = pa.DictionaryArray.from_arrays(pa.array(values, pa.int32()), pa.array(names))
        else:
            columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=LIQUIDATION_SCHEMA)
