"""The options spark-submit.sh adds per cluster manager and deploy mode (sparkrec.submit): the
environment archive shipped whenever the master is not local, ./env/bin/python on executors, and no
path of the submitting host in cluster mode."""
import os
import subprocess
from pathlib import Path

import pytest

from sparkrec.submit import SubmitRefused, plan_submit

ROOT = Path(__file__).resolve().parents[1]
EXEC_PY = "spark.pyspark.python=./env/bin/python"


@pytest.fixture
def checkout(tmp_path):
    """A checkout with a venv stamp and an archive built from it."""
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".sparkrec-setup").write_text("abc\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "env.tar.gz").write_bytes(b"archive")
    (tmp_path / "build" / "env.tar.gz.inputs").write_text("abc\n")
    return tmp_path


def confs(options):
    return [options[i + 1] for i, o in enumerate(options) if o == "--conf"]


def test_local_master_runs_everything_from_the_venv(checkout):
    plan = plan_submit(["--master", "local[2]"], {}, str(checkout))
    assert plan.options == ["--master", "local[2]"]
    assert plan.export == {"PYSPARK_PYTHON": f"{checkout}/.venv/bin/python",
                           "PYSPARK_DRIVER_PYTHON": f"{checkout}/.venv/bin/python"}


@pytest.mark.parametrize("master", ["yarn", "k8s://https://api:6443", "spark://10.0.0.1:7077"])
def test_client_mode_ships_the_archive_and_keeps_the_driver_on_this_hosts_venv(checkout, master):
    plan = plan_submit(["--master", master, "--deploy-mode", "client"], {}, str(checkout))
    archive = plan.options[plan.options.index("--archives") + 1]
    assert archive == f"{checkout}/build/env.tar.gz#env"
    assert confs(plan.options) == [EXEC_PY, f"spark.pyspark.driver.python={checkout}/.venv/bin/python"]
    assert plan.export == {"PYSPARK_PYTHON": "./env/bin/python",
                           "PYSPARK_DRIVER_PYTHON": f"{checkout}/.venv/bin/python"}
    assert plan.unset == []


@pytest.mark.parametrize("master, extra", [
    ("yarn", []),
    ("k8s://https://api:6443", ["--conf", "spark.kubernetes.file.upload.path=s3a://b/up"]),
])
def test_cluster_mode_names_no_path_of_the_submitting_host(checkout, master, extra):
    env = {"PYSPARK_PYTHON": "/home/me/.venv/bin/python", "PYSPARK_DRIVER_PYTHON": "/home/me/.venv/bin/python"}
    plan = plan_submit(["--master", master, "--deploy-mode", "cluster", *extra], env, str(checkout))
    assert EXEC_PY in confs(plan.options)
    assert not any("driver.python" in c for c in confs(plan.options))
    assert plan.export == {} and sorted(plan.unset) == ["PYSPARK_DRIVER_PYTHON", "PYSPARK_PYTHON"]
    # the only local path is the archive, which spark-submit uploads (YARN staging dir, k8s upload path)
    assert f"{checkout}/build/env.tar.gz#env" in plan.options
    shell = plan.shell()
    assert "/home/me" not in shell and ".venv" not in shell


def test_a_named_archive_is_merged_into_the_callers_archives(checkout):
    env = {"SPARKREC_ENV_ARCHIVE": "hdfs:///envs/sparkrec.tar.gz"}
    plan = plan_submit(["--master", "yarn", "--archives", "data.zip#data"], env, str(checkout))
    assert plan.options[:4] == ["--master", "yarn", "--archives", "data.zip#data,hdfs:///envs/sparkrec.tar.gz#env"]
    # a caller shipping their own ./env keeps it
    own = plan_submit(["--master", "yarn", "--archives", "mine.tar.gz#env"], env, str(checkout))
    assert own.options[:4] == ["--master", "yarn", "--archives", "mine.tar.gz#env"] and EXEC_PY in confs(own.options)
    # an environment baked into the image: no archive at all, the caller's Python everywhere
    baked = plan_submit(["--master", "k8s://https://api", "--conf", "spark.pyspark.python=/opt/env/bin/python"],
                        {}, str(checkout))
    assert "--archives" not in baked.options and baked.export["PYSPARK_PYTHON"] == "/opt/env/bin/python"


def test_refusals_name_the_fix(checkout):
    (checkout / "build" / "env.tar.gz.inputs").write_text("older\n")
    with pytest.raises(SubmitRefused, match=r"older environment .* run 'make package-env'"):
        plan_submit(["--master", "yarn"], {}, str(checkout))
    (checkout / "build" / "env.tar.gz").unlink()
    with pytest.raises(SubmitRefused, match=r"env.tar.gz, and it does not exist; run 'make package-env'"):
        plan_submit(["--master", "yarn"], {}, str(checkout))
    with pytest.raises(SubmitRefused, match="spark.kubernetes.file.upload.path"):
        plan_submit(["--master", "k8s://https://api", "--deploy-mode", "cluster"], {}, str(checkout))
    with pytest.raises(SubmitRefused, match="use --deploy-mode client"):
        plan_submit(["--master=spark://h:7077", "--deploy-mode=cluster"], {}, str(checkout))


def test_spark_submit_sh_refuses_a_cluster_master_without_an_archive(tmp_path):
    """The script itself: exit 2 and the one-line reason before any JVM starts."""
    env = {**os.environ, "SPARKREC_ENV_ARCHIVE": str(tmp_path / "missing.tar.gz")}
    done = subprocess.run([str(ROOT / "spark-submit.sh"), "--master", "yarn", "jobs/train_ncf.py"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"spark-submit.sh: --master yarn runs executors on hosts without this checkout, which need the environment "
        f"archive {tmp_path}/missing.tar.gz, and it does not exist; run 'make package-env'"]
