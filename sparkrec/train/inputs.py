"""What the training workers read besides the prepared splits, built in Spark on the driver before
any worker starts, and published under ``<lake>/derived/training/<key>/`` (reused while the key,
i.e. the prepared data and the settings that shape these inputs, is the same):

- ``windows/`` (history models): the training interactions as per-user windows
  (``sparkrec.data.sequences.history_windows``), laid out for even Petastorm shards;
- ``item_counts/``: training interactions per item (popularity negatives, logQ correction, and the
  items validation may rank);
- ``validation/``: the full-ranking validation sample: a seeded sample of validation users, each
  with its validation items (``targets``), the items it had before (``known``, never ranked) and,
  for history models, its latest history.

The training interactions are the train split, or train + validation with ``train.refit`` (the
published model then uses every interaction but test; nothing is left to validate on).
"""
from __future__ import annotations

from datetime import datetime, timezone
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import COUNT, ITEM_IDX, LABEL, USER_IDX
from sparkrec.config import Config
from sparkrec.data.parquet_layout import read_layout
from sparkrec.data.prepare import files_per_split
from sparkrec.data.sequences import ITEMS, LABELS, history_windows, item_counts, user_histories
from sparkrec.errors import SparkrecError
from sparkrec.hashing import digest

KNOWN = "known"
TARGETS = "targets"
TARGET_LABELS = "target_labels"
HISTORY = "history"
HISTORY_LABELS = "history_labels"


def training_splits(cfg: Config) -> list[str]:
    """The prepared splits the model learns from."""
    return ["train", "validation"] if cfg.train.refit else ["train"]


def is_history_model(cfg: Config) -> bool:
    return cfg.train.model == "sequence"


def window_shape(cfg: Config, implicit: bool) -> tuple[int, int]:
    """(width, overlap) of the training windows: a next-item model reads ``max_len`` items and
    predicts the one after each, so its windows hold ``max_len + 1`` and share one item; the
    explicit model predicts every rating of a window from the others."""
    length = cfg.sequence.max_len
    return (length + 1, 1) if implicit else (length, 0)


def _union(spark: SparkSession, manifest: dict, splits: list[str]) -> DataFrame:
    frames = [spark.read.parquet(manifest["splits"][s]["path"]) for s in splits
              if manifest["splits"].get(s, {}).get("rows", 0) > 0]
    return reduce(DataFrame.unionByName, frames)


def validation_sample(spark: SparkSession, manifest: dict, known_splits: list[str], num_users: int, seed: int,
                      history_len: int | None) -> DataFrame:
    """The validation users validation ranks (all of them when ``num_users`` is 0, else a seeded
    sample: the ``num_users`` smallest hashes of (seed, user)).

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``targets`` array<long> and ``target_labels`` array<float> (the user's
        validation interactions), ``known`` array<long> (items of ``known_splits``, excluded from
        the ranking), and with ``history_len`` also ``history`` array<long> / ``history_labels``
        array<float> (latest first-to-last, see ``user_histories``).
    """
    validation = spark.read.parquet(manifest["splits"]["validation"]["path"])
    users = validation.select(USER_IDX).distinct()
    if num_users:
        users = users.orderBy(F.xxhash64(F.lit(seed), F.col(USER_IDX)), USER_IDX).limit(num_users)
    targets = (validation.join(users, USER_IDX, "left_semi").groupBy(USER_IDX)
               .agg(F.sort_array(F.collect_list(F.struct(ITEM_IDX, F.col(LABEL).cast("float").alias(LABEL)))).alias("_t"))
               .select(USER_IDX, F.col(f"_t.{ITEM_IDX}").alias(TARGETS), F.col(f"_t.{LABEL}").alias(TARGET_LABELS)))
    before = _union(spark, manifest, known_splits).join(users, USER_IDX, "left_semi")
    known = before.groupBy(USER_IDX).agg(F.collect_set(F.col(ITEM_IDX).cast("long")).alias(KNOWN))
    out = targets.join(known, USER_IDX, "left")
    if history_len:
        history = user_histories(before, history_len).select(
            USER_IDX, F.col(ITEMS).alias(HISTORY), F.col(LABELS).alias(HISTORY_LABELS))
        out = out.join(history, USER_IDX, "left")
    return out


def _key(cfg: Config, manifest: dict, implicit: bool) -> dict:
    t = cfg.train
    key = {"data_hash": manifest["data_hash"], "splits": training_splits(cfg),
           "files": files_per_split(cfg.prepare.num_files, t.num_workers), "seed": cfg.seed,
           "validation_users": t.validation_users}
    if is_history_model(cfg):
        key["window"] = window_shape(cfg, implicit)
        key["history_len"] = cfg.sequence.max_len
    return key


