"""Small builders for tiny, hand-checkable venues, shared by the test files.

Every builder returns a ``pa.Table`` typed exactly as SPEC §1 lists the columns, so the same tables feed
``fastrisk.Market`` / ``fastrisk.Book`` and, through them, both the reference and the kernels.

The standard tiny venue (``standard_*``) is the one the examples use; its numbers are chosen so that the
arithmetic in the tests' comments is exact or nearly so:

assets       price   collateral_weight  borrow_weight  underlying
  USD            1   1.0                1.0            -
  USDT           1   1.0                1.0            -
  BTC        50000   0.9                1.1            BTC
  ETH         2000   0.8                1.2            ETH

underlyings  index_price
  BTC        50000
  ETH         2000
  XYZ          100      (option underlying, options settle in USD)

instruments (futures)
  1  BTCUSDT-PERP  linear   BTC  settle USDT  c = 0.01      mark 50000  flat imf 0.10 / mmf 0.05
  2  BTCUSD-INV    inverse  BTC  settle BTC   c = 100 USD   mark 50000  flat imf 0.05 / mmf 0.025
  3  ETHUSDT-PERP  linear   ETH  settle USDT  c = 1         mark  2000  schedule "ETH"

tiers "ETH" (amounts by continuity: 0; 10000·(0.025−0.01) = 150; 150 + 50000·(0.05−0.025) = 1400)
  cap     imf    mmf    amount
  10000   0.02   0.01      0
  50000   0.05   0.025   150
  inf     0.10   0.05   1400
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pyarrow as pa

AS_OF = datetime(2024, 1, 1, tzinfo=timezone.utc)
ONE_YEAR = timedelta(days=365)  # exactly T = 1 in years of 365 days

# ------------------------------------------------------------------------------------------------ schemas

ASSETS_SCHEMA = pa.schema([
    ("asset", pa.string()), ("price", pa.float64()), ("collateral_weight", pa.float64()),
    ("borrow_weight", pa.float64()), ("underlying", pa.string()),
])
UNDERLYINGS_SCHEMA = pa.schema([("underlying", pa.string()), ("index_price", pa.float64())])
FUTURES_COLUMNS = [
    ("instrument_id", pa.int32()), ("symbol", pa.string()), ("kind", pa.string()), ("underlying", pa.string()),
    ("settle_asset", pa.string()), ("contract_size", pa.float64()), ("mark_price", pa.float64()),
    ("tier_schedule", pa.string()), ("imf", pa.float64()), ("mmf", pa.float64()),
]
OPTION_COLUMNS = [
    ("strike", pa.float64()), ("expiry", pa.timestamp("us", tz="UTC")), ("option_type", pa.string()),
    ("implied_vol", pa.float64()),
]
TIERS_SCHEMA = pa.schema([
    ("schedule", pa.string()), ("notional_cap", pa.float64()), ("imf", pa.float64()), ("mmf", pa.float64()),
])
POSITIONS_SCHEMA = pa.schema([
    ("account_id", pa.int64()), ("instrument_id", pa.int32()), ("quantity", pa.float64()),
    ("entry_price", pa.float64()), ("isolated_margin", pa.float64()),
])
BALANCES_SCHEMA = pa.schema([("account_id", pa.int64()), ("asset", pa.string()), ("amount", pa.float64())])


def _table(rows, schema):
    """rows: list of dicts (missing keys are null) or of tuples in schema order (short tuples padded)."""
    names = schema.names
    dicts = []
    for r in rows:
        if not isinstance(r, dict):
            r = dict(zip(names, r))
        dicts.append({n: r.get(n) for n in names})
    return pa.Table.from_pylist(dicts, schema=schema)


# ---------------------------------------------------------------------------------------------- builders

def assets(rows):
    """rows: (asset, price, collateral_weight, borrow_weight[, underlying])."""
    return _table(rows, ASSETS_SCHEMA)


def underlyings(rows):
    """rows: (underlying, index_price)."""
    return _table(rows, UNDERLYINGS_SCHEMA)


def instruments(rows, *, option_columns=None):
    """rows: dicts with the SPEC §1 instrument columns. The option columns are present when any row is an
    option (or when ``option_columns=True``), absent otherwise, as a futures-only venue may omit them."""
    if option_columns is None:
        option_columns = any(r.get("kind") == "option" for r in rows)
    schema = pa.schema(FUTURES_COLUMNS + (OPTION_COLUMNS if option_columns else []))
    return _table(rows, schema)


def tiers(rows, *, with_amount=False):
    """rows: (schedule, notional_cap, imf, mmf). ``with_amount`` adds maintenance_amount, derived by the
    continuity rule, so that both input shapes are exercised."""
    table = _table(rows, TIERS_SCHEMA)
    if with_amount:
        amounts, prev = [], {}
        for r in table.to_pylist():
            name = r["schedule"]
            if name not in prev:
                amounts.append(0.0)
            else:
                p_cap, p_mmf, p_amount = prev[name]
                amounts.append(p_amount + p_cap * (r["mmf"] - p_mmf))
            prev[name] = (r["notional_cap"], r["mmf"], amounts[-1])
        table = table.append_column("maintenance_amount", pa.array(amounts, pa.float64()))
    return table


def positions(rows):
    """rows: (account_id, instrument_id, quantity, entry_price[, isolated_margin]) or dicts."""
    return _table(rows, POSITIONS_SCHEMA)


def balances(rows):
    """rows: (account_id, asset, amount)."""
    return _table(rows, BALANCES_SCHEMA)


def linear(instrument_id, symbol, underlying, settle, contract_size, mark, *, schedule=None, imf=None, mmf=None):
    return dict(instrument_id=instrument_id, symbol=symbol, kind="linear", underlying=underlying,
                settle_asset=settle, contract_size=contract_size, mark_price=mark, tier_schedule=schedule,
                imf=imf, mmf=mmf)


def inverse(instrument_id, symbol, underlying, settle, contract_size, mark, *, schedule=None, imf=None, mmf=None):
    d = linear(instrument_id, symbol, underlying, settle, contract_size, mark, schedule=schedule, imf=imf, mmf=mmf)
    d["kind"] = "inverse"
    return d


def option(instrument_id, symbol, underlying, settle, contract_size, *, strike, expiry, option_type, implied_vol,
           mark=None):
    return dict(instrument_id=instrument_id, symbol=symbol, kind="option", underlying=underlying,
                settle_asset=settle, contract_size=contract_size, mark_price=mark, strike=strike, expiry=expiry,
                option_type=option_type, implied_vol=implied_vol)


# ------------------------------------------------------------------------------------ the standard venue

def standard_assets():
    return assets([
        ("USD", 1.0, 1.0, 1.0, None),
        ("USDT", 1.0, 1.0, 1.0, None),
        ("BTC", 50000.0, 0.9, 1.1, "BTC"),
        ("ETH", 2000.0, 0.8, 1.2, "ETH"),
    ])


def standard_underlyings():
    return underlyings([("BTC", 50000.0), ("ETH", 2000.0), ("XYZ", 100.0)])


def standard_futures():
    return [
        linear(1, "BTCUSDT-PERP", "BTC", "USDT", 0.01, 50000.0, imf=0.10, mmf=0.05),
        inverse(2, "BTCUSD-INV", "BTC", "BTC", 100.0, 50000.0, imf=0.05, mmf=0.025),
        linear(3, "ETHUSDT-PERP", "ETH", "USDT", 1.0, 2000.0, schedule="ETH"),
    ]


ETH_TIERS = [
    ("ETH", 10000.0, 0.02, 0.01),
    ("ETH", 50000.0, 0.05, 0.025),
    ("ETH", math.inf, 0.10, 0.05),
]


def standard_instruments(extra=()):
    """The standard futures plus any ``extra`` instrument dicts (e.g. options)."""
    return instruments(standard_futures() + list(extra))


def standard_tiers(*, with_amount=False):
    return tiers(ETH_TIERS, with_amount=with_amount)


def make_market(*, assets=None, underlyings=None, instruments=None, tiers=None, as_of=AS_OF, fallback=False):
    """A ``fastrisk.Market`` of the standard venue, any table overridable.

    ``fallback=True`` returns the raw tables in a namespace when ``fastrisk.Market`` does not exist yet
    (so the reference can be tested on its own); the kernel path never falls back.
    """
    import fastrisk as fr

    tables = dict(
        assets=standard_assets() if assets is None else assets,
        underlyings=standard_underlyings() if underlyings is None else underlyings,
        instruments=standard_instruments() if instruments is None else instruments,
        tiers=standard_tiers() if tiers is None else tiers,
    )
    if fallback and not hasattr(fr, "Market"):
        return SimpleNamespace(as_of=as_of, **tables)
    return fr.Market(as_of=as_of, **tables)


def make_book(position_rows=(), balance_rows=(), *, fallback=False):
    """A ``fastrisk.Book`` from position and balance rows (see ``positions`` / ``balances``)."""
    import fastrisk as fr

    tables = dict(positions=positions(list(position_rows)), balances=balances(list(balance_rows)))
    if fallback and not hasattr(fr, "Book"):
        return SimpleNamespace(**tables)
    return fr.Book(**tables)
