"""Top-K items for many users, distributed over Spark executors.

Users (with their seen items collected into one array) are spread over tasks; ``mapInPandas`` hands
each task Arrow batches of users, which go through ``sparkrec.models.block_scoring.top_k_items`` ``batch_users`` at a
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
from sparkrec.data.sequences import ITEMS, LABELS
from sparkrec.models.block_scoring import is_history_model, items_per_chunk, top_k_items
from sparkrec.models.store import read_meta
from sparkrec.score import model_ref
from sparkrec.score.worker import check_index_range, histories_of, use_task_cpus

SEEN = "_seen"


def _flatten_seen(seen: pd.Series) -> tuple[torch.Tensor, torch.Tensor]:
    """(position in the batch, item) for every seen item of a batch of users."""
    lengths = np.fromiter((0 if s is None else len(s) for s in seen), dtype=np.int64, count=len(seen))
    if not lengths.sum():
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    items = np.concatenate([s for s in seen if s is not None and len(s)]).astype(np.int64)
    rows = np.repeat(np.arange(len(seen)), lengths)
    return torch.from_numpy(rows), torch.from_numpy(items)


def _recommend(model_uri: str, k: int, batch_users: int, chunk_mib: float, allowed_bits: np.ndarray | None,
               key: str, history_len: int | None):
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        use_task_cpus()
        scorer = model_ref.cached_scorer(model_uri)
        num_users = model_ref.cached_model(model_uri)[1]["model"].get("num_users")
        allowed = None
        if allowed_bits is not None:
            allowed = torch.from_numpy(np.unpackbits(allowed_bits, count=scorer.num_items).astype(bool))
        chunk = items_per_chunk(scorer, batch_users, chunk_mib)
        for frame in frames:
            for start in range(0, len(frame), batch_users):
                part = frame.iloc[start:start + batch_users]
                keys = part[key].to_numpy()
                if history_len:  # a history model scores each user from their latest items
                    who = histories_of(part[ITEMS], part[LABELS], history_len)
                else:
                    users = part[USER_IDX].to_numpy(dtype=np.int64)
                    check_index_range(users, num_users, USER_IDX)
                    who = torch.from_numpy(users)
                seen_rows, seen_items = _flatten_seen(part[SEEN])
                scores, items, counts = top_k_items(scorer, who, k, chunk, seen_rows, seen_items, allowed)
                ranks = torch.arange(1, scores.shape[1] + 1).expand_as(items)
                keep = (ranks <= counts[:, None]).numpy()   # drop the excluded tail of users who saw almost all
                yield pd.DataFrame({
                    key: np.repeat(keys[:, None], items.shape[1], axis=1)[keep],
                    ITEM_IDX: items.numpy()[keep],
                    SCORE: scores.numpy()[keep],
                    RANK: ranks.numpy()[keep].astype(np.int32),
                })
    return run


def _allowed_bits(items: DataFrame, num_items: int) -> np.ndarray:
    """Candidate items as a bitmap (num_items / 8 bytes, small enough to ship with every task)."""
    idx = items.select(F.col(ITEM_IDX).cast("long")).distinct().toPandas()[ITEM_IDX].to_numpy()
    mask = np.zeros(num_items, dtype=bool)
    mask[idx[(idx >= 0) & (idx < num_items)]] = True
    return np.packbits(mask)


def top_k_indices(spark: SparkSession, model: str, users: DataFrame, k: int, exclude: DataFrame | None = None,
                  *, items: DataFrame | None = None, histories: DataFrame | None = None, key: str = USER_IDX,
                  batch_users: int = 512, chunk_mib: float = 16.0, users_per_task: int = 100_000) -> DataFrame:
    """The ``k`` best items for each user by the model's raw score, items in dense indices.

    Parameters
    ----------
    spark : SparkSession
    model : str
        Model version folder URI, as returned by ``sparkrec.models.store.resolve_model(lake_uri,
        name)`` on the driver (pinned: a model published meanwhile does not change this job).
    users : DataFrame
        ``key`` (duplicates are scored once): ``user_idx`` long below the model's ``num_users``,
        or, for a history model, any key its ``histories`` carry (a user unknown to the model is
        scored from their history alone).
    k : int
        Items per user.
    exclude : DataFrame, optional
        ``key``, ``item_idx``: pairs never recommended (e.g. the training interactions).
    items : DataFrame, optional
        ``item_idx``: the candidate items; None = every item of the model.
    histories : DataFrame, optional
        History models only (and required by them): ``key``, ``items`` array<long> (oldest
        first), ``labels`` array<float> (see ``sparkrec.data.sequences.user_histories``); a user
        without a row has an empty history.
    key : str
        The column naming a user.
    batch_users : int
        Users scored together against the catalog.
    chunk_mib : float
        Memory budget of one user batch x item chunk block (sizes the item chunks).
    users_per_task : int
        Users per Spark task (at least one task per default-parallelism slot).

    Returns
    -------
    DataFrame
        ``key``, ``item_idx`` long, ``score`` float (raw model score: a logit, or the value before
        the rating mapping), ``rank`` int (1 = best, consecutive, ordered by descending score).
        Each user gets ``min(k, candidates not excluded)`` distinct items.

    Notes
    -----
    Ties in score are broken arbitrarily (``torch.topk``), so tied items may swap between runs.
    """
    meta = read_meta(model)["model"]
    history_len = meta["max_len"] if is_history_model(meta) else None
    allowed = _allowed_bits(items, meta["num_items"]) if items is not None else None
    users = users.select(key).distinct()
    key_type = users.schema[key].dataType.simpleString()
    tasks = max(spark.sparkContext.defaultParallelism, math.ceil(users.count() / users_per_task))
    if exclude is None:
        users = users.withColumn(SEEN, F.lit(None).cast("array<long>"))
    else:
        seen = (exclude.select(key, F.col(ITEM_IDX).cast("long"))
                .groupBy(key).agg(F.collect_set(ITEM_IDX).alias(SEEN)))
        users = users.join(seen, key, "left")
    if history_len:
        if histories is None:
            raise ValueError("a history model scores users from their histories: pass histories")
        users = users.join(histories.select(key, ITEMS, LABELS), key, "left")
    schema = f"`{key}` {key_type}, {ITEM_IDX} long, {SCORE} float, {RANK} int"
    return users.repartition(tasks).mapInPandas(
        _recommend(model, k, batch_users, chunk_mib, allowed, key, history_len), schema=schema)
