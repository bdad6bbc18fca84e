"""Which (user, item) pairs are explained, in original IDs and dense indices, and the users' histories.

Pairs are few (a handful of users and their top recommendations), so they and the histories of
their users are collected to the driver, where the attributions are computed.
"""
from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import COLD_START, INDEX, ITEM_ID, ITEM_IDX, LABEL, ORIGINAL_ID, RANK, USER_ID, USER_IDX
from sparkrec.config.explain import ExplainConfig
from sparkrec.data.index_ids import read_vocab
from sparkrec.errors import SparkrecError
from sparkrec.score.publish import POINTER, scores_root

PAIR_COLUMNS = [USER_ID, ITEM_ID, USER_IDX, ITEM_IDX, RANK]
SHOWN_IDS = 5  # unknown IDs quoted in an error message


def _with_indices(pairs: DataFrame, prepared: dict, what: str) -> pd.DataFrame:
    """``pairs`` (user_id, item_id[, rank]) joined to the prepared vocabularies; every ID must be known."""
    spark, paths = pairs.sparkSession, prepared["paths"]
    indexed = (pairs.join(read_vocab(spark, paths["user_vocab"], USER_ID, USER_IDX), USER_ID, "left")
               .join(read_vocab(spark, paths["item_vocab"], ITEM_ID, ITEM_IDX), ITEM_ID, "left"))
    if RANK not in indexed.columns:
        indexed = indexed.withColumn(RANK, F.lit(None).cast("int"))
    rows = indexed.select(*PAIR_COLUMNS).toPandas()
    unknown = rows[rows[USER_IDX].isna() | rows[ITEM_IDX].isna()]
    if len(unknown):
        shown = ", ".join(f"({u}, {i})" for u, i in unknown[[USER_ID, ITEM_ID]].head(SHOWN_IDS).itertuples(index=False))
        raise SparkrecError(f"{what}: {len(unknown)} pair(s) name a user or item unknown to the prepared data "
                            f"{prepared['version']}, e.g. {shown}; explain only IDs of the prepared vocabulary")
    rows[[USER_IDX, ITEM_IDX]] = rows[[USER_IDX, ITEM_IDX]].astype("int64")
    return rows.sort_values([USER_ID, RANK, ITEM_ID], na_position="last").reset_index(drop=True)


def pairs_from_file(spark: SparkSession, path: str, prepared: dict) -> pd.DataFrame:
    """The distinct (user_id, item_id) rows of the Parquet ``path``, with their indices.

    Returns
    -------
    pandas.DataFrame
        ``user_id`` str, ``item_id`` str, ``user_idx`` int64, ``item_idx`` int64, ``rank`` (null),
        sorted by user_id, item_id.

    Raises
    ------
    SparkrecError
        The file is missing, lacks the columns, or names IDs the prepared data does not know.
    """
    uri = lake.normalize_uri(path)
    if not lake.exists(uri):
        raise SparkrecError(f"explain.pairs={path} does not exist; point it at a Parquet file or folder")
    df = spark.read.parquet(uri)
    missing = [c for c in (USER_ID, ITEM_ID) if c not in df.columns]
    if missing:
        raise SparkrecError(f"explain.pairs={path} lacks column(s) {missing} (found {df.columns}); they hold "
                            f"original IDs")
    pairs = df.select(F.col(USER_ID).cast("string"), F.col(ITEM_ID).cast("string")).dropna().distinct()
    return _with_indices(pairs, prepared, f"explain.pairs={path}")


def pairs_from_top_k(spark: SparkSession, lake_uri: str, name: str, e: ExplainConfig, prepared: dict,
                     model_version: str) -> pd.DataFrame:
    """Recommendations of rank 1..``e.items_per_user`` in the published top-K table ``scores/<name>``
    for the users ``e.users`` (or the first ``e.max_users`` by user_id); cold-start rows (the
    popularity fallback, not the model's) are left out.

    Returns
    -------
    pandas.DataFrame
        As ``pairs_from_file``, with ``rank`` set, sorted by user_id, rank.

    Raises
    ------
    SparkrecError
        No table is published, it was scored by another model version or on other prepared data,
        or none of the requested users has a model recommendation in it.
    """
    root = scores_root(lake_uri, name)
    manifest = lake.resolve(root, POINTER)
    if manifest.get("mode") != "top_k":
        raise SparkrecError(f"{root} holds a {manifest.get('mode')!r} table, not top-K; run jobs/score.py without "
                            f"score.pairs, or set explain.pairs")
    if manifest.get("model_version") != model_version:
        raise SparkrecError(f"the top-K table {root} was scored by model {manifest.get('model_version')}, but "
                            f"models/{name} is now {model_version}; re-run jobs/score.py so the explained "
                            f"recommendations are this model's")
    top = (spark.read.parquet(manifest["version"]).where(~F.col(COLD_START) & (F.col(RANK) <= e.items_per_user))
           .select(USER_ID, ITEM_ID, RANK))
    if e.users is not None:
        top = top.where(F.col(USER_ID).isin(list(e.users)))
    else:
        first = top.select(USER_ID).distinct().orderBy(USER_ID).limit(e.max_users)
        top = top.join(first, USER_ID)
    pairs = _with_indices(top, prepared, f"top-K table {root}")
    if pairs.empty:
        asked = f"users {list(e.users)[:SHOWN_IDS]}" if e.users is not None else "any user"
        raise SparkrecError(f"the top-K table {root} has no model recommendation for {asked} (cold-start users "
                            f"get popularity, which has nothing to explain); set explain.users to users it scored")
    return pairs


def histories(spark: SparkSession, prepared: dict, users: list[int]) -> dict[int, tuple[list[int], list[float]]]:
    """Each of ``users``' history bag: their items and labels in the prepared train split (which
    holds each pair once), as the autoencoders train on them (``sparkrec.data.sparse_vectors``).

    Returns
    -------
    dict
        user_idx -> (ascending item indices, their labels); users without train rows are absent.
    """
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    rows = (train.where(F.col(USER_IDX).isin(users)).groupBy(USER_IDX)
            .agg(F.sort_array(F.collect_list(F.struct(ITEM_IDX, LABEL))).alias("bag")).collect())
    return {int(r[USER_IDX]): ([int(e[ITEM_IDX]) for e in r["bag"]], [float(e[LABEL]) for e in r["bag"]])
            for r in rows}


def item_ids(spark: SparkSession, prepared: dict, indices: set[int]) -> dict[int, str]:
    """Original item ID of each of ``indices``."""
    rows = (spark.read.parquet(prepared["paths"]["item_vocab"]).where(F.col(INDEX).isin(sorted(indices)))
            .select(INDEX, ORIGINAL_ID).collect())
    return {int(r[INDEX]): r[ORIGINAL_ID] for r in rows}
