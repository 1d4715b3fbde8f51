"""Hand-computed examples of SPEC §2-3, each with its arithmetic written out.

Every venue test runs twice: on the plain reference (``fastrisk.reference``) and on the public, kernel-backed
API (``fastrisk.account_risk`` / ``fastrisk.position_risk``). The standard tiny venue is described in
``tests/builders.py``; in short: USD, USDT at 1 (no haircut), BTC at 50000 (weights 0.9 / 1.1), ETH at 2000
(0.8 / 1.2); instrument 1 = BTCUSDT-PERP (linear, c = 0.01, mark 50000, imf 10 % / mmf 5 %), 2 = BTCUSD-INV
(inverse, 100 USD per contract, BTC-settled, mark 50000, 5 % / 2.5 %), 3 = ETHUSDT-PERP (linear, c = 1,
mark 2000, tier schedule "ETH").
"""

from __future__ import annotations

import math
from datetime import timedelta

import pyarrow as pa
import pytest

import builders as b
import fastrisk as fr
from builders import AS_OF, ONE_YEAR
from fastrisk import reference as ref

STATUS = ["healthy", "margin_call", "liquidatable", "bankrupt"]
REL = 1e-12  # exact arithmetic up to rounding; the kernel must agree with the reference to this


# --------------------------------------------------------------------------------------------- plumbing

class Impl:
    """One of the two implementations under test, with the means to build its inputs."""

    def __init__(self, name):
        self.name = name

    @property
    def is_reference(self):
        return self.name == "reference"

    def market(self, **tables):
        return b.make_market(fallback=self.is_reference, **tables)

    def book(self, positions=(), balances=()):
        return b.make_book(positions, balances, fallback=self.is_reference)

    def account_risk(self, market, book):
        return (ref.account_risk if self.is_reference else fr.account_risk)(market, book)

    def position_risk(self, market, book):
        return (ref.position_risk if self.is_reference else fr.position_risk)(market, book)


@pytest.fixture(params=["reference", "kernel"])
def impl(request):
    return Impl(request.param)


def by_account(table):
    return {r["account_id"]: r for r in table.to_pylist()}


def by_position(table):
    return {(r["account_id"], r["instrument_id"], r["isolated"]): r for r in table.to_pylist()}


def check(row, rel=REL, abs_=1e-9, **expected):
    """Assert row[k] == v for every expected item; floats to ``rel`` (or ``abs_`` near zero)."""
    for k, v in expected.items():
        got = row[k]
        if isinstance(v, float):
            assert got == pytest.approx(v, rel=rel, abs=abs_), f"{k}: got {got!r}, expected {v!r}"
        else:
            assert got == v, f"{k}: got {got!r}, expected {v!r}"


XYZ = 100.0  # index price of the option underlying XYZ


def N(x):
    """Standard normal cdf, typed in from the textbook (independent of scipy and of the reference)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def textbook_black76(F, K, T, sigma, r, call):
    """Hull, 'Black's model': c = e^{-rT}[F N(d1) - K N(d2)], p = e^{-rT}[K N(-d2) - F N(-d1)]."""
    d1 = (math.log(F / K) + sigma ** 2 * T / 2) / (sigma * math.sqrt(T))
    d2 = d1 - sigma * math.sqrt(T)
    if call:
        return math.exp(-r * T) * (F * N(d1) - K * N(d2))
    return math.exp(-r * T) * (K * N(-d2) - F * N(-d1))


# ------------------------------------------------------------------------------------------------ schema

def test_output_schemas(impl):
    market = impl.market()
    book = impl.book([(1, 1, 1.0, 50000.0)], [(1, "USDT", 1000.0), (2, "USDT", 5.0)])
    acc = impl.account_risk(market, book)
    assert acc.schema.names == [
        "account_id", "collateral", "unrealized_pnl", "option_value", "equity", "initial_margin",
        "maintenance_margin", "margin_ratio", "free_collateral", "gross_notional", "leverage", "status",
        "n_positions", "isolated_equity", "n_isolated_liquidatable"]
    types = dict(zip(acc.schema.names, acc.schema.types))
    assert types["account_id"] == pa.int64()
    assert types["status"] == pa.dictionary(pa.int8(), pa.string())
    assert types["n_positions"] == pa.int32() and types["n_isolated_liquidatable"] == pa.int32()
    for name in ("collateral", "unrealized_pnl", "option_value", "equity", "initial_margin", "maintenance_margin",
                 "margin_ratio", "free_collateral", "gross_notional", "leverage", "isolated_equity"):
        assert types[name] == pa.float64(), name
    status = acc.column("status").combine_chunks()
    assert status.dictionary.to_pylist() == STATUS  # index = code, whatever statuses occur

    pos = impl.position_risk(market, book)
    required = ["account_id", "instrument_id", "isolated", "quantity", "mark_price", "notional_usd", "upnl_usd",
                "value_usd", "tier", "initial_margin", "maintenance_margin", "delta", "gamma", "vega", "theta"]
    # These columns, in this relative order; an implementation may interleave extra ones.
    assert [n for n in pos.schema.names if n in required] == required
    ptypes = dict(zip(pos.schema.names, pos.schema.types))
    assert ptypes["account_id"] == pa.int64() and ptypes["instrument_id"] == pa.int32()
    assert ptypes["isolated"] == pa.bool_() and ptypes["tier"] == pa.int16()


