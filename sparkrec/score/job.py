"""The score job: publish per-user top-K recommendations (or pair scores) to the lake.

Run order: resolve the prepared data and pin the model version -> check they belong together ->
read vocabularies and the train split -> top-K (or pairs) -> write a new version -> check the row
count -> switch the ``_manifest.json`` pointer (see ``sparkrec.score.publish``).
"""
from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import (
    BUCKET, ITEM_ID, ITEM_IDX, LABEL, PREDICTION, RANK, REASON, SCORE, TIMESTAMP, USER_ID, USER_IDX,
)
from sparkrec.config import Config, dump_config
from sparkrec.data.index_ids import read_vocab
from sparkrec.data.prepare import load_manifest
from sparkrec.data.sequences import user_histories
from sparkrec.errors import SparkrecError
from sparkrec.models.block_scoring import is_history_model
from sparkrec.models.store import check_same_data, check_stable_items, read_meta, resolve_model
from sparkrec.score.content_items import scores_cold_items, servable_items
from sparkrec.score.pairs import UNKNOWN_ITEM, UNTRAINED_ITEM, index_history_pairs, index_pairs, score_pairs
from sparkrec.score.publish import publish_table, scores_root
from sparkrec.score.recommend import recommend

PAIRS_SUFFIX = "-pairs"


def _read_parquet(spark: SparkSession, path: str, needed: tuple[str, ...], key: str) -> DataFrame:
    uri = lake.normalize_uri(path)
    if not lake.exists(uri):
        raise SparkrecError(f"{key}={path} does not exist; point it at a Parquet file or folder")
    df = spark.read.parquet(uri)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SparkrecError(f"{key}={path} lacks column(s) {missing} (found {df.columns}); they hold original IDs")
    return df


def _base_manifest(cfg: Config, meta: dict, prepared: dict, mode: str) -> dict:
    return {"mode": mode, "model": cfg.name, "model_version": meta["version"], "data_hash": prepared["data_hash"],
            "prepared_version": prepared["version"], "config": dump_config(cfg)}


def _history_inputs(spark: SparkSession, cfg: Config, meta: dict, prepared: dict,
                    users: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame, dict]:
    """For a history model: each user's history (``user_id``, ``items``, ``labels``), the pairs
    never recommended back (``user_id``, ``item_idx``), the users that exist only in
    ``score.histories`` (``user_id``), and counts for the manifest."""
    s = cfg.score
    paths = prepared["paths"]
    events = [spark.read.parquet(prepared["splits"][name]["path"]) for name in s.history_splits
              if prepared["splits"].get(name, {}).get("rows", 0) > 0]
    lake_events = reduce(DataFrame.unionByName, events).join(users, USER_IDX).drop(USER_IDX) if events else None
    counts = {"history_splits": list(s.history_splits)}
    external = None
    if s.histories:
        given = _read_parquet(spark, s.histories, (USER_ID, ITEM_ID), "score.histories")
        columns = [F.col(USER_ID).cast("string").alias(USER_ID), F.col(ITEM_ID).cast("string").alias(ITEM_ID)]
        columns += [F.col(c).cast("long").alias(TIMESTAMP) for c in ("timestamp",) if c in given.columns]
        columns += [F.col(c).cast("float").alias(LABEL) for c in ("rating",) if c in given.columns]
        given = given.select(*columns).dropna(subset=[USER_ID, ITEM_ID])
        items = read_vocab(spark, paths["item_vocab"], ITEM_ID, ITEM_IDX)
        external = given.join(items, ITEM_ID, "left")
        known = external.where(F.col(ITEM_IDX).isNotNull()).drop(ITEM_ID)
        counts["history_file_rows"] = given.count()
        counts["history_file_unknown_items"] = counts["history_file_rows"] - known.count()
        external = known
    frames = [df for df in (lake_events, external) if df is not None]
    if not frames:
        raise SparkrecError(f"score.history_splits={list(s.history_splits)} holds no interactions and no "
                            f"score.histories is given: a history model has nothing to score users from")
    events = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    histories = user_histories(events, meta["model"]["max_len"], key=USER_ID).cache()
    exclude = None
    excluded = [spark.read.parquet(prepared["splits"][name]["path"]).select(USER_IDX, ITEM_IDX)
                for name in s.exclude_splits]
    if excluded:
        exclude = reduce(DataFrame.unionByName, excluded).join(users, USER_IDX).select(USER_ID, ITEM_IDX)
    if external is not None:  # what a user did is never recommended back to them
        given = external.select(USER_ID, ITEM_IDX)
        exclude = given if exclude is None else exclude.unionByName(given)
    newcomers = external.select(USER_ID).distinct().join(users, USER_ID, "left_anti") if external is not None else None
    return histories, exclude, newcomers, counts


