"""Settings that cannot work on the cluster at hand are refused on the driver before any work:
exit code 2 and one line naming the setting and the fix (sparkrec.preflight). The same refusals
against a real standalone master run in tests/test_cluster.py."""
import pytest

from jobs.prepare_data import main as prepare_main
from jobs.train_ncf import main as train_main
from sparkrec.preflight import (
    SettingRefused, check_dynamic_allocation, check_gpu_resources, check_horovod_gpu, check_lake_location,
    wait_for_task_slots,
)

CLUSTER = "spark://127.0.0.1:7077"  # never contacted: the refusal comes first


def only_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def refused_training(capsys, lake, *overrides) -> str:
    """The one stderr line of a train job refused with exit code 2."""
    assert train_main([f"lake={lake}", "name=refused", *overrides]) == 2
    return only_line(capsys)


def test_a_relative_or_local_lake_with_a_cluster_master(capsys, tmp_path):
    assert prepare_main(["lake=lake", f"spark.master={CLUSTER}"]) == 2
    assert only_line(capsys) == (
        f"prepare_data: failed: lake=lake is a path relative to the driver's working directory, but "
        f"spark.master={CLUSTER} runs executors on other hosts; use a URI every node reaches (hdfs://, s3a://, gs://)")
    assert prepare_main([f"lake=file://{tmp_path}/lake", f"spark.master={CLUSTER}"]) == 2
    assert only_line(capsys) == (
        f"prepare_data: failed: lake=file://{tmp_path}/lake is on the driver's local disk, but spark.master={CLUSTER} "
        f"runs executors on other hosts; use a URI every node reaches (hdfs://, s3a://, gs://), or set "
        f"lake_shared=true if that path is a shared mount (NFS, Lustre) at the same place on every node")
    # what passes: object stores and HDFS anywhere, a declared shared mount, anything in local mode
    for lake, shared in (("s3a://b/lake", False), ("hdfs:///lake", False), (f"{tmp_path}/lake", True)):
        check_lake_location(lake, CLUSTER, shared)
    check_lake_location("lake", "local[2]")


def test_barrier_training_under_dynamic_allocation():
    on = {"spark.dynamicAllocation.enabled": "true"}
    with pytest.raises(SettingRefused) as refused:
        check_dynamic_allocation(on, "torch", "yarn")
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        "train.backend=torch runs a barrier stage, which Spark refuses while spark.dynamicAllocation.enabled=true "
        "(the default on EMR and Dataproc); submit with --conf spark.dynamicAllocation.enabled=false, or use "
        "train.backend=horovod")
    check_dynamic_allocation(on, "horovod", "yarn")  # not a barrier stage
    check_dynamic_allocation({}, "torch", "yarn")
    check_dynamic_allocation(on, "torch", "local[2]")  # local mode has no dynamic allocation


def test_gpu_settings_without_gpu_resources(spark, explicit_lake, capsys):
    assert refused_training(capsys, explicit_lake, "train.backend=torch", "train.num_workers=2",
                            "train.device=cuda") == (
        "train_ncf: failed: train.device=cuda, but spark.task.resource.gpu.amount is not set, so Spark assigns no "
        "GPU to the training tasks; submit with --conf spark.task.resource.gpu.amount=1 --conf "
        "spark.executor.resource.gpu.amount=<GPUs per executor> (plus the cluster's GPU discovery script), or set "
        "train.device=cpu")
    assert refused_training(capsys, explicit_lake, "train.device=cuda") == (  # the local backend
        "train_ncf: failed: train.device=cuda with train.backend=local trains in the driver, which sees no CUDA "
        "device; run the driver on a GPU host or set train.device=cpu")
    gpu_executors = {"spark.executor.resource.gpu.amount": "4"}
    with pytest.raises(SettingRefused, match=r"spark.executor.resource.gpu.amount=4 gives executors GPUs, but "
                                             r"spark.task.resource.gpu.amount is not set"):
        check_gpu_resources(gpu_executors, "horovod", "auto", cuda_on_driver=False)
    check_gpu_resources({**gpu_executors, "spark.task.resource.gpu.amount": "1"}, "torch", "cuda", False)
    check_gpu_resources(gpu_executors, "torch", "cpu", False)


def test_fewer_task_slots_than_workers_after_waiting(spark, explicit_lake, capsys):
    assert refused_training(capsys, explicit_lake, "train.backend=torch", "train.num_workers=3",
                            "train.executor_wait_s=1") == (
        "train_ncf: failed: train.num_workers=3 needs as many concurrent task slots, the cluster has 2 after waiting "
        "train.executor_wait_s=1 s for executors to register (spark.master=local[2]); lower train.num_workers, give "
        "Spark more executors or cores, or raise train.executor_wait_s")


def test_the_slot_wait_returns_as_soon_as_executors_register():
    registered = iter([0, 0, 1, 2])
    assert wait_for_task_slots(lambda: next(registered), 2, wait_s=30, master="yarn", poll_s=0.01) == 2


def test_horovod_on_gpus_needs_a_gpu_build_of_horovod():
    with pytest.raises(SettingRefused) as refused:  # the wheel built here is CPU-only
        check_horovod_gpu("horovod", "cuda", gpu_executors=False)
    assert str(refused.value) == (
        "train.backend=horovod with train.device=cuda needs Horovod built with GPU support, and this one is "
        "CPU-only; rebuild it with HOROVOD_GPU_OPERATIONS=NCCL bash scripts/build_horovod.sh on a CUDA machine, "
        "or use train.backend=torch")
    with pytest.raises(SettingRefused, match="train.device=auto needs Horovod built with GPU support"):
        check_horovod_gpu("horovod", "auto", gpu_executors=True)
    check_horovod_gpu("horovod", "auto", gpu_executors=False)
    check_horovod_gpu("torch", "cuda", gpu_executors=True)


@pytest.mark.spark
@pytest.mark.timeout(300)
def test_spark_submit_reads_the_master_from_the_jvm_and_refuses_before_connecting(tmp_path):
    """Under spark-submit the master comes from its JVM (no session exists yet): the relative
    lake is refused without contacting the (here nonexistent) master."""
    import os
    import subprocess
    from pathlib import Path

    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"never unpacked: no executor starts")
    env = {**os.environ, "SPARKREC_ENV_ARCHIVE": str(archive), "SPARKREC_DRIVER_MEMORY": "1g"}
    script = Path(__file__).resolve().parents[1] / "spark-submit.sh"
    done = subprocess.run([str(script), "--master", "spark://127.0.0.1:1", "jobs/prepare_data.py", "lake=lake"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 2, done.stderr[-2000:]
    # client mode: spark-submit passes the Python driver's stderr to its stdout
    assert ("prepare_data: failed: lake=lake is a path relative to the driver's working directory, but "
            "spark.master=spark://127.0.0.1:1 runs executors on other hosts") in done.stdout + done.stderr
