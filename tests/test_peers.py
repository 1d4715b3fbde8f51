"""The peer implementations (NumPy, Polars, DuckDB) of SPEC §3 account risk: hand-computed cases and agreement.

The venue below is small enough to check by hand; the arithmetic is in the comments. Random venues then
check that the three peers agree with one another to 1e-9 relative.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from fastrisk.peers import ACCOUNT_SCHEMA, duckdb_account_risk, numpy_account_risk, polars_account_risk

INF = math.inf


def _polars(market, book, **kw):
    pytest.importorskip("polars")
    return polars_account_risk(market, book, **kw)


def _duckdb(market, book, **kw):
    pytest.importorskip("duckdb")
    return duckdb_account_risk(market, book, **kw)


PEERS = {"numpy": numpy_account_risk, "polars": _polars, "duckdb": _duckdb}


@pytest.fixture(params=list(PEERS))
def peer(request):
    return PEERS[request.param]


# ---------------------------------------------------------------------------------------------------------
# A tiny venue builder: rows in, SPEC §1 tables out.

ASSET_TYPES = {"asset": pa.string(), "price": pa.float64(), "collateral_weight": pa.float64(),
               "borrow_weight": pa.float64(), "underlying": pa.string()}
UNDERLYING_TYPES = {"underlying": pa.string(), "index_price": pa.float64()}
INSTRUMENT_TYPES = {"instrument_id": pa.int32(), "symbol": pa.string(), "kind": pa.string(),
                    "underlying": pa.string(), "settle_asset": pa.string(), "contract_size": pa.float64(),
                    "mark_price": pa.float64(), "tier_schedule": pa.string(), "imf": pa.float64(),
                    "mmf": pa.float64(), "strike": pa.float64(), "expiry": pa.timestamp("us", tz="UTC"),
                    "option_type": pa.string(), "implied_vol": pa.float64()}
TIER_TYPES = {"schedule": pa.string(), "notional_cap": pa.float64(), "imf": pa.float64(), "mmf": pa.float64(),
              "maintenance_amount": pa.float64()}
POSITION_TYPES = {"account_id": pa.int64(), "instrument_id": pa.int32(), "quantity": pa.float64(),
                  "entry_price": pa.float64(), "isolated_margin": pa.float64()}
BALANCE_TYPES = {"account_id": pa.int64(), "asset": pa.string(), "amount": pa.float64()}


def table(rows, types, drop=()):
    """Rows (dicts; missing keys are null) -> a pa.Table with the SPEC column types."""
    types = {k: t for k, t in types.items() if k not in drop}
    return pa.table({k: pa.array([r.get(k) for r in rows], type=t) for k, t in types.items()})


def venue(assets, underlyings, instruments, tiers, positions, balances, *, with_amount=False):
    drop = () if with_amount else ("maintenance_amount",)
    market = SimpleNamespace(assets=table(assets, ASSET_TYPES), underlyings=table(underlyings, UNDERLYING_TYPES),
                             instruments=table(instruments, INSTRUMENT_TYPES),
                             tiers=table(tiers, TIER_TYPES, drop=drop),
                             as_of=datetime(2024, 1, 1, tzinfo=timezone.utc))
    book = SimpleNamespace(positions=table(positions, POSITION_TYPES), balances=table(balances, BALANCE_TYPES))
    return market, book


# ---------------------------------------------------------------------------------------------------------
# The hand venue.
#
# Schedule "T" (USD notional):  caps 10 000 | 100 000 | inf,  imf .02 .05 .10,  mmf .01 .025 .05
#   amounts (continuity): 0;  0 + 10 000·(.025 − .01) = 150;  150 + 100 000·(.05 − .025) = 2 650
# Schedule "INV" (coin notional): caps 1 | 10 | inf,  imf .02 .05 .10,  mmf .01 .02 .05
#   amounts: 0;  1·(.02 − .01) = 0.01;  0.01 + 10·(.05 − .02) = 0.31

ASSETS = [
    {"asset": "USD", "price": 1.0, "collateral_weight": 1.0, "borrow_weight": 1.0},
    {"asset": "BTC", "price": 50_000.0, "collateral_weight": 0.9, "borrow_weight": 1.1, "underlying": "BTC"},
    {"asset": "ETH", "price": 2_000.0, "collateral_weight": 0.8, "borrow_weight": 1.2, "underlying": "ETH"},
]
UNDERLYINGS = [{"underlying": "BTC", "index_price": 50_000.0}, {"underlying": "ETH", "index_price": 2_000.0}]
INSTRUMENTS = [
    {"instrument_id": 0, "symbol": "BTCUSDT", "kind": "linear", "underlying": "BTC", "settle_asset": "USD",
     "contract_size": 0.125, "mark_price": 50_000.0, "tier_schedule": "T"},
    {"instrument_id": 1, "symbol": "ETHUSDT", "kind": "linear", "underlying": "ETH", "settle_asset": "USD",
     "contract_size": 1.0, "mark_price": 2_000.0, "imf": 0.1, "mmf": 0.05},
    {"instrument_id": 7, "symbol": "BTCUSD", "kind": "inverse", "underlying": "BTC", "settle_asset": "BTC",
     "contract_size": 100.0, "mark_price": 50_000.0, "tier_schedule": "INV"},
    {"instrument_id": 9, "symbol": "BTC-C-60000", "kind": "option", "underlying": "BTC", "settle_asset": "USD",
     "contract_size": 1.0, "strike": 60_000.0, "expiry": datetime(2024, 3, 1, tzinfo=timezone.utc),
     "option_type": "call", "implied_vol": 0.6},
]
TIERS = [  # deliberately not sorted
    {"schedule": "T", "notional_cap": 100_000.0, "imf": 0.05, "mmf": 0.025, "maintenance_amount": 150.0},
    {"schedule": "INV", "notional_cap": 1.0, "imf": 0.02, "mmf": 0.01, "maintenance_amount": 0.0},
    {"schedule": "T", "notional_cap": 10_000.0, "imf": 0.02, "mmf": 0.01, "maintenance_amount": 0.0},
    {"schedule": "INV", "notional_cap": 10.0, "imf": 0.05, "mmf": 0.02, "maintenance_amount": 0.01},
    {"schedule": "T", "notional_cap": INF, "imf": 0.10, "mmf": 0.05, "maintenance_amount": 2_650.0},
    {"schedule": "INV", "notional_cap": INF, "imf": 0.10, "mmf": 0.05, "maintenance_amount": 0.31},
]


def P(account, instrument, q, entry, iso=None):
    return {"account_id": account, "instrument_id": instrument, "quantity": q, "entry_price": entry,
            "isolated_margin": iso}


def B(account, asset, amount):
    return {"account_id": account, "asset": asset, "amount": amount}


POSITIONS = [
    # account 2, positions only: 8 contracts · 0.125 = 1 BTC long from 49 000.
    #   notional 50 000 -> bracket 2: IM = 50 000·.05 = 2 500, MM = 50 000·.025 − 150 = 1 100
    #   upnl = 1·(50 000 − 49 000) = 1 000 = equity <= MM -> liquidatable; margin_ratio 1.1; leverage 50
    P(2, 0, 8.0, 49_000.0),
    # account 3: tier crossing.
    #   16 contracts = 2 BTC short from 51 000: notional 100 000, exactly the cap of bracket 2 -> bracket 2:
    #     IM 5 000, MM 2 500 − 150 = 2 350; upnl = −2·(50 000 − 51 000) = +2 000
    #   ETHUSDT (flat .10/.05) 30 long from 2 000: notional 60 000, IM 6 000, MM 3 000, upnl 0
    P(3, 0, -16.0, 51_000.0),
    P(3, 1, 30.0, 2_000.0),
    # account 4: bracket 3 (cross), inverse (cross), borrow, and two isolated positions.
    #   BTCUSD inverse −1 000 contracts ·100 USD from 40 000: notional = 1 000·100/50 000 = 2 BTC -> INV bracket 2
    #     IM = 2·.05 = 0.1 BTC = 5 000 USD; MM = 2·.02 − 0.01 = 0.03 BTC = 1 500 USD; notional_usd 100 000
    #     upnl = −1 000·100·(1/40 000 − 1/50 000) = −100 000·0.000005 = −0.5 BTC = −25 000 USD
    #   ETHUSDT isolated 10 long from 2 100, margin 1 500: MM = 20 000·.05 = 1 000;
    #     equity_iso = (1 500 + 10·(2 000 − 2 100))·1 = 500 <= 1 000 -> liquidatable
    #   BTCUSDT isolated 40 long (5 BTC) from 50 000, margin 30 000: notional 250 000 -> bracket 3,
    #     MM = 250 000·.05 − 2 650 = 9 850; equity_iso = 30 000 > 9 850 -> fine
    P(4, 7, -1_000.0, 40_000.0),
    P(4, 1, 10.0, 2_100.0, iso=1_500.0),
    P(4, 0, 40.0, 50_000.0, iso=30_000.0),
    # account 5: bankrupt. USD 100; ETHUSDT 1 short from 1 000: upnl = −1·(2 000 − 1 000) = −1 000
    #   equity = −900 < 0; MM = 100 -> margin_ratio inf; leverage = 2 000/−900 -> inf
    P(5, 1, -1.0, 1_000.0),
    # account 6: margin call. USD 120; ETHUSDT 1 long from 2 000: MM 100, IM 200, equity 120
    #   120 > 100, margin_ratio = 100/120 = 0.8333 >= 0.8
    P(6, 1, 1.0, 2_000.0),
    # account 9: bracket 3, cross. 40 contracts = 5 BTC long from 50 000, USD 20 000:
    #   notional 250 000: IM 25 000, MM = 250 000·.05 − 2 650 = 9 850 (= 100 000·.025 − 150 + 150 000·.05:
    #   continuous); equity 20 000; margin_ratio 0.4925; leverage 12.5 -> healthy
    P(9, 0, 40.0, 50_000.0),
    # account 8: a zero quantity only: counts in n_positions, nothing else.
    P(8, 0, 0.0, 50_000.0),
]
BALANCES = [
    # account 1, balances only: 1 000 USD + 0.1 BTC: collateral = 1 000 + 0.1·50 000·0.9 = 5 500
    B(1, "USD", 1_000.0), B(1, "BTC", 0.1),
    # account 4: 2 BTC = 2·50 000·.9 = 90 000; −5 ETH borrowed = −5·2 000·1.2 = −12 000; collateral 78 000
    B(4, "BTC", 2.0), B(4, "ETH", -5.0),
    B(5, "USD", 100.0),
    B(6, "USD", 120.0),
    B(9, "USD", 20_000.0),
]

# Expected rows (account_id -> figures), from the comments above.
EXPECTED = {
    1: dict(collateral=5_500.0, unrealized_pnl=0.0, equity=5_500.0, initial_margin=0.0, maintenance_margin=0.0,
            margin_ratio=0.0, free_collateral=5_500.0, gross_notional=0.0, leverage=0.0, status="healthy",
            n_positions=0, isolated_equity=0.0, n_isolated_liquidatable=0),
    2: dict(collateral=0.0, unrealized_pnl=1_000.0, equity=1_000.0, initial_margin=2_500.0,
            maintenance_margin=1_100.0, margin_ratio=1.1, free_collateral=-1_500.0, gross_notional=50_000.0,
            leverage=50.0, status="liquidatable", n_positions=1, isolated_equity=0.0, n_isolated_liquidatable=0),
    # account 3: upnl 2 000 = equity; IM 5 000 + 6 000; MM 2 350 + 3 000 = 5 350 >= 2 000 -> liquidatable
    3: dict(collateral=0.0, unrealized_pnl=2_000.0, equity=2_000.0, initial_margin=11_000.0,
            maintenance_margin=5_350.0, margin_ratio=5_350 / 2_000, free_collateral=-9_000.0,
            gross_notional=160_000.0, leverage=80.0, status="liquidatable", n_positions=2,
            isolated_equity=0.0, n_isolated_liquidatable=0),
    # account 4: equity = 78 000 − 25 000 = 53 000; ratio 1 500/53 000; leverage 100 000/53 000
    4: dict(collateral=78_000.0, unrealized_pnl=-25_000.0, equity=53_000.0, initial_margin=5_000.0,
            maintenance_margin=1_500.0, margin_ratio=1_500 / 53_000, free_collateral=48_000.0,
            gross_notional=100_000.0, leverage=100_000 / 53_000, status="healthy", n_positions=3,
            isolated_equity=30_500.0, n_isolated_liquidatable=1),
    5: dict(collateral=100.0, unrealized_pnl=-1_000.0, equity=-900.0, initial_margin=200.0,
            maintenance_margin=100.0, margin_ratio=INF, free_collateral=-1_100.0, gross_notional=2_000.0,
            leverage=INF, status="bankrupt", n_positions=1, isolated_equity=0.0, n_isolated_liquidatable=0),
    6: dict(collateral=120.0, unrealized_pnl=0.0, equity=120.0, initial_margin=200.0, maintenance_margin=100.0,
            margin_ratio=100 / 120, free_collateral=-80.0, gross_notional=2_000.0, leverage=2_000 / 120,
            status="margin_call", n_positions=1, isolated_equity=0.0, n_isolated_liquidatable=0),
    8: dict(collateral=0.0, unrealized_pnl=0.0, equity=0.0, initial_margin=0.0, maintenance_margin=0.0,
            margin_ratio=0.0, free_collateral=0.0, gross_notional=0.0, leverage=0.0, status="healthy",
            n_positions=1, isolated_equity=0.0, n_isolated_liquidatable=0),
    9: dict(collateral=20_000.0, unrealized_pnl=0.0, equity=20_000.0, initial_margin=25_000.0,
            maintenance_margin=9_850.0, margin_ratio=0.4925, free_collateral=-5_000.0, gross_notional=250_000.0,
            leverage=12.5, status="healthy", n_positions=1, isolated_equity=0.0, n_isolated_liquidatable=0),
}


def hand_venue(**kw):
    return venue(ASSETS, UNDERLYINGS, INSTRUMENTS, TIERS, POSITIONS, BALANCES, **kw)


def assert_tables_close(a: pa.Table, b: pa.Table, rtol=1e-9):
    """Same schema, same accounts and statuses, floats within rtol (scaled by the column's magnitude)."""
    assert a.schema == b.schema == ACCOUNT_SCHEMA
    assert a.num_rows == b.num_rows
    for f in ACCOUNT_SCHEMA:
        x, y = a.column(f.name), b.column(f.name)
        if pa.types.is_floating(f.type):
            x, y = x.to_numpy(), y.to_numpy()
            assert np.array_equal(np.isinf(x), np.isinf(y)), f.name
            assert np.array_equal(x[np.isinf(x)], y[np.isinf(y)]), f.name
            fin = np.isfinite(x)
            scale = max(np.abs(x[fin]).max(initial=0.0), 1.0)
            np.testing.assert_allclose(x[fin], y[fin], rtol=rtol, atol=rtol * scale, err_msg=f.name)
        else:
            assert x.to_pylist() == y.to_pylist(), f.name


# ---------------------------------------------------------------------------------------------------------
# Hand-computed figures

@pytest.mark.parametrize("with_amount", [False, True])
def test_hand_venue(peer, with_amount):
    market, book = hand_venue(with_amount=with_amount)
    out = peer(market, book)
    assert out.schema == ACCOUNT_SCHEMA
    assert out.column("status").type == pa.dictionary(pa.int8(), pa.string())
    assert out.column("status").chunk(0).dictionary.to_pylist() == \
        ["healthy", "margin_call", "liquidatable", "bankrupt"]
    rows = {r["account_id"]: r for r in out.to_pylist()}
    assert list(rows) == sorted(EXPECTED)
    for account, expected in EXPECTED.items():
        got = rows[account]
        assert got["option_value"] == 0.0
        for k, v in expected.items():
            if isinstance(v, float):
                assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-9), (account, k)
            else:
                assert got[k] == v, (account, k)