def score_top_k(spark: SparkSession, cfg: Config, model: str, meta: dict, prepared: dict) -> dict:
    """Publish ``<lake>/scores/<name>/``: every requested user's top-K (see ``recommend``)."""
    s = cfg.score
    users = read_vocab(spark, prepared["paths"]["user_vocab"], USER_ID, USER_IDX)
    histories, extra = None, {}
    if is_history_model(meta["model"]):
        histories, exclude, newcomers, extra = _history_inputs(spark, cfg, meta, prepared, users)
        if newcomers is not None:
            users = users.unionByName(newcomers.withColumn(USER_IDX, F.lit(None).cast("long")))
    if s.users is None:
        requested, skipped = users, 0
    else:
        listed = _read_parquet(spark, s.users, (USER_ID,), "score.users").select(F.col(USER_ID).cast("string"))
        skipped = listed.filter(F.col(USER_ID).isNull()).count()
        requested = listed.dropna().distinct().join(users, USER_ID, "left")
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    if histories is None:
        splits = [spark.read.parquet(prepared["splits"][name]["path"]).select(USER_IDX, ITEM_IDX)
                  for name in s.exclude_splits]
        exclude = reduce(DataFrame.unionByName, splits) if splits else None
    num_items = meta["model"]["num_items"]
    # Items added to the vocabulary after the model was trained are not in its catalogue.
    trained_items = train.where(F.col(ITEM_IDX) < num_items)
    recs = recommend(spark, model, requested, read_vocab(spark, prepared["paths"]["item_vocab"], ITEM_ID, ITEM_IDX),
                     trained_items, exclude, s.k, only_trained_items=s.only_trained_items,
                     num_items=num_items, buckets=s.buckets, batch_users=s.batch_users,
                     chunk_mib=s.chunk_mib, users_per_task=s.users_per_task,
                     content_items=servable_items(spark, model) if scores_cold_items(meta) else None,
                     histories=histories)
    manifest = {
        **_base_manifest(cfg, meta, prepared, "top_k"),
        "k": s.k, "users": recs.users, "cold_start_users": recs.cold_start_users,
        "skipped_null_user_ids": skipped, "candidate_items": recs.candidates,
        "exclude_splits": list(s.exclude_splits), **extra,
        "partitioning": f"{BUCKET} = pmod(xxhash64(cast({USER_ID} as string)), {s.buckets})",
    }
    published = publish_table(recs.table, scores_root(lake.normalize_uri(cfg.lake), cfg.name), manifest,
                              recs.expected_rows, partition_by=BUCKET, sort_by=(USER_ID, RANK), keep=s.keep_versions)
    if histories is not None:
        histories.unpersist()
    return published


