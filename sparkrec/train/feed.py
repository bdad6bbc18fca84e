"""Petastorm feed: each rank reads its shard of a prepared split (or of the autoencoders' sparse
vectors) in exactly as many steps as every other rank, and the rows it read are reconciled with
the manifest.

Why the care:

- Collectives hang when one rank stops stepping earlier than another, and Petastorm shards need not
  be even (a shard is the row groups whose index modulo the world size is the rank). All ranks take
  ``steps = ceil(largest shard / batch_size)`` steps; a smaller shard takes proportionally smaller
  batches, and a rank that runs dry pads with empty batches. Everything is computed from the
  manifest, so no rank has to ask the others.
- petastorm 0.13.1's ThreadPool can end a ``num_epochs=1`` read early and silently (whole shards
  came back empty in a probe here; see :class:`RaceFreeThreadPool`). Readers here use a pool with
  the window closed, and every epoch's row count is checked against the manifest
  (:func:`check_rows_read`) so a loss can never pass unnoticed.
- Batches come from ``BatchedDataLoader`` (columnar, no per-row Python; the row-by-row
  ``DataLoader`` was ~7x slower here); sparse vectors straight from the Arrow tables.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from petastorm import make_batch_reader
from petastorm.pytorch import BatchedDataLoader
from petastorm.workers_pool import EmptyResultError
from petastorm.workers_pool.thread_pool import ThreadPool

from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.data.sequences import ITEMS, LABELS
from sparkrec.data.sparse_vectors import VALUE
from sparkrec.errors import SparkrecError

COLUMNS = (USER_IDX, ITEM_IDX, LABEL)

# petastorm 0.13.1 (pinned) drives pyarrow's legacy dataset API, and hands torch read-only Arrow
# buffers that are never written to: both warn on every reader, and both are noise here.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", module=r"petastorm\.")


class RaceFreeThreadPool(ThreadPool):
    """petastorm's ThreadPool with its end-of-data check made safe.

    ``ThreadPool.get_results`` ends the read when ``all_workers_done()`` and then
    ``ventilator.completed()`` both hold. Those are read at two moments: if the ventilator thread
    hands out its last row groups between them, the first check saw idle workers and the second
    sees ventilation over, so the read ends and those row groups are dropped without an error
    (with few row groups per shard, often all of them). Reading "ventilation over" first closes
    the window: once it holds, no row group can be handed out any more.
    """

    def all_workers_done(self) -> bool:
        if self._ventilator is not None and not self._ventilator.completed():
            return False
        return super().all_workers_done()


@dataclass(frozen=True)
class ShardPlan:
    """How one dataset (a prepared split, sparse vectors) is read by ``world`` ranks: rows per
    shard, steps, batch sizes.

    Built from the manifest alone, identically on every rank.
    """

    what: str
    """The dataset, for messages ('prepared train split', 'users vectors')."""
    path: str
    world: int
    shard_rows: tuple[int, ...]
    """Rows in each rank's shard (row groups ``rank::world`` in Petastorm's order)."""
    steps: int
    """Steps every rank takes per epoch."""
    batch_sizes: tuple[int, ...]
    """Rows per step of each rank (its last non-empty step may be partial)."""

    @property
    def rows(self) -> int:
        return sum(self.shard_rows)

    def step_rows(self, step: int) -> int:
        """Rows all ranks together are planned to read at ``step``."""
        return sum(min(b, max(0, n - step * b)) for n, b in zip(self.shard_rows, self.batch_sizes))


def plan_shards(manifest: dict, split: str, world: int, batch_size: int) -> ShardPlan:
    """Plan reading ``split`` of the prepared data with ``world`` ranks (see :func:`plan_dataset`)."""
    return plan_dataset(manifest["splits"][split], f"prepared {split} split", world, batch_size,
                        fix=f"re-run prepare with train.num_workers={world} (its files are rounded up to a "
                            f"multiple of the workers)")


def plan_dataset(info: dict, what: str, world: int, batch_size: int, fix: str = "") -> ShardPlan:
    """Plan reading a Parquet dataset described by ``info`` (``path``, ``rows``, ``row_groups`` in
    Petastorm's order, as the prepare job and ``sparkrec.data.sparse_vectors`` record them) with
    ``world`` ranks, ``batch_size`` rows per step on the largest shard.

    Raises
    ------
    SparkrecError
        The row groups do not add up to the rows, or there are fewer row groups than ranks
        (Petastorm would leave a rank without data).
    """
    groups = [int(n) for n in info["row_groups"]]
    if sum(groups) != int(info["rows"]):
        raise SparkrecError(f"manifest of {info['path']} is inconsistent: row groups hold {sum(groups)} rows, "
                            f"'rows' says {info['rows']}; re-run the job that wrote it")
    if len(groups) < world:
        raise SparkrecError(f"{what} has {len(groups)} row groups, fewer than the {world} training "
                            f"workers, so some would get no data; {fix or 'use fewer workers'}")
    shard_rows = tuple(sum(groups[rank::world]) for rank in range(world))
    steps = max(1, math.ceil(max(shard_rows) / batch_size))
    batch_sizes = tuple(max(1, math.ceil(n / steps)) for n in shard_rows)
    return ShardPlan(what, info["path"], world, shard_rows, steps, batch_sizes)


def epoch_seed(seed: int, epoch: int, rank: int, stream: int = 0) -> int:
    """A seed that is a pure function of its arguments, never 0 (petastorm treats 0 as 'unseeded')."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0] % (2**31 - 1)) + 1


class ShardReader:
    """One pass over one rank's shard of prepared interactions as exactly ``plan.steps`` batches.

    Iterating yields dicts of CPU tensors (``user_idx`` int64, ``item_idx`` int64, ``label``
    float32); ``rows_read`` holds the rows delivered once the pass is over. With one reader thread
    the order is a pure function of ``seed`` (row groups and rows inside them shuffled with it, the
    shuffle buffer drawing from torch's global generator, which the caller seeds).
    """

    key = USER_IDX  # a column every batch holds one entry per row of

    def __init__(self, plan: ShardPlan, rank: int, seed: int, shuffle: bool = True,
                 shuffle_buffer: int = 0, threads: int = 1):
        self.plan, self.rank, self.seed = plan, rank, seed
        self.shuffle, self.shuffle_buffer, self.threads = shuffle, shuffle_buffer, threads
        self.rows_read = 0

    def _open(self, columns: tuple[str, ...]):
        reader = make_batch_reader(
            self.plan.path,
            schema_fields=[f"^{c}$" for c in columns],
            reader_pool_type="thread",
            workers_count=self.threads,
            seed=self.seed,
            shuffle_row_groups=self.shuffle,
            shuffle_rows=self.shuffle,
            num_epochs=1,
            cur_shard=self.rank,
            shard_count=self.plan.world,
        )
        # The pool has started but nothing was read from it yet: switching its class now applies
        # the fix before the first end-of-data check.
        reader._workers_pool.__class__ = RaceFreeThreadPool
        return reader

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        # A shuffle buffer of 1 lets petastorm retrieve short batches mid-pass; 0 or >= 2 do not.
        capacity = self.shuffle_buffer if self.shuffle and self.shuffle_buffer >= 2 else 0
        with BatchedDataLoader(self._open(COLUMNS), batch_size=self.plan.batch_sizes[self.rank],
                               shuffling_queue_capacity=capacity) as loader:
            yield from loader

    def empty_batch(self) -> dict[str, torch.Tensor]:
        return empty_batch()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.rows_read = 0
        steps = 0
        for batch in self._batches():
            steps += 1
            self.rows_read += len(batch[self.key])
            if steps <= self.plan.steps:
                yield batch
        if steps > self.plan.steps:
            raise SparkrecError(f"rank {self.rank} read {self.rows_read} rows of {self.plan.path} in {steps} batches, "
                                f"more than the {self.plan.steps} planned from the manifest "
                                f"({self.plan.shard_rows[self.rank]} rows); the data changed after it was written")
        for _ in range(self.plan.steps - steps):  # ran dry early: keep stepping so collectives match
            yield self.empty_batch()


def empty_batch() -> dict[str, torch.Tensor]:
    return {USER_IDX: torch.zeros(0, dtype=torch.int64), ITEM_IDX: torch.zeros(0, dtype=torch.int64),
            LABEL: torch.zeros(0, dtype=torch.float32)}


class _ArrowTables:
    """Petastorm results reader that hands over each row group's Arrow table as read, instead of
    converting it to numpy (which refuses lists of different lengths)."""

    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        try:
            return workers_pool.get_results()
        except EmptyResultError:
            raise StopIteration from None


class VectorShardReader(ShardReader):
    """One pass over one rank's shard of sparse vectors (``sparkrec.data.sparse_vectors``) as
    exactly ``plan.steps`` CSR batches, with the same step, padding and row-count rules as
    :class:`ShardReader`.

    Iterating yields dicts of CPU tensors: ``key`` int64 [B] (the vectors' ids), ``offsets``
    int64 [B + 1], ``indices`` int64 [nnz], ``values`` float32 [nnz] (row b's nonzeros are
    ``offsets[b]:offsets[b + 1]``). Arrow list columns are already offsets + flat values, so a
    batch is built without a per-row Python loop. Row groups and the rows inside them are
    shuffled with ``seed``; there is no shuffle buffer across row groups.
    """

    def __init__(self, plan: ShardPlan, rank: int, seed: int, key: str, indices: str, shuffle: bool = True,
                 threads: int = 1):
        super().__init__(plan, rank, seed, shuffle=shuffle, threads=threads)
        self.key, self.indices = key, indices
        self.columns = (key, indices, VALUE)

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        size = self.plan.batch_sizes[self.rank]
        pending: list[pa.Table] = []
        held = 0
        reader = self._open(self.columns)
        reader._results_queue_reader = _ArrowTables()
        try:
            for table in reader:
                pending.append(table)
                held += table.num_rows
                while held >= size:
                    merged = pa.concat_tables(pending)
                    yield self._csr(merged.slice(0, size))
                    pending, held = [merged.slice(size)], held - size
        finally:  # as BatchedDataLoader does (the reader's own exit prints a line per pass)
            reader.stop()
            reader.join()
        if held:
            yield self._csr(pa.concat_tables(pending))

    def _csr(self, table: pa.Table) -> dict[str, torch.Tensor]:
        lists = table.column(self.indices).combine_chunks()
        offsets = np.asarray(lists.offsets, dtype=np.int64)  # of a slice: they need not start at 0
        indices = lists.flatten().to_numpy().astype(np.int64)
        values = table.column(VALUE).combine_chunks().flatten().to_numpy().astype(np.float32)
        assert len(indices) == len(values) == offsets[-1] - offsets[0], "indices and values are not aligned"
        return {self.key: torch.from_numpy(table.column(self.key).to_numpy().astype(np.int64)),
                "offsets": torch.from_numpy(offsets - offsets[0]),
                "indices": torch.from_numpy(indices), "values": torch.from_numpy(values)}

    def empty_batch(self) -> dict[str, torch.Tensor]:
        return {self.key: torch.zeros(0, dtype=torch.int64), "offsets": torch.zeros(1, dtype=torch.int64),
                "indices": torch.zeros(0, dtype=torch.int64), "values": torch.zeros(0, dtype=torch.float32)}


def left_padded(lists: pa.ListArray, width: int, fill: float, dtype) -> np.ndarray:
    """Rows of an Arrow list column as a ``[rows, width]`` array, each list right-aligned (its
    last element in the last column) and the columns before it ``fill``; lists longer than
    ``width`` keep their last ``width`` elements. No per-row Python loop."""
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    values = lists.flatten().to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    out = np.full((len(lengths), width), fill, dtype=dtype)
    if not len(values):
        return out
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = width - lengths[rows] + (np.arange(len(values)) - (offsets[rows] - offsets[0]))
    keep = cols >= 0
    out[rows[keep], cols[keep]] = values[keep]
    return out


class WindowShardReader(VectorShardReader):
    """One pass over one rank's shard of history windows (``sparkrec.train.inputs``) as exactly
    ``plan.steps`` batches, with the step, padding and row-count rules of :class:`ShardReader`.

    Iterating yields dicts of CPU tensors: ``user_idx`` int64 [B], ``items`` int64 [B, width] and
    ``labels`` float32 [B, width], each window right-aligned and left-padded with item -1.
    """

    def __init__(self, plan: ShardPlan, rank: int, seed: int, width: int, shuffle: bool = True, threads: int = 1):
        super().__init__(plan, rank, seed, USER_IDX, ITEMS, shuffle=shuffle, threads=threads)
        self.columns = (USER_IDX, ITEMS, LABELS)
        self.width = width

    def _csr(self, table: pa.Table) -> dict[str, torch.Tensor]:
        items = left_padded(table.column(self.indices).combine_chunks(), self.width, -1, np.int64)
        labels = left_padded(table.column(LABELS).combine_chunks(), self.width, 0.0, np.float32)
        return {self.key: torch.from_numpy(table.column(self.key).to_numpy().astype(np.int64)),
                "items": torch.from_numpy(items), "labels": torch.from_numpy(labels)}

    def empty_batch(self) -> dict[str, torch.Tensor]:
        return {self.key: torch.zeros(0, dtype=torch.int64), "items": torch.zeros(0, self.width, dtype=torch.int64),
                "labels": torch.zeros(0, self.width, dtype=torch.float32)}


def check_rows_read(plan: ShardPlan, rows_by_rank: list[int], what: str) -> None:
    """Fail when any rank read other than its shard's rows (call on every rank with the same
    all-gathered counts, so all ranks fail together instead of leaving one in a collective).

    Raises
    ------
    SparkrecError
        Names each rank, the rows it read and the rows the manifest says its shard holds.
    """
    wrong = [f"rank {r} read {got} of {want}" for r, (got, want) in enumerate(zip(rows_by_rank, plan.shard_rows))
             if got != want]
    if wrong:
        raise SparkrecError(f"{what}: rows read from {plan.path} do not match the manifest ({'; '.join(wrong)}); "
                            f"rows were lost or added while reading, so the epoch is not a full pass. "
                            f"Check that the prepared data was not modified; if it was not, this is a reader bug")
