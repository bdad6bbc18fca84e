"""Shared fixtures: one real local SparkSession for the whole run, a fresh lake per test."""
import os
import sys

import pytest

from prepared_lakes import prepared_lake
from sparkrec.config import load_config
from sparkrec.session import get_spark

# Spark's Python workers must run this interpreter (the project's venv), not python3 from PATH.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

SEED = 7


def pytest_collection_modifyitems(items):
    """Every test that gets a SparkSession, directly or through a fixture, carries the `spark`
    marker (`-m "not spark"` then really runs without a JVM); tests that start Spark another way
    (spark-submit.sh, a job in a subprocess) mark themselves."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    cfg = load_config(None, [
        "spark.master=local[2]",
        "spark.shuffle_partitions=2",
        "spark.log_level=ERROR",
        f"spark.conf={{spark.local.dir: {tmp_path_factory.mktemp('spark-local')}}}",
    ])
    session = get_spark(cfg.spark)
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path):
    """A fresh lake folder for one test."""
    return str(tmp_path / "lake")


@pytest.fixture(scope="session")
def implicit_lake(spark, tmp_path_factory):
    """The shared implicit prepared lake (see prepared_lakes.py)."""
    return prepared_lake(spark, tmp_path_factory, "implicit")


@pytest.fixture(scope="session")
def explicit_lake(spark, tmp_path_factory):
    """The shared explicit prepared lake (see prepared_lakes.py)."""
    return prepared_lake(spark, tmp_path_factory, "explicit")
