"""``fastrisk bench`` section for SPEC §5: stress of the venue (with options) under 48 SPAN scenarios.

Targets (issue 3): the stress of 1M accounts / 10M positions under 48 scenarios (16 SPAN scenarios of each
of the top three underlyings) in under 10x one ``account_risk`` sweep of the same venue, at least 10x faster
than vectorised NumPy; option pricing of 100k instruments x 48 scenarios in milliseconds. Every contender is
checked against fastrisk before it is timed.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OPTIONS_SEED = 1  # the options venue of the section (the account_risk section's venue has no options)
N_SCAN_UNDERLYINGS = 3
STRESS_REFERENCE_ACCOUNTS = 1_000  # the plain reference revalues every account per scenario: a small cut


def options_venue(ctx):
    """The bench's venue size, with options (generated once per run, kept on the context)."""
    venue = getattr(ctx, "options_venue", None)
    if venue is None:
        from . import generate
        from .book import Book
        from .market import Market

        t = generate.exchange_tables(ctx.book.n_accounts, seed=OPTIONS_SEED, options=True)
        venue = (Market(as_of=t["as_of"], **{k: t[k] for k in ("assets", "underlyings", "instruments", "tiers")}),
                 Book(positions=t["positions"], balances=t["balances"]))
        ctx.options_venue = venue
    return venue


def span_top(market, book):
    """The 48 scenarios of the benchmark: SPAN of the three underlyings with the most open interest."""
    from .scenarios import span, top_underlyings

    return span(top_underlyings(market, book, N_SCAN_UNDERLYINGS), market=market)


def first_accounts(book, n: int):
    """The book cut to its first ``n`` accounts."""
    from .book import Book

    ids = book.arrays.account_id[:n]
    cut = ids[-1] if len(ids) else -1
    keep = lambda t: t.filter(pc.less_equal(t.column("account_id"), cut))  # noqa: E731
    return Book(positions=keep(book.positions), balances=keep(book.balances))


def option_market(n_options: int = 100_000, seed: int = 0):
    """A market of ``n_options`` model-priced European options on BTC, ETH and SOL (USDC-settled, strikes
    lognormal around the index, expiries up to a year, vols 30-120 %): the option-pricing benchmark."""
    from .market import Market

    rng = np.random.default_rng(seed)
    as_of = dt.datetime(2025, 3, 3, tzinfo=dt.timezone.utc)
    names, index = ["BTC", "ETH", "SOL"], np.array([92_000.0, 3_300.0, 190.0])
    u = rng.integers(0, 3, n_options)
    expiry = int(as_of.timestamp() * 1e6) + rng.integers(1, 366, n_options) * 86_400 * 10**6
    instruments = pa.table({
        "instrument_id": pa.array(np.arange(n_options), pa.int32()),
        "symbol": pa.array([f"OPT-{i}" for i in range(n_options)], pa.string()),
        "kind": pa.array(["option"] * n_options, pa.string()),
        "underlying": pa.array(np.array(names, dtype=object)[u], pa.string()),
        "settle_asset": pa.array(["USDC"] * n_options, pa.string()),
        "contract_size": np.ones(n_options),
        "mark_price": pa.nulls(n_options, pa.float64()),
        "strike": index[u] * np.exp(rng.normal(0.0, 0.3, n_options)),
        "expiry": pa.array(expiry, pa.timestamp("us", tz="UTC")),
        "option_type": pa.array(np.where(rng.random(n_options) < 0.5, "call", "put").astype(object), pa.string()),
        "implied_vol": rng.uniform(0.3, 1.2, n_options),
    })
    empty = pa.array([], pa.float64())
    return Market(assets=pa.table({"asset": ["USDC"], "price": [1.0], "collateral_weight": [1.0],
                                   "borrow_weight": [1.0]}),
                  underlyings=pa.table({"underlying": names, "index_price": index}), instruments=instruments,
                  tiers=pa.table({"schedule": pa.array([], pa.string()), "notional_cap": empty, "imf": empty,
                                  "mmf": empty}), as_of=as_of)


def price_all(market, scen):
    """Every instrument of ``market`` priced under every scenario of ``scen`` (what stress does first):
    ``scenario_risk.scenario_prices``, float64 [s, i]."""
    from .scenario_risk import scenario_prices

    return scenario_prices(market, scen)