def test_margin_call_ratio_parameter(peer):
    market, book = hand_venue()
    rows = {r["account_id"]: r["status"] for r in peer(market, book, margin_call_ratio=0.9).to_pylist()}
    assert rows[6] == "healthy"  # 0.8333 < 0.9
    rows = {r["account_id"]: r["status"] for r in peer(market, book, margin_call_ratio=0.02).to_pylist()}
    assert rows[4] == "margin_call"  # 1 500/53 000 = 0.0283 >= 0.02
    assert rows[1] == "healthy"  # margin_ratio 0 (no MM)


def test_options_are_out_of_scope(peer):
    market, book = hand_venue()
    book.positions = table(POSITIONS + [P(2, 9, -1.0, 1_000.0)], POSITION_TYPES)
    with pytest.raises(NotImplementedError):
        peer(market, book)


def test_dictionary_balances_chunks_and_row_order(peer):
    """Dictionary-encoded assets, several chunks, shuffled rows: same result."""
    market, book = hand_venue()
    expected = peer(market, book)
    rng = np.random.default_rng(0)
    pos = book.positions.take(rng.permutation(book.positions.num_rows))
    bal = book.balances.take(rng.permutation(book.balances.num_rows))
    asset = pa.chunked_array([c.dictionary_encode() for c in bal.column("asset").chunks])
    bal = bal.set_column(bal.schema.get_field_index("asset"), "asset", asset)
    pos = pa.concat_tables([pos.slice(0, 3), pos.slice(3)])
    bal = pa.concat_tables([bal.slice(0, 2), bal.slice(2)])
    tiers = market.tiers.take(rng.permutation(market.tiers.num_rows))
    market2 = SimpleNamespace(**{**vars(market), "tiers": tiers})
    got = peer(market2, SimpleNamespace(positions=pos, balances=bal))
    assert_tables_close(got, expected, rtol=1e-15)


