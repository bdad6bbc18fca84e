"""The prepare job: raw interaction log -> quarantine, vocabularies and train/validation/test Parquet.

Run order: read -> validate (bad rows to quarantine) -> dedupe -> implicit conversion -> k-core
-> vocabularies -> split -> write -> check counts -> publish. Everything is written into a fresh
version folder under ``<lake>/prepared/``; only when the whole version is written and its counts
reconcile does ``lake.publishing`` switch ``<lake>/prepared/manifest.json`` to it. A run that dies
earlier leaves the published version untouched (see ``sparkrec.lake``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import (
    COUNT, INDEX, ITEM_ID, ITEM_IDX, LABEL, ORIGINAL_ID, RATING, REASON, TIMESTAMP, USER_ID, USER_IDX,
)
from sparkrec.config import Config, dump_config
from sparkrec.config.prepare import SplitConfig
from sparkrec.data import quality
from sparkrec.data.dedupe import EVENTS, FIRST_TS, ROWS, dedupe
from sparkrec.data.filters import kcore, positives
from sparkrec.data.index_ids import build_vocab, id_stats, read_vocab
from sparkrec.data.parquet_layout import Layout, read_layout
from sparkrec.data.read_log import read_log, unreadable_input
from sparkrec.data.split import SPLIT, SPLITS, assign_split, check_split_possible, is_cold_item
from sparkrec.data.validate import check_rows, quarantined_rows, valid_rows
from sparkrec.errors import SparkrecError
from sparkrec.hashing import digest
from sparkrec.session import session_confs

log = logging.getLogger(__name__)

PREPARED = "prepared"
CACHE_COMPRESSED = "spark.sql.inMemoryColumnarStorage.compressed"
# With planned writes off and N concurrent writers, a partitioned write keeps the rows' own order
# (up to N partition values per task) instead of sorting them by the partition column.
PLANNED_WRITE = "spark.sql.optimizer.plannedWrite.enabled"
CONCURRENT_WRITERS = "spark.sql.maxConcurrentOutputFileWriters"
# Item vocabularies up to this size are broadcast to the split join (about 50 MB at 1M IDs).
BROADCAST_ITEMS = 2_000_000
OUTPUT_SCHEMA = f"{USER_IDX} long, {ITEM_IDX} long, {LABEL} float, {TIMESTAMP} long"


class StepClock:
    """Wall seconds of each prepare step, in run order; logged at INFO and kept in the manifest
    (``step_seconds``) so a slow run says where its time went."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 2)
        self._last = now
        log.info("prepare step %s: %.1fs", step, self.seconds[step])


def prepared_root(lake_uri: str | os.PathLike) -> str:
    return lake.join(lake.normalize_uri(str(lake_uri)), PREPARED)


def load_manifest(lake_uri: str | os.PathLike) -> dict:
    """The manifest of the published prepared version (keys: see the lake layout in the README).

    Raises
    ------
    SparkrecError
        Nothing has been prepared under ``lake_uri`` yet.
    """
    return lake.resolve(prepared_root(lake_uri))


def files_per_split(num_files: int, num_workers: int) -> int:
    """``num_files`` rounded up to a multiple of ``num_workers`` (even Petastorm shards)."""
    return math.ceil(num_files / num_workers) * num_workers


def config_hash(cfg: Config) -> str:
    """Hash of the settings that decide the prepared data (input, prepare, seed, file count)."""
    relevant = {"input": cfg.input.model_dump(mode="json"), "prepare": cfg.prepare.model_dump(mode="json"),
                "seed": cfg.seed, "num_workers": cfg.train.num_workers}
    return digest(relevant)


def input_fingerprint(uri: str) -> list:
    """(relative path, size) of every data file under ``uri``: changes when the input does."""
    fs, path = lake.filesystem(uri)
    found = fs.find(path, detail=True)
    return sorted((name[len(path):], info.get("size")) for name, info in found.items()
                  if not name.rsplit("/", 1)[-1].startswith(("_", ".")))


def _move(src: str, dst: str) -> None:
    # A rename on local disks and HDFS; a server-side copy on object stores, which is still safe:
    # the version folder is not published yet.
    fs, src_path = lake.filesystem(src)
    fs.mv(src_path, lake.filesystem(dst)[1], recursive=True)