# ------------------------------------------------------------------------------------------------ linear

def test_linear_long_and_short(impl):
    # BTCUSDT-PERP: c = 0.01 BTC, mark P = 50000, flat imf 0.10 / mmf 0.05, settle USDT at 1.
    # Account 1, long 10 @ 48000, 10000 USDT:
    #   notional = |10|*0.01*50000 = 5000;  upnl = 10*0.01*(50000-48000) = 200
    #   IM = 5000*0.10 = 500;  MM = 5000*0.05 = 250
    #   equity = 10000 + 200 = 10200;  ratio = 250/10200;  free = 10200-500 = 9700;  leverage = 5000/10200
    # Account 2, short 10 @ 48000, 10000 USDT:
    #   upnl = -10*0.01*(50000-48000) = -200;  equity = 9800;  same IM/MM/notional;  free = 9300
    market = impl.market()
    book = impl.book([(1, 1, 10.0, 48000.0), (2, 1, -10.0, 48000.0)], [(1, "USDT", 10000.0), (2, "USDT", 10000.0)])
    acc = by_account(impl.account_risk(market, book))
    assert list(acc) == [1, 2]
    check(acc[1], collateral=10000.0, unrealized_pnl=200.0, option_value=0.0, equity=10200.0, initial_margin=500.0,
          maintenance_margin=250.0, margin_ratio=250 / 10200, free_collateral=9700.0, gross_notional=5000.0,
          leverage=5000 / 10200, status="healthy", n_positions=1, isolated_equity=0.0, n_isolated_liquidatable=0)
    check(acc[2], collateral=10000.0, unrealized_pnl=-200.0, equity=9800.0, initial_margin=500.0,
          maintenance_margin=250.0, margin_ratio=250 / 9800, free_collateral=9300.0, gross_notional=5000.0,
          leverage=5000 / 9800, status="healthy")

    pos = by_position(impl.position_risk(market, book))
    # delta of a linear future = q*c underlying units: +0.1 / -0.1 BTC; futures have no gamma/vega/theta.
    check(pos[(1, 1, False)], quantity=10.0, mark_price=50000.0, notional_usd=5000.0, upnl_usd=200.0,
          value_usd=200.0, tier=1, initial_margin=500.0, maintenance_margin=250.0, delta=0.1, gamma=0.0,
          vega=0.0, theta=0.0)
    check(pos[(2, 1, False)], quantity=-10.0, notional_usd=5000.0, upnl_usd=-200.0, value_usd=-200.0, tier=1,
          initial_margin=500.0, maintenance_margin=250.0, delta=-0.1)


# ----------------------------------------------------------------------------------------------- inverse

def test_inverse_coin_settled_with_coin_collateral(impl):
    # BTCUSD-INV: c = 100 USD per contract, settle BTC (price 50000), mark P = 50000, imf 0.05 / mmf 0.025.
    # Account 20, long 1000 @ 40000, 1 BTC collateral (weight 0.9):
    #   notional = 1000*100/50000 = 2 BTC  -> 100000 USD
    #   upnl = 1000*100*(1/40000 - 1/50000) = 100000 * 0.000005 = 0.5 BTC -> 25000 USD
    #   IM = 2*0.05 = 0.1 BTC -> 5000;  MM = 2*0.025 = 0.05 BTC -> 2500
    #   collateral = 50000*1*0.9 = 45000;  equity = 45000 + 25000 = 70000
    #   ratio = 2500/70000;  free = 65000;  leverage = 100000/70000;  delta = q*c/P = 2 BTC
    # Account 21, short 1000 @ 62500, 0.1 BTC:
    #   upnl = -1000*100*(1/62500 - 1/50000) = -100000*(0.000016 - 0.00002) = 0.4 BTC -> 20000 USD
    #   collateral = 50000*0.1*0.9 = 4500;  equity = 24500;  IM 5000, MM 2500;  delta = -2 BTC
    market = impl.market()
    book = impl.book([(20, 2, 1000.0, 40000.0), (21, 2, -1000.0, 62500.0)], [(20, "BTC", 1.0), (21, "BTC", 0.1)])
    acc = by_account(impl.account_risk(market, book))
    check(acc[20], collateral=45000.0, unrealized_pnl=25000.0, equity=70000.0, initial_margin=5000.0,
          maintenance_margin=2500.0, margin_ratio=2500 / 70000, free_collateral=65000.0, gross_notional=100000.0,
          leverage=100000 / 70000, status="healthy")
    check(acc[21], collateral=4500.0, unrealized_pnl=20000.0, equity=24500.0, initial_margin=5000.0,
          maintenance_margin=2500.0, free_collateral=19500.0, gross_notional=100000.0, status="healthy")
    pos = by_position(impl.position_risk(market, book))
    check(pos[(20, 2, False)], mark_price=50000.0, notional_usd=100000.0, upnl_usd=25000.0, tier=1,
          initial_margin=5000.0, maintenance_margin=2500.0, delta=2.0)
    check(pos[(21, 2, False)], upnl_usd=20000.0, delta=-2.0)