def check_option_prices(market, scen, prices, sample: int = 200) -> None:
    """A sample of the prices against the plain reference's Black-76."""
    from .reference import black76, year_fraction

    ins = market.instruments
    index = dict(zip(market.underlying_names.to_pylist(), market.underlyings.column("index_price").to_pylist()))
    names = market.underlying_names.to_pylist()
    for i in np.linspace(0, ins.num_rows - 1, sample).astype(int):
        row = {c: ins.column(c)[int(i)].as_py() for c in ("underlying", "strike", "expiry", "option_type",
                                                          "implied_vol")}
        u = names.index(row["underlying"])
        for s in (0, scen.n - 1):
            want = black76(index[row["underlying"]] * scen.mult[s, u], row["strike"],
                           year_fraction(row["expiry"], market.as_of),
                           max(row["implied_vol"] + scen.vol_shift[s, u], 1e-4), row["option_type"] == "call")[0]
            got = prices[s][i]
            assert abs(got - want) <= 1e-9 * max(abs(want), 1e-6 * index[row["underlying"]]), (i, s, got, want)


def stress_section(ctx):
    """stress: fastrisk, one account_risk sweep (the target's unit), the NumPy peer, the reference."""
    from . import reference
    from .bench import best_of
    from .peers_stress import numpy_stress
    from .risk import account_risk
    from .scenario_risk import stress
    from .scenarios import prepare, span
    from .testing import assert_tables_close

    market, book = options_venue(ctx)
    scen = span_top(market, book)
    expected = stress(market, book, scen)
    t_sweep = best_of(lambda: account_risk(market, book), ctx.repeat)
    t_stress = best_of(lambda: stress(market, book, scen), ctx.repeat)
    sweep_name = "one account_risk sweep of this venue (the unit of the stress target)"
    rows = [(sweep_name, t_sweep),
            (f"fastrisk stress, {len(pc.unique(scen.column('scenario_id')))} SPAN scenarios "
             f"({t_stress / t_sweep:.1f} sweeps; target < 10)", t_stress)]
    if "numpy" not in ctx.skip:
        got = numpy_stress(market, book, scen)
        # Vol-up / vol-down pairs can tie to the last bit, so the worst scenario itself is not compared.
        assert_tables_close(got.accounts, expected.accounts, rtol=1e-9,
                            columns=["equity", "maintenance_margin", "status", "worst_loss"])
        assert_tables_close(got.scenarios, expected.scenarios, rtol=1e-9, key="scenario_id")
        t_np = best_of(lambda: numpy_stress(market, book, scen), 1)
        rows.append((f"vectorised NumPy stress peer ({t_np / t_stress:.0f}x fastrisk stress; target >= 10)", t_np))
    if "reference" not in ctx.skip:
        sub = first_accounts(book, min(ctx.reference_accounts, STRESS_REFERENCE_ACCOUNTS))
        start = time.perf_counter()
        ref = reference.stress(market, sub, scen)
        t_ref = (time.perf_counter() - start) * book.n_accounts / max(sub.n_accounts, 1)
        assert_tables_close(ref.accounts, stress(market, sub, scen).accounts, rtol=1e-9,
                            columns=["equity", "maintenance_margin", "status", "worst_loss"])
        rows.append((f"reference, plain Python (scaled from {sub.n_accounts:,} accounts)", t_ref))
    options = option_market()
    opt_scen = prepare(span(options), options)
    check_option_prices(options, opt_scen, price_all(options, opt_scen))
    n_opt = options.instruments.num_rows
    # Black-76 runs where a scenario moves the option's underlying (price or vol): [s, u] -> per option.
    moved = (opt_scen.mult != 1.0) | (opt_scen.vol_shift != 0.0)
    n_eval = int(moved[:, options.arrays.underlying].sum())
    rows.append((f"option pricing: {n_opt:,} options x {opt_scen.n} scenarios ({n_opt * opt_scen.n / 1e6:.1f}M "
                 f"prices, {n_eval / 1e6:.1f}M Black-76 evaluations)",
                 best_of(lambda: price_all(options, opt_scen), ctx.repeat)))
    return "stress (with options)", rows, sweep_name
