"""The whole pipeline on a real Spark standalone cluster: a master and two 1-core workers on
127.0.0.1 (scripts/local_cluster.sh), whose processes cannot see this checkout or its .venv.

prepare -> train (horovod, then torch; 2 workers each) -> evaluate -> score, every job through
``./spark-submit.sh --master spark://127.0.0.1:<port>``, which ships the environment archive
(build/env.tar.gz, built here by ``make package-env``'s script) and the sparkrec zip. Executors can
only run from those. The cluster is stopped at the end, on failure too.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from processes import free_port
from sparkrec import lake as lakes
from sparkrec.models.store import load_model

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.distributed]
ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DIR = os.environ.get("SPARKREC_CLUSTER_DIR", "/tmp/sparkrec-test-cluster")  # .ci/run stops it too


@pytest.fixture(scope="module")
def cluster():
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode:
        pytest.skip("unshare --mount needs root (or user namespaces): the workers cannot hide the checkout")
    packed = subprocess.run(["bash", str(ROOT / "scripts/package_env.sh")], capture_output=True, text=True, timeout=900)
    assert packed.returncode == 0, packed.stderr[-2000:]
    env = {**os.environ, "SPARKREC_CLUSTER_DIR": CLUSTER_DIR, "SPARKREC_CLUSTER_PORT": str(free_port())}
    script = str(ROOT / "scripts/local_cluster.sh")
    try:
        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stderr[-3000:]
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)


def worker_pids() -> list[int]:
    return [int(p.read_text()) for p in sorted(Path(CLUSTER_DIR).glob("worker-*.pid"))]


def submit(master, cwd, job, *overrides, options=(), timeout=600):
    cmd = [str(ROOT / "spark-submit.sh")]
    if master:
        cmd += ["--master", master, "--conf", "spark.executor.memory=1g", *options]
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update(SPARKREC_DRIVER_MEMORY="1g", SPARK_LOCAL_IP="127.0.0.1")  # the driver on loopback too
    started = time.monotonic()
    done = subprocess.run(cmd + [job, *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{job} {' '.join(overrides[-2:])}: exit {done.returncode} in {time.monotonic() - started:.0f} s")
    return done


def reason(done, prog):
    """The job's one-line failure reason (client mode: spark-submit passes the Python driver's
    stderr to its stdout)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(f"{prog}: failed: ")]
    assert lines, done.stderr[-3000:]
    return lines[-1]


def ok(done):
    if done.returncode:  # shown with the failure (pytest would cut a long assertion message)
        print(f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-8000:]}")
    assert done.returncode == 0
    return done


@pytest.mark.timeout(1800)
def test_pipeline_on_a_standalone_cluster_whose_workers_lack_the_checkout(cluster, tmp_path):
    # The workers really lack the checkout and the venv: their mount namespace shows empty folders.
    pids = worker_pids()
    assert len(pids) == 2
    for pid in pids:
        seen = subprocess.run(["nsenter", f"--target={pid}", "--mount", "sh", "-c",
                               f"ls -A {ROOT}; test -e {ROOT}/.venv/bin/python && echo venv visible"],
                              capture_output=True, text=True)
        assert seen.returncode != 0 and seen.stdout == "", seen.stdout  # nothing listed, no venv

    lake = str(tmp_path / "lake")  # /tmp: a folder every worker sees, like a shared mount
    common = [f"lake={lake}", "lake_shared=true", f"input.path={tmp_path}/raw", "train.num_workers=2",
              "spark.shuffle_partitions=4", "train.threads_per_worker=1", "train.log_every_steps=100000"]
    ok(submit(None, tmp_path, "jobs/generate_data.py", *common, "generate.num_rows=8000", "generate.num_users=300",
              "generate.num_items=150", "generate.partitions=2"))

    ok(submit(cluster, tmp_path, "jobs/prepare_data.py", *common, "prepare.split.kind=leave_last_out"))
    # Executors unpacked the shipped environment and ran from it (the workers' own dirs).
    unpacked = list(Path(CLUSTER_DIR).glob("worker-*/work/app-*/*/env/bin/python"))
    assert len({p.relative_to(CLUSTER_DIR).parts[0] for p in unpacked}) == 2, unpacked  # both workers

    train = ["train.epochs=2", "train.batch_size=256", "train.model=neumf", "train.executor_wait_s=60"]
    for backend in ("horovod", "torch"):
        done = ok(submit(cluster, tmp_path, "jobs/train_ncf.py", *common, *train, f"name={backend}",
                         f"train.backend={backend}"))
        start = done.stdout.rfind("\n{\n") + 1  # the job's summary comes last, as indented JSON
        summary = json.loads(done.stdout[start:done.stdout.rindex("}") + 1])
        assert summary["last_epoch"]["epoch"] == 2
        _, meta = load_model(lake, backend)
        manifest = lakes.resolve(lakes.join(lakes.normalize_uri(lake), "prepared"))
        for epoch in meta["history"]:
            assert len(epoch["rows_by_rank"]) == 2  # two training processes, on the two workers
            assert sum(epoch["rows_by_rank"]) == manifest["splits"]["train"]["rows"]

    # the model against one baseline: the protocols run on the executors all the same, in less time
    ok(submit(cluster, tmp_path, "jobs/evaluate.py", *common, "name=torch", "evaluate.baselines=[popularity]",
              "evaluate.k=[10]"))
    metrics = lakes.read_json(lakes.join(lakes.normalize_uri(lake), "reports", "torch", "metrics.json"))
    assert metrics["version"]
    ok(submit(cluster, tmp_path, "jobs/score.py", *common, "name=torch", "score.buckets=2"))
    scores = lakes.resolve(lakes.join(lakes.normalize_uri(lake), "scores", "torch"), pointer="_manifest.json")
    assert scores["version"]

    # Refusals on the cluster, before any work, exit 2 with one line naming the setting and the fix.
    slots = submit(cluster, tmp_path, "jobs/train_ncf.py", *common, *train, "name=three", "train.backend=torch",
                   "train.num_workers=3", "train.executor_wait_s=5")
    assert slots.returncode == 2, slots.stderr[-3000:]
    assert reason(slots, "train_ncf") == (
        "train_ncf: failed: train.num_workers=3 needs as many concurrent task slots, the cluster has 2 after waiting "
        f"train.executor_wait_s=5 s for executors to register (spark.master={cluster}); lower train.num_workers, "
        "give Spark more executors or cores, or raise train.executor_wait_s")
    dynamic = submit(cluster, tmp_path, "jobs/train_ncf.py", *common, *train, "name=dyn", "train.backend=torch",
                     options=["--conf", "spark.dynamicAllocation.enabled=true"])
    assert dynamic.returncode == 2, dynamic.stderr[-3000:]
    assert reason(dynamic, "train_ncf") == (
        "train_ncf: failed: train.backend=torch runs a barrier stage, which Spark refuses while "
        "spark.dynamicAllocation.enabled=true (the default on EMR and Dataproc); submit with --conf "
        "spark.dynamicAllocation.enabled=false, or use train.backend=horovod")
    relative = submit(cluster, tmp_path, "jobs/prepare_data.py", *common, "lake=lake")
    assert relative.returncode == 2
    assert reason(relative, "prepare_data") == (
        f"prepare_data: failed: lake=lake is a path relative to the driver's working directory, but "
        f"spark.master={cluster} runs executors on other hosts; use a URI every node reaches (hdfs://, s3a://, gs://)")