# ------------------------------------------------------------------------------------------------- tiers

# Schedule "ETH" (ETHUSDT-PERP, c = 1, mark 2000 -> notional = 2000*|q| USDT):
#   bracket  cap     imf   mmf    amount (continuity)
#   1        10000   0.02  0.01   0
#   2        50000   0.05  0.025  0   + 10000*(0.025-0.01) = 150
#   3        inf     0.10  0.05   150 + 50000*(0.05-0.025) = 1400
# MM is continuous at each cap: 10000*0.01 = 100 = 10000*0.025 - 150;  50000*0.025 - 150 = 1100 = 50000*0.05 - 1400.
# IM is not (it jumps, as on Binance): 200 -> 500 at 10000, 2500 -> 5000 at 50000.
TIER_CASES = [
    # account, q,         notional,  tier, IM,            MM
    (101, 4.999999, 9999.998, 1, 9999.998 * 0.02, 9999.998 * 0.01),  # just below cap 1
    (102, 5.0, 10000.0, 1, 200.0, 100.0),  # at cap 1: still bracket 1 (brackets are (prev, cap])
    (103, 5.000001, 10000.002, 2, 10000.002 * 0.05, 10000.002 * 0.025 - 150),  # just above cap 1
    (104, 24.999999, 49999.998, 2, 49999.998 * 0.05, 49999.998 * 0.025 - 150),  # just below cap 2
    (105, 25.0, 50000.0, 2, 2500.0, 1100.0),  # at cap 2
    (106, 25.000001, 50000.002, 3, 50000.002 * 0.10, 50000.002 * 0.05 - 1400),  # just above cap 2
    # crosses both caps: 40*2000 = 80000 in bracket 3; MM = 80000*0.05 - 1400 = 2600, which is the
    # piecewise sum 10000*0.01 + 40000*0.025 + 30000*0.05 = 100 + 1000 + 1500; IM = 80000*0.10 = 8000
    (107, 40.0, 80000.0, 3, 8000.0, 2600.0),
]


@pytest.mark.parametrize("with_amount", [False, True], ids=["derived_amount", "supplied_amount"])
def test_tier_boundaries_and_mm_continuity(impl, with_amount):
    market = impl.market(tiers=b.standard_tiers(with_amount=with_amount))
    book = impl.book([(a, 3, q, 2000.0) for a, q, *_ in TIER_CASES], [(a, "USDT", 1e6) for a, *_ in TIER_CASES])
    pos = by_position(impl.position_risk(market, book))
    acc = by_account(impl.account_risk(market, book))
    mm = {}
    for a, q, notional, tier, im, mm_expected in TIER_CASES:
        check(pos[(a, 3, False)], rel=1e-9, notional_usd=notional, tier=tier, initial_margin=im,
              maintenance_margin=mm_expected, upnl_usd=0.0)
        check(acc[a], rel=1e-9, initial_margin=im, maintenance_margin=mm_expected, gross_notional=notional)
        mm[a] = pos[(a, 3, False)]["maintenance_margin"]
    # Continuity: a 0.002 USDT step in notional moves MM by at most 0.002*mmf <= 1e-4 across each cap (we allow
    # 1.05e-4 for rounding), whereas IM jumps by hundreds.
    for below, at, above in ((101, 102, 103), (104, 105, 106)):
        assert abs(mm[at] - mm[below]) <= 1.05e-4 and abs(mm[above] - mm[at]) <= 1.05e-4
        assert pos[(above, 3, False)]["initial_margin"] - pos[(at, 3, False)]["initial_margin"] > 250
    assert mm[102] == pytest.approx(100.0, rel=REL) and mm[105] == pytest.approx(1100.0, rel=REL)


def test_tier_margin_helper_is_continuous_at_every_cap():
    caps, imfs, mmfs = [10000.0, 50000.0, math.inf], [0.02, 0.05, 0.10], [0.01, 0.025, 0.05]
    amounts = ref.derive_amounts(caps, mmfs)
    assert amounts == [0.0, 150.0, 1400.0]
    brackets = list(zip(caps, imfs, mmfs, amounts))
    assert ref.tier_margin(0.0, brackets) == (1, 0.0, 0.0)  # zero notional: bracket 1
    for t in range(len(caps) - 1):
        cap = caps[t]
        # MM at the cap computed with bracket t and with bracket t+1 is the same number.
        assert cap * mmfs[t] - amounts[t] == pytest.approx(cap * mmfs[t + 1] - amounts[t + 1], rel=REL)
        assert ref.tier_margin(cap, brackets)[0] == t + 1
        assert ref.tier_margin(math.nextafter(cap, math.inf), brackets)[0] == t + 2
    assert ref.tier_margin(80000.0, brackets) == (3, 8000.0, 2600.0)


# ------------------------------------------------------------------------------------- multi-asset collateral

