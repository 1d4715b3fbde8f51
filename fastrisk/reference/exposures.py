"""The oracle for SPEC §5 exposures: each position's USD value written as a function of its underlying's
multiplier m and differentiated by hand, one position at a time.

For a position with q contracts of size c, settle-asset USD price px and value (settle units) V(m):

    linear    V(m) = q*c*(P*m - E)          V'(1) = q*c*P          V''(1) = 0
    inverse   V(m) = q*c*(1/E - 1/(P*m))    V'(1) = q*c/P          V''(1) = -2*q*c/P
    option    V(m) = q*c*value(F*m)         V'(1) = q*c*Delta*F    V''(1) = q*c*Gamma*F^2

USD value = V(m)*px, or V(m)*px*m when the settle asset follows the same underlying (coin-margined), which
adds V(1)*px to the first derivative and 2*V'(1)*px to the second (a coin-margined inverse future:
q*c*px*(m/E - 1/P), whose derivatives q*c*px/E and 0 are written directly, as the sum of the two terms
loses digits when the mark is far below the entry); an isolated position's margin, held in
its settle asset, adds margin*px when that asset follows the underlying. A balance in an asset following the
underlying adds price*amount*weight (its weight as in collateral). delta_usd = dE/dm, delta = delta_usd / S,
gamma_usd = d2E/dm2, gamma = gamma_usd / S^2, vega = Σ q*c*vega*px over options.
"""

from __future__ import annotations

import pyarrow as pa

from .account import _MarketView, _sorted_positions, _value_position, black76, year_fraction

__all__ = ["exposures"]


def exposures(market, book, *, rate=0.0, option_margin=(0.15, 0.10, 0.075)):
    """SPEC §5 exposures: the table of :func:`fastrisk.exposures` (same columns, rows and order)."""
    view = _MarketView(market)
    follows = {a: r.get("underlying") for a, r in view.assets.items()}
    order = {r["underlying"]: k for k, r in enumerate(market.underlyings.to_pylist())}
    per = {}  # (account_id, underlying) -> [delta_usd, gamma_usd, vega]

    def add(account, u, d=0.0, g=0.0, v=0.0):
        e = per.setdefault((account, u), [0.0, 0.0, 0.0])
        e[0] += d
        e[1] += g
        e[2] += v

    for pos in _sorted_positions(book):
        p = _value_position(pos, view, rate, option_margin)
        inst = view.instruments[pos["instrument_id"]]
        u = inst["underlying"]
        qc = pos["quantity"] * inst["contract_size"]
        px = p["settle_price"]
        vega = 0.0
        if inst["kind"] == "linear":
            d1, d2 = qc * inst["mark_price"], 0.0
        elif inst["kind"] == "inverse":
            d1, d2 = qc / inst["mark_price"], -2.0 * qc / inst["mark_price"]
        else:
            F = view.index_price[u]
            T = year_fraction(inst["expiry"], view.as_of)
            _, delta, gamma, vega_unit, _ = black76(F, inst["strike"], T, inst["implied_vol"],
                                                    inst["option_type"] == "call", rate)
            d1, d2, vega = qc * delta * F, qc * gamma * F * F, qc * vega_unit * px
        v = follows[inst["settle_asset"]]
        margin = pos["isolated_margin"] if p["isolated"] else 0.0
        if inst["kind"] == "inverse" and v == u:
            add(pos["account_id"], u, qc * px / pos["entry_price"], 0.0, vega)
            add(pos["account_id"], v, margin * px)
            continue
        add(pos["account_id"], u, d1 * px, d2 * px, vega)
        if v is not None:
            add(pos["account_id"], v, (p["value_settle"] + margin) * px, 2.0 * d1 * px if v == u else 0.0)
    for b in book.balances.to_pylist():
        v = follows[b["asset"]]
        if v is not None:
            a = view.assets[b["asset"]]
            add(b["account_id"], v, a["price"] * b["amount"] * (a["collateral_weight"] if b["amount"] > 0
                                                                 else a["borrow_weight"]))
    keys = sorted(per, key=lambda k: (k[0], order[k[1]]))
    gross, largest = {}, {}
    for acc, u in keys:
        d = abs(per[acc, u][0])
        gross[acc] = gross.get(acc, 0.0) + d
        largest[acc] = max(largest.get(acc, 0.0), d)
    rows = []
    for acc, u in keys:
        d, g, v = per[acc, u]
        S = view.index_price[u]
        rows.append(dict(account_id=acc, underlying=u, delta=d / S, delta_usd=d, gamma=g / (S * S), gamma_usd=g,
                         vega=v, concentration=largest[acc] / gross[acc] if gross[acc] > 0 else None))
    schema = pa.schema([("account_id", pa.int64()), ("underlying", pa.string()), ("delta", pa.float64()),
                        ("delta_usd", pa.float64()), ("gamma", pa.float64()), ("gamma_usd", pa.float64()),
                        ("vega", pa.float64()), ("concentration", pa.float64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    # the underlying as fastrisk.exposures writes it: dictionary-encoded over the market's underlyings
    codes = pa.array([order[u] for u in table.column("underlying").to_pylist()], pa.int32())
    names = pa.array(list(order), pa.string())
    return table.set_column(1, "underlying", pa.DictionaryArray.from_arrays(codes, names))
