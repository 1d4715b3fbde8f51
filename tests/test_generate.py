"""Tests of the synthetic venue generator (fastrisk.generate): determinism, exact schemas, invariants, realism."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastrisk.generate import exchange_tables, write

UTC = timezone.utc
STR = pa.string()
F64 = pa.float64()

SCHEMAS = {
    "assets": [("asset", STR), ("price", F64), ("collateral_weight", F64), ("borrow_weight", F64),
               ("underlying", STR)],
    "underlyings": [("underlying", STR), ("index_price", F64), ("price_range", F64), ("vol_range", F64),
                    ("depth_usd", F64), ("adv_usd", F64), ("daily_vol", F64)],
    "instruments": [("instrument_id", pa.int32()), ("symbol", STR), ("kind", STR), ("underlying", STR),
                    ("settle_asset", STR), ("contract_size", F64), ("mark_price", F64), ("tier_schedule", STR),
                    ("imf", F64), ("mmf", F64), ("strike", F64), ("expiry", pa.timestamp("us", tz="UTC")),
                    ("option_type", STR), ("implied_vol", F64)],
    "tiers": [("schedule", STR), ("notional_cap", F64), ("imf", F64), ("mmf", F64), ("maintenance_amount", F64)],
    "positions": [("account_id", pa.int64()), ("instrument_id", pa.int32()), ("quantity", F64),
                  ("entry_price", F64), ("isolated_margin", F64)],
    "balances": [("account_id", pa.int64()), ("asset", pa.dictionary(pa.int32(), pa.string())), ("amount", F64)],
}
TABLES = tuple(SCHEMAS)
N_REALISM = 20_000


@pytest.fixture(scope="module")
def venue():
    return exchange_tables(N_REALISM, 7)


@pytest.fixture(scope="module")
def venue_opt():
    return exchange_tables(6_000, 11, options=True)


# ---------------------------------------------------------------------------------------------------------------
# helpers: plain columns and an independent NumPy version of SPEC §2-§3 (rough, not the oracle)
# ---------------------------------------------------------------------------------------------------------------

def col(table, name, fill=np.nan):
    c = table[name]
    if pa.types.is_dictionary(c.type):
        c = c.cast(pa.string())
    if pa.types.is_string(c.type) or pa.types.is_timestamp(c.type):
        return np.array(c.to_pylist(), dtype=object)
    return c.fill_null(fill).to_numpy() if c.null_count else c.to_numpy()


_erf = np.vectorize(math.erf, otypes=[float])


def _ncdf(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def cross_figures(t):
    """Per account (sorted union of ids): collateral, equity, MM, IM, gross notional, status code
    (0 healthy, 1 margin_call, 2 liquidatable, 3 bankrupt); per position: notional USD, upnl USD, MM, iso flag."""
    A, U, I, T, P, B = (t[k] for k in TABLES)
    aname = col(A, "asset")
    aprice = dict(zip(aname, col(A, "price")))
    cw = dict(zip(aname, col(A, "collateral_weight")))
    bw = dict(zip(aname, col(A, "borrow_weight")))
    index = dict(zip(col(U, "underlying"), col(U, "index_price")))
    acc = np.unique(np.concatenate([col(P, "account_id"), col(B, "account_id")]))

    bass = col(B, "asset")
    amt = col(B, "amount")
    w = np.where(amt > 0, [cw[a] for a in bass], [bw[a] for a in bass])
    coll = np.bincount(np.searchsorted(acc, col(B, "account_id")),
                       weights=amt * np.array([aprice[a] for a in bass]) * w, minlength=len(acc))

    iid = col(I, "instrument_id")
    r = np.searchsorted(iid, col(P, "instrument_id"))
    q, E = col(P, "quantity"), col(P, "entry_price")
    iso = P["isolated_margin"].is_valid().to_numpy(zero_copy_only=False)
    iso_m = col(P, "isolated_margin", 0.0)
    kind = col(I, "kind")[r]
    c = col(I, "contract_size")[r]
    mark = col(I, "mark_price")[r]
    F = np.array([index[u] for u in col(I, "underlying")])[r]
    sp = np.array([aprice[a] for a in col(I, "settle_asset")])[r]
    lin, inv, opt = kind == "linear", kind == "inverse", kind == "option"
    n = np.where(lin, np.abs(q) * c * mark, np.where(inv, np.abs(q) * c / mark, np.abs(q) * c * F))
    with np.errstate(all="ignore"):
        upnl = np.where(lin, q * c * (mark - E), np.where(inv, q * c * (1.0 / E - 1.0 / mark), 0.0))
        K = col(I, "strike")[r]
        iv = col(I, "implied_vol")[r]
        Tm = np.array([np.nan if x is None else (x - t["as_of"]).total_seconds() / (365 * 86400)
                       for x in col(I, "expiry")])[r]
        call = col(I, "option_type")[r] == "call"
        sq = iv * np.sqrt(Tm)
        d1 = (np.log(F / K) + 0.5 * sq * sq) / sq
        d2 = d1 - sq
        V = np.where(call, F * _ncdf(d1) - K * _ncdf(d2), K * _ncdf(-d2) - F * _ncdf(-d1))
    val = np.where(opt, q * c * np.nan_to_num(V), 0.0)

    sched = col(I, "tier_schedule")[r]
    IM, MM = np.zeros(len(q)), np.zeros(len(q))
    ts, caps = col(T, "schedule"), col(T, "notional_cap")
    timf, tmmf, tamt = col(T, "imf"), col(T, "mmf"), col(T, "maintenance_amount")
    for s in set(ts):
        m = sched == s
        rows = np.flatnonzero(ts == s)
        b = rows[np.searchsorted(caps[rows], n[m], side="left")]
        IM[m] = n[m] * timf[b]
        MM[m] = n[m] * tmmf[b] - tamt[b]
    flat = ~opt & np.array([s is None for s in sched])
    IM[flat] = n[flat] * col(I, "imf")[r][flat]
    MM[flat] = n[flat] * col(I, "mmf")[r][flat]
    short = opt & (q < 0)
    otm = np.where(call, np.maximum(K - F, 0), np.maximum(F - K, 0))
    IM[short] = (n * np.maximum(0.15 - otm / F, 0.10))[short]
    MM[short] = (n * 0.075)[short]

    pa_ = np.searchsorted(acc, col(P, "account_id"))
    cr = ~iso
    equity = coll + np.bincount(pa_[cr], ((upnl + val) * sp)[cr], minlength=len(acc))
    mm_a = np.bincount(pa_[cr], (MM * sp)[cr], minlength=len(acc))
    im_a = np.bincount(pa_[cr], (IM * sp)[cr], minlength=len(acc))
    gross = np.bincount(pa_[cr], (n * sp)[cr], minlength=len(acc))
    with np.errstate(all="ignore"):
        mr = np.where(mm_a == 0, 0.0, np.where(equity <= 0, np.inf, mm_a / equity))
    status = np.where(equity < 0, 3, np.where((mm_a > 0) & (equity <= mm_a), 2, np.where(mr >= 0.8, 1, 0)))
    iso_liq = iso & (MM > 0) & ((iso_m + upnl) <= MM)
    return dict(acc=acc, coll=coll, equity=equity, mm=mm_a, im=im_a, gross=gross, status=status,
                pos_acc=pa_, n_usd=n * sp, upnl_usd=upnl * sp, IM=IM, iso=iso, iso_liq=iso_liq, opt=opt,
                kind=kind, q=q)


# ---------------------------------------------------------------------------------------------------------------
# determinism and schema
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [False, True])
def test_same_seed_identical_other_seed_different(options):
    a = exchange_tables(1500, 42, options=options)
    b = exchange_tables(1500, 42, options=options)
    c = exchange_tables(1500, 43, options=options)
    assert a["as_of"] == b["as_of"]
    for name in TABLES:
        assert a[name].equals(b[name]), name
    assert not a["positions"].equals(c["positions"])
    assert not a["balances"].equals(c["balances"])
    assert not a["underlyings"].equals(c["underlyings"])


@pytest.mark.parametrize("options", [False, True])
def test_schema_exact_and_single_chunk(options):
    t = exchange_tables(800, 3, options=options)
    for name, expected in SCHEMAS.items():
        table = t[name]
        assert [(f.name, f.type) for f in table.schema] == expected, name
        for column in table.columns:
            assert column.num_chunks == 1, name
    assert isinstance(t["as_of"], datetime) and t["as_of"].utcoffset().total_seconds() == 0


def test_as_of_forms():
    for form in ("2025-06-01T12:00:00Z", datetime(2025, 6, 1, 12), np.datetime64("2025-06-01T12:00")):
        t = exchange_tables(50, 0, as_of=form, options=True)
        assert t["as_of"] == datetime(2025, 6, 1, 12, tzinfo=UTC)
        assert min(col(t["instruments"], "expiry")[col(t["instruments"], "kind") == "option"]) > t["as_of"]


# ---------------------------------------------------------------------------------------------------------------
# invariants
# ---------------------------------------------------------------------------------------------------------------

def _check_invariants(t, n_accounts):
    A, U, I, T, P, B = (t[k] for k in TABLES)
    # assets / underlyings
    assert len(set(col(A, "asset"))) == A.num_rows
    assert (col(A, "price") > 0).all() and np.isfinite(col(A, "price")).all()
    assert ((col(A, "collateral_weight") >= 0) & (col(A, "collateral_weight") <= 1)).all()
    assert (col(A, "borrow_weight") >= 1).all()
    und = col(U, "underlying")
    assert len(set(und)) == U.num_rows
    index = dict(zip(und, col(U, "index_price")))
    for a, u, p in zip(col(A, "asset"), col(A, "underlying"), col(A, "price")):
        if u is not None:
            assert u in index and p == index[u]
    for c in ("index_price", "price_range", "vol_range", "depth_usd", "adv_usd", "daily_vol"):
        v = col(U, c)
        assert np.isfinite(v).all() and (v > 0).all(), c
    assert ((col(U, "daily_vol") >= 0.015) & (col(U, "daily_vol") <= 0.08)).all()

    # instruments
    iid = col(I, "instrument_id")
    assert (iid >= 0).all() and (np.diff(iid) > 0).all()
    assert len(set(col(I, "symbol"))) == I.num_rows
    kind = col(I, "kind")
    assert set(kind) <= {"linear", "inverse", "option"}
    assert set(col(I, "underlying")) <= set(und)
    assert set(col(I, "settle_asset")) <= set(col(A, "asset"))
    assert (col(I, "contract_size") > 0).all()
    fut = kind != "option"
    mark = col(I, "mark_price")
    assert (mark[fut] > 0).all() and np.isnan(mark[~fut]).all()
    idx = np.array([index[u] for u in col(I, "underlying")])
    assert (np.abs(mark[fut] / idx[fut] - 1) < 1e-3).all()            # within 10 bp of the index
    sched = col(I, "tier_schedule")
    schedules = set(col(T, "schedule"))
    imf, mmf = col(I, "imf"), col(I, "mmf")
    for k in np.flatnonzero(fut):
        if sched[k] is None:
            assert 0 < mmf[k] <= imf[k] <= 1
        else:
            assert sched[k] in schedules and np.isnan(imf[k]) and np.isnan(mmf[k])
    assert all(s is None for s in sched[~fut])
    for c in ("strike", "implied_vol"):
        v = col(I, c)
        assert np.isnan(v[fut]).all() and (v[~fut] > 0).all(), c
    assert all(x is None for x in col(I, "expiry")[fut]) and all(x > t["as_of"] for x in col(I, "expiry")[~fut])
    assert set(col(I, "option_type")[~fut]) <= {"call", "put"} and all(x is None for x in col(I, "option_type")[fut])

    # tiers: increasing caps, last +inf, fractions, continuity
    ts = col(T, "schedule")
    for s in schedules:
        m = ts == s
        cap, im, mm, amt = (col(T, c)[m] for c in ("notional_cap", "imf", "mmf", "maintenance_amount"))
        assert 6 <= m.sum() <= 10
        assert (np.diff(cap) > 0).all() and cap[-1] == np.inf and np.isfinite(cap[:-1]).all()
        assert ((0 < mm) & (mm <= im) & (im <= 1)).all()
        assert (np.diff(im) >= 0).all() and (np.diff(mm) >= 0).all()
        assert 1 / 125 <= im[0] <= 1 / 50 and im[-1] >= 0.5
        expected = np.concatenate([[0.0], np.cumsum(cap[:-1] * np.diff(mm))])
        np.testing.assert_allclose(amt, expected, rtol=1e-12, atol=0)

    # positions: ids known, unique key, sorted (account, instrument, cross before isolated), valid values
    acc_p, ins_p = col(P, "account_id"), col(P, "instrument_id")
    iso = P["isolated_margin"].is_valid().to_numpy(zero_copy_only=False).astype(np.int64)
    assert np.isin(ins_p, iid).all()
    if P.num_rows > 1:
        d_acc, d_ins, d_iso = np.diff(acc_p), np.diff(ins_p.astype(np.int64)), np.diff(iso)
        assert (d_acc >= 0).all()
        same = d_acc == 0
        assert (d_ins[same] >= 0).all()
        tie = same & (d_ins == 0)
        assert (d_iso[tie] > 0).all()                                     # strictly increasing key -> unique
    q, E = col(P, "quantity"), col(P, "entry_price")
    assert np.isfinite(q).all() and np.isfinite(E).all()
    pkind = kind[np.searchsorted(iid, ins_p)]
    assert (E[pkind != "option"] > 0).all() and (E[pkind == "option"] >= 0).all()
    im_ = col(P, "isolated_margin")
    assert (im_[iso == 1] >= 0).all() and np.isfinite(im_[iso == 1]).all()

    # balances: assets known, unique and sorted by (account, asset)
    acc_b, asset_b, amt = col(B, "account_id"), col(B, "asset"), col(B, "amount")
    assert set(asset_b) <= set(col(A, "asset"))
    assert np.isfinite(amt).all()
    keys = list(zip(acc_b.tolist(), asset_b.tolist()))
    assert keys == sorted(set(keys))

    # accounts: sparse sorted int64 ids, exactly n_accounts of them
    accounts = np.unique(np.concatenate([acc_p, acc_b]))
    assert len(accounts) == n_accounts
    if n_accounts > 1:
        assert accounts[-1] - accounts[0] >= n_accounts             # spread out, not 0..n-1
        assert accounts[0] > 2 ** 31                                 # really needs int64


def test_invariants(venue):
    _check_invariants(venue, N_REALISM)


def test_invariants_options(venue_opt):
    _check_invariants(venue_opt, 6_000)


@pytest.mark.parametrize("kw", [dict(n_accounts=0), dict(n_accounts=1), dict(n_accounts=7, options=True),
                                dict(n_accounts=400, isolated_share=0.0), dict(n_accounts=400, n_underlyings=2),
                                dict(n_accounts=300, positions_per_account=0.0),
                                dict(n_accounts=300, positions_per_account=80.0)])
def test_edge_parameters(kw):
    t = exchange_tables(seed=5, **kw)
    _check_invariants(t, kw["n_accounts"])
    if kw.get("isolated_share") == 0.0 or kw.get("positions_per_account") == 0.0:
        assert t["positions"]["isolated_margin"].null_count == t["positions"].num_rows


def test_bad_arguments():
    with pytest.raises(ValueError):
        exchange_tables(-1)
    with pytest.raises(ValueError):
        exchange_tables(10, isolated_share=1.5)
    with pytest.raises(ValueError):
        exchange_tables(10, n_underlyings=1)


# ---------------------------------------------------------------------------------------------------------------
# realism
# ---------------------------------------------------------------------------------------------------------------

def test_market_realism(venue):
    U, A, I = venue["underlyings"], venue["assets"], venue["instruments"]
    und = list(col(U, "underlying"))
    assert und[:12] == ["BTC", "ETH", "SOL", "XRP", "DOGE", "BNB", "ADA", "AVAX", "LINK", "LTC", "DOT", "TRX"]
    index = dict(zip(und, col(U, "index_price")))
    assert 50_000 < index["BTC"] < 200_000 and 1_000 < index["ETH"] < 10_000
    # liquidity follows open interest: BTC the deepest
    depth = dict(zip(und, col(U, "depth_usd")))
    assert depth["BTC"] == max(depth.values())
    assets = dict(zip(col(A, "asset"), zip(col(A, "price"), col(A, "collateral_weight"), col(A, "borrow_weight"))))
    assert assets["USDT"] == (1.0, 1.0, 1.0)
    assert abs(assets["USDC"][0] - 1) < 1e-3 and 0.98 <= assets["USDC"][1] <= 1 and assets["USDC"][2] >= 1
    assert assets["BTC"][1] > assets["ETH"][1] and assets["BTC"][2] < assets["ETH"][2]
    sym = dict(zip(col(I, "symbol"), zip(col(I, "kind"), col(I, "settle_asset"), col(I, "contract_size"),
                                         col(I, "tier_schedule"))))
    assert sym["BTCUSD_PERP"] == ("inverse", "BTC", 100.0, "BTC_INV")
    assert sym["ETHUSD_PERP"] == ("inverse", "ETH", 10.0, "ETH_INV")
    assert all(f"{u}USDT" in sym and sym[f"{u}USDT"][0] == "linear" for u in und)
    kind = col(I, "kind")
    assert ((kind != "option") & np.array([s is None for s in col(I, "tier_schedule")])).sum() >= 2


def test_account_realism(venue):
    t = venue
    f = cross_figures(t)
    P, B = t["positions"], t["balances"]
    n = len(f["acc"])
    acc_p = np.unique(col(P, "account_id"))
    acc_b = np.unique(col(B, "account_id"))

    # positions per account: mean ~ positions_per_account, many small books, a few very large ones
    k = np.bincount(f["pos_acc"], minlength=n)
    assert 8.5 <= P.num_rows / n <= 11.5
    held = k[k > 0]
    assert (held <= 3).mean() > 0.2 and (held >= 30).mean() > 0.02
    # balances only / positions only
    assert 0.08 < 1 - len(acc_p) / n < 0.25
    assert 0 < 1 - len(acc_b) / n < 0.02
    # isolated share ~ isolated_share, and a few isolated positions at or past maintenance
    assert 0.02 < f["iso"].mean() < 0.04
    assert 0.005 < f["iso_liq"][f["iso"]].mean() < 0.05
    # heavy tail: top 1 % of accounts hold a large share of notional; sizes from ~$100 to millions
    notional = np.bincount(f["pos_acc"], weights=f["n_usd"], minlength=n)
    top = np.sort(notional)[::-1][: n // 100]
    assert top.sum() / notional.sum() > 0.4
    pos_coll = f["coll"][f["coll"] > 0]
    assert np.percentile(pos_coll, 5) < 500 and pos_coll.max() > 1e6
    # popularity: BTC then ETH perps carry the most notional
    und = col(t["instruments"], "underlying")[np.searchsorted(col(t["instruments"], "instrument_id"),
                                                             col(P, "instrument_id"))]
    by_und = {u: f["n_usd"][und == u].sum() for u in set(und)}
    ranked = sorted(by_und, key=by_und.get, reverse=True)
    assert ranked[:2] == ["BTC", "ETH"] and (by_und["BTC"] + by_und["ETH"]) / sum(by_und.values()) > 0.35
    # long/short mix; uPnL both ways
    q = f["q"]
    assert 0.35 < (q > 0).mean() < 0.65
    live = (f["kind"] != "option") & (q != 0)
    assert 0.3 < (f["upnl_usd"][live] > 0).mean() < 0.7
    # hedges: accounts holding opposite linear and inverse BTC positions
    ids = col(P, "instrument_id")
    cross = ~f["iso"]
    lin = {a: s for a, s in zip(col(P, "account_id")[(ids == 1) & cross], np.sign(q[(ids == 1) & cross]))}
    inv = {a: s for a, s in zip(col(P, "account_id")[(ids == 1001) & cross], np.sign(q[(ids == 1001) & cross]))}
    both = set(lin) & set(inv)
    assert sum(lin[a] == -inv[a] for a in both) > 0.3 * len(both) > 0
    # collateral: mostly USDT, some USDC/BTC/ETH, a few percent borrowing USDT
    assets, amt = col(B, "asset"), col(B, "amount")
    holders = {a: len(set(col(B, "account_id")[assets == a])) / n for a in ("USDT", "USDC", "BTC", "ETH")}
    assert holders["USDT"] > 0.8 and 0.05 < holders["USDC"] < 0.5 and 0.03 < holders["BTC"] < 0.3
    assert 0.02 < holders["ETH"] < 0.3
    assert 0.01 < ((assets == "USDT") & (amt < 0)).sum() / n < 0.1
    assert (amt[assets != "USDT"] >= 0).all()
    # the leverage the first bracket allows is respected when opening: isolated margin covers IM at the mark
    iso = f["iso"] & (q != 0)
    assert (col(P, "isolated_margin", 0.0)[iso] >= 0.999 * f["IM"][iso]).mean() > 0.98

    # SPEC §3 status mix: a few % margin call, ~1 % liquidatable, a few bankrupt
    st = f["status"]
    share = [(st == s).mean() for s in range(4)]
    assert share[0] > 0.9
    assert 0.01 < share[1] < 0.06
    assert 0.004 < share[2] < 0.025
    assert 0 < (st == 3).sum() and share[3] < 0.01
    # healthy accounts mostly within their initial margin; leverage spread from < 1x to > 20x
    healthy = (st == 0) & (f["gross"] > 0)
    assert (f["im"][healthy] <= f["equity"][healthy]).mean() > 0.97
    lev = f["gross"][healthy] / f["equity"][healthy]
    assert np.percentile(lev, 10) < 1.5 and np.percentile(lev, 99) > 20


def test_options_realism(venue_opt):
    t = venue_opt
    I, P, B = t["instruments"], t["positions"], t["balances"]
    kind = col(I, "kind")
    o = kind == "option"
    assert 100 <= o.sum() <= 1500
    assert set(col(I, "underlying")[o]) == {"BTC", "ETH", "SOL"}
    assert set(col(I, "settle_asset")[o]) == {"USDC"}
    assert all(x is None for x in col(I, "tier_schedule")[o])
    exp = col(I, "expiry")[o]
    assert len(set(exp)) >= 4
    # a smile: far strikes carry more vol than the at-the-money one, per expiry
    index = dict(zip(col(t["underlyings"], "underlying"), col(t["underlyings"], "index_price")))
    K, iv, und = col(I, "strike")[o], col(I, "implied_vol")[o], col(I, "underlying")[o]
    for u in ("BTC", "ETH"):
        for e in set(exp):
            m = (und == u) & (exp == e)
            mny = np.abs(np.log(K[m] / index[u]))
            assert iv[m][np.argmax(mny)] > iv[m][np.argmin(mny)]
            assert K[m].min() < index[u] < K[m].max()
    # option positions: long and short, premiums >= 0, some short calls covered by coin collateral
    r = np.searchsorted(col(I, "instrument_id"), col(P, "instrument_id"))
    po = kind[r] == "option"
    q = col(P, "quantity")
    assert po.sum() > 100 and (q[po] > 0).sum() > 20 and (q[po] < 0).sum() > 20
    assert (col(P, "entry_price")[po] >= 0).all()
    short_calls = po & (q < 0) & (col(I, "option_type")[r] == "call") & (col(I, "underlying")[r] == "BTC")
    btc = dict(zip(col(B, "account_id")[col(B, "asset") == "BTC"], col(B, "amount")[col(B, "asset") == "BTC"]))
    acc = col(P, "account_id")
    written = {}
    for a, x in zip(acc[short_calls], -q[short_calls]):
        written[a] = written.get(a, 0.0) + x
    covered = [a for a, x in written.items() if btc.get(a, 0.0) >= x]
    assert len(covered) >= 3
    # the venue with options is still mostly healthy under SPEC §3
    st = cross_figures(t)["status"]
    assert (st == 0).mean() > 0.88


# ---------------------------------------------------------------------------------------------------------------
# write / exchange
# ---------------------------------------------------------------------------------------------------------------

def test_write_roundtrip(tmp_path):
    t = exchange_tables(300, 9, options=True)
    out = write(t, tmp_path / "venue")
    files = sorted(p.name for p in (tmp_path / "venue").iterdir())
    assert files == sorted(f"{name}.parquet" for name in TABLES)
    assert str(out) == str(tmp_path / "venue")
    for name in TABLES:
        back = pq.read_table(tmp_path / "venue" / f"{name}.parquet")
        assert back.select(t[name].column_names).cast(t[name].schema).equals(t[name]), name
    meta = pq.read_schema(tmp_path / "venue" / "instruments.parquet").metadata
    assert datetime.fromisoformat(meta[b"fastrisk.as_of"].decode()) == t["as_of"]


def test_exchange_builds_market_and_book():
    pytest.importorskip("fastrisk.market")
    pytest.importorskip("fastrisk.book")
    from fastrisk.generate import exchange

    market, book = exchange(500, 2)
    t = exchange_tables(500, 2)
    assert book.positions.num_rows == t["positions"].num_rows
    assert book.balances.num_rows == t["balances"].num_rows
    assert market.instruments.num_rows == t["instruments"].num_rows


def test_default_venue_has_options():
    # The default venue trades options (the realistic mix); options=False is the futures-only venue peers use.
    t = exchange_tables(2_000, 5)
    kind = col(t["instruments"], "kind")
    held = np.isin(col(t["positions"], "instrument_id"), col(t["instruments"], "instrument_id")[kind == "option"])
    assert (kind == "option").sum() > 100 and 0.002 < held.mean() < 0.05
    futures_only = exchange_tables(2_000, 5, options=False)
    assert set(col(futures_only["instruments"], "kind")) == {"linear", "inverse"}