def test_multi_asset_collateral_haircut_and_borrow(impl):
    # Account 30 balances:  USDT 10000 (w 1)      ->  10000
    #                       BTC 0.5 @ 50000 (w 0.9) -> 0.5*50000*0.9 = 22500   (haircut on a positive balance)
    #                       ETH -2 @ 2000 (bw 1.2)  -> -2*2000*1.2  = -4800   (borrow add-on on a negative one)
    #                       USD -1000 (bw 1.0)      -> -1000
    #   collateral = 10000 + 22500 - 4800 - 1000 = 26700
    # Long 10 BTCUSDT-PERP @ 49000: upnl = 10*0.01*1000 = 100; IM 500, MM 250, notional 5000.
    #   equity = 26800; free = 26300; ratio = 250/26800; leverage = 5000/26800
    market = impl.market()
    book = impl.book([(30, 1, 10.0, 49000.0)],
                     [(30, "USDT", 10000.0), (30, "BTC", 0.5), (30, "ETH", -2.0), (30, "USD", -1000.0)])
    acc = by_account(impl.account_risk(market, book))
    check(acc[30], collateral=26700.0, unrealized_pnl=100.0, equity=26800.0, initial_margin=500.0,
          maintenance_margin=250.0, margin_ratio=250 / 26800, free_collateral=26300.0, leverage=5000 / 26800,
          status="healthy", n_positions=1)


# ---------------------------------------------------------------------------------------------- isolated

def test_isolated_positions_beside_cross(impl):
    # Account 40, 10000 USDT.
    # cross    long 10 BTCUSDT-PERP @ 48000: upnl 200, IM 500, MM 250, notional 5000
    # isolated short 20 BTCUSDT-PERP @ 49000, margin 200 USDT:
    #   notional = 20*0.01*50000 = 10000; upnl = -20*0.01*(50000-49000) = -200; IM 1000, MM 500
    #   equity_iso = (200 - 200)*1 = 0 <= 500 -> liquidatable
    # isolated long 5 ETHUSDT-PERP @ 1900, margin 1000 USDT:
    #   notional = 5*2000 = 10000 (bracket 1); upnl = 5*100 = 500; IM 200, MM 100
    #   equity_iso = 1000 + 500 = 1500 > 100 -> fine
    # Cross figures ignore the isolated bucket: equity = 10000 + 200 = 10200, IM 500, MM 250, gross 5000.
    # isolated_equity = 0 + 1500 = 1500; n_isolated_liquidatable = 1; n_positions = 3 (cross and isolated).
    market = impl.market()
    book = impl.book([(40, 3, 5.0, 1900.0, 1000.0), (40, 1, -20.0, 49000.0, 200.0), (40, 1, 10.0, 48000.0)],
                     [(40, "USDT", 10000.0)])
    acc = by_account(impl.account_risk(market, book))
    check(acc[40], collateral=10000.0, unrealized_pnl=200.0, equity=10200.0, initial_margin=500.0,
          maintenance_margin=250.0, gross_notional=5000.0, leverage=5000 / 10200, status="healthy",
          n_positions=3, isolated_equity=1500.0, n_isolated_liquidatable=1)
    table = impl.position_risk(market, book)
    # sorted by (account_id, instrument_id, isolated), cross first
    keys = list(zip(*(table.column(c).to_pylist() for c in ("account_id", "instrument_id", "isolated"))))
    assert keys == [(40, 1, False), (40, 1, True), (40, 3, True)]
    pos = by_position(table)
    check(pos[(40, 1, True)], notional_usd=10000.0, upnl_usd=-200.0, initial_margin=1000.0, maintenance_margin=500.0)
    check(pos[(40, 3, True)], notional_usd=10000.0, upnl_usd=500.0, tier=1, initial_margin=200.0,
          maintenance_margin=100.0)


# ------------------------------------------------------------------------------------ balances / positions only

def test_account_with_balances_only(impl):
    # Account 50: USDT 500 + ETH 1 @ 2000 * 0.8 = 500 + 1600 = 2100; no positions: MM = 0 -> ratio 0,
    #   notional 0 -> leverage 0; healthy.
    # Account 51: USDT -100 (borrow weight 1) -> collateral -100 = equity < 0 -> bankrupt, ratio 0, leverage 0.
    # Account 52: a zero-quantity position and nothing else: counts in n_positions, zero everything, healthy.
    market = impl.market()
    book = impl.book([(52, 1, 0.0, 50000.0)], [(50, "USDT", 500.0), (50, "ETH", 1.0), (51, "USDT", -100.0)])
    acc = by_account(impl.account_risk(market, book))
    assert list(acc) == [50, 51, 52]  # union of positions and balances, sorted
    check(acc[50], collateral=2100.0, unrealized_pnl=0.0, option_value=0.0, equity=2100.0, initial_margin=0.0,
          maintenance_margin=0.0, margin_ratio=0.0, free_collateral=2100.0, gross_notional=0.0, leverage=0.0,
          status="healthy", n_positions=0, isolated_equity=0.0, n_isolated_liquidatable=0)
    check(acc[51], collateral=-100.0, equity=-100.0, margin_ratio=0.0, leverage=0.0, free_collateral=-100.0,
          status="bankrupt", n_positions=0)
    check(acc[52], collateral=0.0, equity=0.0, initial_margin=0.0, maintenance_margin=0.0, margin_ratio=0.0,
          leverage=0.0, status="healthy", n_positions=1)
    pos = by_position(impl.position_risk(market, book))
    check(pos[(52, 1, False)], notional_usd=0.0, upnl_usd=0.0, tier=1, initial_margin=0.0, maintenance_margin=0.0,
          delta=0.0)