def score_pair_file(spark: SparkSession, cfg: Config, model: str, meta: dict, prepared: dict) -> dict:
    """Publish ``<lake>/scores/<name>-pairs/``: a score for every row of ``score.pairs``."""
    pairs = _read_parquet(spark, cfg.score.pairs, (USER_ID, ITEM_ID), "score.pairs")
    reserved = [c for c in (USER_IDX, ITEM_IDX, SCORE, PREDICTION, REASON) if c in pairs.columns]
    if reserved:
        raise SparkrecError(f"score.pairs={cfg.score.pairs} has column(s) {reserved}, which the output adds; "
                            f"rename or drop them")
    paths = prepared["paths"]
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    histories = None
    if is_history_model(meta["model"]):
        users = read_vocab(spark, paths["user_vocab"], USER_ID, USER_IDX)
        histories, _, _, _ = _history_inputs(spark, cfg, meta, prepared, users)
        indexed = index_history_pairs(pairs, spark.read.parquet(paths["item_vocab"]), train, histories,
                                      meta["model"]["num_items"])
    else:
        indexed = index_pairs(pairs, spark.read.parquet(paths["user_vocab"]), spark.read.parquet(paths["item_vocab"]),
                              train)
    by_reason = {r: n for r, n in indexed.groupBy(REASON).count().collect()}
    manifest = {**_base_manifest(cfg, meta, prepared, "pairs"), "pairs_path": lake.normalize_uri(cfg.score.pairs),
                "scored": by_reason.pop(None, 0), "unscored_by_reason": by_reason}
    root = scores_root(lake.normalize_uri(cfg.lake), cfg.name + PAIRS_SUFFIX)
    # A history model on ratings knows the user even when it never trained on the item: it then
    # predicts the user's baseline (the reason still says why the item part is missing).
    baselines = histories is not None and not meta["implicit"]
    table = score_pairs(spark, model, indexed, histories, user_baselines=baselines)
    manifest["user_baseline_predictions"] = sum(n for r, n in by_reason.items() if r in (UNKNOWN_ITEM, UNTRAINED_ITEM)) \
        if baselines else 0
    return publish_table(table, root, manifest, manifest["scored"] + sum(by_reason.values()),
                         keep=cfg.score.keep_versions)


def run_score(spark: SparkSession, cfg: Config) -> dict:
    """Score with the published model ``cfg.name`` and publish the result.

    Top-K mode writes ``<lake>/scores/<name>/`` (Parquet partitioned by ``bucket``): ``user_id``
    string, ``item_id`` string (original IDs), ``score`` float (raw model score; for
    ``cold_start`` rows the item's training interactions), ``rank`` int (1..K), ``cold_start``
    boolean, ``bucket`` int. Pairs mode (``score.pairs``) writes ``<lake>/scores/<name>-pairs/``:
    the pairs file's columns plus ``score`` float, ``prediction`` float (null when unscorable)
    and ``reason`` string (null when scored, else why not; see ``sparkrec.score.pairs``).

    Returns
    -------
    dict
        The published manifest: ``mode``, ``model``, ``model_version``, ``data_hash``,
        ``prepared_version``, ``config``, ``rows``, ``created_at``, ``version`` (folder URI), and
        for top-K ``k``, ``users``, ``cold_start_users``, ``skipped_null_user_ids``,
        ``candidate_items``, ``exclude_splits``, ``partitioning``; for pairs ``pairs_path``,
        ``scored``, ``unscored_by_reason``.

    Raises
    ------
    SparkrecError
        Nothing prepared or no model published, a model trained on other prepared data, a
        missing or malformed ``score.users`` / ``score.pairs`` file, or a row count that does not
        reconcile (the previous table then stays published).
    """
    lake_uri = lake.normalize_uri(cfg.lake)
    prepared = load_manifest(lake_uri)
    model = resolve_model(lake_uri, cfg.name)
    meta = read_meta(model)
    if is_history_model(meta["model"]):  # it knows items only: any later version with the same item indices fits
        check_stable_items(f"model {cfg.name!r} ({model})", meta, prepared)
    else:
        check_same_data(f"model {cfg.name!r} ({model})", meta["data_hash"], prepared)
    if cfg.score.pairs:
        return score_pair_file(spark, cfg, model, meta, prepared)
    return score_top_k(spark, cfg, model, meta, prepared)