def _previous_vocab(spark: SparkSession, cfg: Config) -> dict | None:
    root = prepared_root(cfg.lake)
    if not cfg.prepare.extend_vocab or not lake.exists(lake.join(root, "manifest.json")):
        return None
    previous = lake.resolve(root)
    paths = previous["paths"]
    for key in ("user_vocab", "item_vocab"):
        if not lake.exists(paths[key]):
            raise SparkrecError(f"the published prepared version {previous['version']} has no {key} at "
                                f"{paths[key]}; rerun with prepare.extend_vocab=false to index from scratch")
    return {"users": spark.read.parquet(paths["user_vocab"]), "num_users": previous["num_users"],
            "items": spark.read.parquet(paths["item_vocab"]), "num_items": previous["num_items"],
            "data_hash": previous["data_hash"]}


def _write_vocab(stats: DataFrame, previous: DataFrame | None, previous_size: int, uri: str) -> int:
    stats = stats.persist(StorageLevel.MEMORY_AND_DISK)  # read by the bucket count and the numbering
    try:
        build_vocab(stats, previous, previous_size).write.parquet(uri)
    finally:
        stats.unpersist()
    # Fresh numbering hands each hash bucket its own range (offset + rank in the bucket), so its
    # indices are distinct by construction and n, min and max catch lost or extra rows. Only an
    # extended vocabulary (read back from the lake) can bring repeats: counting distinct indices
    # costs a shuffle (about 1 s at 1M IDs), so it runs only then.
    checks = [F.count(F.lit(1)).alias("n"), F.min(INDEX).alias("lo"), F.max(INDEX).alias("hi")]
    if previous is not None:
        checks.append(F.countDistinct(INDEX).alias("distinct"))
    check = stats.sparkSession.read.parquet(uri).agg(*checks).first().asDict()
    distinct = check.get("distinct", check["n"])
    if not (check["n"] == distinct == (check["hi"] + 1) and check["lo"] == 0):
        raise SparkrecError(f"vocabulary {uri} is not dense 0..n-1 (rows {check['n']}, distinct indices "
                            f"{check.get('distinct', 'not counted')}, min {check['lo']}, max {check['hi']}); "
                            f"rerun with prepare.extend_vocab=false")
    return check["n"]


def _count_cold_items(item_vocab: DataFrame, cfg: SplitConfig, seed: int) -> int:
    """Cold items with kept interactions in this version: all of those rows are in test."""
    if cfg.cold_item_fraction == 0:
        return 0
    cold = is_cold_item(F.col(ORIGINAL_ID), cfg.cold_item_fraction, seed)
    return item_vocab.filter((F.col(COUNT) > 0) & cold).count()


def _write_splits(df: DataFrame, version: str, num_files: int, row_group_bytes: int,
                  files_by_user: bool) -> dict[str, Layout]:
    """One job writes all splits (partitioned by split), then each moves to ``<version>/<split>``.

    ``files_by_user``: ``df`` is still in the ``num_files`` partitions of prepare's one shuffle by
    user, so each partition is written as it is (one file per split), without another shuffle.
    """
    staging = lake.join(version, "_splits")
    # Without files_by_user, a hash of the pair gives every file an even share of every split, and
    # unlike round-robin it needs no sort of each partition to stay deterministic when a task is
    # retried. With it, users hashed to files do the same.
    placed = df if files_by_user else df.repartition(num_files, USER_IDX, ITEM_IDX)
    # Within a file, a hash of the pair undoes the by-user order of the split window (readers
    # shuffle only within a row group). The by-split writer would sort by the split first (and the
    # optimizer then drops a sort by the hash alone); a writer per split instead takes rows in the
    # hash order, and a sort by one long key is a radix sort.
    placed = placed.sortWithinPartitions(F.xxhash64(USER_IDX, ITEM_IDX))
    spark = df.sparkSession
    with session_confs(spark, {PLANNED_WRITE: "false", CONCURRENT_WRITERS: str(len(SPLITS))}):
        placed.write.option("parquet.block.size", row_group_bytes).partitionBy(SPLIT).parquet(staging)
    layouts = {}
    for split in SPLITS:
        src, dst = lake.join(staging, f"{SPLIT}={split}"), lake.join(version, split)
        if lake.exists(src):
            _move(src, dst)
        else:  # an empty split is still a readable (empty) dataset
            spark.createDataFrame([], OUTPUT_SCHEMA).write.parquet(dst)
        layouts[split] = read_layout(dst)
    lake.remove(staging)
    return layouts