def test_sparse_and_negative_account_ids(peer):
    market, _ = hand_venue()
    book = SimpleNamespace(
        positions=table([P(10**15, 0, 8.0, 49_000.0), P(-3, 1, 1.0, 2_000.0)], POSITION_TYPES),
        balances=table([B(-3, "USD", 120.0), B(2**40, "BTC", 1.0)], BALANCE_TYPES))
    out = peer(market, book)
    assert out.column("account_id").to_pylist() == [-3, 2**40, 10**15]
    assert out.column("status").to_pylist() == ["margin_call", "healthy", "liquidatable"]
    assert out.column("collateral").to_pylist() == [120.0, 45_000.0, 0.0]


def test_empty_sides(peer):
    market, _ = hand_venue()
    only_balances = SimpleNamespace(positions=table([], POSITION_TYPES), balances=table(BALANCES, BALANCE_TYPES))
    out = peer(market, only_balances)
    assert out.column("account_id").to_pylist() == [1, 4, 5, 6, 9]
    assert out.column("collateral").to_pylist() == [5_500.0, 78_000.0, 100.0, 120.0, 20_000.0]
    assert out.column("n_positions").to_pylist() == [0] * 5
    only_positions = SimpleNamespace(positions=table(POSITIONS, POSITION_TYPES), balances=table([], BALANCE_TYPES))
    out = peer(market, only_positions)
    assert out.column("account_id").to_pylist() == [2, 3, 4, 5, 6, 8, 9]
    assert out.column("collateral").to_pylist() == [0.0] * 7
    empty = SimpleNamespace(positions=table([], POSITION_TYPES), balances=table([], BALANCE_TYPES))
    out = peer(market, empty)
    assert out.num_rows == 0 and out.schema == ACCOUNT_SCHEMA


