"""Write a score table so readers only ever see a complete one.

Each run writes a fresh version folder under ``<lake>/scores/<name>/``, checks its row count, and
only then switches the ``_manifest.json`` pointer (``sparkrec.lake.publishing``). A run that fails or
is killed before the switch leaves the previous table in place; a re-run replaces it whole.
Readers resolve the pointer (``read_published``), never list the folder.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.errors import SparkrecError
from sparkrec.hashing import hash_bucket

POINTER = "_manifest.json"


def scores_root(lake_uri: str, name: str) -> str:
    """``<lake>/scores/<name>``: the folder holding the versions and the pointer of one table."""
    return lake.join(lake_uri, "scores", name)


def user_bucket(user_col: str, buckets: int) -> Column:
    """Hash bucket of a user ID (as a string, so it does not depend on the ID's type): a reader
    computes the same expression to open only one user's folder."""
    return hash_bucket(F.col(user_col).cast("string"), buckets)


def publish_table(df: DataFrame, root: str, manifest: dict, expected_rows: int, *,
                  partition_by: str | None = None, sort_by: tuple[str, ...] = (), keep: int = 2) -> dict:
    """Write ``df`` as Parquet to a new version of ``root``, then point ``root/_manifest.json`` at it.

    Parameters
    ----------
    df : DataFrame
        The table; written as is (plus nothing).
    root : str
        Table root URI (``scores_root``).
    manifest : dict
        What the table is (model, data hash, K...); ``rows``, ``created_at`` and ``version`` are added.
    expected_rows : int
        Rows the table must have; a different count fails the run before the pointer moves.
    partition_by : str, optional
        Column to partition the folders by (one file per value), e.g. ``bucket``.
    sort_by : tuple of str
        Order within each file, so Parquet row-group statistics let readers skip to a user.
    keep : int
        Published versions kept on disk (older ones are removed after the switch).

    Returns
    -------
    dict
        The published manifest, including ``version`` (the folder URI), ``rows`` and ``created_at``.

    Raises
    ------
    SparkrecError
        The written row count differs from ``expected_rows``; the pointer still names the
        previous version.
    """
    if partition_by:
        df = df.repartition(partition_by)
    if sort_by:
        df = df.sortWithinPartitions(*sort_by)
    writer = df.write.mode("errorifexists").format("parquet")
    if partition_by:
        writer = writer.partitionBy(partition_by)
    with lake.publishing(root, pointer=POINTER, keep=keep) as staged:
        writer.save(staged.version)
        rows = df.sparkSession.read.parquet(staged.version).count()
        if rows != expected_rows:
            raise SparkrecError(f"wrote {rows} rows to {staged.version} but expected {expected_rows}; the previous "
                                f"table at {root} stays published")
        staged.manifest = {**manifest, "rows": rows,
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return {**staged.manifest, "version": staged.version}


def read_published(spark: SparkSession, root: str) -> DataFrame:
    """The table currently published at ``root`` (never a version still being written).

    Raises
    ------
    SparkrecError
        Nothing has been published there yet.
    """
    return spark.read.parquet(lake.resolve(root, POINTER)["version"])
