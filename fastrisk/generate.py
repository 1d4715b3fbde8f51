"""A realistic synthetic derivatives venue, generated fully vectorised and deterministically per seed.

``exchange_tables(n_accounts, seed)`` returns the six input tables of SPEC §1 (plus ``as_of``);
``exchange(...)`` wraps them into ``(Market, Book)``; ``write(tables, directory)`` stores the directory layout.

What the venue looks like (the choices a risk team would check):

* **Underlyings**: up to 40 crypto underlyings (BTC, ETH, SOL, XRP, BNB, DOGE, ADA, AVAX, LINK, LTC, DOT, TRX and a
  long tail of smaller alts), index prices at early-2025 levels jittered per seed, daily vol 2.5-7 %, SPAN scan ranges
  of about six daily vols, and ``depth_usd`` / ``adv_usd`` proportional to each underlying's open interest.
* **Collateral**: USDT (1, cw 1, bw 1), USDC (~1, cw 0.99, bw 1.02), BTC (cw 0.95, bw 1.05) and ETH (cw 0.90,
  bw 1.10); BTC/ETH collateral follows its underlying and is priced at the index.
* **Instruments**: a USDT-settled linear perpetual on every underlying (contract size 1 coin, fractional quantities
  on a lot step, Binance style); coin-settled inverse perpetuals on BTC (100 USD) and ETH (10 USD); USDC-settled
  linear perpetuals on the majors with OKX-style contract sizes (integer contracts), two of which (BTCUSDC, ETHUSDC)
  use flat margin fractions instead of a tier schedule. Marks sit within a few bp of the index. With
  ``options=True`` (the default): European option chains on BTC, ETH and SOL (Deribit-style symbols, USDC-settled, model priced,
  a skewed smile, five expiries from daily to quarterly).
* **Tiers**: Binance-like schedules per class (BTC, ETH, ALT_MAJOR, ALT_SMALL; BTC_INV / ETH_INV in coin), 7-10
  brackets from 125x/100x/75x/50x down to 2x/1x, mmf about half the imf, continuity amounts per SPEC §1.
* **Accounts**: sparse sorted int64 ids; equity lognormal from ~$100 with a Pareto tail of institutions up to $100M;
  ~15 % hold balances only, ~0.5 % hold only isolated positions (no wallet); the others a heavy-tailed number of
  positions (many 1-3, some dozens) drawn by Zipf popularity (BTC and ETH perps dominate), sized with a per-symbol
  leverage between 1x and the first bracket's maximum, capped so the bracket allows it; long/short mix, coin-collateral
  holders mostly short their coin (cash and carry), linear-vs-inverse hedges, USDT borrows against coin,
  isolated positions (``isolated_share``) with margin notional/leverage*(1..2), a few closed rows with quantity 0;
  entries scattered around the mark by the move since the position was opened (smaller for higher leverage), so
  uPnL goes both ways. Then, by SPEC §3 with margin_call_ratio 0.8, a controlled share of leveraged accounts is put
  at a margin ratio of 0.15-0.78 (~4 %), in margin call (~3 %), liquidatable (~1 %) or bankrupt (~0.2 %) by
  shifting their entry prices, and ~2 % of isolated positions at or past maintenance; everyone else is healthy.
* **Options** (``options=True``, the default; ``options=False`` for a futures-only venue, e.g. to compare with
  peers that do not price options): ~5 % of the accounts with at least $5k trade options: buyers, writers, covered-call
  writers (short calls on BTC/ETH they hold as collateral) and two-sided books; premiums around today's value.

Everything is NumPy on whole columns: the only Python loops run over instruments, schedules or chunks of 65k rows.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

__all__ = ["exchange_tables", "exchange", "write", "DEFAULT_AS_OF", "UNDERLYING_CATALOGUE", "TABLE_NAMES"]

UTC = timezone.utc
DEFAULT_AS_OF = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
TABLE_NAMES = ("assets", "underlyings", "instruments", "tiers", "positions", "balances")
ACCOUNT_ID_BASE = 10_000_000_000  # beyond int32 on purpose: ids are int64 and sparse

# (underlying, index price at early-2025 levels, daily return vol); order = popularity rank.
UNDERLYING_CATALOGUE = (
    ("BTC", 92_000.0, 0.025), ("ETH", 3_300.0, 0.033), ("SOL", 190.0, 0.045), ("XRP", 2.40, 0.048),
    ("DOGE", 0.32, 0.055), ("BNB", 650.0, 0.028), ("ADA", 0.95, 0.050), ("AVAX", 36.0, 0.055),
    ("LINK", 22.0, 0.050), ("LTC", 110.0, 0.040), ("DOT", 6.8, 0.050), ("TRX", 0.24, 0.030),
    ("BCH", 430.0, 0.045), ("NEAR", 5.1, 0.058), ("APT", 8.9, 0.058), ("ARB", 0.75, 0.060),
    ("OP", 1.9, 0.060), ("SUI", 4.2, 0.065), ("FIL", 5.0, 0.055), ("ATOM", 6.5, 0.050),
    ("UNI", 13.5, 0.055), ("AAVE", 330.0, 0.055), ("ETC", 27.0, 0.045), ("INJ", 22.0, 0.065),
    ("TIA", 5.2, 0.068), ("SEI", 0.42, 0.068), ("HBAR", 0.29, 0.055), ("ICP", 10.5, 0.055),
    ("XLM", 0.42, 0.050), ("ALGO", 0.38, 0.055), ("TON", 5.4, 0.045), ("WLD", 2.1, 0.070),
    ("ENA", 0.90, 0.070), ("ONDO", 1.4, 0.070), ("PENDLE", 5.0, 0.070), ("JUP", 0.95, 0.068),
    ("LDO", 1.8, 0.062), ("CRV", 0.85, 0.065), ("STX", 1.6, 0.065), ("IMX", 1.3, 0.065),
)
_N_ALT_MAJOR = 12  # catalogue ranks 3..12 are ALT_MAJOR, the rest ALT_SMALL

_INF = math.inf
# schedule -> (caps, max leverage per bracket (imf = 1/lev), mmf). Caps in settle units (coin for *_INV).
_SCHEDULES = {
    "ALT_MAJOR": ([1e5, 2.5e5, 1e6, 5e6, 1e7, 2e7, 5e7, _INF],
                  [75, 50, 25, 20, 10, 5, 4, 2],
                  [0.0065, 0.01, 0.02, 0.025, 0.05, 0.1, 0.125, 0.25]),
    "ALT_SMALL": ([1e4, 5e4, 2.5e5, 1e6, 2e6, 5e6, _INF],
                  [50, 25, 20, 10, 5, 2, 1],
                  [0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5]),
    "BTC": ([3e5, 8e5, 3e6, 1.2e7, 5e7, 8e7, 1.5e8, 3e8, 6e8, _INF],
            [125, 100, 75, 50, 25, 20, 10, 5, 4, 2],
            [0.004, 0.005, 0.0065, 0.01, 0.02, 0.025, 0.05, 0.1, 0.125, 0.25]),
    "BTC_INV": ([5, 10, 20, 50, 100, 200, 500, 1000, _INF],
                [125, 100, 50, 20, 10, 5, 4, 3, 2],
                [0.004, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.15, 0.25]),
    "ETH": ([2.5e5, 1e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, _INF],
            [100, 75, 50, 25, 20, 10, 5, 4, 2],
            [0.005, 0.0065, 0.01, 0.02, 0.025, 0.05, 0.1, 0.125, 0.25]),
    "ETH_INV": ([150, 300, 1500, 3000, 6000, 15000, 30000, _INF],
                [100, 75, 50, 20, 10, 5, 4, 2],
                [0.005, 0.0065, 0.01, 0.025, 0.05, 0.1, 0.125, 0.25]),
}

# Collateral assets in lexicographic order (balances are sorted by account_id, then asset):
# asset, collateral_weight, borrow_weight, underlying
_ASSETS = (("BTC", 0.95, 1.05, "BTC"), ("ETH", 0.90, 1.10, "ETH"), ("USDC", 0.99, 1.02, None), ("USDT", 1.0, 1.0, None))
_A_BTC, _A_ETH, _A_USDC, _A_USDT = range(4)

_LINEAR, _INVERSE, _OPTION = 0, 1, 2
_KIND_NAMES = ("linear", "inverse", "option")
_USDC_PERPS = 8                    # USDC-settled perps on the first 8 underlyings
_FLAT = {"BTC": (0.02, 0.01), "ETH": (0.025, 0.0125)}   # flat-margin USDC perps (no tier schedule)
_OPT_IM, _OPT_IM_MIN, _OPT_MM = 0.15, 0.10, 0.075      # SPEC §2 short-option fractions

# Account mix
_BALANCE_ONLY = 0.15       # accounts with balances and no positions
_POSITION_ONLY = 0.005     # accounts with (isolated) positions and no balances
_ZERO_QTY = 0.0005         # closed positions still listed with quantity 0
# share of all accounts pushed into each state (margin ratio MM/equity); "watch" fills the healthy band below 0.8
_TARGET_STATUS = {"bankrupt": 0.002, "liquidatable": 0.01, "margin_call": 0.03, "watch": 0.04}
_ISO_LIQUIDATABLE = 0.02   # share of isolated positions at or past their maintenance margin
_CHUNK = 1 << 16


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------

def exchange_tables(n_accounts: int = 10_000, seed: int = 0, *, positions_per_account: float = 10.0,
                    isolated_share: float = 0.03, as_of=None, options: bool = True,
                    n_underlyings: int = len(UNDERLYING_CATALOGUE)) -> dict:
    """Generate a synthetic venue as Arrow tables.

    Parameters
    ----------
    n_accounts : number of accounts (the union of accounts in positions and balances).
    seed : any value ``numpy.random.SeedSequence`` accepts; the same seed gives identical tables.
    positions_per_account : target mean number of position rows per account, over *all* accounts (balance-only
        ones included), so ``n_accounts * positions_per_account`` is about the number of position rows. It is
        capped by the universe: an account holds each instrument at most once per margin mode.
    isolated_share : target share of position rows that are isolated.
    as_of : valuation time (datetime, date, ISO string or numpy datetime64; naive means UTC). Default
        ``DEFAULT_AS_OF`` so that a seed fully determines the venue. Option expiries lie after it.
    options : add BTC/ETH/SOL option chains and option positions (default); False: futures only.
    n_underlyings : how many underlyings of ``UNDERLYING_CATALOGUE`` to list (2..40; BTC and ETH always).

    Returns
    -------
    dict with ``assets``, ``underlyings``, ``instruments``, ``tiers``, ``positions``, ``balances`` (single-chunk
    ``pa.Table`` with exactly the SPEC §1 columns and types) and ``as_of`` (a UTC datetime).
    """
    n = int(n_accounts)
    if n < 0:
        raise ValueError("n_accounts must be >= 0")
    if not 0.0 <= float(isolated_share) < 1.0:
        raise ValueError("isolated_share must be in [0, 1)")
    if not float(positions_per_account) >= 0.0:
        raise ValueError("positions_per_account must be >= 0")
    n_und = int(n_underlyings)
    if not 2 <= n_und <= len(UNDERLYING_CATALOGUE):
        raise ValueError(f"n_underlyings must be in [2, {len(UNDERLYING_CATALOGUE)}]")
    as_of = _as_utc(as_of)
    ss = np.random.SeedSequence(seed)
    r_mkt, r_acc, r_pos, r_opt, r_pnl = (np.random.default_rng(s) for s in ss.spawn(5))

    mkt = _market(r_mkt, n_und, as_of, bool(options))
    acc = _accounts(r_acc, n, float(isolated_share) if positions_per_account > 0 else 0.0, mkt)
    pos = _positions(r_pos, r_opt, mkt, acc, float(positions_per_account), float(isolated_share))
    _entries_and_status(r_pnl, mkt, acc, pos)
    return _tables(mkt, acc, pos, as_of)


def exchange(n_accounts: int = 10_000, seed: int = 0, **kw):
    """``(fastrisk.Market, fastrisk.Book)`` of :func:`exchange_tables` (same arguments)."""
    from fastrisk.book import Book
    from fastrisk.market import Market

    t = exchange_tables(n_accounts, seed, **kw)
    market = Market(assets=t["assets"], underlyings=t["underlyings"], instruments=t["instruments"],
                    tiers=t["tiers"], as_of=t["as_of"])
    return market, Book(positions=t["positions"], balances=t["balances"])


def write(tables_or_market_book, directory) -> str:
    """Write the SPEC §1 directory layout (``<table>.parquet``, each atomically) and return the directory.

    Accepts the dict of :func:`exchange_tables` or a ``(Market, Book)`` pair. ``as_of`` is stored as the
    instruments file's schema metadata, where :meth:`fastrisk.Market.from_dir` finds it.
    """
    from pathlib import Path

    from .io import write_parquet
    from .market import AS_OF_KEY

    obj = tables_or_market_book
    if isinstance(obj, tuple):
        market, book = obj
        market.to_dir(directory)
        book.to_dir(directory)
        return str(directory)
    for name in TABLE_NAMES:
        table = obj[name]
        if name == "instruments" and obj.get("as_of") is not None:
            table = table.replace_schema_metadata({AS_OF_KEY: _as_utc(obj["as_of"]).isoformat().encode()})
        write_parquet(table, Path(directory) / f"{name}.parquet")
    return str(directory)


# ----------------------------------------------------------------------------------------------------------------
# market
# ----------------------------------------------------------------------------------------------------------------

def _as_utc(as_of) -> datetime:
    if as_of is None:
        return DEFAULT_AS_OF
    if isinstance(as_of, np.datetime64):
        as_of = as_of.astype("datetime64[us]").astype(datetime)
    elif isinstance(as_of, str):
        as_of = datetime.fromisoformat(as_of.strip().replace("Z", "+00:00"))
    elif isinstance(as_of, date) and not isinstance(as_of, datetime):
        as_of = datetime(as_of.year, as_of.month, as_of.day)
    if not isinstance(as_of, datetime):
        raise TypeError(f"as_of must be a datetime, date, ISO string or datetime64, not {type(as_of).__name__}")
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _ncdf(x):
    return 0.5 * (1.0 + _erf(np.asarray(x, dtype=np.float64) / math.sqrt(2.0)))


def _black76(F, K, T, sigma, is_call):
    """Undiscounted Black-76 value (r = 0); intrinsic where T <= 0. Used only per instrument (small arrays)."""
    F, K, T, sigma = (np.asarray(a, dtype=np.float64) for a in (F, K, T, sigma))
    live = T > 0
    sq = sigma * np.sqrt(np.where(live, T, 1.0))
    d1 = (np.log(F / K) + 0.5 * sq * sq) / sq
    d2 = d1 - sq
    call = F * _ncdf(d1) - K * _ncdf(d2)
    put = K * _ncdf(-d2) - F * _ncdf(-d1)
    v = np.where(is_call, call, put)
    intrinsic = np.where(is_call, np.maximum(F - K, 0.0), np.maximum(K - F, 0.0))
    return np.maximum(np.where(live, v, intrinsic), 0.0)


def _lot(price):
    """Quantity step for a coin-denominated contract: a power of ten worth about $1-$10."""
    return 10.0 ** np.floor(np.log10(10.0 / np.asarray(price, dtype=np.float64)))


def _nice_step(raw):
    e = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * e >= raw:
            return m * e
    return 10.0 * e


def _last_friday(year, month):
    nxt = date(year + month // 12, month % 12 + 1, 1)
    d = nxt - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - 4) % 7)


def _expiries(as_of: datetime):
    """Daily, weekly, next weekly, monthly and quarterly expiries at 08:00 UTC, all after as_of."""
    def at8(d):
        return datetime(d.year, d.month, d.day, 8, tzinfo=UTC)

    e1 = at8(as_of.date())
    while e1 <= as_of + timedelta(hours=6):
        e1 += timedelta(days=1)
    e2 = e1 + timedelta(days=1)
    while e2.weekday() != 4:
        e2 += timedelta(days=1)
    e3 = e2 + timedelta(days=7)
    y, m = e3.year, e3.month
    e4 = at8(_last_friday(y, m))
    while e4 <= e3 + timedelta(days=7):
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        e4 = at8(_last_friday(y, m))
    y, m = e4.year, e4.month
    e5 = e4
    while e5 <= e4 + timedelta(days=30) or m % 3 != 0:
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        e5 = at8(_last_friday(y, m))
    return [e1, e2, e3, e4, e5]


def _market(rng, n_und, as_of, options):
    cat = UNDERLYING_CATALOGUE[:n_und]
    und_names = [c[0] for c in cat]
    index = np.array([c[1] for c in cat]) * np.exp(rng.normal(0.0, 0.02, n_und))
    index = np.array([float(f"{x:.6g}") for x in index])  # like a published index
    dvol = np.array([c[2] for c in cat]) * np.exp(rng.normal(0.0, 0.05, n_und))
    und_class = np.array(["BTC", "ETH"] + ["ALT_MAJOR" if i < _N_ALT_MAJOR else "ALT_SMALL"
                                           for i in range(2, n_und)], dtype=object)
    price_range = np.clip(np.round(6.0 * dvol / 0.05) * 0.05, 0.10, 0.40)  # BTC 0.15, ETH 0.20, alts 0.25-0.40
    vol_range = np.where(np.arange(n_und) < 2, 0.10, 0.15)
    depth_frac = np.where(np.arange(n_und) < 2, 0.02, np.where(np.arange(n_und) < _N_ALT_MAJOR, 0.012, 0.006))
    turnover = 1.5 + 1.5 * rng.random(n_und)                         # daily volume / open interest
    und_rank_w = 1.0 / np.arange(1, n_und + 1) ** 1.05               # Zipf popularity

    # assets
    usdc = float(np.clip(1.0 + rng.normal(0.0, 1e-4), 0.9995, 1.0005))
    asset_price = np.array([index[0], index[1], usdc, 1.0])
    a_cw = np.array([a[1] for a in _ASSETS])
    a_bw = np.array([a[2] for a in _ASSETS])

    # tiers
    sched_names = sorted(_SCHEDULES)
    caps, imf, mmf, amt, sname, offs = [], [], [], [], [], []
    for s in sched_names:
        c, lev, mm = (np.asarray(v, dtype=np.float64) for v in _SCHEDULES[s])
        im = 1.0 / lev
        a = np.zeros_like(c)
        for i in range(1, len(c)):      # SPEC continuity: amount[i] = amount[i-1] + cap[i-1]*(mmf[i]-mmf[i-1])
            a[i] = a[i - 1] + c[i - 1] * (mm[i] - mm[i - 1])
        offs.append(len(caps))
        caps += list(c); imf += list(im); mmf += list(mm); amt += list(a); sname += [s] * len(c)
    tiers = SimpleNamespace(names=sched_names, offset=np.array(offs + [len(caps)]), cap=np.array(caps),
                            imf=np.array(imf), mmf=np.array(mmf), amount=np.array(amt), schedule=sname)
    sidx = {s: i for i, s in enumerate(sched_names)}

    # instruments: (id, symbol, kind, und, settle, csize, sched, flat imf, flat mmf, lot, popularity)
    rows = []
    for u in range(n_und):
        rows.append((1 + u, f"{und_names[u]}USDT", _LINEAR, u, _A_USDT, 1.0, sidx[und_class[u]], np.nan, np.nan,
                     float(_lot(index[u])), und_rank_w[u]))
    for u, (c, sched) in enumerate(((100.0, "BTC_INV"), (10.0, "ETH_INV"))):
        rows.append((1001 + u, f"{und_names[u]}USD_PERP", _INVERSE, u, u, c, sidx[sched], np.nan, np.nan, 1.0,
                     0.25 * und_rank_w[u]))
    for u in range(min(_USDC_PERPS, n_und)):
        name = und_names[u]
        cs = float(_lot(index[u]))  # OKX-style contract value, integer contracts
        if name in _FLAT:
            s, fi, fm = -1, *_FLAT[name]
        else:
            s, fi, fm = sidx[und_class[u]], np.nan, np.nan
        rows.append((2001 + u, f"{name}USDC", _LINEAR, u, _A_USDC, cs, s, fi, fm, 1.0, 0.08 * und_rank_w[u]))
    nf = len(rows)
    inst = SimpleNamespace(
        id=np.array([r[0] for r in rows], dtype=np.int32),
        symbol=[r[1] for r in rows],
        kind=np.array([r[2] for r in rows], dtype=np.int8),
        und=np.array([r[3] for r in rows], dtype=np.int64),
        settle=np.array([r[4] for r in rows], dtype=np.int64),
        csize=np.array([r[5] for r in rows]),
        sched=np.array([r[6] for r in rows], dtype=np.int64),
        flat_imf=np.array([r[7] for r in rows]),
        flat_mmf=np.array([r[8] for r in rows]),
        lot=np.array([r[9] for r in rows]),
        pop=np.array([r[10] for r in rows]),
        n_futures=nf,
    )
    inst.mark = index[inst.und] * (1.0 + np.clip(rng.normal(0.0, 2e-4, nf), -8e-4, 8e-4))
    first_imf = np.where(inst.sched >= 0, tiers.imf[tiers.offset[np.maximum(inst.sched, 0)]], inst.flat_imf)
    inst.maxlev = np.floor(1.0 / first_imf + 1e-9)
    inst.strike = np.full(nf, np.nan)
    inst.texp = np.full(nf, np.nan)
    inst.expiry_us = np.zeros(nf, dtype=np.int64)
    inst.is_call = np.zeros(nf, dtype=bool)
    inst.iv = np.full(nf, np.nan)

    if options:
        _option_chains(rng, inst, und_names, index, as_of)
    inst.value = np.zeros(len(inst.id))           # model value per contract unit (options), settle units
    opt = inst.kind == _OPTION
    if opt.any():
        F = index[inst.und[opt]]
        inst.value[opt] = _black76(F, inst.strike[opt], inst.texp[opt], inst.iv[opt], inst.is_call[opt])
    # price of the underlying used for notional: the mark for futures, the index (forward) for options
    inst.px = np.where(opt, index[inst.und], inst.mark)
    inst.ncoef = np.where(inst.kind == _INVERSE, inst.csize / inst.px, inst.csize * inst.px)  # notional per contract
    S = len(tiers.names)
    inst.mkey = np.where(opt, S + 1, np.where(inst.sched >= 0, inst.sched, S)).astype(np.int8)  # margin rule
    first = tiers.offset[np.maximum(inst.sched, 0)]
    tiered = inst.sched >= 0
    inst.cap0 = np.where(tiered, tiers.cap[first], np.inf)                    # first bracket (amount 0)
    inst.imf0 = np.where(tiered, tiers.imf[first], np.where(opt, 0.0, inst.flat_imf))
    inst.mmf0 = np.where(tiered, tiers.mmf[first], np.where(opt, 0.0, inst.flat_mmf))

    return SimpleNamespace(und_names=und_names, index=index, dvol=dvol, price_range=price_range, vol_range=vol_range,
                           depth_frac=depth_frac, turnover=turnover, asset_price=asset_price, a_cw=a_cw, a_bw=a_bw,
                           tiers=tiers, inst=inst)


def _option_chains(rng, inst, und_names, index, as_of):
    specs = [(u, atm, lot, w) for u, atm, lot, w in ((0, 0.55, 0.01, 0.6), (1, 0.70, 0.1, 0.3), (2, 0.90, 1.0, 0.1))
             if u < len(und_names)]
    exps = _expiries(as_of)
    ids, sym, und, K, texp, exp_us, call, iv, lot, pop = ([] for _ in range(10))
    next_id = 100_001
    for u, atm0, lt, uw in specs:
        F = index[u]
        atm0 *= math.exp(rng.normal(0.0, 0.05))
        for e in exps:
            T = (e - as_of).total_seconds() / (365.0 * 86400.0)
            atm = atm0 * (0.9 + 0.2 * min(T, 0.5) / 0.5)
            s = atm * math.sqrt(T)
            half = min(max(2.5 * s, 0.04), 1.2)
            lo, hi = F * math.exp(-half), F * math.exp(half)
            step = _nice_step((hi - lo) / 20.0)
            strikes = np.arange(math.ceil(lo / step) * step, hi + 0.5 * step, step)
            strikes = strikes[strikes > 0]
            x = np.log(strikes / F) / max(math.sqrt(T), 0.1)
            smile = np.clip(atm * (1.0 - 0.08 * x + 0.25 * x * x), 0.5 * atm, 2.5 * atm)
            z = np.log(strikes / F) / s
            w = uw * (np.exp(-0.5 * (z / 1.2) ** 2) + 0.02) / (1.0 + 4.0 * T)
            tag = e.strftime("%d%b%y").upper().lstrip("0")
            us = int((e - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
            for k_, v_, w_ in zip(strikes, smile, w):
                ks = np.format_float_positional(float(k_), trim="-")
                for is_call in (True, False):
                    ids.append(next_id); next_id += 1
                    sym.append(f"{und_names[u]}-{tag}-{ks}-{'C' if is_call else 'P'}")
                    und.append(u); K.append(float(k_)); texp.append(T); exp_us.append(us)
                    call.append(is_call); iv.append(float(v_)); lot.append(lt); pop.append(float(w_))
    m = len(ids)
    nan = np.full(m, np.nan)
    inst.id = np.concatenate([inst.id, np.array(ids, dtype=np.int32)])
    inst.symbol = inst.symbol + sym
    inst.kind = np.concatenate([inst.kind, np.full(m, _OPTION, dtype=np.int8)])
    inst.und = np.concatenate([inst.und, np.array(und, dtype=np.int64)])
    inst.settle = np.concatenate([inst.settle, np.full(m, _A_USDC, dtype=np.int64)])
    inst.csize = np.concatenate([inst.csize, np.ones(m)])
    inst.sched = np.concatenate([inst.sched, np.full(m, -1, dtype=np.int64)])
    inst.flat_imf = np.concatenate([inst.flat_imf, nan])
    inst.flat_mmf = np.concatenate([inst.flat_mmf, nan])
    inst.lot = np.concatenate([inst.lot, np.array(lot)])
    inst.pop = np.concatenate([inst.pop, np.array(pop)])
    inst.mark = np.concatenate([inst.mark, nan])
    inst.maxlev = np.concatenate([inst.maxlev, nan])
    inst.strike = np.concatenate([inst.strike, np.array(K)])
    inst.texp = np.concatenate([inst.texp, np.array(texp)])
    inst.expiry_us = np.concatenate([inst.expiry_us, np.array(exp_us, dtype=np.int64)])
    inst.is_call = np.concatenate([inst.is_call, np.array(call, dtype=bool)])
    inst.iv = np.concatenate([inst.iv, np.array(iv)])


# ----------------------------------------------------------------------------------------------------------------
# accounts and balances
# ----------------------------------------------------------------------------------------------------------------

def _accounts(rng, n, isolated_share, mkt):
    ids = ACCOUNT_ID_BASE + np.cumsum(rng.integers(1, 64, n, dtype=np.int64))
    u = rng.random(n)
    po_share = _POSITION_ONLY if isolated_share > 0 else 0.0
    kind = np.where(u < _BALANCE_ONLY, 1, np.where(u < _BALANCE_ONLY + po_share, 2, 0)).astype(np.int8)

    # size: lognormal body from ~$100, Pareto tail of institutions / market makers up to $100M
    z = rng.standard_normal(n)
    size = 80.0 + np.exp(math.log(1500.0) + 1.8 * z)
    whale = rng.random(n) < 0.003
    size = np.where(whale, np.minimum(1e6 * (1.0 + rng.pareto(1.1, n)), 1e8), size)
    z = np.where(whale, np.maximum(z, 2.5), z)

    # wallets: which assets, in what proportions
    big = z > 1.0
    p_hold = np.stack([np.where(big, 0.22, 0.10), np.where(big, 0.15, 0.07),
                       np.where(big, 0.30, 0.18), np.full(n, 0.88)], axis=1)
    hold = rng.random((n, 4)) < p_hold
    hold[~hold.any(axis=1), _A_USDT] = True
    share = np.where(hold, rng.exponential(1.0, (n, 4)), 0.0)
    share /= share.sum(axis=1, keepdims=True)
    price = mkt.asset_price
    amount = size[:, None] * share / price[None, :]
    # a few % borrow USDT against their coin (negative balance)
    coin_val = amount[:, _A_BTC] * price[_A_BTC] + amount[:, _A_ETH] * price[_A_ETH]
    borrow = (coin_val > 0) & (rng.random(n) < 0.3)
    amount[:, _A_USDT] = np.where(borrow, -rng.uniform(0.1, 0.6, n) * coin_val, amount[:, _A_USDT])
    hold[:, _A_USDT] |= borrow
    amount = np.round(np.where(hold, amount, 0.0), 8)   # wallets are quoted to 1e-8
    hold[kind == 2] = False                      # position-only accounts: no wallet at all
    amount[kind == 2] = 0.0

    return SimpleNamespace(n=n, ids=ids, kind=kind, z=z, size=size, hold=hold, amount=amount,
                           collateral=_collateral(mkt, amount))


def _collateral(mkt, amount):
    p = mkt.asset_price[None, :]
    w = np.where(amount > 0, mkt.a_cw[None, :], mkt.a_bw[None, :])
    return (amount * p * w).sum(axis=1)


# ----------------------------------------------------------------------------------------------------------------
# positions
# ----------------------------------------------------------------------------------------------------------------

def _choose(rng, logw, k):
    """For each row i draw k[i] (1 <= k[i] <= len(logw)) distinct columns with weights exp(logw), without
    replacement (Efraimidis-Spirakis: the k smallest Exp(1)/w), in chunks of rows. Returns (row, col) sorted by row,
    then col. A float32 tie at the threshold can add a column to a row, which is harmless."""
    J = len(logw)
    inv_w = np.exp(-np.asarray(logw, dtype=np.float64)).astype(np.float32)
    rows, cols = [], []
    for s in range(0, len(k), _CHUNK):
        kk = k[s:s + _CHUNK]
        keys = rng.standard_exponential(size=(len(kk), J), dtype=np.float32)
        keys *= inv_w[None, :]
        th = np.sort(keys, axis=1)[np.arange(len(kk)), kk - 1]
        r, c = np.nonzero(keys <= th[:, None])
        rows.append(r + s)
        cols.append(c)
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def _mean_clipped_lognormal(mu, sigma, kmax, zgrid):
    return np.clip(np.rint(np.exp(mu + sigma * zgrid)), 1, kmax).mean()


def _count_mu(target, sigma, kmax):
    """mu such that E[clip(round(exp(mu + sigma Z)), 1, kmax)] = target (bisection on a fixed normal sample)."""
    zgrid = _normal_quantiles(4001)
    target = min(max(target, 1.0), kmax)
    lo, hi = -10.0, math.log(kmax) + 6 * sigma
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _mean_clipped_lognormal(mid, sigma, kmax, zgrid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _normal_quantiles(m):
    """m evenly spaced quantiles of N(0, 1): a deterministic sample for expectations."""
    from statistics import NormalDist

    nd = NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / m) for i in range(m)])


def _margin(mkt, pinst, nset, q, want_mm=True):
    """Initial and maintenance margin (settle units) for positions with notional `nset` (settle units).

    Most positions sit in their schedule's first bracket (amount 0): one gather each. The few above it are grouped
    by schedule (radix sort on a small key) for one searchsorted per schedule; short options take SPEC §2."""
    inst, tiers = mkt.inst, mkt.tiers
    im = nset * inst.imf0[pinst]
    mm = nset * inst.mmf0[pinst] if want_mm else None
    R = np.flatnonzero(nset > inst.cap0[pinst])             # tiered rows beyond the first bracket
    if len(R):
        key = inst.mkey[pinst[R]]
        order = np.argsort(key, kind="stable")
        R = R[order]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=len(tiers.names)))])
        for sch in range(len(tiers.names)):
            a, b = bounds[sch], bounds[sch + 1]
            if a == b:
                continue
            rows = R[a:b]
            lo, hi = tiers.offset[sch], tiers.offset[sch + 1]
            t = lo + np.minimum(np.searchsorted(tiers.cap[lo:hi], nset[rows], side="left"), hi - lo - 1)
            im[rows] = nset[rows] * tiers.imf[t]
            if want_mm:
                mm[rows] = nset[rows] * tiers.mmf[t] - tiers.amount[t]
    O = np.flatnonzero(pinst >= inst.n_futures)              # options come after the futures
    if len(O):
        io = pinst[O]
        F, K = inst.px[io], inst.strike[io]
        otm = np.where(inst.is_call[io], np.maximum(K - F, 0.0), np.maximum(F - K, 0.0))
        short = q[O] < 0
        im[O] = np.where(short, nset[O] * np.maximum(_OPT_IM - otm / F, _OPT_IM_MIN), 0.0)
        if want_mm:
            mm[O] = np.where(short, nset[O] * _OPT_MM, 0.0)
    return im, mm


def _notional(mkt, pinst, q):
    inst = mkt.inst
    out = np.abs(q)
    out *= inst.ncoef[pinst]          # c * P (linear, option: P = index) or c / P (inverse)
    return out


def _imf_at(mkt, pinst, nset):
    im, _ = _margin(mkt, pinst, nset, np.ones(len(pinst)), want_mm=False)
    return np.where(nset > 0, im / np.where(nset > 0, nset, 1.0), 0.0)


def _positions(rng, rng_opt, mkt, acc, ppa, iso_share):
    inst = mkt.inst
    n, nf = acc.n, inst.n_futures
    sprice = mkt.asset_price[inst.settle]             # settle asset price per instrument
    traders = np.flatnonzero(acc.kind == 0)
    pos_only = np.flatnonzero(acc.kind == 2)

    # ---- options first (their count is subtracted from the futures budget) --------------------------------
    opt = None
    n_opt_inst = len(inst.id) - nf
    if n_opt_inst > 0 and len(traders):
        opt = _option_positions(rng_opt, mkt, acc, traders, sprice)
    n_opt_rows = 0 if opt is None else len(opt.acct)

    # ---- how many futures positions per account ---------------------------------------------------------------
    k = np.zeros(n, dtype=np.int64)
    k[pos_only] = rng.integers(1, 4, len(pos_only))
    sigma = 1.3
    if len(traders):
        budget = max(ppa * n - k.sum() - n_opt_rows, 0.0)
        target = budget / len(traders)
        if target > 0:
            mu = _count_mu(target, sigma, nf)
            zk = 0.5 * acc.z[traders] + math.sqrt(0.75) * rng.standard_normal(len(traders))  # bigger trade more
            k[traders] = np.clip(np.rint(np.exp(mu + sigma * zk)), 1, nf).astype(np.int64)
    k = np.minimum(k, nf)

    has = np.flatnonzero(k > 0)
    logw = np.log(inst.pop[:nf])
    r, col = _choose(rng, logw, k[has])
    pacct = has[r]
    pinst = col
    del r, col
    N = len(pacct)

    # ---- isolated flags, and extra isolated rows beside a cross row of the same instrument -----------------------
    is_po = acc.kind[pacct] == 2
    n_po = int(is_po.sum())
    p_dup = 0.1 * iso_share
    dup = (~is_po) & (rng.random(N) < p_dup)
    n_dup = int(dup.sum())
    n_total = N + n_dup + n_opt_rows
    n_trader_rows = N - n_po
    p_flag = max(iso_share * n_total - n_po - n_dup, 0.0) / max(n_trader_rows, 1)
    iso = is_po | ((~is_po) & (rng.random(N) < p_flag))
    dup &= ~iso
    rep = 1 + dup.astype(np.int64)
    pacct = np.repeat(pacct, rep)
    pinst = np.repeat(pinst, rep)
    iso = np.repeat(iso, rep)
    second = np.zeros(len(pacct), dtype=bool)
    second[np.cumsum(rep)[dup] - 1] = True             # the appended copy is the isolated one
    iso |= second
    N = len(pacct)

    # ---- direction ---------------------------------------------------------------------------------------------
    und = inst.und[pinst]
    p_long = np.full(N, 0.55)
    for coin_asset, u in ((_A_BTC, 0), (_A_ETH, 1)):     # coin collateral holders hedge: mostly short their coin
        m = np.flatnonzero(und == u)
        p_long[m[acc.hold[:, coin_asset][pacct[m]]]] = 0.3
    del und
    sign = np.where(rng.random(N) < p_long, 1.0, -1.0)
    del p_long
    # linear vs inverse hedges on the same underlying (cross rows only)
    lin_sign = np.zeros(n)
    for u in (0, 1):
        lin_row = np.flatnonzero(inst.id == 1 + u)[0]
        inv_row = np.flatnonzero(inst.id == 1001 + u)[0]
        lin_sign[:] = 0.0
        m = np.flatnonzero((pinst == lin_row) & ~iso)
        lin_sign[pacct[m]] = sign[m]
        m = np.flatnonzero((pinst == inv_row) & ~iso)
        ls = lin_sign[pacct[m]]
        h = (ls != 0) & (rng.random(len(m)) < 0.6)
        sign[m[h]] = -ls[h]

    # ---- size: margin utilisation x weight x per-symbol leverage, capped by the bracket --------------------------
    base = np.where(acc.kind == 2, acc.size, np.maximum(acc.collateral, 0.0))
    util = rng.beta(1.5, 2.5, n)
    lev_acct = np.exp(math.log(8.0) + 0.8 * rng.standard_normal(n))
    w = rng.exponential(1.0, N)
    w *= (inst.pop ** 0.9)[pinst]                      # popular instruments also carry more notional
    w /= np.bincount(pacct, weights=w, minlength=n)[pacct]
    lev = np.exp(0.25 * rng.standard_normal(N))
    lev *= lev_acct[pacct]
    lev = np.clip(np.rint(lev), 1.0, inst.maxlev[pinst])
    margin_usd = w
    margin_usd *= (util * base)[pacct]
    del w
    margin_usd[second] *= rng.uniform(0.2, 1.0, int(second.sum()))
    nset = margin_usd * lev
    nset *= (1.0 / sprice)[pinst]
    big = np.flatnonzero(nset > inst.cap0[pinst])      # beyond the first bracket: the bracket caps the leverage
    for _ in range(4):
        if len(big) == 0:
            break
        bi = pinst[big]
        maxl = np.floor(1.0 / np.maximum(_imf_at(mkt, bi, nset[big]), 1e-12) + 1e-9)
        lev[big] = np.maximum(np.minimum(lev[big], maxl), 1.0)
        nset[big] = margin_usd[big] * lev[big] / sprice[bi]
    del margin_usd
    lots = nset * (1.0 / (inst.ncoef * inst.lot))[pinst]     # notional -> contracts -> lots
    np.rint(lots, out=lots)
    np.maximum(lots, 1.0, out=lots)
    lots *= sign
    del sign
    q = lots
    q *= inst.lot[pinst]
    np.round(q, 10, out=q)                            # clean decimal lots
    q[np.flatnonzero(~iso)[rng.random(int((~iso).sum())) < _ZERO_QTY]] = 0.0   # a few closed positions
    nset = _notional(mkt, pinst, q)
    iso_margin = np.full(N, np.nan)
    ii = np.flatnonzero(iso)
    iso_margin[ii] = nset[ii] / lev[ii] * rng.uniform(1.0, 2.0, len(ii))

    fut = SimpleNamespace(acct=pacct, inst=pinst, q=q, iso=iso, iso_margin=iso_margin, lev=lev)
    return _merge(n, fut, opt)


def _option_positions(rng, mkt, acc, traders, sprice):
    inst = mkt.inst
    nf = inst.n_futures
    oi = np.arange(nf, len(inst.id))
    z = acc.z[traders]
    C_t = acc.collateral[traders]
    # option traders have a real wallet (a BTC option lot is ~$900 of notional): >= $5k, bigger ones more often
    is_opt = (rng.random(len(traders)) < np.where(z > 1.5, 0.2, 0.05)) & (C_t >= 5000.0)
    who = traders[is_opt]
    if len(who) == 0:
        return None
    # styles: 0 buyer, 1 writer, 2 covered-call writer, 3 two-sided / market maker
    style = rng.choice(4, size=len(who), p=[0.40, 0.20, 0.15, 0.25])
    kmax = len(oi)
    k = np.clip(np.rint(np.exp(math.log(4.0) + 1.1 * rng.standard_normal(len(who)))), 1, kmax).astype(np.int64)
    k = np.where(style == 3, np.minimum(k * 4, kmax), k)
    k = np.maximum(np.minimum(k, acc.collateral[who] // 2000.0), 1).astype(np.int64)   # ~$2k of wallet per series
    logw = np.log(inst.pop[oi])
    acct_l, inst_l = [], []
    gen = style != 2
    if gen.any():
        r, c = _choose(rng, logw, k[gen])
        acct_l.append(who[gen][r]); inst_l.append(oi[c])
    # covered calls: calls on a coin the account holds as collateral (BTC or ETH), within that coin's amount
    cov = np.flatnonzero(style == 2)
    coin = np.where(acc.hold[who[cov], _A_ETH] & ~acc.hold[who[cov], _A_BTC], 1, 0)
    for u, a in ((0, _A_BTC), (1, _A_ETH)):
        sel = cov[(coin == u) & (acc.amount[who[cov], a] > 0)]
        cols = oi[(inst.und[oi] == u) & inst.is_call[oi]]
        if len(sel) == 0 or len(cols) == 0:
            continue
        r, c = _choose(rng, np.log(inst.pop[cols]), np.minimum(np.minimum(k[sel], 4), len(cols)))
        acct_l.append(who[sel][r]); inst_l.append(cols[c])
    if not acct_l:
        return None
    acct = np.concatenate(acct_l)
    pin = np.concatenate(inst_l)
    o = np.lexsort((inst.id[pin], acct))
    acct, pin = acct[o], pin[o]
    N = len(acct)
    st = np.full(len(acc.ids), -1)
    st[who] = style
    s = st[acct]
    sign = np.where(s == 0, 1.0, np.where((s == 1) | (s == 2), -1.0, np.where(rng.random(N) < 0.5, 1.0, -1.0)))

    C = np.maximum(acc.collateral, 0.0)
    w = rng.exponential(1.0, N)
    w /= np.bincount(acct, weights=w, minlength=len(acc.ids))[acct]
    F = inst.px[pin]
    V = inst.value[pin] * sprice[pin]                            # USD per contract unit
    K = inst.strike[pin]
    otm = np.where(inst.is_call[pin], np.maximum(K - F, 0.0), np.maximum(F - K, 0.0))
    imf = np.maximum(_OPT_IM - otm / F, _OPT_IM_MIN)
    prem_budget = C[acct] * rng.uniform(0.02, 0.15, N) * w
    marg_budget = C[acct] * rng.uniform(0.05, 0.30, N) * w
    long_q = np.minimum(prem_budget / np.maximum(V, 1e-12 * F), 5.0 * C[acct] * w / F)
    short_q = marg_budget / (F * imf)
    qa = np.where(sign > 0, long_q, short_q)
    covered = s == 2
    if covered.any():
        a = np.where(inst.und[pin] == 0, _A_BTC, _A_ETH)
        ncalls = np.bincount(acct[covered], minlength=len(acc.ids))
        coin_amt = acc.amount[acct, a]
        qa = np.where(covered, coin_amt * rng.uniform(0.3, 1.0, N) / np.maximum(ncalls[acct], 1), qa)
    lot = inst.lot[pin]
    q = np.where(covered, np.floor(qa / lot), np.rint(qa / lot))
    q = np.round(np.maximum(q, 1.0) * lot * sign, 10)
    return SimpleNamespace(acct=acct, inst=pin, q=q, iso=np.zeros(N, bool), iso_margin=np.full(N, np.nan),
                           lev=np.full(N, np.nan))


def _merge(n, fut, opt):
    """Interleave futures rows and option rows per account (options have larger ids, so they go last)."""
    if opt is None:
        return fut
    cf = np.bincount(fut.acct, minlength=n)
    co = np.bincount(opt.acct, minlength=n)
    start = np.concatenate([[0], np.cumsum(cf + co)[:-1]])
    fstart = np.concatenate([[0], np.cumsum(cf)[:-1]])
    ostart = np.concatenate([[0], np.cumsum(co)[:-1]])
    fdst = start[fut.acct] + (np.arange(len(fut.acct)) - fstart[fut.acct])
    odst = start[opt.acct] + cf[opt.acct] + (np.arange(len(opt.acct)) - ostart[opt.acct])
    N = len(fut.acct) + len(opt.acct)
    out = SimpleNamespace()
    for name in ("acct", "inst", "q", "iso", "iso_margin", "lev"):
        a, b = getattr(fut, name), getattr(opt, name)
        arr = np.empty(N, dtype=np.result_type(a, b))
        arr[fdst] = a
        arr[odst] = b
        setattr(out, name, arr)
    return out


# ----------------------------------------------------------------------------------------------------------------
# entry prices: natural PnL, then a controlled share of stressed accounts
# ----------------------------------------------------------------------------------------------------------------

def _entries_and_status(rng, mkt, acc, pos):
    inst = mkt.inst
    n = acc.n
    N = len(pos.acct)
    pin, q, iso, acct = pos.inst, pos.q, pos.iso, pos.acct
    kind = inst.kind[pin]
    nset = _notional(mkt, pin, q)
    _, mm = _margin(mkt, pin, nset, q)
    sp = mkt.asset_price[inst.settle[pin]]
    P = inst.px[pin]
    qc = q * inst.csize[pin]

    # natural entries: the price moved by `ret` since the position was opened (held ~2 days, heavy tail)
    days = np.clip(np.exp(math.log(2.0) + 1.2 * rng.standard_normal(N)), 0.01, 120.0)
    ret = mkt.dvol[inst.und[pin]] * np.sqrt(days)
    # a leveraged position that moved far against it would have been liquidated already: the move since entry
    # scales down with the position's leverage (35 % of the margin for one standard deviation)
    lev = pos.lev
    np.minimum(ret, np.where(lev > 0, 0.35 / lev, np.inf), out=ret)
    del lev
    del days
    ret *= rng.standard_normal(N)
    entry = P * np.exp(-np.clip(ret, -0.9, 0.9))
    del ret
    oi = np.flatnonzero(kind == _OPTION)
    V = inst.value[pin[oi]]
    entry[oi] = V * np.exp(0.3 * rng.standard_normal(len(oi)))   # premium paid / received around today's value
    upnl = _upnl(kind, qc, P, entry)                              # settle units; 0 for options

    # ---- cross figures per account (SPEC §3) -----------------------------------------------------------------------
    cross = ~iso
    cfut = cross & (kind != _OPTION)
    w = upnl * sp
    w[oi] = qc[oi] * V * sp[oi]                                   # option value replaces PnL
    w *= cross
    eq = acc.collateral + np.bincount(acct, weights=w, minlength=n)
    w = mm * sp
    w *= cross
    MM = np.bincount(acct, weights=w, minlength=n)
    w = nset * sp
    w *= cfut
    gross = np.bincount(acct, weights=w, minlength=n)
    del w
    has_fut = np.bincount(acct, weights=cfut, minlength=n) > 0

    target_eq = np.full(n, np.nan)
    # stressed accounts, preferably leveraged ones (weighted sampling without replacement)
    lev_acct = np.where(acc.collateral > 0, gross / np.maximum(acc.collateral, 1e-300), 0.0)
    eligible = np.flatnonzero(has_fut & (MM > 0) & (lev_acct >= 3.0))
    n_b, n_l, n_m, n_w = (int(round(_TARGET_STATUS[k] * n)) for k in ("bankrupt", "liquidatable", "margin_call",
                                                                        "watch"))
    n_sel = min(n_b + n_l + n_m + n_w, len(eligible))
    if n_sel:
        keys = np.log(rng.random(len(eligible))) / np.minimum(lev_acct[eligible], 50.0)
        chosen = eligible[np.argsort(-keys, kind="stable")[:n_sel]]
        b, l_ = chosen[:n_b], chosen[n_b:n_b + n_l]
        m_, w_ = chosen[n_b + n_l:n_b + n_l + n_m], chosen[n_b + n_l + n_m:]
        target_eq[b] = -rng.uniform(0.05, 0.5, len(b)) * MM[b]                       # equity < 0
        target_eq[l_] = MM[l_] / (1.02 + rng.exponential(0.3, len(l_)))              # 0 < equity < MM
        target_eq[m_] = MM[m_] / (0.81 + 0.18 * rng.beta(1.0, 2.0, len(m_)))          # ratio 0.81-0.99
        target_eq[w_] = MM[w_] / np.exp(rng.uniform(math.log(0.15), math.log(0.78), len(w_)))
    # everyone else with futures stays healthy: pull the unlucky ones back to a margin ratio of 30-75 %
    unhealthy = has_fut & np.isnan(target_eq) & (MM > 0) & ((eq <= 0) | (MM >= 0.75 * eq))
    target_eq[unhealthy] = MM[unhealthy] / rng.uniform(0.3, 0.75, int(unhealthy.sum()))

    # shift the PnL of the account's cross futures, in proportion to notional, to reach the target equity
    adj = ~np.isnan(target_eq)
    R = np.flatnonzero(cfut & (q != 0) & adj[acct])
    if len(R):
        a = acct[R]
        new = upnl[R] + (target_eq[a] - eq[a]) * nset[R] / gross[a]
        new = _clip_upnl(kind[R], q[R], new, nset[R])
        entry[R] = _entry_from_upnl(kind[R], qc[R], P[R], new)
        upnl[R] = new

    # ---- isolated positions: a few at or past maintenance, the rest safely above it --------------------------------
    I = np.flatnonzero(iso & (kind != _OPTION) & (q != 0))
    if len(I):
        m_i, mm_i = pos.iso_margin[I], mm[I]
        lev = pos.lev[I]
        lev_w = np.where(lev >= 5.0, lev, 0.0)          # only leveraged ones: at 1-4x it takes a crash
        liq = rng.random(len(I)) < np.minimum(1.0, _ISO_LIQUIDATABLE * len(I) * lev_w / max(lev_w.sum(), 1e-300))
        bad = ~liq & (m_i + upnl[I] <= 1.2 * mm_i)
        tgt = np.where(liq, mm_i * rng.uniform(0.3, 0.95, len(I)), mm_i * rng.uniform(1.5, 5.0, len(I)))
        sel = liq | bad
        J = I[sel]
        new = _clip_upnl(kind[J], q[J], tgt[sel] - m_i[sel], nset[J])
        entry[J] = _entry_from_upnl(kind[J], qc[J], P[J], new)
        upnl[J] = new

    pos.entry = entry
    pos.nset = nset


def _upnl(kind, qc, P, E):
    out = qc * (P - E)
    inv = np.flatnonzero(kind == _INVERSE)
    out[inv] = qc[inv] * (1.0 / E[inv] - 1.0 / P[inv])
    out[kind == _OPTION] = 0.0
    return out


def _clip_upnl(kind, q, upnl, nset):
    """Keep the implied entry price positive: a move cannot take more than 95 % of the notional on the side where
    the price would otherwise have had to be <= 0 (linear: long profits, short losses; inverse: the other way)."""
    cap = 0.95 * nset
    up_bounded = (kind == _LINEAR) == (q > 0)          # linear long or inverse short: profit bounded
    hi = np.where(up_bounded, cap, np.inf)
    lo = np.where(up_bounded, -np.inf, -cap)
    return np.clip(upnl, lo, hi)


def _entry_from_upnl(kind, qc, P, upnl):
    lin = P - upnl / qc
    inv = 1.0 / (1.0 / P + upnl / qc)
    return np.where(kind == _LINEAR, lin, inv)


# ----------------------------------------------------------------------------------------------------------------
# Arrow tables
# ----------------------------------------------------------------------------------------------------------------

def _tables(mkt, acc, pos, as_of):
    inst = mkt.inst
    tiers = mkt.tiers
    n_und = len(mkt.und_names)

    # underlyings: liquidity proportional to open interest (half the gross futures notional, USD)
    fut = inst.kind[pos.inst] != _OPTION
    sp = mkt.asset_price[inst.settle[pos.inst]]
    oi = 0.5 * np.bincount(inst.und[pos.inst][fut], weights=(pos.nset * sp)[fut], minlength=n_und)
    depth = np.maximum(oi * mkt.depth_frac, 1e5)
    adv = np.maximum(oi * mkt.turnover, 1e6)

    f64 = pa.float64()
    assets = pa.table({
        "asset": pa.array([a[0] for a in _ASSETS], pa.string()),
        "price": pa.array(mkt.asset_price, f64),
        "collateral_weight": pa.array(mkt.a_cw, f64),
        "borrow_weight": pa.array(mkt.a_bw, f64),
        "underlying": pa.array([a[3] for a in _ASSETS], pa.string()),
    })
    underlyings = pa.table({
        "underlying": pa.array(mkt.und_names, pa.string()),
        "index_price": pa.array(mkt.index, f64),
        "price_range": pa.array(mkt.price_range, f64),
        "vol_range": pa.array(mkt.vol_range, f64),
        "depth_usd": pa.array(depth, f64),
        "adv_usd": pa.array(adv, f64),
        "daily_vol": pa.array(mkt.dvol, f64),
    })
    opt = inst.kind == _OPTION
    fut_i = ~opt
    has_sched = fut_i & (inst.sched >= 0)
    flat = fut_i & (inst.sched < 0)
    sched_name = np.array(tiers.names + [None], dtype=object)[np.where(has_sched, inst.sched, len(tiers.names))]
    asset_names = np.array([a[0] for a in _ASSETS], dtype=object)
    instruments = pa.table({
        "instrument_id": pa.array(inst.id, pa.int32()),
        "symbol": pa.array(inst.symbol, pa.string()),
        "kind": pa.array(np.array(_KIND_NAMES, dtype=object)[inst.kind], pa.string()),
        "underlying": pa.array(np.array(mkt.und_names, dtype=object)[inst.und], pa.string()),
        "settle_asset": pa.array(asset_names[inst.settle], pa.string()),
        "contract_size": pa.array(inst.csize, f64),
        "mark_price": pa.array(inst.mark, f64, mask=opt),
        "tier_schedule": pa.array(sched_name, pa.string()),
        "imf": pa.array(np.nan_to_num(inst.flat_imf), f64, mask=~flat),
        "mmf": pa.array(np.nan_to_num(inst.flat_mmf), f64, mask=~flat),
        "strike": pa.array(np.nan_to_num(inst.strike), f64, mask=~opt),
        "expiry": pa.array(inst.expiry_us, pa.timestamp("us", tz="UTC"), mask=~opt),
        "option_type": pa.array(np.where(opt, np.where(inst.is_call, "call", "put"), None).astype(object),
                                pa.string()),
        "implied_vol": pa.array(np.nan_to_num(inst.iv), f64, mask=~opt),
    })
    tiers_t = pa.table({
        "schedule": pa.array(tiers.schedule, pa.string()),
        "notional_cap": pa.array(tiers.cap, f64),
        "imf": pa.array(tiers.imf, f64),
        "mmf": pa.array(tiers.mmf, f64),
        "maintenance_amount": pa.array(tiers.amount, f64),
    })
    positions = pa.table({
        "account_id": pa.array(acc.ids[pos.acct], pa.int64()),
        "instrument_id": pa.array(inst.id[pos.inst], pa.int32()),
        "quantity": pa.array(pos.q, f64),
        "entry_price": pa.array(pos.entry, f64),
        "isolated_margin": pa.array(np.nan_to_num(pos.iso_margin), f64, mask=~pos.iso),
    })
    r, c = np.nonzero(acc.hold)                      # row-major: by account, then asset (lexicographic)
    balances = pa.table({
        "account_id": pa.array(acc.ids[r], pa.int64()),
        "asset": pa.DictionaryArray.from_arrays(pa.array(c.astype(np.int32), pa.int32()),
                                                pa.array(asset_names.tolist(), pa.string())),
        "amount": pa.array(acc.amount[r, c], f64),
    })
    return {"assets": assets, "underlyings": underlyings, "instruments": instruments, "tiers": tiers_t,
            "positions": positions, "balances": balances, "as_of": as_of}
