"""Properties on random books: the kernels equal the plain reference, and nothing depends on row order
or thread count."""

from __future__ import annotations

import math

import numba
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrisk as fr
from fastrisk import reference
from fastrisk.testing import assert_tables_close

import builders as B

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

# Instruments of the random venue: tiered and flat, linear and inverse, calls and puts (one expired).
INSTRUMENTS = [1, 2, 3, 4, 5, 6, 7]
ASSETS = ["USD", "USDT", "BTC", "ETH"]

prices = st.floats(1e-3, 1e7, allow_nan=False, allow_infinity=False)


def quantity_strategy(subnormal=True):
    """Position quantities: 0, the whole range, and tiny ones; ``subnormal=False`` leaves out those below
    2.2e-308, which hold fewer significant bits than a liquidation price's 1e-9 needs."""
    return st.one_of(st.just(0.0), st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False,
                                             allow_subnormal=subnormal),
                     st.floats(-1e-6, 1e-6, allow_nan=False, allow_subnormal=subnormal))


quantities, normal_quantities = quantity_strategy(), quantity_strategy(subnormal=False)
amounts = st.one_of(st.just(0.0), st.floats(-1e10, 1e10, allow_nan=False, allow_infinity=False))
account_ids = st.one_of(st.integers(-3, 40), st.integers(-2**62, 2**62))


@st.composite
def venues(draw):
    btc, eth, xyz = draw(prices), draw(prices), draw(prices)
    assets = B.assets([("USD", 1.0, 1.0, 1.0, None), ("USDT", draw(st.floats(0.5, 1.5)), 0.97, 1.02, None),
                       ("BTC", btc, 0.9, 1.1, "BTC"), ("ETH", eth, 0.8, 1.2, "ETH")])
    underlyings = B.underlyings([("BTC", btc), ("ETH", eth), ("XYZ", xyz)])
    mark = lambda p: p * draw(st.floats(0.98, 1.02))
    opt = lambda iid, typ, years, strike_mult, mark_=None: B.option(
        iid, f"XYZ-{iid}", "XYZ", "USD", draw(st.floats(0.1, 10)), strike=xyz * strike_mult,
        expiry=B.AS_OF + B.ONE_YEAR * years, option_type=typ, implied_vol=draw(st.floats(0.05, 2.0)), mark=mark_)
    instruments = B.instruments([
        B.linear(1, "BTCUSDT", "BTC", "USDT", 0.01, mark(btc), imf=0.1, mmf=0.05),
        B.inverse(2, "BTCUSD", "BTC", "BTC", 100.0, mark(btc), schedule="INV"),
        B.linear(3, "ETHUSDT", "ETH", "USDT", 1.0, mark(eth), schedule="ETH"),
        B.inverse(4, "ETHUSD", "ETH", "ETH", 10.0, mark(eth), imf=0.04, mmf=0.02),
        opt(5, "call", draw(st.floats(0.01, 3)), draw(st.floats(0.5, 1.5))),
        opt(6, "put", draw(st.floats(0.01, 3)), draw(st.floats(0.5, 1.5)), xyz * 0.1),
        opt(7, "call", -0.1, draw(st.floats(0.5, 1.5))),
    ], option_columns=True)
    tiers = B.tiers(B.ETH_TIERS + [("INV", 1.0, 0.01, 0.005), ("INV", 10.0, 0.02, 0.01),
                                   ("INV", math.inf, 0.05, 0.02)])
    return fr.Market(assets=assets, underlyings=underlyings, instruments=instruments, tiers=tiers, as_of=B.AS_OF)


@st.composite
def books(draw, quantity=quantities):
    keys = draw(st.lists(st.tuples(account_ids, st.sampled_from(INSTRUMENTS), st.booleans()), max_size=30,
                         unique=True))
    pos = [(a, i, draw(quantity), draw(prices) if i < 5 else draw(st.floats(0, 1e6)),
            draw(st.floats(0, 1e9)) if iso else None) for a, i, iso in keys]
    bal_keys = draw(st.lists(st.tuples(account_ids, st.sampled_from(ASSETS)), max_size=20, unique=True))
    bal = [(a, asset, draw(amounts)) for a, asset in bal_keys]
    return B.positions(pos), B.balances(bal)


def _book(tables):
    return fr.Book(positions=tables[0], balances=tables[1])


