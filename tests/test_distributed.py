"""SPEC §10: the kernels partition by partition on a Dask cluster equal the single-machine run."""

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastrisk as fr
from fastrisk import InputError
from fastrisk.distributed import Engine, PartitionedBook, partition_of, repartition

PER_ACCOUNT = ("account_risk", "position_risk", "liquidation_prices", "exposures")
SHOCK = {"BTC": -0.25}


@pytest.fixture(scope="module")
def venue():
    return fr.generate.exchange(1500, seed=11, options=True)


@pytest.fixture(scope="module")
def engine():
    # Worker processes, as on a cluster: everything a task takes and returns crosses a process boundary.
    with Engine(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as e:
        yield e


@pytest.fixture(scope="module", params=["range", "hash"])
def parts(request, venue, tmp_path_factory):
    return repartition(venue[1], tmp_path_factory.mktemp(request.param), 5, by=request.param)


def test_every_account_lies_in_exactly_one_partition(venue, parts):
    _, book = venue
    seen = []
    for k in range(len(parts)):
        part = parts.book(k)
        seen.append(part.arrays.account_id)
        positions, balances = (pq.read_table(f) for f in parts.files(k))
        assert positions.num_rows + balances.num_rows > 0  # 1500 accounts over 5 partitions: none empty
    ids = np.concatenate(seen)
    assert np.array_equal(np.sort(ids), book.arrays.account_id)
    assert sum(pq.read_table(parts.files(k)[0]).num_rows for k in range(len(parts))) == book.positions.num_rows
    assert sum(pq.read_table(parts.files(k)[1]).num_rows for k in range(len(parts))) == book.balances.num_rows
    if parts.path.name.startswith("range"):
        assert all(seen[k].max() < seen[k + 1].min() for k in range(len(seen) - 1))


def test_range_partitions_balance_positions(venue, tmp_path):
    _, book = venue
    parts = repartition(book, tmp_path, 4)
    sizes = [pq.read_table(parts.files(k)[0]).num_rows for k in range(4)]
    assert max(sizes) - min(sizes) <= 2 * np.diff(book.arrays.pos_start).max()


def test_more_partitions_than_accounts_leaves_empty_ones(tmp_path):
    _, book = fr.generate.exchange(3, seed=2)
    for by in ("range", "hash"):
        parts = repartition(book, tmp_path / by, 8, by=by)
        assert len(parts) == 8
        assert sum(parts.book(k).n_accounts for k in range(8)) == 3


@pytest.mark.parametrize("by", ["range", "hash"])
def test_repartition_streams_a_venue_directory_in_batches_and_in_place(venue, tmp_path, by):
    market, book = venue
    book.to_dir(tmp_path)
    first = repartition(tmp_path, tmp_path, 3, by=by, batch_rows=997)  # from positions.parquet, in batches
    assert not (tmp_path / "positions.parquet").exists() and len(first) == 3
    again = repartition(tmp_path, tmp_path, 4, by=by, batch_rows=1500)  # from its own partitions, in place
    assert again.parts == ("part-00000", "part-00001", "part-00002", "part-00003")
    assert not list(tmp_path.glob(".repartition-*"))
    ids = [again.book(k).arrays.account_id for k in range(4)]
    assert np.array_equal(np.sort(np.concatenate(ids)), book.arrays.account_id)  # each account in one partition
    assert again.n_positions == book.positions.num_rows and again.n_balances == book.balances.num_rows
    assert again.n_accounts == book.n_accounts
    assert fr.account_risk(market, fr.Book.from_dir(tmp_path)).equals(fr.account_risk(market, book))
    if by == "range":  # the same cuts as from the Book itself
        direct = repartition(book, tmp_path / "direct", 4)
        assert all(pq.read_table(again.files(k)[0]).equals(pq.read_table(direct.files(k)[0])) for k in range(4))


def test_hash_is_fixed_and_spreads_consecutive_ids():
    ids = np.arange(10_000, dtype=np.int64)
    k = partition_of(ids, 4, "hash")
    assert np.array_equal(k, partition_of(ids, 4, "hash"))
    assert np.bincount(k, minlength=4).min() > 2300
    # Pinned (splitmix64's finaliser computed in plain Python integers): a layout written today is read the same
    # way by every later version.
    assert partition_of(np.array([0, 1, 2, 12345, -5, 2**62], np.int64), 7, "hash").tolist() == [0, 6, 1, 6, 5, 0]


@pytest.mark.parametrize("function", PER_ACCOUNT)
def test_per_account_results_equal_the_single_machine_run_bit_for_bit(venue, parts, engine, function):
    market, book = venue
    expected = getattr(fr, function)(market, book)
    assert getattr(fr, function)(market, fr.Book.from_dir(parts.path)).equals(expected)
    result = getattr(engine, function)(market, parts)
    assert result.schema == expected.schema
    assert result.equals(expected)


def test_results_written_by_the_workers_are_the_same_rows(venue, parts, engine, tmp_path):
    market, book = venue
    out = engine.liquidation_prices(market, parts, out=tmp_path / "liq")
    assert sorted(f.stem for f in out.glob("*.parquet")) == list(parts.parts)
    written = pa.concat_tables([pq.read_table(out / f"{name}.parquet") for name in parts.parts])
    written = written.take(np.argsort(written.column("account_id").to_numpy(), kind="stable"))
    assert written.equals(fr.liquidation_prices(market, book))


def test_stress_accounts_bit_for_bit_and_totals_to_1e_12(venue, parts, engine):
    market, book = venue
    scenarios = fr.scenarios.span(["BTC", "ETH"], market=market)
    expected = fr.stress(market, book, scenarios, loss_matrix=True)
    result = engine.stress(market, parts, scenarios, loss_matrix=True)
    assert result.accounts.equals(expected.accounts)
    assert np.array_equal(result.loss_matrix, expected.loss_matrix)
    assert result.scenarios.schema == expected.scenarios.schema
    for name in expected.scenarios.column_names:
        a, b = expected.scenarios.column(name).to_numpy(), result.scenarios.column(name).to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0.0)
        else:
            assert np.array_equal(a, b), name


