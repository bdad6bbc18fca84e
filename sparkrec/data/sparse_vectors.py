"""Sparse rating vectors for the autoencoders, derived from the prepared train split.

- ``users``: one row per user with training interactions: ``user_idx`` long, ``item_idx``
  array<long> (ascending), ``value`` array<float> (the labels, aligned) — Mult-VAE's bags;
- ``items``: one row per item: ``item_idx`` long, ``user_idx`` array<long>, ``value``
  array<float> — I-AutoRec's item vectors.

They are a derived dataset of one prepared version: written as a new version folder under
``<lake>/vectors/<kind>/`` with the prepared data's layout rules (a multiple of the workers in
files, row groups listed in Petastorm's order) and published (``lake.publishing``) by switching
``<lake>/vectors/<kind>/manifest.json`` once their counts reconcile with the train split. A later
run on the same prepared data (same ``data_hash``) reuses them.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.data.parquet_layout import read_layout
from sparkrec.errors import SparkrecError

VALUE = "value"
KINDS = {"users": (USER_IDX, ITEM_IDX), "items": (ITEM_IDX, USER_IDX)}
"""kind -> (key column, column of the nonzero indices)."""


def sparse_vectors(train: DataFrame, key: str, indices: str) -> DataFrame:
    """Group interactions into one sparse vector per ``key``.

    Parameters
    ----------
    train : DataFrame
        Prepared split: ``user_idx`` long, ``item_idx`` long, ``label`` float.
    key, indices : str
        ``user_idx`` and ``item_idx`` (user vectors) or the reverse (item vectors).

    Returns
    -------
    DataFrame
        ``key`` long (each value once), ``indices`` array<long> (ascending), ``value``
        array<float> aligned with it. Nonzeros in all rows = rows of ``train`` (the prepared
        splits hold each pair once).
    """
    entries = F.sort_array(F.collect_list(F.struct(F.col(indices), F.col(LABEL))))
    return (train.groupBy(key).agg(entries.alias("_entries"))
            .select(key, F.col(f"_entries.{indices}").alias(indices),
                    F.col(f"_entries.{LABEL}").cast("array<float>").alias(VALUE)))


def vectors_root(lake_uri: str, kind: str) -> str:
    return lake.join(lake.normalize_uri(lake_uri), "vectors", kind)


def current_vectors(lake_uri: str, prepared: dict, kind: str, num_workers: int) -> dict | None:
    """The manifest of the published ``kind`` vectors if they were built from ``prepared`` (same
    ``data_hash``) and ``num_workers`` can share them (files a multiple of it), else None."""
    pointer = lake.join(vectors_root(lake_uri, kind), "manifest.json")
    if not lake.exists(pointer):
        return None
    current = lake.read_json(pointer)
    fits = current["files"] % num_workers == 0 and len(current["row_groups"]) >= num_workers
    return current if current.get("data_hash") == prepared["data_hash"] and fits else None


def publish_vectors(spark: SparkSession, lake_uri: str, prepared: dict, kind: str, num_files: int,
                    num_workers: int, row_group_bytes: int) -> dict:
    """The published ``kind`` vectors of the prepared data, written now unless a published
    version of the same ``data_hash`` that ``num_workers`` can share already exists.

    Runs Spark jobs on the executors; nothing is collected to the driver but counts.

    Returns
    -------
    dict
        The vectors' manifest: ``kind``, ``key``, ``indices``, ``data_hash``,
        ``prepared_version``, ``path`` (= ``version``, the folder URI), ``rows`` (vectors),
        ``nonzeros``, ``files``, ``row_groups`` (rows per row group in Petastorm's order),
        ``created_at``.

    Raises
    ------
    SparkrecError
        The written vectors do not reconcile with the train split (nothing is published then).
    """
    key, indices = KINDS[kind]
    root = vectors_root(lake_uri, kind)
    found = current_vectors(lake_uri, prepared, kind, num_workers)
    if found:
        return found
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    with lake.publishing(root) as staged:
        version = staged.version
        # Hash partitions by key: each file gets an even share of vectors whatever the key order.
        (sparse_vectors(train, key, indices).repartition(num_files, key)
         .write.option("parquet.block.size", row_group_bytes).parquet(version))
        check = spark.read.parquet(version).agg(
            F.count(F.lit(1)).alias("rows"), F.countDistinct(key).alias("keys"),
            F.sum(F.size(indices)).alias("nonzeros"), F.sum(F.size(VALUE)).alias("values")).first()
        train_rows = prepared["splits"]["train"]["rows"]
        if not (check["rows"] == check["keys"] and check["nonzeros"] == check["values"] == train_rows):
            raise SparkrecError(f"{kind} vectors at {version} do not reconcile with the train split: {check['rows']} "
                                f"rows for {check['keys']} distinct {key}, {check['nonzeros']} indices and "
                                f"{check['values']} values against {train_rows} training rows; re-run prepare")
        layout = read_layout(version)
        staged.manifest = {"kind": kind, "key": key, "indices": indices, "data_hash": prepared["data_hash"],
                           "prepared_version": prepared["version"], "path": version, "rows": layout.rows,
                           "nonzeros": int(check["nonzeros"]), "files": len(layout.files),
                           "row_groups": layout.row_groups,
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return lake.resolve(root)
