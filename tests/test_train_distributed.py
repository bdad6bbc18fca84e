"""Two real training processes on local[2]: Horovod (horovod.spark.run) and DDP (TorchDistributor).

The prepared data has 3 row groups, so 2 workers get uneven shards (2 row groups against 1): no
hang, identical weights on both ranks, every training row seen once per epoch. A worker killed
mid-epoch fails the run with its reason, or, with restarts allowed, the run resumes from the last
checkpoint and finishes.
"""
import re
import threading
import time

import numpy as np
import psutil
import pytest
import torch

from prepared_lakes import read_split
from sparkrec import lake as lakes
from sparkrec.config import load_config
from sparkrec.data.prepare import load_manifest
from sparkrec.errors import SparkrecError
from sparkrec.models.store import load_model
from sparkrec.train.checkpoint import checkpoint_dir, latest_checkpoint
from sparkrec.train.feed import plan_shards
from sparkrec.train.launch import WorkerCrash, run_training, worker_failure

pytestmark = [pytest.mark.spark, pytest.mark.distributed]
BATCH = 512


def two_workers(lake, name, backend, *overrides):
    return load_config(None, [f"lake={lake}", f"name={name}", f"train.backend={backend}", "train.num_workers=2",
                              "train.model=neumf", f"train.batch_size={BATCH}", "train.lr=0.01",
                              "train.threads_per_worker=1", "train.log_every_steps=100000", *overrides])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["horovod", "torch"])
def test_two_workers_on_uneven_shards_agree_and_see_every_row(spark, explicit_lake, backend):
    manifest = load_manifest(explicit_lake)
    plan = plan_shards(manifest, "train", world=2, batch_size=BATCH)
    assert plan.shard_rows[0] > 1.8 * plan.shard_rows[1]  # deliberately uneven

    summary = run_training(spark, two_workers(explicit_lake, f"two-{backend}", backend, "train.epochs=3"))

    digests = summary["weights_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    for epoch in summary["history"]:
        assert epoch["rows_by_rank"] == list(plan.shard_rows)
        assert sum(epoch["rows_by_rank"]) == manifest["splits"]["train"]["rows"]
    rmse = [epoch["val_rmse"] for epoch in summary["history"]]
    assert rmse[-1] < rmse[0]  # the synchronised updates learn

    model, meta = load_model(explicit_lake, f"two-{backend}")
    assert meta["config"]["train"]["backend"] == backend
    test = read_split(manifest, "test")
    with torch.no_grad():
        predicted = model.predict(torch.as_tensor(test["user_idx"].to_numpy()),
                                  torch.as_tensor(test["item_idx"].to_numpy())).numpy()
    assert np.sqrt(np.mean((predicted - test["label"]) ** 2)) < rmse[0]


def _is_rank_1(backend: str, env: dict, cmd: str) -> bool:
    if backend == "torch":  # the torchrun child with RANK=1 (not torchrun itself)
        return env.get("RANK") == "1" and "LOCAL_RANK" in env and "torch.distributed.run" not in cmd
    # horovod.spark.run: the process its task service starts to run the training function
    return env.get("HOROVOD_RANK") == "1" and "horovod.spark.task.gloo_exec_fn" in cmd


def kill_rank_1_after_first_checkpoint(lake, name, killed, backend="torch"):
    """Background killer: once epoch 1 is checkpointed (so training is in epoch 2), SIGKILL the
    training process of rank 1 once."""
    first = lakes.join(checkpoint_dir(lake, name), "epoch-0001.pt")

    def run():
        deadline = time.monotonic() + 240
        while not lakes.exists(first) and time.monotonic() < deadline:
            time.sleep(0.02)
        while time.monotonic() < deadline:
            for proc in psutil.Process().children(recursive=True):
                try:
                    env, cmd = proc.environ(), " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if _is_rank_1(backend, env, cmd):
                    proc.kill()
                    killed.append(proc.pid)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(400)
def test_a_killed_worker_fails_the_run_clearly_or_restarts_from_the_checkpoint(spark, explicit_lake):
    # Without restarts: the run fails, naming the killed process and the signal.
    killed: list[int] = []
    killer = kill_rank_1_after_first_checkpoint(explicit_lake, "killed", killed)
    with pytest.raises(SparkrecError, match=r"torch \(DDP\) training failed: worker process") as failed:
        run_training(spark, two_workers(explicit_lake, "killed", "torch", "train.epochs=4", "train.batch_size=64"))
    killer.join()
    assert len(killed) == 1
    # The killed rank is named first with its signal, whatever its peer died of afterwards (a
    # surviving gloo rank may exit on the broken connection, or even crash with SIGSEGV).
    assert re.search(rf"failed: worker process pid {killed[0]} was killed by signal 9 \(SIGKILL\)",
                     str(failed.value)), str(failed.value)

    # With one restart allowed: the workers are relaunched, resume after epoch 1 and finish.
    restart_after_killing_rank_1(spark, explicit_lake, "restarted", "torch")


def restart_after_killing_rank_1(spark, lake, name, backend):
    """Rank 1 is SIGKILLed in epoch 2 of 4; with one restart allowed the workers are relaunched,
    resume from the checkpoint of epoch 1 (or later) and finish with identical weights."""
    killed: list[int] = []
    killer = kill_rank_1_after_first_checkpoint(lake, name, killed, backend=backend)
    summary = run_training(spark, two_workers(lake, name, backend, "train.epochs=4", "train.batch_size=64",
                                              "train.max_restarts=1"))
    killer.join()
    assert len(killed) == 1
    assert summary["resumed_from"] >= 1
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]
    assert summary["weights_by_rank"][0] == summary["weights_by_rank"][1]


