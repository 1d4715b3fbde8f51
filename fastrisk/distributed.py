"""Beyond one machine (SPEC §10): the same kernels, partition by partition, on a Dask cluster.

A *partitioned book* is a directory holding ``positions/`` and ``balances/`` Parquet datasets whose files pair up
by name: partition ``part-00003`` is ``positions/part-00003.parquet`` with ``balances/part-00003.parquet``. Every
account lies in exactly one partition (all its positions and balances in one pair of files): ``repartition``
writes that layout (by account_id range or hash), ``fastrisk generate --partitions N`` too, and every engine
call checks it from what the partitions return (an account in two partitions is an ``InputError`` naming it and
both files). ``Book.from_dir`` reads the same directory whole, for a single-machine run.

:class:`Engine` runs ``account_risk``, ``position_risk``, ``liquidation_prices``, ``exposures``, ``stress`` and
``contagion`` on every partition, each a task that reads its own two files on a worker, so a worker's memory is
bounded by its partition. Per-account results are those of the single-machine run bit for bit (each account is
computed by the same kernels from the same rows), in the same order (sorted by account_id; hash partitions are
merged back into that order); venue totals (``stress``' scenario table, ``contagion``'s summary) are sums of the
partitions' totals, equal to the single-machine run to 1e-12 relative (SPEC §7).

``cascade`` is one map-reduce per round: each partition's buckets stay on a worker (a Dask actor) from the screen
to the last round; a round sends the prices out and brings back what each partition closed, item by item, and
the driver adds the forced flow, fees and bad debt in account order, exactly as the single-machine cascade does
(``liquidation_cascade.run_rounds``): the price path, and so every result, is the single-machine run's bit for
bit, whatever the partitioning.

Requires the ``distributed`` extra (``pip install "fastrisk[distributed]"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .book import Book
from .errors import InputError
from .io import write_parquet
from .liquidation_cascade import LIQUIDATION_FEE, SQRT_IMPACT_K
from .risk import OPTION_MARGIN
from .tables import account_order, merge_by_account

__all__ = ["Engine", "PartitionedBook", "repartition", "PARTITION_BY"]

PARTITION_BY = ("range", "hash")


@dataclass(frozen=True)
class PartitionedBook:
    """A partitioned book directory (module docstring): ``parts`` are its partitions' names, in order."""

    path: Path
    parts: tuple[str, ...]

    @classmethod
    def open(cls, path) -> "PartitionedBook":
        """The partitions under ``path``: every ``positions/*.parquet`` needs a ``balances/`` file of the same name,
        and the other way round."""
        path = Path(path)
        names = {}
        for table in ("positions", "balances"):
            folder = path / table
            if not folder.is_dir():
                raise InputError(table, "*", f"a partitioned book needs a {table}/ directory of Parquet files in "
                                             f"{path}")
            names[table] = {f.stem for f in folder.glob("*.parquet")}
        for table, other in (("positions", "balances"), ("balances", "positions")):
            alone = sorted(names[table] - names[other])
            if alone:
                raise InputError(other, "*", f"every partition needs a file in both positions/ and balances/: "
                                             f"missing {other}/<name>.parquet for {len(alone)} partition(s), e.g. "
                                             + ", ".join(alone[:5]))
        if not names["positions"]:
            raise InputError("positions", "*", f"no partitions (positions/*.parquet) in {path}")
        return cls(path, tuple(sorted(names["positions"])))

    def files(self, k: int) -> tuple[Path, Path]:
        """Partition ``k``'s positions and balances files."""
        name = self.parts[k] + ".parquet"
        return self.path / "positions" / name, self.path / "balances" / name

    def book(self, k: int) -> Book:
        """Partition ``k`` as a :class:`Book` (read here)."""
        return Book(*self.files(k))

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def n_positions(self) -> int:
        """Rows of the positions files (from their Parquet footers)."""
        return self._rows("positions")

    @property
    def n_balances(self) -> int:
        return self._rows("balances")

    @property
    def n_accounts(self) -> int:
        """Accounts in the book (reads the account_id columns; an account in two partitions counts once)."""
        return len(np.unique(np.concatenate([self.accounts(k) for k in range(len(self))])))

    def accounts(self, k: int) -> np.ndarray:
        """Partition ``k``'s account ids, sorted (read from its files' account_id columns)."""
        import pyarrow.parquet as pq

        return np.unique(np.concatenate([pq.read_table(f, columns=["account_id"]).column("account_id").to_numpy()
                                         for f in self.files(k)]))

    def check(self) -> None:
        """Every account in exactly one partition, checked here (engine calls check it from their tasks'
        results): an ``InputError`` naming accounts and partitions otherwise."""
        _check_disjoint(self, [self.accounts(k) for k in range(len(self))])

    def _rows(self, table: str) -> int:
        import pyarrow.parquet as pq

        which = ("positions", "balances").index(table)
        return sum(pq.ParquetFile(self.files(k)[which]).metadata.num_rows for k in range(len(self)))

    def __repr__(self) -> str:
        return f"PartitionedBook({self.path}, {len(self)} partitions)"


