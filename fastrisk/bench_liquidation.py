"""``fastrisk bench`` section for SPEC §4 and §6: liquidation prices and a 20-round cascade against one
account_risk sweep, the vectorised NumPy peer and the plain reference.

Every contender is checked against fastrisk before it is timed. The cascade is forced to run its 20 rounds
(a 20 % BTC crash with square-root impact keeps liquidating on the generated venue; the rows report the
rounds actually run). NumPy needs no warm-up and is slow, so it is timed once.
"""

from __future__ import annotations

import time

SHOCK = {"BTC": -0.2}
ROUNDS = 20
REFERENCE_ACCOUNTS = 50  # the plain reference re-values each bucket hundreds of times


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def liquidation_section(ctx):
    """liquidation prices and cascade: ``(title, rows, base_row_name)`` like ``bench.account_risk_section``."""
    import numpy as np

    from . import reference
    from .bench import best_of, kernel_only
    from .liquidation import liquidation_prices
    from .liquidation_cascade import cascade
    from .peers_liquidation import numpy_cascade, numpy_liquidation_prices
    from .testing import assert_tables_close

    market, book = ctx.market, ctx.book
    expected = liquidation_prices(market, book)
    result = cascade(market, book, SHOCK, max_rounds=ROUNDS)
    n_rounds = result.rounds.num_rows - 1
    rows = [("fastrisk account_risk sweep (valuation + account kernel)", best_of(kernel_only(market, book), ctx.repeat)),
            (f"fastrisk liquidation_prices ({expected.num_rows:,} buckets, down and up)",
             best_of(lambda: liquidation_prices(market, book), ctx.repeat)),
            (f"fastrisk cascade, BTC -20 %, sqrt impact, {n_rounds} rounds",
             best_of(lambda: cascade(market, book, SHOCK, max_rounds=ROUNDS), ctx.repeat))]
    base = rows[1][0]
    if "numpy" not in ctx.skip:
        peer = numpy_liquidation_prices(market, book)
        assert_tables_close(peer, expected, rtol=1e-9)
        rows.append(("numpy peer: liquidation_prices (grid + bisection, vectorised)",
                     _once(lambda: numpy_liquidation_prices(market, book))))
        peer_rounds, round_of = numpy_cascade(market, book, SHOCK, max_rounds=ROUNDS)
        assert np.array_equal(round_of, result.accounts.column("round_liquidated").fill_null(-1).to_numpy())
        rows.append((f"numpy peer: cascade, {len(peer_rounds) - 1} rounds (every account every round)",
                     _once(lambda: numpy_cascade(market, book, SHOCK, max_rounds=ROUNDS))))
    if "reference" not in ctx.skip:
        sub = ctx.reference_book() if ctx.reference_accounts <= REFERENCE_ACCOUNTS else _prefix(ctx, REFERENCE_ACCOUNTS)
        assert_tables_close(reference.liquidation_prices(market, sub), liquidation_prices(market, sub), rtol=1e-9)
        scale = book.n_accounts / max(sub.n_accounts, 1)
        rows.append((f"reference, plain Python: liquidation_prices (scaled from {sub.n_accounts:,} accounts)",
                     _once(lambda: reference.liquidation_prices(market, sub)) * scale))
    return "liquidation prices and cascade", rows, base


def _prefix(ctx, n):
    import pyarrow.compute as pc

    from .book import Book

    cut = ctx.book.arrays.account_id[min(n, ctx.book.n_accounts) - 1]
    keep = lambda t: t.filter(pc.less_equal(t.column("account_id"), cut))
    return Book(positions=keep(ctx.book.positions), balances=keep(ctx.book.balances))
