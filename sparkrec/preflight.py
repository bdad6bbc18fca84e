"""Refusals of settings that cannot work on the cluster at hand, made on the driver before any work.

Each check raises :class:`SettingRefused` (exit code 2) with one line that names the setting, the
value seen and the fix. They exist because the failures they prevent come late and read badly: a
relative lake silently lands on the driver's disk, Spark refuses a barrier stage under dynamic
allocation only once training starts, a GPU-less task trains on CPU without a word, and a slot
count read before executors registered is meaningless.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

from sparkrec.errors import SparkrecError

GPU_TASK = "spark.task.resource.gpu.amount"
GPU_EXECUTOR = "spark.executor.resource.gpu.amount"
DYNAMIC_ALLOCATION = "spark.dynamicAllocation.enabled"


class SettingRefused(SparkrecError):
    """A setting that cannot work here; nothing was started (exit code 2, like an invalid config)."""

    exit_code = 2


def is_local_master(master: str) -> bool:
    """Whether ``master`` runs every executor in the driver's JVM (local, local[N], local[*])."""
    return master == "local" or master.startswith("local[")


def check_lake_location(lake: str, master: str, lake_shared: bool = False) -> None:
    """Refuse a lake that only the driver's disk holds when executors run elsewhere.

    Raises
    ------
    SettingRefused
        ``lake`` is relative, or a ``file://`` URI without ``lake_shared``, and ``master`` is not local.
    """
    if is_local_master(master):
        return
    fix = "use a URI every node reaches (hdfs://, s3a://, gs://)"
    if "://" not in lake and not lake.startswith("/"):
        raise SettingRefused(f"lake={lake} is a path relative to the driver's working directory, but "
                             f"spark.master={master} runs executors on other hosts; {fix}")
    if (lake.startswith("file:") or "://" not in lake) and not lake_shared:
        raise SettingRefused(f"lake={lake} is on the driver's local disk, but spark.master={master} runs executors "
                             f"on other hosts; {fix}, or set lake_shared=true if that path is a shared mount "
                             f"(NFS, Lustre) at the same place on every node")


def check_dynamic_allocation(conf: Mapping[str, str], backend: str, master: str) -> None:
    """Refuse barrier training (``train.backend=torch``) while dynamic allocation is on: Spark
    refuses barrier stages then (the default on EMR and Dataproc), but only once training starts.

    Horovod's stage is not a barrier stage; it runs under dynamic allocation.
    """
    if backend != "torch" or is_local_master(master):
        return
    if str(conf.get(DYNAMIC_ALLOCATION, "false")).lower() == "true":
        raise SettingRefused(f"train.backend=torch runs a barrier stage, which Spark refuses while "
                             f"{DYNAMIC_ALLOCATION}=true (the default on EMR and Dataproc); submit with "
                             f"--conf {DYNAMIC_ALLOCATION}=false, or use train.backend=horovod")


def check_gpu_resources(conf: Mapping[str, str], backend: str, device: str, cuda_on_driver: bool) -> None:
    """Refuse GPU training that Spark would not give GPUs to (it would train on CPU, or fail late).

    - ``train.device=cuda`` with horovod/torch needs ``spark.task.resource.gpu.amount``, so each
      training task is assigned a GPU (TorchDistributor sets CUDA_VISIBLE_DEVICES from it);
    - executors with GPUs (``spark.executor.resource.gpu.amount``) but no per-task amount would
      leave the GPUs unassigned, so ``auto`` would put every task on GPU 0 or none;
    - ``train.device=cuda`` with ``train.backend=local`` trains in the driver, which must see a GPU.
    """
    fix_conf = (f"submit with --conf {GPU_TASK}=1 --conf {GPU_EXECUTOR}=<GPUs per executor> (plus the cluster's "
                f"GPU discovery script), or set train.device=cpu")
    if backend == "local":
        if device == "cuda" and not cuda_on_driver:
            raise SettingRefused("train.device=cuda with train.backend=local trains in the driver, which sees no "
                                 "CUDA device; run the driver on a GPU host or set train.device=cpu")
        return
    task_gpus = conf.get(GPU_TASK)
    if device == "cuda" and not task_gpus:
        raise SettingRefused(f"train.device=cuda, but {GPU_TASK} is not set, so Spark assigns no GPU to the "
                             f"training tasks; {fix_conf}")
    if device != "cpu" and conf.get(GPU_EXECUTOR) and not task_gpus:
        raise SettingRefused(f"{GPU_EXECUTOR}={conf.get(GPU_EXECUTOR)} gives executors GPUs, but {GPU_TASK} is not "
                             f"set, so no training task is assigned one (train.device={device}); submit with "
                             f"--conf {GPU_TASK}=1, or set train.device=cpu")


