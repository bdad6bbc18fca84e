"""The Petastorm feed: equal steps on uneven shards, every row exactly once per epoch, seeded
order, and row counts reconciled with the manifest (petastorm's lost-shard race included)."""
import queue
import time

import numpy as np
import petastorm.reader
import pytest
import torch
from petastorm import make_batch_reader
from petastorm.workers_pool.thread_pool import ThreadPool

from prepared_lakes import prepared_lake
from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.data.prepare import load_manifest
from sparkrec.errors import SparkrecError
from sparkrec.train.feed import ShardReader, check_rows_read, plan_shards

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def manifest(spark, tmp_path_factory):
    return load_manifest(prepared_lake(spark, tmp_path_factory, "explicit"))


def read_epoch(plan, rank, seed, **kw):
    torch.manual_seed(seed)  # the shuffle buffer draws from torch's global generator
    reader = ShardReader(plan, rank, seed=seed, **kw)
    batches = list(reader)
    return reader, batches


def test_uneven_shards_take_equal_steps_and_read_every_row_once(manifest):
    groups = manifest["splits"]["train"]["row_groups"]
    assert len(groups) == 3  # two workers: row groups {0, 2} against {1}
    plan = plan_shards(manifest, "train", world=2, batch_size=512)
    assert plan.shard_rows == (groups[0] + groups[2], groups[1])
    assert plan.steps == -(-max(plan.shard_rows) // 512)
    pairs = []
    for rank in (0, 1):
        reader, batches = read_epoch(plan, rank, seed=3, shuffle_buffer=2000)
        assert len(batches) == plan.steps  # the smaller shard takes smaller batches, not fewer steps
        assert reader.rows_read == plan.shard_rows[rank]
        sizes = [len(b[USER_IDX]) for b in batches]
        assert max(sizes) <= plan.batch_sizes[rank]
        assert [b[USER_IDX].dtype for b in batches[:1]] == [torch.int64] and batches[0][LABEL].dtype == torch.float32
        pairs += [(u, i) for b in batches for u, i in zip(b[USER_IDX].tolist(), b[ITEM_IDX].tolist())]
    assert len(pairs) == len(set(pairs)) == manifest["splits"]["train"]["rows"]
    assert sum(plan.step_rows(s) for s in range(plan.steps)) == plan.rows


def test_a_shard_smaller_than_its_steps_pads_with_empty_batches(manifest):
    plan = plan_shards(manifest, "validation", world=2, batch_size=1)  # 1 row per step on the larger shard
    reader, batches = read_epoch(plan, 1, seed=1)
    assert len(batches) == plan.steps and reader.rows_read == plan.shard_rows[1]
    assert sum(len(b[USER_IDX]) for b in batches) == plan.shard_rows[1]


def test_order_is_a_pure_function_of_the_seed(manifest):
    plan = plan_shards(manifest, "train", world=2, batch_size=700)

    def order(seed):
        _, batches = read_epoch(plan, 0, seed=seed, shuffle_buffer=3000)
        return torch.cat([b[USER_IDX] * 1000 + b[ITEM_IDX] for b in batches])

    first = order(5)
    assert torch.equal(first, order(5))
    other = order(6)
    assert not torch.equal(first, other) and torch.equal(first.sort().values, other.sort().values)


class _ReleaseOnFirstEmpty(queue.Queue):
    """A results queue whose first ``empty()`` (the reader's first end-of-data check) runs
    ``self._release`` before answering with what it saw."""

    def empty(self):
        was_empty = super().empty()
        release = self.__dict__.pop("_release", None)
        if release:
            release()
        return was_empty


class _HeldVentilation(ThreadPool):
    """petastorm's ThreadPool forced into the interleaving that loses a read: its ventilator starts
    only at the reader's first end-of-data check, and has handed out every row group before that
    check answers (see ``RaceFreeThreadPool``). Forced, so the test never waits for the race to
    show up by chance."""

    def start(self, worker_class, worker_args=None, ventilator=None):
        super().start(worker_class, worker_args)
        self._ventilator = ventilator

        def release():
            ventilator.start()
            deadline = time.monotonic() + 30
            while not ventilator.completed() and time.monotonic() < deadline:
                time.sleep(0.001)

        first = self._results_queues[0]
        first.__class__ = _ReleaseOnFirstEmpty
        first._release = release


def test_race_free_reader_never_loses_row_groups(manifest, monkeypatch):
    """petastorm 0.13.1's own thread pool can end a num_epochs=1 read early without an error; the
    readers here must lose nothing, and a loss must fail the row check."""
    plan = plan_shards(manifest, "validation", world=2, batch_size=10_000)
    for attempt in range(20):  # as the training loop reads, with several reader threads
        rank = attempt % 2
        reader = ShardReader(plan, rank, seed=attempt + 1, threads=4)
        assert sum(len(b[USER_IDX]) for b in reader) == plan.shard_rows[rank], f"reader {attempt} lost rows"

    monkeypatch.setattr(petastorm.reader, "ThreadPool", _HeldVentilation)
    # The unpatched pool, forced into the race: the read ends with row groups unread...
    with make_batch_reader(plan.path, num_epochs=1, cur_shard=0, shard_count=2, seed=1, workers_count=1) as raw:
        got = sum(len(batch.user_idx) for batch in raw)
    assert got < plan.shard_rows[0]
    # ...and the row check says so.
    with pytest.raises(SparkrecError, match=rf"rank 0 read {got} of {plan.shard_rows[0]}"):
        check_rows_read(plan, [got, plan.shard_rows[1]], "validation")
    # The readers here, forced into the same interleaving: every row.
    for rank in (0, 1):
        reader = ShardReader(plan, rank, seed=rank + 1, threads=1)
        assert sum(len(b[USER_IDX]) for b in reader) == plan.shard_rows[rank]


def test_row_check_names_each_rank_and_the_fix(manifest):
    plan = plan_shards(manifest, "train", world=2, batch_size=512)
    check_rows_read(plan, list(plan.shard_rows), "epoch 1")
    with pytest.raises(SparkrecError, match=r"epoch 3: .*rank 1 read 0 of \d+.*not a full pass"):
        check_rows_read(plan, [plan.shard_rows[0], 0], "epoch 3")


def test_more_workers_than_row_groups_is_refused(manifest):
    with pytest.raises(SparkrecError, match=r"3 row groups, fewer than the 4 training workers.*num_workers=4"):
        plan_shards(manifest, "train", world=4, batch_size=512)


def test_planned_step_rows_cover_each_rank_exactly(manifest):
    plan = plan_shards(manifest, "train", world=2, batch_size=300)
    for rank in (0, 1):
        per_step = [min(plan.batch_sizes[rank], max(0, plan.shard_rows[rank] - s * plan.batch_sizes[rank]))
                    for s in range(plan.steps)]
        assert sum(per_step) == plan.shard_rows[rank]
    assert np.all(np.diff([plan.step_rows(s) for s in range(plan.steps)]) <= 0)