def run_prepare(spark: SparkSession, cfg: Config) -> dict:
    """Prepare ``cfg.input`` into ``<cfg.lake>/prepared/`` and publish it.

    Returns
    -------
    dict
        The published manifest, as ``load_manifest`` reads it: ``version``, ``input_path``,
        ``config_hash``, ``data_hash``, ``created_at``, ``counts`` {``input``, ``kept``,
        ``quarantined_by_reason``, ``duplicates``, ``filtered``, ``duplicates_by_kind``,
        ``filtered_by``}, ``num_users``, ``num_items``, ``implicit``, ``rating_range``,
        ``splits`` {name: {``path``, ``rows``, ``files``, ``row_groups``}}, ``schema``,
        ``paths``, ``cold_items`` (cold-start items with test rows), plus ``kcore``, ``num_files``,
        ``parent_data_hash``, the resolved ``config`` and ``step_seconds`` (wall time per step).
        Split tables hold ``user_idx`` long, ``item_idx`` long, ``label`` float (rating, or 1.0
        when implicit), ``timestamp`` long.

    Raises
    ------
    SparkrecError
        Unreadable input, a split that needs times on a log without them, ``dedupe=sum`` on
        explicit ratings, nothing left to train on, or counts that do not reconcile.
    """
    p = cfg.prepare
    raw = read_log(spark, cfg.input)
    has_rating, has_time = RATING in raw.columns, TIMESTAMP in raw.columns
    check_split_possible(p.split, has_time, SPLIT in raw.columns)
    implicit = not has_rating or p.implicit_threshold is not None
    if p.dedupe == "sum" and not implicit:
        raise SparkrecError("prepare.dedupe=sum adds ratings, which only makes sense for implicit counts; set "
                            "prepare.implicit_threshold, input.columns.rating=null, or prepare.dedupe=latest")
    previous = _previous_vocab(spark, cfg)
    root = prepared_root(cfg.lake)
    num_files = files_per_split(p.num_files, cfg.train.num_workers)
    persisted: list[DataFrame] = []
    clock = StepClock()
    # Caches here are written once and read a few times in the same job: compressing them cost
    # more than the reads saved (10M rows: the deduplicated cache took 6 s to build compressed,
    # 0.5 s plain; bench/prepare_bench.py).
    try:
        with session_confs(spark, {CACHE_COMPRESSED: "false"}), lake.publishing(root) as staged:
            _prepare_version(spark, cfg, raw, staged, previous, num_files, implicit, persisted, clock)
    finally:
        for df in persisted:
            df.unpersist()
    return lake.resolve(root)  # exactly what load_manifest() now returns