def training_inputs(spark: SparkSession, cfg: Config, manifest: dict, implicit: bool) -> dict:
    """The published training inputs of ``cfg`` on the prepared ``manifest``, built now unless an
    identical set is already published.

    Returns
    -------
    dict
        ``key``, ``version``, ``interactions`` (training interactions), ``item_counts`` (path),
        ``windows`` (history models: ``path``, ``rows``, ``row_groups``, ``files``, ``targets``,
        ``width``, ``overlap``; else None), ``training_rows`` (NCF with refit: train + validation
        as one dataset, ``path``, ``rows``, ``row_groups``, ``files``; else None), ``validation``
        (``path``, ``users``; None with refit or without a validation split).

    Raises
    ------
    SparkrecError
        The written windows do not reconcile with the training interactions.
    """
    key = _key(cfg, manifest, implicit)
    root = lake.join(lake.normalize_uri(cfg.lake), "derived", "training", digest(key))
    if lake.exists(lake.join(root, "manifest.json")):
        return lake.resolve(root)
    splits = training_splits(cfg)
    with lake.publishing(root) as staged:
        interactions = _union(spark, manifest, splits).cache()
        rows = interactions.count()
        windows = _write_windows(cfg, interactions, rows, key, staged.path("windows")) if is_history_model(cfg) else None
        training_rows = None
        if cfg.train.refit and not is_history_model(cfg):  # NCF reads rows: train + validation as one dataset
            path = staged.path("rows")
            (interactions.repartition(key["files"], USER_IDX, ITEM_IDX)
             .write.option("parquet.block.size", cfg.prepare.row_group_bytes).parquet(path))
            layout = read_layout(path)
            if layout.rows != rows:
                raise SparkrecError(f"training rows at {path} hold {layout.rows} rows, expected {rows}; re-run")
            training_rows = {"path": path, "rows": layout.rows, "row_groups": layout.row_groups,
                             "files": len(layout.files)}
        item_counts(interactions).coalesce(1).write.parquet(staged.path("item_counts"))
        interactions.unpersist()
        validation = None
        if not cfg.train.refit and manifest["splits"].get("validation", {}).get("rows", 0) > 0:
            sample = validation_sample(spark, manifest, ["train"], cfg.train.validation_users, cfg.seed,
                                       cfg.sequence.max_len if is_history_model(cfg) else None)
            sample.coalesce(1).write.parquet(staged.path("validation"))
            validation = {"path": staged.path("validation"), "users": spark.read.parquet(staged.path("validation")).count()}
        staged.manifest = {"key": key, "interactions": rows, "item_counts": staged.path("item_counts"),
                           "windows": windows, "training_rows": training_rows, "validation": validation,
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return staged.published


def _write_windows(cfg: Config, interactions: DataFrame, rows: int, key: dict, path: str) -> dict:
    """Write the training windows to ``path``; their item count must reconcile with ``rows``."""
    spark = interactions.sparkSession
    width, overlap = key["window"]
    (history_windows(interactions, width, overlap).repartition(key["files"], USER_IDX)
     .write.option("parquet.block.size", cfg.prepare.row_group_bytes).parquet(path))
    written = spark.read.parquet(path).agg(F.count(F.lit(1)).alias("rows"), F.sum(F.size(ITEMS)).alias("items")).first()
    # Users with at most `overlap` interactions give no window; each other user's windows repeat
    # `overlap` items per window after the oldest one.
    per_user = interactions.groupBy(USER_IDX).count()
    kept = per_user.where(F.col("count") > overlap).agg(F.sum("count").alias("n"), F.count(F.lit(1)).alias("users")).first()
    expected = (kept["n"] or 0) + overlap * (written["rows"] - (kept["users"] or 0))
    if written["items"] != expected:
        raise SparkrecError(f"history windows at {path} hold {written['items']} items, expected {expected} from "
                            f"{rows} training interactions; re-run prepare")
    layout = read_layout(path)
    return {"path": path, "rows": layout.rows, "row_groups": layout.row_groups, "files": len(layout.files),
            "targets": int(written["items"] - overlap * written["rows"]), "width": width, "overlap": overlap}


def read_item_counts(inputs: dict, num_items: int):
    """Training interactions per item as a float tensor [num_items] (read on a worker)."""
    import pyarrow.parquet as pq
    import torch
    import fsspec

    fs, path = fsspec.core.url_to_fs(inputs["item_counts"])
    table = pq.read_table(path, filesystem=fs)
    counts = torch.zeros(num_items, dtype=torch.float64)
    # torch.as_tensor copies Arrow's read-only buffers (from_numpy would share and warn).
    idx = torch.as_tensor(table.column(ITEM_IDX).to_numpy().copy())
    keep = idx < num_items
    counts[idx[keep]] = torch.as_tensor(table.column(COUNT).to_numpy().copy()).double()[keep]
    return counts