# Horovod's report when the survivor's exit was seen before the killed rank's (a CI run on
# 2026-12-07): only the shell's "Killed" on rank 1's stderr tells that rank 1 was SIGKILLed.
SURVIVOR_SEEN_FIRST = """[1]<stderr>:Killed
[0]<stderr>:[train] epoch 1/4 done in 1.5s (11,214 samples/s): {'train_loss': 0.9278}; best epoch 1 by rmse
[0]<stderr>:RuntimeError: Horovod has been shut down. This was caused by an exception on one of the ranks or an \
attempt to allreduce, allgather or broadcast a tensor after one of the ranks finished execution.
[0]<stderr>:horovod.common.exceptions.HorovodInternalError: Horovod has been shut down."""
HOROVOD_EXIT = RuntimeError("Horovod detected that one or more processes exited with non-zero status, thus causing the "
                            "job to be terminated. The first process to do so was:\nProcess name: 0\nExit code: 1\n")


def test_a_killed_rank_is_a_crash_even_when_horovod_names_the_survivor():
    error = worker_failure("horovod training failed", SURVIVOR_SEEN_FIRST, HOROVOD_EXIT)
    assert isinstance(error, WorkerCrash)   # relaunched under train.max_restarts
    assert str(error).startswith("horovod training failed: worker process 1 was killed by signal 9 (SIGKILL); "
                                 "worker process 0 exited with code 1")
    # The survivor's own error, with no rank killed, is not a crash: a relaunch would fail the same way.
    own_error = SURVIVOR_SEEN_FIRST.replace("[1]<stderr>:Killed", "[1]<stderr>:ValueError: bad batch")
    assert not isinstance(worker_failure("horovod training failed", own_error, HOROVOD_EXIT), WorkerCrash)


@pytest.mark.timeout(300)
def test_settings_are_refused_on_the_driver_before_any_worker_starts(spark, explicit_lake):
    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
    with pytest.raises(SparkrecError, match="warm_start is not supported for train.model=hybrid"):
        run_training(spark, two_workers(explicit_lake, "hybrid-warm", "torch", "train.model=hybrid",
                                        "train.warm_start=latest"))
    with pytest.raises(SparkrecError, match=r"mlp_layers\[0\] must be an even width.*train.mlp_layers"):
        run_training(spark, two_workers(explicit_lake, "odd-tower", "torch", "train.mlp_layers=[15,8]"))
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup()) == jobs_before  # no launch, no Spark job


@pytest.mark.timeout(300)
def test_an_error_the_workers_raise_is_not_retried(spark, explicit_lake, capsys):
    """Restarts are for crashes: a checkpoint of another run fails the same way on every attempt."""
    name = "foreign-checkpoint"
    lakes.write_bytes_atomic(lakes.join(checkpoint_dir(explicit_lake, name), "epoch-0001.pt"), b"not a checkpoint")
    with pytest.raises(SparkrecError, match=r"torch \(DDP\) training failed: checkpoint .*epoch-0001.pt cannot be read"):
        run_training(spark, two_workers(explicit_lake, name, "torch", "train.resume=true", "train.max_restarts=2"))
    assert "relaunching" not in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_fp16_loss_scaling_under_horovod(spark, explicit_lake):
    """train.amp=fp16 on Horovod: gradients are averaged before the GradScaler unscales them
    (distributed.optimizer_step), the ranks stay identical, the model learns, and the scaler's
    state is checkpointed for a resume."""
    summary = run_training(spark, two_workers(explicit_lake, "fp16-horovod", "horovod", "train.epochs=2",
                                              "train.amp=fp16"))
    assert summary["weights_by_rank"][0] == summary["weights_by_rank"][1]
    rmse = [epoch["val_rmse"] for epoch in summary["history"]]
    assert np.all(np.isfinite(rmse)) and rmse[-1] < rmse[0]
    latest = latest_checkpoint(checkpoint_dir(explicit_lake, "fp16-horovod"))
    scaler = torch.load(latest.removeprefix("file://"), weights_only=True)["scaler"]
    assert scaler is not None and np.isfinite(scaler["scale"]) and scaler["scale"] > 0


@pytest.mark.timeout(400)
def test_a_killed_horovod_worker_restarts_from_the_checkpoint(spark, explicit_lake):
    restart_after_killing_rank_1(spark, explicit_lake, "hvd-restarted", "horovod")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["horovod", "torch"])
def test_the_history_model_trains_on_two_workers(spark, implicit_lake, backend):
    """Windows of user histories, sharded over two workers: identical weights on both ranks, every
    window read once per epoch, and a validation metric that learns."""
    summary = run_training(spark, two_workers(implicit_lake, f"seq-{backend}", backend, "train.epochs=2",
                                              "train.model=sequence", "sequence.max_len=16", "train.factors=16",
                                              "train.batch_size=32", "train.lr=0.005", "train.loss=sampled_softmax",
                                              "train.num_negatives=64"))
    digests = summary["weights_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    version = load_model(implicit_lake, f"seq-{backend}")[1]["inputs"]  # the training inputs it read
    inputs = lakes.resolve(version.rsplit("/", 1)[0])
    for epoch in summary["history"]:
        assert sum(epoch["rows_by_rank"]) == inputs["windows"]["rows"]
    assert summary["history"][-1]["val_ndcg@10"] > 0.05
