"""The content dataset: item text of the prepared items as token-ID arrays, versioned in the lake.

``<lake>/content/manifest.json`` (pointer, ``lake.publishing``) -> version folder holding ``items/``
(Parquet, one row per prepared item: ``item_idx`` long, ``tokens`` array<int> of
``content.max_tokens`` (0 = padding, 1 = unknown token), ``num_tokens`` int, ``has_text`` boolean,
``trained`` boolean) and ``token_vocab.json`` (list of strings, index = token id). The manifest
records the prepared ``data_hash`` the item indices belong to; a model is only built from a
content version of the same prepared data.

Run order: read the sources -> tokens per item -> keep prepared items -> truncate -> vocabulary
(collected: bounded by ``content.vocab_size``) -> token IDs -> one row per prepared item -> write
-> check the counts -> publish.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import ITEM_ID, ITEM_IDX, ORIGINAL_ID
from sparkrec.config import Config, dump_config
from sparkrec.config.content import ContentConfig
from sparkrec.data import item_text as text
from sparkrec.data.prepare import load_manifest
from sparkrec.data.read_log import csv_reader
from sparkrec.errors import SparkrecError
from sparkrec.models.store import check_same_data

CONTENT = "content"
ITEMS = "items"
TOKEN_VOCAB = "token_vocab.json"
MOVIES, TAGS = "movies.csv", "tags.csv"


def content_root(lake_uri: str) -> str:
    return lake.join(lake.normalize_uri(lake_uri), CONTENT)


def _csv(spark: SparkSession, uri: str) -> DataFrame:
    # MovieLens quotes titles with commas and doubles quotes inside them ("" -> "): RFC 4180.
    return csv_reader(spark, header=True).csv(uri)


def _need_columns(df: DataFrame, columns: list[str], where: str, key: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SparkrecError(f"{where} lacks column(s) {missing} (found {df.columns}); set {key}")


def read_item_tokens(spark: SparkSession, cfg: ContentConfig) -> tuple[DataFrame, dict]:
    """Every source item's tokens, and the source's row counts.

    Returns
    -------
    (DataFrame, dict)
        ``item_id`` string, ``tokens`` array<string> (not truncated); counts ``source_rows``
        (movies or table rows) and, for MovieLens, ``tag_rows``.

    Raises
    ------
    SparkrecError
        The path, movies.csv or a configured column is missing.
    """
    uri = lake.normalize_uri(cfg.path)
    if not lake.exists(uri):
        raise SparkrecError(f"content.path {cfg.path} not found ({uri}); point it at a MovieLens folder or an "
                            f"item-features table")
    if cfg.source == "movielens":
        movies_uri = lake.join(uri, MOVIES)
        if not lake.exists(movies_uri):
            raise SparkrecError(f"no {MOVIES} in content.path {uri}; set content.path to the extracted MovieLens "
                                f"folder (movies.csv, optionally tags.csv)")
        movies = _csv(spark, movies_uri)
        _need_columns(movies, ["movieId", "title", "genres"], movies_uri, "content.path to a MovieLens folder")
        sources, counts = [text.movie_tokens(movies, cfg.title_year)], {"source_rows": movies.count()}
        tags_uri = lake.join(uri, TAGS)
        if lake.exists(tags_uri):
            tags = _csv(spark, tags_uri)
            _need_columns(tags, ["movieId", "tag"], tags_uri, "content.path to a MovieLens folder")
            sources.append(text.tag_tokens(tags))
            counts["tag_rows"] = tags.count()
        return text.concat_item_tokens(*sources), counts
    reader = csv_reader(spark, header=True) if cfg.format == "csv" else spark.read
    table = reader.format(cfg.format).load(uri)
    _need_columns(table, [cfg.item_column, *cfg.text_columns], uri, "content.item_column / content.text_columns")
    return text.table_tokens(table, cfg.item_column, cfg.text_columns), {"source_rows": table.count()}


def run_prepare_content(spark: SparkSession, cfg: Config) -> dict:
    """Tokenise ``cfg.content`` for the published prepared items and publish ``<lake>/content/``.

    Returns
    -------
    dict
        The published manifest: ``version``, ``data_hash`` and ``prepared_version`` (the prepared
        data it indexes), ``created_at``, ``source``, ``path``, ``max_tokens``, ``vocab_size``
        (token ids in use, specials included), ``paths`` {``items``, ``token_vocab``}, ``counts``
        {``source_rows``, [``tag_rows``], ``source_items``, ``matched_items`` (source items in
        the prepared vocabulary), ``unmatched_source_items``, ``num_items``, ``items_with_text``,
        ``items_without_text``, ``trained_items``, ``cold_items_with_text``, ``truncated_items``,
        ``tokens``, ``unknown_tokens``}, ``config``.

    Raises
    ------
    SparkrecError
        ``content.source`` is none, nothing prepared, unreadable sources, or counts that do not
        reconcile (nothing is published then).
    """
    c = cfg.content
    if c.source == "none":
        raise SparkrecError("content.source=none: set content.source (movielens or table) and content.path")
    prepared = load_manifest(cfg.lake)
    item_vocab = spark.read.parquet(prepared["paths"]["item_vocab"])
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    source_tokens, counts = read_item_tokens(spark, c)
    source_tokens = source_tokens.cache()
    try:
        matched = text.truncate(
            source_tokens.join(item_vocab.select(F.col(ORIGINAL_ID).alias(ITEM_ID)), ITEM_ID, "left_semi"),
            c.max_tokens).cache()
        vocab_rows = text.token_document_frequency(matched, c.vocab_size, c.min_count).collect()  # <= vocab_size rows
        tokens = list(text.SPECIAL_TOKENS) + [r[text.TOKEN] for r in vocab_rows]
        vocab = spark.createDataFrame([(t, i) for i, t in enumerate(tokens)][len(text.SPECIAL_TOKENS):],
                                      f"{text.TOKEN} string, {text.TOKEN_ID} int")
        table = text.content_table(item_vocab, text.token_ids(matched, vocab, c.max_tokens), train, c.max_tokens)

        root = content_root(cfg.lake)
        with lake.publishing(root, keep=c.keep_versions) as staged:
            paths = {"items": staged.path(ITEMS), "token_vocab": staged.path(TOKEN_VOCAB)}
            table.write.parquet(paths["items"])
            lake.write_json_atomic(paths["token_vocab"], tokens)
            counts.update(_counts(spark, paths["items"], source_tokens, matched, c.max_tokens))
            if not counts["num_items"] == counts["distinct_items"] == prepared["num_items"]:
                raise SparkrecError(f"content table {paths['items']} has {counts['num_items']} rows, "
                                    f"{counts['distinct_items']} distinct items, but the prepared data has "
                                    f"{prepared['num_items']} items; re-run jobs/prepare_content.py")
            del counts["distinct_items"]
            staged.manifest = {"data_hash": prepared["data_hash"], "prepared_version": prepared["version"],
                               "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "source": c.source, "path": lake.normalize_uri(c.path), "max_tokens": c.max_tokens,
                               "vocab_size": len(tokens), "paths": paths, "counts": counts,
                               "config": dump_config(cfg)}
    finally:
        source_tokens.unpersist()
    return lake.resolve(root)


def _counts(spark: SparkSession, items_uri: str, source_tokens: DataFrame, matched: DataFrame, max_tokens: int) -> dict:
    written = spark.read.parquet(items_uri).agg(
        F.count(F.lit(1)).alias("num_items"), F.countDistinct(ITEM_IDX).alias("distinct_items"),
        F.sum(F.col(text.HAS_TEXT).cast("int")).alias("items_with_text"),
        F.sum(F.col(text.TRAINED).cast("int")).alias("trained_items"),
        F.sum((F.col(text.HAS_TEXT) & ~F.col(text.TRAINED)).cast("int")).alias("cold_items_with_text"),
        F.sum(text.NUM_TOKENS).alias("tokens"),
        F.sum(F.size(F.filter(text.TOKENS, lambda t: t == text.UNKNOWN_ID))).alias("unknown_tokens")).first()
    source = source_tokens.agg(F.count(F.lit(1)).alias("items"),
                               F.sum((F.size(text.TOKENS) > max_tokens).cast("int")).alias("truncated")).first()
    matched_items = matched.count()
    out = {k: int(written[k] or 0) for k in ("num_items", "distinct_items", "items_with_text", "trained_items",
                                            "cold_items_with_text", "tokens", "unknown_tokens")}
    out["items_without_text"] = out["num_items"] - out["items_with_text"]
    out.update(source_items=int(source["items"]), matched_items=matched_items,
               unmatched_source_items=int(source["items"]) - matched_items,
               truncated_items=int(source_tokens.join(matched.select(ITEM_ID), ITEM_ID, "left_semi")
                                   .where(F.size(text.TOKENS) > max_tokens).count()))
    return out


def load_content_manifest(lake_uri: str, prepared: dict) -> dict:
    """The published content manifest, checked to index the prepared data ``prepared`` (its
    published manifest).

    Raises
    ------
    SparkrecError
        No content published, or it was built for other prepared data.
    """
    root = content_root(lake_uri)
    if not lake.exists(lake.join(root, "manifest.json")):
        raise SparkrecError(f"no item content published at {root}; set content.source and content.path and run "
                            f"jobs/prepare_content.py before training a hybrid model")
    manifest = lake.resolve(root)
    check_same_data(f"item content {manifest['version']}", manifest["data_hash"], prepared,
                    fix="re-run jobs/prepare_content.py")
    return manifest


def read_content_arrays(manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The content table of ``manifest`` as arrays indexed by item (read with pyarrow, no Spark:
    training workers call it).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``tokens`` int64 [num_items, max_tokens] and ``trained`` bool [num_items].
    """
    fs, path = lake.filesystem(manifest["paths"]["items"])
    table = pq.read_table(path, filesystem=fs, columns=[ITEM_IDX, text.TOKENS, text.TRAINED])
    idx = table.column(ITEM_IDX).to_numpy()
    num_items, width = len(idx), manifest["max_tokens"]
    tokens = np.zeros((num_items, width), dtype=np.int64)
    flat = table.column(text.TOKENS).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    tokens[idx] = flat.reshape(num_items, width)
    trained = np.zeros(num_items, dtype=bool)
    trained[idx] = table.column(text.TRAINED).to_numpy(zero_copy_only=False)
    return tokens, trained