def test_account_with_positions_only(impl):
    # No balances: collateral 0.
    # Account 60: long 10 BTCUSDT-PERP @ 51000: upnl = 0.1*(50000-51000) = -100 = equity < 0 -> bankrupt;
    #   MM 250 > 0 and equity <= 0 -> ratio +inf; notional 5000 > 0 -> leverage +inf; free = -100-500 = -600.
    # Account 61: long 10 @ 49000: upnl = +100 = equity; 0 <= 100 <= MM 250 -> liquidatable;
    #   ratio = 250/100 = 2.5; leverage = 5000/100 = 50; free = -400.
    market = impl.market()
    book = impl.book([(60, 1, 10.0, 51000.0), (61, 1, 10.0, 49000.0)], [])
    acc = by_account(impl.account_risk(market, book))
    assert list(acc) == [60, 61]
    check(acc[60], collateral=0.0, unrealized_pnl=-100.0, equity=-100.0, margin_ratio=math.inf, leverage=math.inf,
          free_collateral=-600.0, status="bankrupt")
    check(acc[61], collateral=0.0, unrealized_pnl=100.0, equity=100.0, margin_ratio=2.5, leverage=50.0,
          free_collateral=-400.0, status="liquidatable")


# --------------------------------------------------------------------------------------- status thresholds

def test_status_thresholds(impl):
    # XYZ-PERP: linear on XYZ, c = 1, mark 100, imf 0.125 / mmf 0.0625 (binary-exact, so every threshold is hit
    # exactly whatever the order of multiplication). Long 40 @ 100: notional 4000, upnl 0, IM 500, MM 250.
    #   USDT 1000    ratio 250/1000   = 0.25          -> healthy
    #   USDT 312.6   ratio 250/312.6  = 0.79974...    -> healthy
    #   USDT 312.5   ratio 250/312.5  = 0.8 exactly   -> margin_call (>= 0.8)
    #   USDT 250.01  ratio 0.99996                    -> margin_call
    #   USDT 250     equity == MM                     -> liquidatable
    #   USDT 0       equity 0, MM > 0, ratio +inf     -> liquidatable (equity is not < 0)
    #   USDT -0.01   equity < 0                       -> bankrupt
    instruments = b.standard_instruments([b.linear(4, "XYZ-PERP", "XYZ", "USDT", 1.0, 100.0, imf=0.125, mmf=0.0625)])
    market = impl.market(instruments=instruments)
    cases = [(70, 1000.0, "healthy"), (71, 312.6, "healthy"), (72, 312.5, "margin_call"),
             (73, 250.01, "margin_call"), (74, 250.0, "liquidatable"), (75, 0.0, "liquidatable"),
             (76, -0.01, "bankrupt")]
    book = impl.book([(a, 4, 40.0, 100.0) for a, *_ in cases], [(a, "USDT", amount) for a, amount, _ in cases])
    acc = by_account(impl.account_risk(market, book))
    for a, amount, status in cases:
        check(acc[a], equity=amount, maintenance_margin=250.0, initial_margin=500.0, status=status)
    assert acc[72]["margin_ratio"] == 0.8
    assert acc[74]["margin_ratio"] == 1.0
    assert acc[75]["margin_ratio"] == math.inf


def test_reference_margin_call_ratio_parameter():
    # Same position; with equity 1000 the ratio is 0.25: healthy at the default 0.8, margin_call at 0.25.
    instruments = b.standard_instruments([b.linear(4, "XYZ-PERP", "XYZ", "USDT", 1.0, 100.0, imf=0.125, mmf=0.0625)])
    market = b.make_market(instruments=instruments, fallback=True)
    book = b.make_book([(70, 4, 40.0, 100.0)], [(70, "USDT", 1000.0)], fallback=True)
    assert ref.account_risk(market, book).column("status").to_pylist() == ["healthy"]
    assert ref.account_risk(market, book, margin_call_ratio=0.25).column("status").to_pylist() == ["margin_call"]


# ------------------------------------------------------------------------------------------ Black-76 (reference)

def test_black76_hull_black_scholes_call_and_put():
    # Hull, Options, Futures and Other Derivatives, Example 15.6: S = 42, K = 40, r = 10 %, σ = 20 %, T = 0.5
    # -> c = 4.76, p = 0.81. A stock is a forward F = S e^{rT} discounted at r, so Black-76 gives the same.
    F = 42 * math.exp(0.1 * 0.5)
    call = ref.black76(F, 40.0, 0.5, 0.2, True, rate=0.1)[0]
    put = ref.black76(F, 40.0, 0.5, 0.2, False, rate=0.1)[0]
    assert round(call, 2) == 4.76
    assert round(put, 2) == 0.81