def partition_of(account_id: np.ndarray, n_partitions: int, by: str, bounds: np.ndarray | None = None) -> np.ndarray:
    """Each account's partition: ``hash``, a fixed mix of the id modulo n (the same on every machine and run);
    ``range``, the partition whose ``bounds`` (its first account_id, ascending) it falls in."""
    if by == "hash":
        # splitmix64's finaliser: consecutive ids spread evenly over the partitions.
        x = account_id.astype(np.uint64)
        with np.errstate(over="ignore"):
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
        return (x % np.uint64(n_partitions)).astype(np.int64)
    return np.searchsorted(bounds, account_id, side="right") - 1


def repartition(source, out, n_partitions: int, *, by: str = "range", batch_rows: int = 1 << 20) -> PartitionedBook:
    """Write a book as a partitioned book under ``out`` (``positions/`` and ``balances/``, one file pair per
    partition, ``part-00000`` ...) and return it.

    ``source``: a :class:`Book`, or a venue directory whose ``positions`` and ``balances`` (Parquet or Arrow IPC
    files, or Parquet dataset directories: a partitioned book too) are streamed ``batch_rows`` rows at a time,
    so that a book larger than memory can be partitioned (its rows are validated where they are used, partition
    by partition; only the positions' account_id column is read whole, for ``range``).

    ``by="range"``: contiguous account_id ranges holding about the same number of positions (the kernels' work
    grows with positions), so partition k's accounts all precede partition k+1's. ``by="hash"``: a fixed hash of
    the account_id (balances accounts whatever the ids' distribution). Every partition gets its pair of files,
    empty ones included; rows keep their order within a partition. The files are written beside ``out`` first
    and moved into place at the end, replacing any earlier book there (partitioned, or single files, which
    ``Book.from_dir`` would read instead): ``out`` may be the source's own directory."""
    import shutil
    import tempfile

    import pyarrow.parquet as pq

    if by not in PARTITION_BY:
        raise InputError("repartition", "by", f"must be one of {', '.join(PARTITION_BY)} (got {by!r})")
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, (int, np.integer)) or n_partitions < 1:
        raise InputError("repartition", "n_partitions", f"must be an integer >= 1 (got {n_partitions!r})")
    scans = _sources(source, batch_rows)
    bounds = None
    if by == "range":
        ids = np.concatenate([b.column("account_id").to_numpy() for b in scans["positions"][1](["account_id"])]
                             + [np.empty(0, np.int64)])
        bounds = _range_bounds(ids, n_partitions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".repartition-", dir=out))
    try:
        for name, (schema, batches) in scans.items():
            (staging / name).mkdir()
            writers: dict[int, pq.ParquetWriter] = {}
            for batch in batches(None):
                part = partition_of(batch.column("account_id").to_numpy(), n_partitions, by, bounds)
                order = np.argsort(part, kind="stable")
                ends = np.searchsorted(part[order], np.arange(n_partitions + 1))
                for k in np.flatnonzero(np.diff(ends)):
                    if k not in writers:
                        writers[k] = pq.ParquetWriter(staging / name / f"part-{k:05d}.parquet", schema)
                    writers[k].write_batch(batch.take(pa.array(order[ends[k]:ends[k + 1]])))
            for writer in writers.values():
                writer.close()
            for k in set(range(n_partitions)) - set(writers):
                pq.write_table(schema.empty_table(), staging / name / f"part-{k:05d}.parquet")
        for name in scans:
            for single in (out / f"{name}.parquet", out / f"{name}.arrow"):
                single.unlink(missing_ok=True)
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            (staging / name).rename(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PartitionedBook.open(out)


def _sources(source, batch_rows: int) -> dict:
    """``{table: (schema, batches(columns))}`` for positions and balances: ``batches`` yields record batches of
    at most ``batch_rows`` rows with those columns (None: all), in row order."""
    if isinstance(source, Book):
        tables = {"positions": source.positions, "balances": source.balances}
        return {name: (t.schema, lambda columns, t=t: (t if columns is None else t.select(columns)).to_batches(
            max_chunksize=batch_rows)) for name, t in tables.items()}
    import pyarrow.dataset as ds

    from .tables import find_table_file

    path = Path(source)
    if not path.is_dir():
        raise InputError("book", "*", f"not a directory: {path}")
    scans = {}
    for name in ("positions", "balances"):
        found = find_table_file(path, name)
        data = ds.dataset(found, format="ipc" if found.suffix == ".arrow" else "parquet")
        scans[name] = (data.schema, lambda columns, data=data: data.to_batches(columns=columns, batch_size=batch_rows,
                                                                               use_threads=False))
    return scans


def _range_bounds(position_accounts: np.ndarray, n_partitions: int) -> np.ndarray:
    """Each range partition's first account_id (the first -inf; empty partitions past the last cut +inf): cuts
    of the accounts, in account_id order, into equal shares of positions (``position_accounts``: each
    position's account)."""
    accounts, counts = np.unique(position_accounts, return_counts=True)
    pos_start = np.concatenate([[0], np.cumsum(counts)])
    cuts = np.searchsorted(pos_start, np.arange(1, n_partitions) * (pos_start[-1] / n_partitions))
    cuts = np.unique(cuts[(cuts >= 1) & (cuts < len(accounts))])
    bounds = np.full(n_partitions, np.iinfo(np.int64).max)
    bounds[0] = np.iinfo(np.int64).min
    bounds[1:1 + len(cuts)] = accounts[cuts]
    return bounds


# --------------------------------------------------------------------------------------------- on a worker

def _on_partition(files, work):
    """``work(book)`` on partition ``files`` read as a Book; bad input names the partition's file."""
    try:
        return work(Book(*files))
    except InputError as e:
        table_file = files[0] if e.table == "positions" else files[1] if e.table == "balances" else None
        where = f"{e.table} ({table_file})" if table_file is not None else e.table
        raise InputError(where, e.column, e.rule + " [rows of that partition file]", e.rows, e.count,
                         e.examples) from None


def _run_partition(function: str, market, files, kwargs, out=None):
    """One task: ``fastrisk.<function>(market, book, **kwargs)`` on partition ``files``; returns the result (None
    when written to the Parquet file ``out`` instead) and the partition's accounts (sorted)."""
    import fastrisk

    def work(book):
        result = getattr(fastrisk, function)(market, book, **kwargs)
        if out is not None:
            write_parquet(result, out)
            result = None
        return result, book.arrays.account_id

    return _on_partition(files, work)


class PartitionCascade:
    """A partition's side of a cascade, kept on a worker between rounds (a Dask actor around
    ``liquidation_cascade.CascadeBook``)."""

    def __init__(self, market, files, *args, **kwargs):
        from .liquidation_cascade import CascadeBook

        self.part = _on_partition(files, lambda book: CascadeBook(market, book, *args, **kwargs))

    def account_ids(self) -> np.ndarray:
        return self.part.bound.book.account_id

    def round(self, rnd, mult):
        return self.part.round(rnd, mult)

    def accounts(self, mult):
        return self.part.accounts(mult)


# --------------------------------------------------------------------------------------------- the engine

class Engine:
    """fastrisk's functions over a partitioned book on a Dask cluster (module docstring).

    Parameters
    ----------
    address : str, optional
        A running scheduler's address; without it (and without ``client``) a ``LocalCluster`` is started, closed
        with the engine.
    client : dask.distributed.Client, optional
        An existing client to use (not closed with the engine).
    **cluster
        ``LocalCluster`` arguments (``n_workers``, ``threads_per_worker``, ``processes`` ...).

    Examples
    --------
    >>> import fastrisk as fr
    >>> from fastrisk.distributed import Engine, repartition
    >>> market, book = fr.generate.exchange(1000, seed=1)
    >>> parts = repartition(book, "/tmp/venue_parts", 4)                       # doctest: +SKIP
    >>> with Engine(n_workers=2, threads_per_worker=1) as engine:             # doctest: +SKIP
    ...     risk = engine.account_risk(market, parts)
    ...     assert risk.equals(fr.account_risk(market, book))
    """

    from . import scenarios  # the scenario generators, as ``fastrisk.scenarios`` (``run`` asks the engine for them)

    def __init__(self, address: str | None = None, *, client=None, **cluster):
        from dask.distributed import Client, LocalCluster

        self._owned = []
        if client is None:
            if address is None:
                local = LocalCluster(**cluster)
                self._owned.append(local)
                address = local
            client = Client(address)
            self._owned.insert(0, client)
        self.client = client

    def close(self) -> None:
        """Close the client and cluster this engine started."""
        for thing in self._owned:
            thing.close()
        self._owned = []

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _prepare(self, market, book):
        """``(book, market)``: the book as a PartitionedBook (a directory is opened), the market sent to every
        worker once (a future; unhashed, so that a later call's copy never shares a key with one being freed)."""
        if not isinstance(book, PartitionedBook):
            book = PartitionedBook.open(book)
        return book, self.client.scatter(market, broadcast=True, hash=False)

    def _map(self, function: str, market, book, kwargs, out=None):
        """Run ``function`` on every partition; ``[(result, accounts)]`` in partition order, after checking that
        no account lies in two partitions. With ``out``, each partition's result is written to
        ``out/<partition>.parquet`` on its worker instead (result None)."""
        book, shared = self._prepare(market, book)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
        futures = [self.client.submit(_run_partition, function, shared, book.files(k), kwargs,
                                      None if out is None else Path(out) / f"{book.parts[k]}.parquet", pure=False)
                   for k in range(len(book))]
        results = self.client.gather(futures)
        _check_disjoint(book, [accounts for _, accounts in results])
        return results

    def _per_account(self, function: str, market, book, kwargs, out):
        results = self._map(function, market, book, kwargs, out)
        return Path(out) if out is not None else merge_by_account([r for r, _ in results])

    def account_risk(self, market, book, *, out=None, **kwargs):
        """``fastrisk.account_risk`` (every keyword as there): the table, or with ``out`` (a directory) one
        Parquet file per partition written by its worker, ``out/<partition>.parquet``, and ``out`` returned: the
        driver never holds the whole result (rows in each file by account_id; files in partition order)."""
        return self._per_account("account_risk", market, book, kwargs, out)

    def position_risk(self, market, book, *, out=None, **kwargs):
        """``fastrisk.position_risk`` (``out`` as in ``account_risk``)."""
        return self._per_account("position_risk", market, book, kwargs, out)

    def liquidation_prices(self, market, book, *, out=None, **kwargs):
        """``fastrisk.liquidation_prices`` (``out`` as in ``account_risk``)."""
        return self._per_account("liquidation_prices", market, book, kwargs, out)

    def exposures(self, market, book, *, out=None, **kwargs):
        """``fastrisk.exposures`` (``out`` as in ``account_risk``)."""
        return self._per_account("exposures", market, book, kwargs, out)

    def stress(self, market, book, scenarios, **kwargs):
        """``fastrisk.stress``: accounts (and the loss matrix) merged, the scenario table's totals summed."""
        from .scenario_risk import StressResult
        from .kernels.scenarios import SCENARIO_TOTALS

        parts = [r for r, _ in self._map("stress", market, book, dict(kwargs, scenarios=scenarios))]
        order = account_order([p.accounts for p in parts])
        scenarios_table = parts[0].scenarios
        for name in SCENARIO_TOTALS:
            total = np.sum([p.scenarios.column(name).to_numpy() for p in parts], axis=0)
            scenarios_table = scenarios_table.set_column(scenarios_table.schema.get_field_index(name), name,
                                                         pa.array(total, scenarios_table.schema.field(name).type))
        matrix = None
        if kwargs.get("loss_matrix"):
            matrix = np.concatenate([p.loss_matrix for p in parts])
            matrix = matrix if order is None else matrix[order]
        return StressResult(merge_by_account([p.accounts for p in parts]), scenarios_table, matrix)

    def cascade(self, market, book, shock, impact: str = "sqrt", insurance_fund: float = 0.0,
                liquidation_fee: float = LIQUIDATION_FEE, max_rounds: int = 50, k: float = SQRT_IMPACT_K, *,
                rate: float = 0.0, option_margin=OPTION_MARGIN):
        """``fastrisk.cascade`` as one map-reduce per round (module docstring): the same arguments and result,
        bit for bit."""
        from .liquidation_cascade import cascade_parameters, run_rounds

        mult0, insurance_fund, liquidation_fee, k = cascade_parameters(
            market, shock, impact, insurance_fund, liquidation_fee, max_rounds, k, rate, option_margin)
        book, shared = self._prepare(market, book)
        actors = [self.client.submit(PartitionCascade, shared, book.files(j), mult0, liquidation_fee,
                                     int(max_rounds), rate=rate, option_margin=option_margin, actor=True, pure=False)
                  for j in range(len(book))]
        actors = [a.result() for a in actors]

        def call(method, *args):  # every partition at once, then their results in partition order
            return [f.result() for f in [getattr(a, method)(*args) for a in actors]]

        _check_disjoint(book, call("account_ids"))
        return run_rounds(market, call, mult0, impact, insurance_fund, int(max_rounds), k)

    def contagion(self, market, book, shock, **kwargs):
        """``fastrisk.contagion``: accounts merged, the summary recomputed from them."""
        from .cross_contagion import ContagionResult, contagion_summary

        parts = [r for r, _ in self._map("contagion", market, book, dict(kwargs, shock=shock))]
        accounts = merge_by_account([p.accounts for p in parts])
        return ContagionResult(accounts, contagion_summary(accounts))


def _check_disjoint(book: PartitionedBook, accounts: list[np.ndarray]) -> None:
    """Every account in exactly one partition (SPEC §10), else an ``InputError`` naming accounts and files."""
    ids = np.concatenate(accounts) if accounts else np.empty(0, np.int64)
    part = np.repeat(np.arange(len(accounts)), [len(a) for a in accounts])
    order = np.argsort(ids, kind="stable")
    twice = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(twice):
        shown = [f"account_id {ids[order][j]} in {book.parts[part[order][j]]} and {book.parts[part[order][j + 1]]}"
                 for j in twice[:5]]
        raise InputError("positions", "account_id", "each account's positions and balances must lie in exactly one "
                         f"partition of {book.path}", [], len(np.unique(ids[order][twice])), shown)