@SETTINGS
@given(venues(), books())
def test_kernel_equals_reference(market, tables):
    book = _book(tables)
    positions = reference.position_risk(market, book)
    # A deep out-of-the-money option is worth F*N(d1) - K*N(d2), two tiny numbers that cancel: its value is
    # only known to ~1e-16 of the position's notional, whatever its own size. Judge every figure against
    # the book's notional too, so that two correct normal CDFs (erfc vs scipy) agree.
    atol = 1e-12 * sum(abs(x) for x in positions.column("notional_usd").to_pylist())
    assert_tables_close(fr.account_risk(market, book), reference.account_risk(market, book), atol=atol)
    assert_tables_close(fr.position_risk(market, book), positions, columns=positions.column_names, atol=atol)


@SETTINGS
@given(venues(), books(), st.randoms(use_true_random=False))
def test_row_order_changes_nothing(market, tables, rnd):
    pos, bal = tables
    perm_p = list(range(pos.num_rows))
    perm_b = list(range(bal.num_rows))
    rnd.shuffle(perm_p)
    rnd.shuffle(perm_b)
    shuffled = fr.Book(positions=pos.take(pa.array(perm_p, pa.int64())),
                       balances=bal.take(pa.array(perm_b, pa.int64())))
    book = _book(tables)
    assert fr.account_risk(market, shuffled).equals(fr.account_risk(market, book))
    assert fr.position_risk(market, shuffled).equals(fr.position_risk(market, book))


@SETTINGS
@given(venues(), books())
def test_every_account_once_sorted(market, tables):
    pos, bal = tables
    expected = sorted(set(pos.column("account_id").to_pylist()) | set(bal.column("account_id").to_pylist()))
    risk = fr.account_risk(market, _book(tables))
    assert risk.column("account_id").to_pylist() == expected
    assert not any(np.isnan(risk.column(c).to_numpy()).any() for c in risk.column_names
                   if pa.types.is_floating(risk.schema.field(c).type))


def test_thread_count_changes_nothing():
    market, book = fr.generate.exchange(30_000, seed=11)
    default = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = (fr.account_risk(market, book), fr.position_risk(market, book))
    finally:
        numba.set_num_threads(default)
    many = (fr.account_risk(market, book), fr.position_risk(market, book))
    assert one[0].equals(many[0]) and one[1].equals(many[1])


def test_margin_never_falls_when_a_position_grows():
    market, book = fr.generate.exchange(2_000, seed=5)
    grown = fr.Book(positions=book.positions.set_column(
        2, "quantity", pa.array(book.positions.column("quantity").to_numpy() * 1.5)), balances=book.balances)
    before, after = fr.account_risk(market, book), fr.account_risk(market, grown)
    for c in ("initial_margin", "maintenance_margin", "gross_notional"):
        assert np.all(after.column(c).to_numpy() >= before.column(c).to_numpy() * (1 - 1e-12)), c


@pytest.mark.parametrize("shuffled", [False, True])
def test_account_segments_across_row_chunks(shuffled):
    # Enough positions for several row chunks, an account spanning whole chunks, and balance-only accounts
    # before, between and after the positions' accounts: each account's segments hold exactly its rows.
    rng = np.random.default_rng(3)
    pos_acc = np.sort(np.concatenate([rng.integers(100, 200, 40_000), np.full(200_000, 150),
                                      rng.integers(300, 100_000, 60_000)]))
    first = np.searchsorted(pos_acc, pos_acc)
    instrument = (np.arange(len(pos_acc)) - first).astype(np.int32)  # unique within an account
    bal_acc = np.unique(np.concatenate([[-5, 7, 150, 151, 250, 120_000], rng.integers(0, 200_000, 5_000)]))
    positions = pa.table({"account_id": pos_acc, "instrument_id": instrument, "quantity": np.ones(len(pos_acc)),
                          "entry_price": np.ones(len(pos_acc))})
    balances = pa.table({"account_id": bal_acc, "asset": pa.array(["USD"] * len(bal_acc)),
                         "amount": np.ones(len(bal_acc))})
    if shuffled:
        positions = positions.take(rng.permutation(positions.num_rows))
        balances = balances.take(rng.permutation(balances.num_rows))
    arrays = fr.Book(positions=positions, balances=balances).arrays
    accounts = np.union1d(pos_acc, bal_acc)
    assert np.array_equal(arrays.account_id, accounts)
    assert np.array_equal(arrays.pos_start, np.append(np.searchsorted(pos_acc, accounts), len(pos_acc)))
    assert np.array_equal(arrays.bal_start, np.append(np.searchsorted(bal_acc, accounts), len(bal_acc)))


@SETTINGS
@given(st.lists(st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-3, 3)), max_size=300))
def test_stable_order_is_numpys_stable_argsort(keys):
    from fastrisk.kernels.checks import stable_order

    keys = np.array(keys, np.int64)
    assert np.array_equal(stable_order(keys), np.argsort(keys, kind="stable"))