def test_black76_hull_black_model_put():
    # Hull, Black's model example: F = K = 20, r = 9 %, σ = 25 %, T = 4/12 -> p = 1.12.
    put = ref.black76(20.0, 20.0, 4 / 12, 0.25, False, rate=0.09)[0]
    assert round(put, 2) == 1.12


PARAMS = [  # F, K, T, sigma, r
    (100.0, 100.0, 1.0, 0.5, 0.0),
    (100.0, 80.0, 0.25, 0.3, 0.05),
    (100.0, 130.0, 2.0, 0.8, 0.02),
    (50000.0, 45000.0, 7 / 365, 0.6, 0.0),
    (20.0, 20.0, 4 / 12, 0.25, 0.09),
]


@pytest.mark.parametrize("F,K,T,sigma,r", PARAMS)
def test_black76_matches_textbook_formula(F, K, T, sigma, r):
    for call in (True, False):
        assert ref.black76(F, K, T, sigma, call, rate=r)[0] == pytest.approx(
            textbook_black76(F, K, T, sigma, r, call), rel=1e-12, abs=1e-12 * F)


@pytest.mark.parametrize("F,K,T,sigma,r", PARAMS)
def test_black76_put_call_parity(F, K, T, sigma, r):
    # c - p = e^{-rT}(F - K); and call delta - put delta = e^{-rT}; gamma, vega, theta of call and put agree
    # (theta: both have dV/dT = -rV + e^{-rT} F φ(d1) σ/(2√T), so theta_c - theta_p = r(c - p)/365).
    c, dc, gc, vc, tc = ref.black76(F, K, T, sigma, True, rate=r)
    p, dp, gp, vp, tp = ref.black76(F, K, T, sigma, False, rate=r)
    assert c - p == pytest.approx(math.exp(-r * T) * (F - K), rel=1e-12, abs=1e-12 * F)
    assert dc - dp == pytest.approx(math.exp(-r * T), rel=1e-12)
    assert gc == pytest.approx(gp, rel=1e-12) and vc == pytest.approx(vp, rel=1e-12)
    assert tc - tp == pytest.approx(r * (c - p) / 365, rel=1e-9, abs=1e-15 * F)


@pytest.mark.parametrize("F,K,T,sigma,r", PARAMS)
@pytest.mark.parametrize("call", [True, False], ids=["call", "put"])
def test_black76_greeks_match_finite_differences(F, K, T, sigma, r, call):
    def price(F_=F, T_=T, s_=sigma):
        return ref.black76(F_, K, T_, s_, call, rate=r)[0]

    value, delta, gamma, vega, theta = ref.black76(F, K, T, sigma, call, rate=r)
    h = 1e-5 * F  # central differences: truncation O(h²), rounding O(eps·V/h)
    assert delta == pytest.approx((price(F_=F + h) - price(F_=F - h)) / (2 * h), rel=1e-6, abs=1e-9)
    h = 1e-3 * F  # the second difference needs a wider step: rounding O(eps·V/h²)
    assert gamma == pytest.approx((price(F_=F + h) - 2 * value + price(F_=F - h)) / h ** 2, rel=1e-4, abs=1e-9 / F)
    hs = 1e-5
    assert vega == pytest.approx((price(s_=sigma + hs) - price(s_=sigma - hs)) / (2 * hs), rel=1e-6, abs=1e-9 * F)
    ht = 1e-6 * T
    # theta: the value change as one calendar day passes = -dV/dT / 365
    fd_theta = -(price(T_=T + ht) - price(T_=T - ht)) / (2 * ht) / 365
    assert theta == pytest.approx(fd_theta, rel=1e-5, abs=1e-9 * F)