def check_horovod_gpu(backend: str, device: str, gpu_executors: bool) -> None:
    """Refuse Horovod on GPUs with a Horovod built without GPU support (the wheel
    ``scripts/build_horovod.sh`` builds by default is CPU-only; the driver runs the same
    environment as the executors, so its build is theirs)."""
    if backend != "horovod" or device == "cpu" or (device == "auto" and not gpu_executors):
        return
    import horovod.torch as hvd

    if not (hvd.nccl_built() or hvd.cuda_built()):
        raise SettingRefused(f"train.backend=horovod with train.device={device} needs Horovod built with GPU "
                             f"support, and this one is CPU-only; rebuild it with HOROVOD_GPU_OPERATIONS=NCCL bash "
                             f"scripts/build_horovod.sh on a CUDA machine, or use train.backend=torch")


def wait_for_task_slots(slots: Callable[[], int], needed: int, wait_s: float, master: str,
                        poll_s: float = 1.0) -> int:
    """Wait up to ``wait_s`` seconds until ``slots()`` reaches ``needed``; returns the slots seen.

    Executors of a cluster register after the application starts, so a count read at once says
    little.

    Raises
    ------
    SettingRefused
        Still fewer slots than ``needed`` once ``wait_s`` has passed.
    """
    deadline = time.monotonic() + wait_s
    seen = slots()
    while seen < needed and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        seen = slots()
    if seen < needed:
        raise SettingRefused(f"train.num_workers={needed} needs as many concurrent task slots, the cluster has "
                             f"{seen} after waiting train.executor_wait_s={wait_s:g} s for executors to register "
                             f"(spark.master={master}); lower train.num_workers, give Spark more executors or "
                             f"cores, or raise train.executor_wait_s")
    return seen


def concurrent_task_slots(spark) -> int:
    """Tasks the registered executors can run at once under the default resource profile (cores,
    ``spark.task.cpus`` and GPUs per task counted), as Spark's own barrier-stage check counts them."""
    sc = spark.sparkContext._jsc.sc()
    return int(sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile()))


def check_training_cluster(spark, train) -> None:
    """The cluster refusals for ``train.*`` (``train`` is a ``TrainConfig``), in the order a user
    would fix them: GPUs, dynamic allocation, then task slots (waiting for executors)."""
    import torch

    conf = dict(spark.sparkContext.getConf().getAll()) if spark is not None else {}
    master = spark.sparkContext.master if spark is not None else "local"
    check_gpu_resources(conf, train.backend, train.device, torch.cuda.is_available())
    check_horovod_gpu(train.backend, train.device, bool(conf.get(GPU_EXECUTOR)))
    if train.backend == "local" or spark is None:
        return
    check_dynamic_allocation(conf, train.backend, master)
    if str(conf.get(DYNAMIC_ALLOCATION, "false")).lower() == "true":
        return  # horovod under dynamic allocation: executors are requested once its tasks are pending
    wait_for_task_slots(lambda: concurrent_task_slots(spark), train.num_workers, train.executor_wait_s, master)
