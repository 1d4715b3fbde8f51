"""Every supported input source gives the same result: pyarrow tables, record batches, chunked tables,
Parquet files and dataset directories, Arrow IPC files, and frames exposing __arrow_c_stream__."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fastrisk as fr


@pytest.fixture(scope="module")
def venue():
    tables = fr.generate.exchange_tables(400, seed=9)
    market = fr.Market(as_of=tables["as_of"], **{k: tables[k] for k in ("assets", "underlyings", "instruments",
                                                                         "tiers")})
    book = fr.Book(positions=tables["positions"], balances=tables["balances"])
    return tables, market, fr.account_risk(market, book)


def _risk(tables, market, positions, balances):
    return fr.account_risk(market, fr.Book(positions=positions, balances=balances))


def test_record_batches_and_chunked_tables(venue):
    tables, market, expected = venue
    pos, bal = tables["positions"], tables["balances"]
    assert _risk(tables, market, pos.to_batches()[0] if pos.num_rows else pos,
                 bal.combine_chunks().to_batches()[0]).equals(expected)
    chunked = pa.Table.from_batches(pos.to_batches(max_chunksize=97))
    assert chunked.column("quantity").num_chunks > 1
    assert _risk(tables, market, chunked, bal).equals(expected)


def test_polars_frames(venue):
    pl = pytest.importorskip("polars")
    tables, market, expected = venue
    pos, bal = pl.from_arrow(tables["positions"]), pl.from_arrow(tables["balances"])
    assert hasattr(pos, "__arrow_c_stream__")
    market_pl = fr.Market(as_of=tables["as_of"], **{k: pl.from_arrow(tables[k]) for k in
                                                    ("assets", "underlyings", "instruments", "tiers")})
    assert fr.account_risk(market_pl, fr.Book(positions=pos, balances=bal)).equals(expected)


def test_parquet_ipc_and_dataset_directories(venue, tmp_path):
    tables, market, expected = venue
    pq.write_table(tables["positions"], tmp_path / "positions.parquet")
    with pa.OSFile(str(tmp_path / "balances.arrow"), "wb") as f, \
            pa.ipc.new_file(f, tables["balances"].schema) as writer:
        writer.write_table(tables["balances"])
    assert _risk(tables, market, tmp_path / "positions.parquet", tmp_path / "balances.arrow").equals(expected)
    # positions as a dataset directory of several Parquet files
    ds = tmp_path / "ds" / "positions"
    ds.mkdir(parents=True)
    pos = tables["positions"]
    half = pos.num_rows // 2
    pq.write_table(pos.slice(0, half), ds / "part-0.parquet")
    pq.write_table(pos.slice(half), ds / "part-1.parquet")
    assert _risk(tables, market, ds, tables["balances"]).equals(expected)


def test_directory_round_trip(venue, tmp_path):
    tables, market, expected = venue
    fr.generate.write(tables, tmp_path)
    market2, book2 = fr.Market.from_dir(tmp_path), fr.Book.from_dir(tmp_path)
    assert market2.as_of == market.as_of
    assert fr.account_risk(market2, book2).equals(expected)
    out = tmp_path / "again"
    market2.to_dir(out)
    book2.to_dir(out)
    assert fr.account_risk(fr.Market.from_dir(out), fr.Book.from_dir(out)).equals(expected)


def test_lossless_conversions_accepted(venue):
    tables, market, expected = venue
    pos = tables["positions"]
    converted = pos.set_column(pos.column_names.index("instrument_id"), "instrument_id",
                               pos.column("instrument_id").cast(pa.int64()))
    converted = converted.set_column(converted.column_names.index("account_id"), "account_id",
                                     converted.column("account_id").cast(pa.uint64()))
    bal = tables["balances"]
    bal = bal.set_column(bal.column_names.index("asset"), "asset", bal.column("asset").cast(pa.string()))
    assert _risk(tables, market, converted, bal).equals(expected)


def test_columns_are_zero_copy_for_single_chunk_input(venue):
    tables, _, _ = venue
    book = fr.Book(positions=tables["positions"], balances=tables["balances"])
    q = tables["positions"].column("quantity").chunk(0)
    assert np.shares_memory(book.arrays.quantity, q.to_numpy(zero_copy_only=True))


def test_extra_columns_ignored_and_order_free(venue):
    tables, market, expected = venue
    pos = tables["positions"]
    shuffled = pos.select(list(reversed(pos.column_names))).append_column("note", pa.array(["x"] * pos.num_rows))
    assert _risk(tables, market, shuffled, tables["balances"]).equals(expected)


def test_atomic_write_leaves_no_partial_file_and_usual_permissions(tmp_path):
    import os
    from pathlib import Path

    from fastrisk.io import atomic_write

    def fail(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.parquet", fail)
    assert list(tmp_path.iterdir()) == []
    done = atomic_write(tmp_path / "out.txt", lambda tmp: Path(tmp).write_text("whole"))
    umask = os.umask(0)
    os.umask(umask)
    assert done.read_text() == "whole" and os.stat(done).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("dtype, value", [(np.float64, np.nan), (np.float64, -0.0), (np.int32, -1), (np.uint8, 1)])
@pytest.mark.parametrize("shape", [0, 5, 300_001, (3, 100_000)])
def test_full_fills_every_element_in_parallel(dtype, value, shape):
    # Arrays are filled by a parallel kernel (kernels.arrays.fill): every element, exact bits, any size.
    from fastrisk.tables import full

    got = full(shape, value, dtype)
    want = np.full(shape, value, dtype)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("lengths", [[], [0], [3], [0, 2, 0, 7, 1], [5, 5]])
def test_longest_segment_of_offsets(lengths):
    # kernels.arrays.longest sizes per-account scratch (stress): the largest diff of an offsets array, 0 if none.
    from fastrisk.kernels.arrays import longest

    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    assert longest(starts) == max(lengths, default=0)
