"""``fastrisk bench`` section for SPEC §4 and §6: liquidation prices and a 20-round cascade against one
account_risk sweep (the unit of issue 4's targets: each at most 5 sweeps), the vectorised NumPy peer (target:
fastrisk at least 10x faster) and the plain reference.

The targets are stated for a venue with options, so the sweep ratios are measured on the bench's options venue
(``bench_stress.options_venue``, generated once per run). The NumPy peer computes futures and collateral only,
so the peer ratios are measured on the futures-only venue of the account_risk section, fastrisk timed again
there. Every contender is checked against fastrisk before it is timed. The cascade is a 20 % BTC crash with
square-root impact, stopped after 20 rounds; the rows report the rounds actually run. NumPy needs no warm-up
and is slow, so it is timed once.
"""

from __future__ import annotations

import time

SHOCK = {"BTC": -0.2}
ROUNDS = 20
REFERENCE_ACCOUNTS = 20  # the plain reference re-values each bucket hundreds of times


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def liquidation_section(ctx):
    """liquidation prices and cascade: ``(title, rows, base_row_name)`` like ``bench.account_risk_section``;
    the base is one account_risk sweep of the options venue."""
    import numpy as np

    from . import reference
    from .bench import best_of, kernel_only
    from .bench_stress import first_accounts, options_venue
    from .liquidation import liquidation_prices
    from .liquidation_cascade import cascade
    from .peers_liquidation import numpy_cascade, numpy_liquidation_prices
    from .testing import assert_tables_close

    def timed(market, book):
        table = liquidation_prices(market, book)
        rounds = cascade(market, book, SHOCK, max_rounds=ROUNDS).rounds.num_rows - 1
        return (table.num_rows, best_of(lambda: liquidation_prices(market, book), ctx.repeat), rounds,
                best_of(lambda: cascade(market, book, SHOCK, max_rounds=ROUNDS), ctx.repeat))

    market, book = options_venue(ctx)
    sweep = best_of(kernel_only(market, book), ctx.repeat)
    n_rows, t_liq, n_rounds, t_cascade = timed(market, book)
    sweep_name = "one account_risk sweep, venue with options (valuation + account kernel)"
    rows = [(sweep_name, sweep),
            (f"fastrisk liquidation_prices, options venue ({n_rows:,} buckets; "
             f"{t_liq / sweep:.1f} sweeps; target <= 5)", t_liq),
            (f"fastrisk cascade, options venue, BTC -20 %, sqrt impact, {n_rounds} rounds "
             f"({t_cascade / sweep:.1f} sweeps; target <= 5)", t_cascade)]
    market, book = ctx.market, ctx.book
    if "numpy" not in ctx.skip:
        # fastrisk first: after the peers' large temporaries its calls measured 8-11 % slower (2026-11-29).
        _, f_liq, f_rounds, f_cascade = timed(market, book)
        expected = liquidation_prices(market, book)
        peer = numpy_liquidation_prices(market, book)
        assert_tables_close(peer, expected, rtol=1e-9, atol=1e-9)  # distances: SPEC's 1e-9 of price
        result = cascade(market, book, SHOCK, max_rounds=ROUNDS)
        peer_rounds, round_of = numpy_cascade(market, book, SHOCK, max_rounds=ROUNDS)
        assert np.array_equal(round_of, result.accounts.column("round_liquidated").fill_null(-1).to_numpy())
        n_liq = _once(lambda: numpy_liquidation_prices(market, book))
        n_cascade = _once(lambda: numpy_cascade(market, book, SHOCK, max_rounds=ROUNDS))
        rows += [(f"fastrisk liquidation_prices, futures-only venue ({expected.num_rows:,} buckets)", f_liq),
                 (f"numpy peer: liquidation_prices, futures-only ({n_liq / f_liq:.0f}x fastrisk; target >= 10)",
                  n_liq),
                 (f"fastrisk cascade, futures-only venue, {f_rounds} rounds", f_cascade),
                 (f"numpy peer: cascade, {len(peer_rounds) - 1} rounds, every account every round "
                  f"({n_cascade / f_cascade:.0f}x fastrisk; target >= 10)", n_cascade)]
    if "reference" not in ctx.skip:
        sub = first_accounts(book, min(ctx.reference_accounts, REFERENCE_ACCOUNTS))
        assert_tables_close(reference.liquidation_prices(market, sub), liquidation_prices(market, sub), rtol=1e-9,
                            atol=1e-9)
        scale = book.n_accounts / max(sub.n_accounts, 1)
        rows.append((f"reference, plain Python: liquidation_prices (scaled from {sub.n_accounts:,} accounts)",
                     _once(lambda: reference.liquidation_prices(market, sub)) * scale))
    return "liquidation prices and cascade", rows, sweep_name
