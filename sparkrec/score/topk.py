"""Top-K items for many users, distributed over Spark executors.

Users (with their seen items collected into one array) are spread over tasks; ``mapInPandas`` hands
each task Arrow batches of users, which go through ``block_scoring.top_k_items`` ``batch_users`` at a
time. The model is loaded once per Python worker process (Spark reuses workers across tasks) and
cached by its version URI, which is immutable, so every task scores with the same weights.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, RANK, SCORE, USER_IDX
from sparkrec.models.store import read_meta
from sparkrec.score import model_ref
from sparkrec.score.block_scoring import items_per_chunk, top_k_items
from sparkrec.score.worker import check_index_range, use_task_cpus

SEEN = "_seen"
OUTPUT_SCHEMA = f"{USER_IDX} long, {ITEM_IDX} long, {SCORE} float, {RANK} int"


def _flatten_seen(seen: pd.Series) -> tuple[torch.Tensor, torch.Tensor]:
    """(position in the batch, item) for every seen item of a batch of users."""
    lengths = np.fromiter((0 if s is None else len(s) for s in seen), dtype=np.int64, count=len(seen))
    if not lengths.sum():
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    items = np.concatenate([s for s in seen if s is not None and len(s)]).astype(np.int64)
    rows = np.repeat(np.arange(len(seen)), lengths)
    return torch.from_numpy(rows), torch.from_numpy(items)


def _recommend(model_uri: str, k: int, batch_users: int, chunk_mib: float, allowed_bits: np.ndarray | None):
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        use_task_cpus()
        scorer = model_ref.cached_scorer(model_uri)
        num_users = model_ref.cached_model(model_uri)[1]["model"]["num_users"]
        allowed = None
        if allowed_bits is not None:
            allowed = torch.from_numpy(np.unpackbits(allowed_bits, count=scorer.num_items).astype(bool))
        chunk = items_per_chunk(scorer, batch_users, chunk_mib)
        for frame in frames:
            for start in range(0, len(frame), batch_users):
                part = frame.iloc[start:start + batch_users]
                users = part[USER_IDX].to_numpy(dtype=np.int64)
                check_index_range(users, num_users, USER_IDX)
                users = torch.from_numpy(users)
                seen_rows, seen_items = _flatten_seen(part[SEEN])
                scores, items, counts = top_k_items(scorer, users, k, chunk, seen_rows, seen_items, allowed)
                ranks = torch.arange(1, scores.shape[1] + 1).expand_as(items)
                keep = ranks <= counts[:, None]   # drop the excluded tail of users who saw almost all
                yield pd.DataFrame({
                    USER_IDX: users[:, None].expand_as(items)[keep].numpy(),
                    ITEM_IDX: items[keep].numpy(),
                    SCORE: scores[keep].numpy(),
                    RANK: ranks[keep].numpy().astype(np.int32),
                })
    return run


def _allowed_bits(items: DataFrame, num_items: int) -> np.ndarray:
    """Candidate items as a bitmap (num_items / 8 bytes, small enough to ship with every task)."""
    idx = items.select(F.col(ITEM_IDX).cast("long")).distinct().toPandas()[ITEM_IDX].to_numpy()
    mask = np.zeros(num_items, dtype=bool)
    mask[idx[(idx >= 0) & (idx < num_items)]] = True
    return np.packbits(mask)


def top_k_indices(spark: SparkSession, model: str, users: DataFrame, k: int, exclude: DataFrame | None = None,
                  *, items: DataFrame | None = None, batch_users: int = 512, chunk_mib: float = 16.0,
                  users_per_task: int = 100_000) -> DataFrame:
    """The ``k`` best items for each user by the model's raw score, all in dense indices.

    Parameters
    ----------
    spark : SparkSession
    model : str
        Model version folder URI, as returned by ``sparkrec.score.model_ref.resolve_model(lake_uri,
        name)`` on the driver (pinned: a model published meanwhile does not change this job).
    users : DataFrame
        ``user_idx`` (long; duplicates are scored once). Indices must be below the model's
        ``num_users``.
    k : int
        Items per user.
    exclude : DataFrame, optional
        ``user_idx``, ``item_idx``: pairs never recommended (e.g. the training interactions).
    items : DataFrame, optional
        ``item_idx``: the candidate items; None = every item of the model.
    batch_users : int
        Users scored together against the catalog.
    chunk_mib : float
        Memory budget of one user batch x item chunk block (sizes the item chunks).
    users_per_task : int
        Users per Spark task (at least one task per default-parallelism slot).

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``item_idx`` long, ``score`` float (raw model score: a logit, or the
        value before the rating mapping), ``rank`` int (1 = best, consecutive, ordered by
        descending score). Each user gets ``min(k, candidates not excluded)`` distinct items.

    Notes
    -----
    Ties in score are broken arbitrarily (``torch.topk``), so tied items may swap between runs.
    """
    num_items = read_meta(model)["model"]["num_items"]
    allowed = _allowed_bits(items, num_items) if items is not None else None
    users = users.select(F.col(USER_IDX).cast("long")).distinct()
    tasks = max(spark.sparkContext.defaultParallelism, math.ceil(users.count() / users_per_task))
    if exclude is None:
        users = users.withColumn(SEEN, F.lit(None).cast("array<long>"))
    else:
        seen = (exclude.select(F.col(USER_IDX).cast("long"), F.col(ITEM_IDX).cast("long"))
                .groupBy(USER_IDX).agg(F.collect_set(ITEM_IDX).alias(SEEN)))
        users = users.join(seen, USER_IDX, "left")
    return users.repartition(tasks).mapInPandas(
        _recommend(model, k, batch_users, chunk_mib, allowed), schema=OUTPUT_SCHEMA)
