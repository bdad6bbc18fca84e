"""Dense, stable integer indices for user and item IDs, computed without collecting IDs.

Guarantee (what incremental retraining relies on): given the vocabulary of the published
version, every ID in it keeps its index, IDs seen for the first time get ``old_size ..
old_size + new - 1``, and the vocabulary stays dense ``0..n-1``. IDs absent from the new log stay
in the vocabulary (with ``count`` 0), so a model's embedding rows never change meaning. The same
set of new IDs always gets the same indices, whatever the partitioning or the cluster.

How it scales: each new ID is hashed into one of ``BUCKETS`` buckets. The driver collects only
the per-bucket counts (``BUCKETS`` numbers, never an ID) and turns them into offsets; executors
number IDs within their bucket by sort order. Index = start + bucket offset + rank in bucket.
Unlike ``StringIndexer`` (which builds the label array on the driver) or ``zipWithIndex`` on a
sampled range partitioning (whose boundaries change if a stage is recomputed), every step is a
pure function of the IDs, so a retried task recomputes exactly the same indices.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sparkrec.columns import COUNT, FIRST_SEEN, INDEX, ORIGINAL_ID
from sparkrec.hashing import hash_bucket

BUCKETS = 1024  # fixed, so indices do not depend on spark.sql.shuffle.partitions
_BUCKET = "_bucket"
_OFFSET = "_offset"


def assign_indices(ids: DataFrame, start: int = 0, id_col: str = ORIGINAL_ID) -> DataFrame:
    """Number the distinct IDs of ``ids`` densely from ``start``.

    Parameters
    ----------
    ids : DataFrame
        One row per ID (``id_col`` string, unique), any other columns.
    start : int
        First index to hand out.

    Returns
    -------
    DataFrame
        ``ids`` with ``index`` long added: ``start .. start + ids.count() - 1``, each once.

    Notes
    -----
    Runs one small job to count the rows per bucket; ``ids`` is evaluated twice, so pass a
    deterministic DataFrame (it is: IDs and their aggregates, never a sample).
    """
    spark = ids.sparkSession
    with_bucket = ids.withColumn(_BUCKET, hash_bucket(id_col, BUCKETS))
    sizes = dict(with_bucket.groupBy(_BUCKET).count().collect())  # <= BUCKETS numbers, no IDs
    offsets, total = [], start
    for bucket in range(BUCKETS):
        offsets.append((bucket, total))
        total += sizes.get(bucket, 0)
    offset_df = spark.createDataFrame(offsets, f"{_BUCKET} int, {_OFFSET} long")
    rank = F.row_number().over(Window.partitionBy(_BUCKET).orderBy(id_col))
    return (with_bucket.join(F.broadcast(offset_df), _BUCKET)
            .withColumn(INDEX, F.col(_OFFSET) + rank - 1)
            .drop(_BUCKET, _OFFSET))


def id_stats(kept: DataFrame, key: str, time_col: str) -> DataFrame:
    """Interactions and earliest time per ID.

    Returns
    -------
    DataFrame
        ``original_id`` string, ``count`` long, ``first_seen`` long (null without timestamps).
    """
    return (kept.groupBy(key)
            .agg(F.count(F.lit(1)).alias(COUNT), F.min(time_col).alias(FIRST_SEEN))
            .withColumnRenamed(key, ORIGINAL_ID))


def read_vocab(spark: SparkSession, path: str, id_col: str, idx_col: str) -> DataFrame:
    """A written vocabulary (``original_id``, ``index``) as ``id_col`` string, ``idx_col`` long:
    the join key from original IDs to dense indices and back."""
    return spark.read.parquet(path).select(F.col(ORIGINAL_ID).alias(id_col), F.col(INDEX).alias(idx_col))


def build_vocab(stats: DataFrame, previous: DataFrame | None = None, previous_size: int = 0) -> DataFrame:
    """The vocabulary of this version: previous entries keep their index, new IDs follow.

    Parameters
    ----------
    stats : DataFrame
        ``id_stats`` of the kept rows.
    previous : DataFrame, optional
        The published vocabulary (``original_id``, ``index``, ``count``, ``first_seen``), dense
        ``0..previous_size-1``; None indexes from scratch.

    Returns
    -------
    DataFrame
        ``original_id`` string, ``index`` long (dense ``0..n-1``), ``count`` long (kept
        interactions in this version, 0 for a previous ID absent now), ``first_seen`` long
        (earliest time over this and previous versions).
    """
    columns = [ORIGINAL_ID, INDEX, COUNT, FIRST_SEEN]
    if previous is None:
        return assign_indices(stats, 0).select(*columns)
    new = stats.join(previous.select(ORIGINAL_ID), ORIGINAL_ID, "left_anti")
    old = (previous.alias("p").join(stats.alias("s"), ORIGINAL_ID, "left")
           .select(ORIGINAL_ID, F.col(f"p.{INDEX}"),
                   F.coalesce(F.col(f"s.{COUNT}"), F.lit(0).cast("long")).alias(COUNT),
                   # least() skips nulls: an ID first seen without a time keeps the other one
                   F.least(F.col(f"p.{FIRST_SEEN}"), F.col(f"s.{FIRST_SEEN}")).alias(FIRST_SEEN)))
    return old.unionByName(assign_indices(new, previous_size).select(*columns))