def _prepare_version(spark: SparkSession, cfg: Config, raw: DataFrame, staged: lake.Staged, previous: dict | None,
                     num_files: int, implicit: bool, persisted: list[DataFrame], clock: StepClock) -> None:
    """Write one prepared version into ``staged`` and set its manifest (see ``run_prepare``)."""
    p, version = cfg.prepare, staged.version
    try:
        input_rows = raw.count()
    except Exception as e:  # a file only the row readers find undecodable (e.g. in a folder of good ones)
        raise unreadable_input(e, cfg.input) or e
    # Checked rows are cached for the quarantine write and dedupe: with the uncompressed cache,
    # 10M rows cost the quarantine step 1.8 s and saved dedupe 4.4 s of parsing again.
    checked = check_rows(raw, p.rating_min, p.rating_max).persist(StorageLevel.MEMORY_AND_DISK)
    persisted.append(checked)
    quarantine_uri = lake.join(version, "quarantine")
    quarantined_rows(checked).write.parquet(quarantine_uri)
    found = dict(spark.read.parquet(quarantine_uri).groupBy(REASON).count().collect())
    by_reason = {reason: found.pop(reason, 0) for reason in quality.REASONS}
    assert not found, f"unknown quarantine reasons {found}"
    clock.lap("quarantine")

    # The one shuffle by user. With num_files partitions it is also the output's file layout.
    user_partitions = max(int(spark.conf.get("spark.sql.shuffle.partitions")), num_files)
    deduped = dedupe(valid_rows(checked), p.dedupe, user_partitions).persist(StorageLevel.MEMORY_AND_DISK)
    persisted.append(deduped)
    totals = deduped.agg(F.count(F.lit(1)).alias("pairs"), F.sum(EVENTS).alias("events"),
                         F.sum(ROWS).alias("rows")).first()
    pairs, events, valid = totals["pairs"], totals["events"] or 0, totals["rows"] or 0
    if input_rows != sum(by_reason.values()) + valid:
        raise SparkrecError(f"counts do not reconcile: read {input_rows} rows but quarantined "
                            f"{sum(by_reason.values())} and validated {valid}")
    clock.lap("dedupe")

    kept, candidates = deduped, pairs
    if p.implicit_threshold is not None:
        kept = positives(deduped, p.implicit_threshold)
        candidates = kept.count()
    kept, core = kcore(kept, candidates, p.min_user_interactions, p.min_item_interactions,
                       p.kcore_max_iterations)
    persisted.append(kept)
    if not core.converged:
        log.warning("k-core filter stopped after %d passes without converging; raise "
                    "prepare.kcore_max_iterations for a stable core", core.iterations)
    if core.rows == 0:
        raise SparkrecError(f"no interactions left to train on: {input_rows} read, {by_reason} quarantined, "
                            f"{valid - pairs} duplicates, {pairs - candidates} below the implicit threshold, "
                            f"{candidates} filtered by the k-core minimums; check input.* and prepare.*")
    clock.lap("filters")

    paths = {name: lake.join(version, name) for name in ("quarantine", "user_vocab", "item_vocab")}
    prev = previous or {}
    num_users = _write_vocab(id_stats(kept, USER_ID, FIRST_TS), prev.get("users"), prev.get("num_users", 0),
                             paths["user_vocab"])
    num_items = _write_vocab(id_stats(kept, ITEM_ID, FIRST_TS), prev.get("items"), prev.get("num_items", 0),
                             paths["item_vocab"])

    cold_items = _count_cold_items(spark.read.parquet(paths["item_vocab"]), p.split, cfg.seed)
    clock.lap("vocabularies")
    users = read_vocab(spark, paths["user_vocab"], USER_ID, USER_IDX)
    items = read_vocab(spark, paths["item_vocab"], ITEM_ID, ITEM_IDX)
    label = F.lit(1.0) if implicit else F.col(RATING)
    # The user join keeps the by-user partitioning (the vocabulary side is shuffled to it) and a
    # broadcast item join keeps it too; a k-core pass joins by item and loses it.
    files_by_user = core.iterations == 0 and user_partitions == num_files and num_items <= BROADCAST_ITEMS
    out = (assign_split(kept, p.split, cfg.seed).join(users, USER_ID)
           .join(F.broadcast(items) if files_by_user else items, ITEM_ID)
           .select(USER_IDX, ITEM_IDX, label.cast("float").alias(LABEL), TIMESTAMP, SPLIT))
    layouts = _write_splits(out, version, num_files, p.row_group_bytes, files_by_user)
    clock.lap("split_write")

    written = sum(layout.rows for layout in layouts.values())
    if written != core.rows:
        raise SparkrecError(f"counts do not reconcile: kept {core.rows} interactions but wrote {written}")
    counts = {
        "input": input_rows,
        "kept": core.rows,
        "quarantined_by_reason": by_reason,
        "duplicates": valid - pairs,
        "filtered": pairs - core.rows,
        "duplicates_by_kind": {"exact": valid - events, "repeated_pair": events - pairs},
        "filtered_by": {"below_threshold": pairs - candidates, "kcore": candidates - core.rows},
    }
    splits = {name: {"path": lake.join(version, name), "rows": layout.rows, "files": len(layout.files),
                     "row_groups": layout.row_groups} for name, layout in layouts.items()}
    labels = [layout.stats[LABEL] for layout in layouts.values() if LABEL in layout.stats]
    cfg_hash = config_hash(cfg)
    parent = prev.get("data_hash")
    content = {"config_hash": cfg_hash, "input": input_fingerprint(lake.normalize_uri(cfg.input.path)),
               "counts": counts, "num_users": num_users, "num_items": num_items, "parent": parent,
               "splits": {k: [v["rows"], v["row_groups"]] for k, v in splits.items()}}
    manifest = {
        "input_path": lake.normalize_uri(cfg.input.path),
        "config_hash": cfg_hash,
        "data_hash": digest(content),
        "parent_data_hash": parent,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": counts,
        "num_users": num_users,
        "num_items": num_items,
        "cold_items": cold_items,
        "implicit": implicit,
        "rating_range": [float(min(lo for lo, _ in labels)), float(max(hi for _, hi in labels))],
        "splits": splits,
        "schema": layouts["train"].schema,
        "paths": paths,
        "kcore": {"iterations": core.iterations, "converged": core.converged},
        "num_files": num_files,
        "config": dump_config(cfg),
    }
    clock.lap("manifest")
    staged.manifest = {**manifest, "step_seconds": clock.seconds}
