"""The pinned stack works together: the environment the README's commands build."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pinned_versions_import_together():
    import petastorm
    import pyarrow
    import pyspark
    import torch

    assert pyspark.__version__ == "4.0.5"
    assert pyarrow.__version__ == "14.0.2"
    assert petastorm.__version__ == "0.13.1"
    assert torch.__version__.startswith("2.13.0")
    from petastorm import make_batch_reader  # noqa: F401  (fails with pyarrow >= 15)


@pytest.mark.distributed
def test_horovod_built_with_torch_and_gloo_allreduces():
    import horovod
    import horovod.torch as hvd

    assert horovod.__version__ == "0.28.1"
    assert hvd.gloo_built()

    def allreduce_sum():  # nested, so cloudpickle ships it by value to the worker processes
        import horovod.torch as hvd
        import torch

        hvd.init()
        total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum)
        return hvd.size(), float(total)

    results = horovod.run(allreduce_sum, np=2, hosts="localhost:2", use_gloo=True)
    assert results == [(2, 3.0), (2, 3.0)]


@pytest.mark.spark
def test_spark_submit_wrapper_runs_a_job_from_any_directory(tmp_path):
    """`spark-submit.sh` from another working directory: a tiny job succeeds (exit 0) and a bad
    config fails before Spark starts with exit 2 and a one-line reason naming the key."""
    raw = tmp_path / "raw"
    cmd = [str(ROOT / "spark-submit.sh"), "jobs/generate_data.py", "generate.num_rows=500",
           "generate.num_users=50", "generate.num_items=40", "generate.partitions=2", f"input.path={raw}"]
    env = {**os.environ, "SPARKREC_DRIVER_MEMORY": "1g"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((raw / "_truth.json").read_text())["rows"] == 500

    bad = subprocess.run(cmd + ["generate.num_rowz=1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # refused before any JVM started: nothing else on stderr
    assert "unknown key 'generate.num_rowz'" in lines[0] and "command-line" in lines[0]


@pytest.mark.spark
def test_a_job_failing_in_spark_ends_stderr_with_its_reason_through_spark_submit(tmp_path):
    """The README's exit-code contract through spark-submit.sh, for a job that fails after the JVM
    started: exit 1 and the job's one-line reason as the last stderr line (spark-submit merges
    the Python driver's stderr into its stdout)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "part-0.parquet").write_bytes(os.urandom(4096))
    cmd = [str(ROOT / "spark-submit.sh"), "jobs/prepare_data.py", f"lake={tmp_path}/lake", f"input.path={raw}"]
    env = {**os.environ, "SPARKREC_DRIVER_MEMORY": "1g"}
    failed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("prepare_data: failed: input.path"), last
    assert "part-0.parquet is not a valid Parquet file" in last, last