def test_contagion_equals_the_single_machine_run(venue, parts, engine):
    market, book = venue
    expected = fr.contagion(market, book, SHOCK)
    result = engine.contagion(market, parts, SHOCK)
    assert result.accounts.equals(expected.accounts)
    assert expected.summary.column("accounts_liquidated_cross")[0].as_py() > 0  # the shock liquidates some
    for name in expected.summary.column_names:
        assert result.summary.column(name)[0].as_py() == pytest.approx(expected.summary.column(name)[0].as_py(),
                                                                        rel=1e-12, abs=0.0)


# A small venue's flows are small against its liquidity: strong impact, so that the path runs several rounds (and
# the last case stops at max_rounds).
@pytest.mark.parametrize("impact, fund, k", [("sqrt", 0.0, 8.0), ("linear", 2e6, 1.0), ("sqrt", 1e5, 16.0)])
def test_cascade_equals_the_single_machine_run_bit_for_bit(venue, parts, engine, impact, fund, k):
    market, book = venue
    expected = fr.cascade(market, book, SHOCK, impact=impact, insurance_fund=fund, max_rounds=12, k=k)
    result = engine.cascade(market, parts, SHOCK, impact=impact, insurance_fund=fund, max_rounds=12, k=k)
    assert expected.rounds.num_rows > 4  # several rounds of liquidations: the price path is exercised
    assert result.stopped == expected.stopped
    for name in ("rounds", "accounts", "path"):
        assert getattr(result, name).equals(getattr(expected, name)), name


