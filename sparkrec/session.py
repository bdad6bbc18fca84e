"""Build the SparkSession every job uses, and set its confs for a block."""
from __future__ import annotations

import os
from contextlib import contextmanager

from pyspark.sql import SparkSession

from sparkrec.config.spark import SparkConfig


def launched_by_spark_submit() -> bool:
    """True when spark-submit started this driver (it then owns master, deploy mode, memory)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(cfg: SparkConfig) -> SparkSession:
    """Return a session sized for the config; master and driver memory are left to spark-submit
    when it launched us, so the usual `--master yarn --deploy-mode cluster` options work."""
    builder = SparkSession.builder.appName(cfg.app_name)
    if not launched_by_spark_submit():
        builder = builder.master(cfg.master).config("spark.driver.memory", cfg.driver_memory)
    settings = {
        "spark.sql.shuffle.partitions": cfg.shuffle_partitions,
        "spark.sql.execution.arrow.pyspark.enabled": True,
        "spark.ui.enabled": cfg.ui,
        "spark.sql.session.timeZone": "UTC",
        **cfg.conf,
    }
    for key, value in settings.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


@contextmanager
def session_confs(spark: SparkSession, confs: dict[str, str]):
    """Set session confs for a block, then restore each to its value (or unset) before it."""
    before = {key: spark.conf.get(key, None) for key in confs}
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