def test_black76_expired_is_intrinsic():
    # T <= 0: value = intrinsic, undiscounted; delta 1/0 (call ITM/OTM), -1/0 (put), ±0.5 at the money;
    # gamma = vega = theta = 0.
    assert ref.black76(110.0, 100.0, 0.0, 0.5, True, rate=0.05) == (10.0, 1.0, 0.0, 0.0, 0.0)
    assert ref.black76(90.0, 100.0, -0.1, 0.5, True) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert ref.black76(90.0, 100.0, 0.0, 0.5, False) == (10.0, -1.0, 0.0, 0.0, 0.0)
    assert ref.black76(110.0, 100.0, 0.0, 0.5, False) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert ref.black76(100.0, 100.0, 0.0, 0.5, True) == (0.0, 0.5, 0.0, 0.0, 0.0)
    assert ref.black76(100.0, 100.0, 0.0, 0.5, False) == (0.0, -0.5, 0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------------ options in a venue

# Options on XYZ (index F = 100), settled in USD (price 1), c = 1, T = 1 year exactly, σ = 50 %.
# Each is sold 2 contracts: |q|*c*F = 200 USD notional.
# Deribit-shaped margin: IM = 200*max(0.15 - OTM/100, 0.10), MM = 200*0.075 = 15.
#   id  type  K    moneyness  OTM                      IM
#   10  call  90   ITM        0                        200*0.15 = 30
#   11  call  100  ATM        0                        30
#   12  call  104  OTM        4                        200*max(0.15-0.04, 0.10) = 200*0.11 = 22
#   13  call  110  OTM        10                       200*max(0.05, 0.10) = 20 (floor)
#   14  put   110  ITM        0                        30
#   15  put   100  ATM        0                        30
#   16  put   96   OTM        4                        22
#   17  put   90   OTM        10                       20
SHORT_OPTIONS = [
    (10, "call", 90.0, 30.0), (11, "call", 100.0, 30.0), (12, "call", 104.0, 22.0), (13, "call", 110.0, 20.0),
    (14, "put", 110.0, 30.0), (15, "put", 100.0, 30.0), (16, "put", 96.0, 22.0), (17, "put", 90.0, 20.0),
]
SIGMA = 0.5


def option_instruments(extra=()):
    opts = [b.option(i, f"XYZ-{int(k)}-{t[0].upper()}", "XYZ", "USD", 1.0, strike=k, expiry=AS_OF + ONE_YEAR,
                     option_type=t, implied_vol=SIGMA) for i, t, k, _ in SHORT_OPTIONS]
    return b.standard_instruments(opts + list(extra))


def test_short_option_margin_itm_atm_otm(impl):
    market = impl.market(instruments=option_instruments())
    # Account 80 sells 2 of each at a premium of 5, with 10000 USD.
    book = impl.book([(80, i, -2.0, 5.0) for i, *_ in SHORT_OPTIONS], [(80, "USD", 10000.0)])
    pos = by_position(impl.position_risk(market, book))
    values = {}
    for i, t, k, im in SHORT_OPTIONS:
        V = textbook_black76(XYZ, k, 1.0, SIGMA, 0.0, t == "call")
        values[i] = V
        check(pos[(80, i, False)], rel=1e-10, quantity=-2.0, mark_price=V, notional_usd=200.0, value_usd=-2 * V,
              upnl_usd=-2 * (V - 5.0), tier=None, initial_margin=im, maintenance_margin=15.0)
    # Account: IM = 2*(30+30+22+20) = 204; MM = 8*15 = 120; option value = Σ -2 V; no futures PnL.
    option_value = sum(-2 * V for V in values.values())
    acc = by_account(impl.account_risk(market, book))
    check(acc[80], rel=1e-10, collateral=10000.0, unrealized_pnl=0.0, option_value=option_value,
          equity=10000.0 + option_value, initial_margin=204.0, maintenance_margin=120.0, gross_notional=1600.0,
          free_collateral=10000.0 + option_value - 204.0, status="healthy", n_positions=8)


def test_option_value_greeks_given_mark_long_and_isolated(impl):
    # 18: XYZ put K = 90 with a given mark of 4.0 (the base value; greeks still from the model).
    # Account 81: long 3 of 18 @ 3.5, short 2 of 13 (call K=110) @ 5, 1000 USD.
    #   long put: value = 3*4.0 = 12, upnl_usd = 3*(4.0-3.5) = 1.5, no margin, notional 300
    #   short call: value = -2*V13, IM 20, MM 15, notional 200
    #   equity = 1000 + 12 - 2*V13; IM = 20; MM = 15; gross = 500
    #   position greeks = q*c*greek_per_unit*price(USD) = q*greek (Black-76 at σ = 50 %, T = 1)
    # Account 82: isolated short 2 of 13 with margin 20: equity_iso = 20 - 2*V13 (V13 ≈ 15.6) < MM 15
    #   -> 1 isolated liquidatable; no cross figures at all.
    put_mark = b.option(18, "XYZ-90-P-MARKED", "XYZ", "USD", 1.0, strike=90.0, expiry=AS_OF + ONE_YEAR,
                        option_type="put", implied_vol=SIGMA, mark=4.0)
    market = impl.market(instruments=option_instruments([put_mark]))
    book = impl.book([(81, 18, 3.0, 3.5), (81, 13, -2.0, 5.0), (82, 13, -2.0, 5.0, 20.0)], [(81, "USD", 1000.0)])
    V13 = textbook_black76(XYZ, 110.0, 1.0, SIGMA, 0.0, True)
    pos = by_position(impl.position_risk(market, book))
    _, d18, g18, v18, t18 = ref.black76(XYZ, 90.0, 1.0, SIGMA, False)
    check(pos[(81, 18, False)], rel=1e-10, mark_price=4.0, value_usd=12.0, upnl_usd=1.5, notional_usd=300.0,
          initial_margin=0.0, maintenance_margin=0.0, delta=3 * d18, gamma=3 * g18, vega=3 * v18, theta=3 * t18)
    _, d13, g13, v13, t13 = ref.black76(XYZ, 110.0, 1.0, SIGMA, True)
    check(pos[(81, 13, False)], rel=1e-10, mark_price=V13, value_usd=-2 * V13, delta=-2 * d13, gamma=-2 * g13,
          vega=-2 * v13, theta=-2 * t13)
    # the model greeks themselves, against the textbook: delta = N(d1) for a call, -N(-d1) for a put (r = 0)
    d1_90 = (math.log(XYZ / 90.0) + SIGMA ** 2 / 2) / SIGMA
    assert d18 == pytest.approx(-N(-d1_90), rel=1e-12)
    acc = by_account(impl.account_risk(market, book))
    check(acc[81], rel=1e-10, option_value=12.0 - 2 * V13, equity=1012.0 - 2 * V13, initial_margin=20.0,
          maintenance_margin=15.0, gross_notional=500.0, unrealized_pnl=0.0, n_positions=2)
    check(acc[82], rel=1e-10, collateral=0.0, equity=0.0, option_value=0.0, initial_margin=0.0,
          maintenance_margin=0.0, gross_notional=0.0, isolated_equity=20.0 - 2 * V13, n_isolated_liquidatable=1,
          status="healthy", n_positions=1)


def test_expired_short_option_in_venue(impl):
    # An XYZ call K = 90 that expired a day before as_of is worth its intrinsic value 100 - 90 = 10.
    # Account 83 short 1 @ 12 with 100 USD: value = -10, equity = 90; margin still applies to a short:
    #   IM = 100*0.15 = 15 (ITM: OTM = 0), MM = 100*0.075 = 7.5; delta = -1; gamma = vega = theta = 0.
    expired = b.option(19, "XYZ-90-C-EXP", "XYZ", "USD", 1.0, strike=90.0, expiry=AS_OF - timedelta(days=1),
                       option_type="call", implied_vol=SIGMA)
    market = impl.market(instruments=option_instruments([expired]))
    book = impl.book([(83, 19, -1.0, 12.0)], [(83, "USD", 100.0)])
    check(by_position(impl.position_risk(market, book))[(83, 19, False)], mark_price=10.0, value_usd=-10.0,
          upnl_usd=2.0, initial_margin=15.0, maintenance_margin=7.5, delta=-1.0, gamma=0.0, vega=0.0, theta=0.0)
    check(by_account(impl.account_risk(market, book))[83], option_value=-10.0, equity=90.0, initial_margin=15.0,
          maintenance_margin=7.5, status="healthy")


def test_reference_rate_discounts_option_values():
    # With r = 5 %, T = 1: V = e^{-0.05} * undiscounted Black-76; the short call's margin does not depend on r.
    market = b.make_market(instruments=option_instruments(), fallback=True)
    book = b.make_book([(80, 11, -2.0, 5.0)], [(80, "USD", 1000.0)], fallback=True)
    row = ref.position_risk(market, book, rate=0.05).to_pylist()[0]
    V = textbook_black76(XYZ, 100.0, 1.0, SIGMA, 0.05, True)
    assert V == pytest.approx(math.exp(-0.05) * textbook_black76(XYZ, 100.0, 1.0, SIGMA, 0.0, True), rel=1e-12)
    check(row, rel=1e-10, mark_price=V, value_usd=-2 * V, initial_margin=30.0, maintenance_margin=15.0)
    # option_margin fractions are parameters: (0.2, 0.1, 0.1) -> IM = 200*0.2 = 40, MM = 200*0.1 = 20
    row = ref.position_risk(market, book, option_margin=(0.2, 0.1, 0.1)).to_pylist()[0]
    check(row, initial_margin=40.0, maintenance_margin=20.0)


def test_option_greek_units_with_a_settle_asset_not_at_par(impl):
    # USDC at 0.9995 (a USD-like settle asset slightly off par). An XYZ call K = 100, T = 1, σ = 50 %, c = 1,
    # long 2, settled in USDC. Units: delta and gamma are underlying units (q*c*dV/dF and q*c*d²V/dF², no
    # settle price, so they add up with futures deltas); vega and theta are money: q*c*greek*0.9995 USD.
    #   value_usd = 2*V*0.9995; notional_usd = 2*100*0.9995 = 199.9
    assets = b.assets([("USD", 1.0, 1.0, 1.0), ("USDT", 1.0, 1.0, 1.0), ("USDC", 0.9995, 1.0, 1.0),
                       ("BTC", 50000.0, 0.9, 1.1, "BTC"), ("ETH", 2000.0, 0.8, 1.2, "ETH")])
    call = b.option(20, "XYZ-100-C-USDC", "XYZ", "USDC", 1.0, strike=100.0, expiry=AS_OF + ONE_YEAR,
                    option_type="call", implied_vol=SIGMA)
    market = impl.market(assets=assets, instruments=b.standard_instruments([call]))
    book = impl.book([(84, 20, 2.0, 10.0)], [(84, "USDC", 100.0)])
    V, d, g, v, t = ref.black76(XYZ, 100.0, 1.0, SIGMA, True)
    check(by_position(impl.position_risk(market, book))[(84, 20, False)], rel=1e-10,
          value_usd=2 * V * 0.9995, notional_usd=199.9, delta=2 * d, gamma=2 * g, vega=2 * v * 0.9995,
          theta=2 * t * 0.9995, initial_margin=0.0)
    # collateral = 100*0.9995 = 99.95; equity = 99.95 + 2*V*0.9995
    check(by_account(impl.account_risk(market, book))[84], rel=1e-10, collateral=99.95,
          option_value=2 * V * 0.9995, equity=99.95 + 2 * V * 0.9995)