def test_cascade_checks_its_arguments_before_starting_the_partitions(venue, parts, engine):
    with pytest.raises(InputError, match="cascade.impact"):
        engine.cascade(venue[0], parts, SHOCK, impact="cubic")
    with pytest.raises(InputError, match="shock.underlying"):
        engine.cascade(venue[0], parts, {"NOPE": -0.1})


def _write_parts(path, positions, balances, split):
    """A hand-made layout: partition k holds the rows whose ``split`` value (per table) is k."""
    for name, table in (("positions", positions), ("balances", balances)):
        (path / name).mkdir(parents=True)
        for k in range(2):
            pq.write_table(table.filter(pa.array(split[name] == k)), path / name / f"part-{k:05d}.parquet")
    return PartitionedBook.open(path)


@pytest.mark.parametrize("function", ["account_risk", "cascade"])
def test_an_account_in_two_partitions_is_an_error(venue, engine, tmp_path, function):
    market, book = venue
    positions, balances = book.positions, book.balances
    victim = balances.column("account_id")[0].as_py()
    pos_ids, bal_ids = positions.column("account_id").to_numpy(), balances.column("account_id").to_numpy()
    split = {"positions": (pos_ids % 2 == 1).astype(int), "balances": (bal_ids % 2 == 1).astype(int)}
    split["balances"][bal_ids == victim] = 1 - (victim % 2)  # its collateral in the other partition
    parts = _write_parts(tmp_path, positions, balances, split)
    with pytest.raises(InputError) as info:
        getattr(engine, function)(market, parts, *([SHOCK] if function == "cascade" else []))
    assert info.value.column == "account_id"
    assert f"account_id {victim} in part-00000 and part-00001" in str(info.value)
    with pytest.raises(InputError, match=f"account_id {victim} in part-00000 and part-00001"):
        parts.check()  # what fastrisk validate runs on a partitioned directory


def test_bad_input_in_a_partition_names_its_file(venue, engine, tmp_path):
    market, book = venue
    positions = book.positions
    quantity = positions.column("quantity").to_numpy().copy()
    ids = positions.column("account_id").to_numpy()
    bad = int(np.flatnonzero(ids % 2 == 1)[3])
    quantity[bad] = np.nan
    positions = positions.set_column(positions.schema.get_field_index("quantity"), "quantity", pa.array(quantity))
    split = {"positions": (ids % 2 == 1).astype(int),
             "balances": (book.balances.column("account_id").to_numpy() % 2 == 1).astype(int)}
    parts = _write_parts(tmp_path, positions, book.balances, split)
    with pytest.raises(InputError) as info:
        engine.account_risk(market, parts)
    assert info.value.column == "quantity"
    assert "part-00001.parquet" in info.value.table
    assert info.value.rows == [int(np.sum(ids[:bad] % 2 == 1))]  # the row within that partition's file


def test_input_error_survives_pickling():
    error = InputError("positions", "quantity", "finite", [3, 9], 7, ["row 3: nan", "row 9: nan"])
    again = pickle.loads(pickle.dumps(error))
    assert (again.table, again.column, again.rule, again.rows, again.count, again.examples) == \
        (error.table, error.column, error.rule, error.rows, error.count, error.examples)
    assert str(again) == str(error)


def test_a_partitioned_book_needs_both_files_of_each_partition(venue, tmp_path):
    parts = repartition(venue[1], tmp_path, 3)
    parts.files(1)[1].unlink()
    with pytest.raises(InputError, match="missing balances/<name>.parquet for 1 partition"):
        PartitionedBook.open(tmp_path)
    with pytest.raises(InputError, match="positions/ directory"):
        PartitionedBook.open(tmp_path / "nowhere")


def test_repartition_checks_its_arguments(venue, tmp_path):
    with pytest.raises(InputError, match="by: must be one of range, hash"):
        repartition(venue[1], tmp_path, 2, by="random")
    with pytest.raises(InputError, match="n_partitions: must be an integer >= 1"):
        repartition(venue[1], tmp_path, 0)