# ---------------------------------------------------------------------------------------------------------
# Agreement on random venues

def random_venue(seed, n_accounts=400, n_instruments=25, n_schedules=4, with_amount=False):
    rng = np.random.default_rng(seed)
    assets = [{"asset": "USD", "price": 1.0, "collateral_weight": 1.0, "borrow_weight": 1.0}]
    underlyings = []
    for k in range(4):
        px = float(rng.uniform(1, 60_000))
        underlyings.append({"underlying": f"U{k}", "index_price": px})
        assets.append({"asset": f"U{k}", "price": px, "collateral_weight": float(rng.uniform(0.5, 1.0)),
                       "borrow_weight": float(rng.uniform(1.0, 1.5)), "underlying": f"U{k}"})
    tiers = []
    for s in range(n_schedules):
        n = int(rng.integers(1, 7))
        caps = np.sort(rng.choice([1e3, 5e3, 1e4, 5e4, 1e5, 1e6, 1e7], size=n - 1, replace=False))
        mmf = np.sort(rng.uniform(0.004, 0.1, size=n))
        imf = np.maximum(mmf * 2, 0.01).clip(max=1.0)
        caps = np.append(caps, INF)
        amt = np.zeros(n)
        for i in range(1, n):
            amt[i] = amt[i - 1] + caps[i - 1] * (mmf[i] - mmf[i - 1])
        tiers += [{"schedule": f"S{s}", "notional_cap": float(caps[i]), "imf": float(imf[i]), "mmf": float(mmf[i]),
                   "maintenance_amount": float(amt[i])} for i in range(n)]
    instruments = []
    for i in range(n_instruments):
        u = int(rng.integers(4))
        px = underlyings[u]["index_price"]
        inverse = rng.random() < 0.3
        inst = {"instrument_id": 3 * i + 1, "symbol": f"I{i}", "kind": "inverse" if inverse else "linear",
                "underlying": f"U{u}", "settle_asset": f"U{u}" if inverse else "USD",
                "contract_size": 100.0 if inverse else float(rng.choice([0.001, 0.01, 1.0])),
                "mark_price": px * float(rng.uniform(0.98, 1.02))}
        if rng.random() < 0.25:
            inst["imf"], inst["mmf"] = 0.1, 0.05
        else:
            inst["tier_schedule"] = f"S{int(rng.integers(n_schedules))}"
        instruments.append(inst)
    positions, balances = [], []
    for a in rng.choice(10 * n_accounts, size=n_accounts, replace=False):
        a = int(a)
        for i in rng.choice(n_instruments, size=int(rng.integers(0, 6)), replace=False):
            inst = instruments[i]
            q = float(rng.choice([0.0, 1.0, 10.0, 1000.0, 1e5]) * rng.choice([-1, 1]) * rng.uniform(0.5, 2))
            entry = inst["mark_price"] * float(rng.uniform(0.8, 1.2))
            iso = float(rng.uniform(0, 5_000)) if rng.random() < 0.2 else None
            positions.append(P(a, inst["instrument_id"], q, entry, iso))
        for asset in rng.choice(len(assets), size=int(rng.integers(0, 3)), replace=False):
            amount = float(rng.normal(0, 10_000) / assets[asset]["price"])
            balances.append(B(a, assets[asset]["asset"], amount))
    return venue(assets, underlyings, instruments, tiers, positions, balances, with_amount=with_amount)


