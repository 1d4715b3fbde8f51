"""Every input rule of SPEC §1: bad input raises InputError naming the table, the column and a row."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import fastrisk as fr
from fastrisk import InputError

import builders as B

NAN, INF = math.nan, math.inf


def _set(table: pa.Table, column: str, row: int, value, type_=None) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    idx = table.column_names.index(column)
    return table.set_column(idx, column, pa.array(values, type_ or table.schema.field(column).type))


def _market(**over):
    return B.make_market(**over)


def _expect(fn, table: str, column: str, row: int | None, rule: str = ""):
    with pytest.raises(InputError) as info:
        fn()
    err = info.value
    assert err.table == table and err.column == column, str(err)
    msg = str(err)
    assert msg.startswith(f"{table}.{column}"), msg
    if row is not None:
        assert row in err.rows and f"row {row}" in msg, msg
    if rule:
        assert rule in msg, msg
    return err


MARKET_CASES = [
    # (table, column, row, bad value, rule fragment)
    ("assets", "asset", 1, "USD", "unique"),
    ("assets", "asset", 2, None, "null"),
    ("assets", "price", 2, 0.0, "> 0"),
    ("assets", "price", 3, NAN, "finite"),
    ("assets", "price", 0, INF, "finite"),
    ("assets", "collateral_weight", 2, 1.5, "in [0, 1]"),
    ("assets", "collateral_weight", 3, -0.1, "in [0, 1]"),
    ("assets", "borrow_weight", 2, 0.9, ">= 1"),
    ("assets", "underlying", 3, "DOGE", "underlyings.underlying"),
    ("underlyings", "underlying", 1, "BTC", "unique"),
    ("underlyings", "index_price", 0, -1.0, "> 0"),
    ("underlyings", "index_price", 1, NAN, "finite"),
    ("instruments", "instrument_id", 1, 1, "unique"),
    ("instruments", "instrument_id", 2, -4, ">= 0"),
    ("instruments", "symbol", 2, "BTCUSDT-PERP", "unique"),
    ("instruments", "kind", 0, "perpetual", "one of"),
    ("instruments", "underlying", 1, "DOGE", "underlyings.underlying"),
    ("instruments", "settle_asset", 2, "EUR", "assets.asset"),
    ("instruments", "contract_size", 0, 0.0, "> 0"),
    ("instruments", "mark_price", 0, None, "not be null for futures"),
    ("instruments", "mark_price", 1, -5.0, "> 0"),
    ("instruments", "tier_schedule", 2, "NOPE", "tiers.schedule"),
    ("instruments", "imf", 0, 1.5, "(0, 1]"),
    ("instruments", "mmf", 1, 0.2, "<= imf"),
    ("tiers", "notional_cap", 1, 10000.0, "strictly increasing"),
    ("tiers", "notional_cap", 2, 1e9, "+inf"),
    ("tiers", "notional_cap", 0, -1.0, "> 0"),
    ("tiers", "imf", 1, 0.0, "(0, 1]"),
    ("tiers", "mmf", 2, 0.2, "<= imf"),
    # Magnitude limits (tables.LARGEST, SMALLEST): beyond them the formulas could overflow to inf and NaN.
    ("assets", "price", 1, 2e30, "between 1e-30 and 1e+30 in magnitude"),
    ("underlyings", "index_price", 0, 1e-31, "between 1e-30 and 1e+30 in magnitude"),
    ("instruments", "contract_size", 1, 1e-40, "between 1e-30"),
    ("instruments", "mark_price", 1, 5e-324, "between 1e-30"),
    ("underlyings", "index_price", 1, 1e31, "between 1e-30 and 1e+30"),
]


@pytest.mark.parametrize("table,column,row,value,rule", MARKET_CASES,
                         ids=[f"{t}.{c}-{r}" for t, c, _, _, r in MARKET_CASES])
def test_market_rule(table, column, row, value, rule):
    base = {"assets": B.standard_assets(), "underlyings": B.standard_underlyings(),
            "instruments": B.standard_instruments(), "tiers": B.standard_tiers()}
    base[table] = _set(base[table], column, row, value)
    _expect(lambda: _market(**base), table, column, row, rule)


def test_future_needs_schedule_or_flat_margin():
    ins = _set(B.standard_instruments(), "imf", 0, None)
    _expect(lambda: _market(instruments=ins), "instruments", "tier_schedule", 0, "needs a tier_schedule")


def test_future_cannot_have_both_schedule_and_flat_margin():
    ins = _set(B.standard_instruments(), "tier_schedule", 0, "ETH")
    _expect(lambda: _market(instruments=ins), "instruments", "tier_schedule", 0, "not both")


def test_option_fields_required():
    opt = B.option(9, "XYZ-C", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR,
                   option_type="call", implied_vol=0.5)
    opt["implied_vol"] = None
    ins = B.standard_instruments([opt])
    _expect(lambda: _market(instruments=ins), "instruments", "implied_vol", 3, "not be null for options")


def test_option_type_choices():
    opt = B.option(9, "XYZ-C", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR,
                   option_type="straddle", implied_vol=0.5)
    _expect(lambda: _market(instruments=B.standard_instruments([opt])), "instruments", "option_type", 3,
            "call, put")


def test_options_need_as_of():
    opt = B.option(9, "XYZ-C", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR,
                   option_type="call", implied_vol=0.5)
    _expect(lambda: B.make_market(instruments=B.standard_instruments([opt]), as_of=None), "instruments", "expiry",
            None, "as_of")


def test_maintenance_amount_continuity():
    tiers = B.standard_tiers(with_amount=True)
    fr.Market(as_of=B.AS_OF, assets=B.standard_assets(), underlyings=B.standard_underlyings(),
              instruments=B.standard_instruments(), tiers=tiers)  # the correct amounts pass
    bad = _set(tiers, "maintenance_amount", 2, 1400.5)
    err = _expect(lambda: _market(tiers=bad), "tiers", "maintenance_amount", 2, "continuity")
    assert "1400" in str(err)


def test_missing_column():
    _expect(lambda: _market(assets=B.standard_assets().drop_columns(["price"])), "assets", "price", None,
            "missing column")


def test_lossy_conversion():
    ids = B.standard_instruments()
    ids = ids.set_column(0, "instrument_id", pa.array([1.0, 2.5, 3.0]))
    _expect(lambda: _market(instruments=ids), "instruments", "instrument_id", 1, "loses information")


POSITION_ROWS = [(1, 1, 2.0, 50000.0, None), (1, 3, -3.0, 2000.0, None), (2, 1, 1.0, 49000.0, 100.0)]
BALANCE_ROWS = [(1, "USDT", 1000.0), (2, "BTC", 0.5)]


def _book(pos=None, bal=None):
    return fr.Book(positions=B.positions(POSITION_ROWS) if pos is None else pos,
                   balances=B.balances(BALANCE_ROWS) if bal is None else bal)


BOOK_CASES = [
    ("positions", "account_id", 1, None, "null"),
    ("positions", "instrument_id", 2, -1, ">= 0"),
    ("positions", "quantity", 0, NAN, "finite"),
    ("positions", "quantity", 1, INF, "finite"),
    ("positions", "entry_price", 2, -1.0, ">= 0"),
    ("positions", "isolated_margin", 2, -5.0, ">= 0"),
    ("positions", "isolated_margin", 2, NAN, "finite"),
    ("balances", "account_id", 0, None, "null"),
    ("balances", "asset", 1, None, "null"),
    ("balances", "amount", 1, NAN, "finite"),
    ("positions", "quantity", 0, 1.7e308, "at most 1e+30 in magnitude"),
    ("positions", "quantity", 1, -1e31, "at most 1e+30 in magnitude"),
    ("positions", "entry_price", 2, 1e300, "at most 1e+30"),
    ("positions", "isolated_margin", 2, 1e31, "at most 1e+30"),
    ("balances", "amount", 0, -2e30, "at most 1e+30 in magnitude"),
]


@pytest.mark.parametrize("table,column,row,value,rule", BOOK_CASES,
                         ids=[f"{t}.{c}-{r}" for t, c, _, _, r in BOOK_CASES])
def test_book_rule(table, column, row, value, rule):
    pos, bal = B.positions(POSITION_ROWS), B.balances(BALANCE_ROWS)
    if table == "positions":
        pos = _set(pos, column, row, value)
    else:
        bal = _set(bal, column, row, value)
    _expect(lambda: _book(pos, bal), table, column, row, rule)


def test_duplicate_position_is_an_error_even_unsorted():
    rows = [(5, 3, 1.0, 2000.0, None), (1, 1, 2.0, 50000.0, None), (5, 3, 2.0, 2100.0, None)]
    err = _expect(lambda: _book(B.positions(rows)), "positions", "instrument_id", None, "at most one row")
    assert set(err.rows) & {0, 2}


def test_cross_and_isolated_of_one_instrument_may_coexist():
    rows = [(5, 3, 1.0, 2000.0, None), (5, 3, 2.0, 2100.0, 50.0)]
    risk = fr.account_risk(_market(), _book(B.positions(rows)))
    assert risk.column("account_id").to_pylist() == [1, 2, 5]  # 1 and 2 hold balances only
    assert risk.column("n_positions").to_pylist() == [0, 0, 2]


def test_unknown_instrument_is_named_with_its_input_row():
    rows = [(9, 1, 1.0, 50000.0, None), (3, 77, 1.0, 1.0, None)]
    _expect(lambda: fr.account_risk(_market(), _book(B.positions(rows))), "positions", "instrument_id", 1,
            "instruments.instrument_id")


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_future_entry_price_must_be_positive(zero):
    rows = [(1, 1, 1.0, 50000.0, None), (2, 3, 1.0, zero, None)]
    _expect(lambda: fr.account_risk(_market(), _book(B.positions(rows))), "positions", "entry_price", 1,
            "> 0 for futures")


def test_future_entry_price_at_least_the_smallest_magnitude():
    # A future's entry price is a divisor (inverse PnL: 1/entry): below 1e-30 it is an error; at it, fine.
    rows = [(1, 1, 1.0, 50000.0, None), (2, 2, 1.0, 1e-31, None)]
    _expect(lambda: fr.account_risk(_market(), _book(B.positions(rows))), "positions", "entry_price", 1,
            "at least 1e-30")
    risk = fr.account_risk(_market(), _book(B.positions([(2, 2, 1.0, 1e-30, None)])))
    assert np.isfinite(risk.column("equity").to_numpy()).all()


def test_inputs_at_the_magnitude_limits_give_finite_figures():
    # The largest quantity, entry price and balance allowed, on the instruments of the standard venue: every
    # figure is finite (or +inf where a ratio divides by no equity), none NaN, in every output.
    rows = [(1, 1, 1e30, 1e-30, None), (1, 2, -1e30, 1e-30, None), (1, 3, 1e30, 1e30, 1e30),
            (2, 1, -1e30, 1e30, None), (2, 2, 1e30, 1e30, None)]
    book = _book(B.positions(rows), B.balances([(1, "BTC", 1e30), (2, "USDT", -1e30)]))
    for table in (fr.account_risk(_market(), book), fr.position_risk(_market(), book),
                  fr.liquidation_prices(_market(), book)):
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_floating(col.type):
                values = col.to_numpy(zero_copy_only=False)
                assert not np.isnan(values[~np.asarray(col.is_null())]).any(), name


def test_zero_entry_price_is_allowed_for_options_only():
    from test_examples import option_instruments

    market = _market(instruments=option_instruments())
    accounts = fr.account_risk(market, _book(B.positions([(1, 10, -1.0, 0.0, None)])))  # a premium of 0
    assert 1 in accounts.column("account_id").to_pylist()
    _expect(lambda: fr.account_risk(market, _book(B.positions([(1, 10, -1.0, 0.0, None),
                                                                (2, 1, 1.0, 0.0, None)]))),
            "positions", "entry_price", 1, "> 0 for futures")


def test_unknown_balance_asset():
    _expect(lambda: fr.account_risk(_market(), _book(bal=B.balances([(1, "USDT", 1.0), (2, "EUR", 5.0)]))),
            "balances", "asset", 1, "assets.asset")


def test_duplicate_balance():
    bal = B.balances([(2, "USDT", 1.0), (1, "BTC", 1.0), (2, "USDT", 5.0)])
    err = _expect(lambda: fr.account_risk(_market(), _book(bal=bal)), "balances", "asset", None,
                  "one row per (account_id, asset)")
    assert set(err.rows) & {0, 2}


def test_negative_zero_is_within_bounds_of_zero():
    # -0.0 >= 0 holds: the scan, which compares floats' bits, takes both signed zeros for a bound of 0.
    rows = [(1, 1, 1.0, 50000.0, -0.0), (2, 3, 1.0, 2000.0, 0.0)]
    assert _book(B.positions(rows)).n_accounts == 2


def test_duplicate_balance_under_two_dictionary_codes():
    bal = B.balances([(2, "USDT", 1.0), (1, "BTC", 1.0), (2, "USDT", 5.0)])
    asset = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2], pa.int32()), pa.array(["USDT", "BTC", "USDT"]))
    bal = bal.set_column(bal.schema.get_field_index("asset"), "asset", asset)
    _expect(lambda: fr.account_risk(_market(), _book(bal=bal)), "balances", "asset", None,
            "one row per (account_id, asset)")


def test_duplicate_balances_in_long_and_short_accounts():
    # Accounts of one to eight balances across several row chunks, unsorted: the count and the rows named are
    # those of a plain scan of every account's rows, in account order.
    rng = np.random.default_rng(1)
    assets = ["USD", "USDT", "BTC", "ETH"]
    rows = [(a, assets[j], 1.0) for a in range(80_000) for j in rng.permutation(4)[:a % 4 + 1]]
    first = len(rows)
    rows += [(90_000, a, 1.0) for a in ["USD", "USDT", "BTC", "ETH", "BTC", "BTC", "BTC", "USD"]]
    rows += [(3, "BTC", 2.0)]  # account 3 holds all four assets already
    err = _expect(lambda: fr.account_risk(_market(), _book(bal=B.balances(rows))), "balances", "asset", None,
                  "one row per (account_id, asset)")
    assert err.count == 5 and err.rows == [first + 8, first + 4, first + 5, first + 6, first + 7]


def test_at_most_five_rows_named_and_count_given():
    rows = [(a, 1, NAN, 50000.0, None) for a in range(12)]
    err = _expect(lambda: _book(B.positions(rows)), "positions", "quantity", 0)
    assert err.count == 12 and err.rows == [0, 1, 2, 3, 4]
    assert "12 offending rows" in str(err)


def test_large_table_reports_first_rows_in_order():
    n = 300_000
    q = np.ones(n)
    q[[70_001, 299_999, 150_000]] = np.nan
    pos = pa.table({"account_id": np.arange(n, dtype=np.int64), "instrument_id": np.ones(n, np.int32),
                    "quantity": q, "entry_price": np.full(n, 50000.0)})
    err = _expect(lambda: _book(pos), "positions", "quantity", 70_001)
    assert err.rows == [70_001, 150_000, 299_999]


def test_unreadable_source():
    _expect(lambda: _book(pos=42), "positions", "*", None, "cannot read")


def test_missing_file(tmp_path):
    _expect(lambda: fr.Book.from_dir(tmp_path), "positions", "*", None, "missing")


def test_option_expiry_at_most_100_years_out():
    from test_examples import option_instruments

    far = B.option(20, "XYZ-FAR", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR * 101,
                   option_type="call", implied_vol=0.5)
    ins = option_instruments([far])
    row = ins.column("instrument_id").to_pylist().index(20)
    _expect(lambda: _market(instruments=ins), "instruments", "expiry", row, "at most 100 years after as_of")
    near = B.option(20, "XYZ-FAR", "XYZ", "USD", 1.0, strike=100.0, expiry=B.AS_OF + B.ONE_YEAR * 99,
                    option_type="call", implied_vol=0.5)
    _market(instruments=option_instruments([near]))


NAN_OPTION_MARGIN = (NAN, 0.1, 0.075)
PARAMETER_CASES = [
    # (call, keyword arguments, parameter, rule fragment): a NaN or an out-of-range number beside the tables
    (lambda m, b, **kw: fr.account_risk(m, b, **kw), {"rate": NAN}, "account_risk", "rate", "in [-1, 1]"),
    (lambda m, b, **kw: fr.account_risk(m, b, **kw), {"rate": -1e300}, "account_risk", "rate", "in [-1, 1]"),
    (lambda m, b, **kw: fr.account_risk(m, b, **kw), {"margin_call_ratio": 0.0}, "account_risk",
     "margin_call_ratio", "> 0"),
    (lambda m, b, **kw: fr.account_risk(m, b, **kw), {"option_margin": NAN_OPTION_MARGIN}, "account_risk",
     "option_margin", "three fractions"),
    (lambda m, b, **kw: fr.account_risk(m, b, **kw), {"option_margin": (0.15, 0.1)}, "account_risk",
     "option_margin", "three fractions"),
    (lambda m, b, **kw: fr.account_risk(m, b, mode="portfolio", **kw), {"im_factor": 0.5}, "account_risk",
     "im_factor", ">= 1"),
    (lambda m, b, **kw: fr.account_risk(m, b, mode="span", **kw), {}, "account_risk", "mode", "'cross'"),
    (lambda m, b, **kw: fr.position_risk(m, b, **kw), {"rate": INF}, "position_risk", "rate", "in [-1, 1]"),
    (lambda m, b, **kw: fr.liquidation_prices(m, b, **kw), {"option_margin": NAN_OPTION_MARGIN},
     "liquidation_prices", "option_margin", "three fractions"),
    (lambda m, b, **kw: fr.stress(m, b, fr.scenarios.span(m), **kw), {"margin_call_ratio": NAN}, "stress",
     "margin_call_ratio", "> 0"),
    (lambda m, b, **kw: fr.exposures(m, b, **kw), {"rate": 2.0}, "exposures", "rate", "in [-1, 1]"),
    (lambda m, b, **kw: fr.contagion(m, b, {"BTC": -0.2}, **kw), {"rate": NAN}, "contagion", "rate", "in [-1, 1]"),
    (lambda m, b, **kw: fr.cascade(m, b, {"BTC": -0.2}, **kw), {"option_margin": NAN_OPTION_MARGIN}, "cascade",
     "option_margin", "three fractions"),
]


@pytest.mark.parametrize("call,kwargs,table,column,rule", PARAMETER_CASES,
                         ids=[f"{t}.{c}-{r}" for _, _, t, c, r in PARAMETER_CASES])
def test_parameter_rule(call, kwargs, table, column, rule):
    err = _expect(lambda: call(_market(), _book(), **kwargs), table, column, None, rule)
    assert repr(next(iter(kwargs.values()), "span")) in str(err)