@pytest.mark.parametrize("seed", range(5))
def test_peers_agree(seed):
    pytest.importorskip("polars")
    pytest.importorskip("duckdb")
    market, book = random_venue(seed, with_amount=bool(seed % 2))
    ref = numpy_account_risk(market, book)
    assert ref.num_rows > 0
    assert_tables_close(polars_account_risk(market, book), ref)
    assert_tables_close(duckdb_account_risk(market, book), ref)
    # All four statuses occur across seeds; at least two in each.
    assert len(set(ref.column("status").to_pylist())) >= 2


@pytest.mark.parametrize("seed", [5, 6])
def test_grouped_and_shuffled_positions_agree(peer, seed):
    """Positions grouped by account (NumPy: segment sums) or in any order (NumPy: scatter-add): same result."""
    market, book = random_venue(seed)
    grouped = SimpleNamespace(positions=book.positions.sort_by("account_id"), balances=book.balances)
    assert_tables_close(peer(market, grouped), peer(market, book), rtol=1e-12)
    assert_tables_close(peer(market, grouped), numpy_account_risk(market, book))


def test_single_bracket_schedules(peer):
    """Schedules of one +inf bracket only (the union of caps is just +inf)."""
    market, book = hand_venue()
    market.tiers = table([
        {"schedule": "T", "notional_cap": INF, "imf": 0.05, "mmf": 0.025},
        {"schedule": "INV", "notional_cap": INF, "imf": 0.05, "mmf": 0.02},
    ], TIER_TYPES, drop=("maintenance_amount",))
    rows = {r["account_id"]: r for r in peer(market, book).to_pylist()}
    # account 9: 5 BTC long, notional 250 000: IM 12 500, MM 6 250
    assert rows[9]["initial_margin"] == pytest.approx(12_500.0, rel=1e-12)
    assert rows[9]["maintenance_margin"] == pytest.approx(6_250.0, rel=1e-12)
    # account 4: inverse 2 BTC -> MM 0.04 BTC = 2 000 USD, IM 0.1 BTC = 5 000 USD
    assert rows[4]["maintenance_margin"] == pytest.approx(2_000.0, rel=1e-12)
    assert rows[4]["initial_margin"] == pytest.approx(5_000.0, rel=1e-12)


def test_polars_without_bin_intervals(monkeypatch):
    """Older Polars have no Expr.bin_intervals: the search_sorted path gives the same brackets."""
    pl = pytest.importorskip("polars")
    market, book = random_venue(3)
    expected = polars_account_risk(market, book)
    if hasattr(pl.Expr, "bin_intervals"):
        monkeypatch.delattr(pl.Expr, "bin_intervals")
    assert_tables_close(polars_account_risk(market, book), expected, rtol=1e-15)
    assert_tables_close(polars_account_risk(*hand_venue()), numpy_account_risk(*hand_venue()))


def test_numpy_matches_plain_python():
    """A plain loop over rows (written here, independent of the peers) on a random venue."""
    market, book = random_venue(11, n_accounts=150)
    assets = {r["asset"]: r for r in market.assets.to_pylist()}
    inst = {r["instrument_id"]: r for r in market.instruments.to_pylist()}
    sched = {}
    for r in sorted(market.tiers.to_pylist(), key=lambda r: r["notional_cap"]):
        sched.setdefault(r["schedule"], []).append(r)
    acc = {}
    for b in book.balances.to_pylist():
        a = assets[b["asset"]]
        w = a["collateral_weight"] if b["amount"] > 0 else a["borrow_weight"]
        d = acc.setdefault(b["account_id"], dict(col=0.0, upnl=0.0, im=0.0, mm=0.0, n=0, iso=0.0, liq=0, g=0.0))
        d["col"] += a["price"] * b["amount"] * w
    for p in book.positions.to_pylist():
        i = inst[p["instrument_id"]]
        q, c, Pm, E = p["quantity"], i["contract_size"], i["mark_price"], p["entry_price"]
        px = assets[i["settle_asset"]]["price"]
        if i["kind"] == "linear":
            N, upnl = abs(q) * c * Pm, q * c * (Pm - E)
        else:
            N, upnl = abs(q) * c / Pm, q * c * (1 / E - 1 / Pm)
        if i["tier_schedule"] is None:
            imf, mmf, amt = i["imf"], i["mmf"], 0.0
        else:
            amt = 0.0
            rows = sched[i["tier_schedule"]]
            for k, t in enumerate(rows):
                if k:
                    amt += rows[k - 1]["notional_cap"] * (t["mmf"] - rows[k - 1]["mmf"])
                if N <= t["notional_cap"]:
                    imf, mmf = t["imf"], t["mmf"]
                    break
        im, mm = N * imf * px, (N * mmf - amt) * px
        d = acc.setdefault(p["account_id"], dict(col=0.0, upnl=0.0, im=0.0, mm=0.0, n=0, iso=0.0, liq=0, g=0.0))
        d["n"] += 1
        if p["isolated_margin"] is not None:
            e = (p["isolated_margin"] + upnl) * px
            d["iso"] += e
            d["liq"] += int(mm > 0 and e <= mm)
        else:
            d["upnl"] += upnl * px
            d["im"] += im
            d["mm"] += mm
            d["g"] += N * px
    out = numpy_account_risk(market, book).to_pylist()
    assert [r["account_id"] for r in out] == sorted(acc)
    for r in out:
        d = acc[r["account_id"]]
        for k, v in (("collateral", d["col"]), ("unrealized_pnl", d["upnl"]), ("initial_margin", d["im"]),
                     ("maintenance_margin", d["mm"]), ("gross_notional", d["g"]), ("isolated_equity", d["iso"])):
            assert r[k] == pytest.approx(v, rel=1e-9, abs=1e-6), (r["account_id"], k)
        assert (r["n_positions"], r["n_isolated_liquidatable"]) == (d["n"], d["liq"])


def test_plain_sweep_yardstick():
    # The bench's plain tiered sweep computes account_risk's collateral, PnL and margins exactly for the cross
    # linear futures of a generated venue (which also holds inverse futures and isolated positions: cut away).
    from fastrisk import generate
    from fastrisk.bench import check_plain_sweep, linear_cross_book

    market, book = generate.exchange(3000, seed=11)
    sub = linear_cross_book(market, book)
    kinds = dict(zip(market.instruments.column("instrument_id").to_pylist(),
                     market.instruments.column("kind").cast(pa.string()).to_pylist()))
    assert 0 < sub.positions.num_rows < book.positions.num_rows
    assert {kinds[i] for i in sub.positions.column("instrument_id").to_pylist()} == {"linear"}
    assert sub.positions.column("isolated_margin").null_count == sub.positions.num_rows
    assert book.positions.column("isolated_margin").null_count < book.positions.num_rows
    check_plain_sweep(market, sub)
    check_plain_sweep(market, book)  # cuts the book itself
    # And against the plain reference (which account_risk is checked against elsewhere), on a second venue.
    from fastrisk import reference

    check_plain_sweep(*generate.exchange(300, seed=12), oracle=reference.account_risk, atol=1e-9)
