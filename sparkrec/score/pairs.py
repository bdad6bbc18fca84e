"""Pairs mode: the model's score for given (user, item) pairs; unscorable pairs get a reason.

A pair is scorable when both IDs are in the prepared vocabulary and both had training
interactions: an ID the model never trained on has an embedding still at its random
initialisation, so its score would be noise presented as a prediction.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, StructField, StructType

from sparkrec.columns import INDEX, ITEM_ID, ITEM_IDX, ORIGINAL_ID, PREDICTION, REASON, SCORE, USER_ID, USER_IDX
from sparkrec.data import quality
from sparkrec.data.sequences import ITEMS, LABELS
from sparkrec.errors import SparkrecError
from sparkrec.models.block_scoring import is_history_model
from sparkrec.models.store import read_meta
from sparkrec.score import model_ref
from sparkrec.score.worker import check_index_range, histories_of, use_task_cpus

UNKNOWN_USER = "unknown_user"      # user ID not in the prepared vocabulary
UNKNOWN_ITEM = "unknown_item"
UNTRAINED_USER = "untrained_user"  # in the vocabulary, but no training interactions
UNTRAINED_ITEM = "untrained_item"
NO_HISTORY = "no_history"          # history models: the user has no interactions to be scored from
REASONS = (quality.NULL_USER, quality.NULL_ITEM, UNKNOWN_USER, UNKNOWN_ITEM, UNTRAINED_USER, UNTRAINED_ITEM, NO_HISTORY)
PAIRS_PER_STEP = 65_536

_TRAINED_USER, _TRAINED_ITEM = "_trained_user", "_trained_item"


def _history_raw(net, frame: pd.DataFrame, key: str, width: int) -> torch.Tensor:
    """Raw scores of a frame of (user, item, history) rows: each user's vector once, then one dot
    product per pair. An item index of -1 (an item the model never trained on) scores the user
    part alone: for ratings, the user's baseline."""
    first = frame.drop_duplicates(key)
    row_of = pd.Series(np.arange(len(first)), index=first[key].to_numpy())
    who = histories_of(first[ITEMS], first[LABELS], width)
    items = torch.from_numpy(frame[ITEM_IDX].to_numpy(np.int64))
    with torch.inference_mode():
        vectors, constants = net.user_vectors(who.items, who.labels if not net.cfg.implicit else None)
        rows = torch.from_numpy(row_of.loc[frame[key].to_numpy()].to_numpy())
        raw = constants[rows].clone()
        known = items >= 0
        raw[known] = net.scores(vectors[rows][known], constants[rows][known], items[known])
        return raw


def _score(model: str, key: str):
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        use_task_cpus()
        net, meta = model_ref.cached_model(model)
        history_len = meta["model"]["max_len"] if is_history_model(meta["model"]) else None
        for frame in frames:
            if history_len:  # scored from the user's history: any user, items of the model's catalogue
                items = frame[ITEM_IDX].to_numpy(np.int64)
                check_index_range(items[items >= 0], meta["model"]["num_items"], ITEM_IDX)
                raw = _history_raw(net, frame, key, history_len)
                with torch.inference_mode():
                    prediction = net.to_score(raw)
                yield frame.drop(columns=[ITEMS, LABELS]).assign(**{SCORE: raw.numpy(), PREDICTION: prediction.numpy()})
                continue
            if frame[[USER_IDX, ITEM_IDX]].isna().any(axis=None):
                raise SparkrecError("score_index_pairs got null user_idx/item_idx; drop unindexed pairs first")
            users, items = frame[USER_IDX].to_numpy(np.int64), frame[ITEM_IDX].to_numpy(np.int64)
            check_index_range(users, meta["model"]["num_users"], USER_IDX)
            check_index_range(items, meta["model"]["num_items"], ITEM_IDX)
            raw = torch.empty(len(frame))
            with torch.inference_mode():
                for start in range(0, len(frame), PAIRS_PER_STEP):
                    stop = start + PAIRS_PER_STEP
                    raw[start:stop] = net(torch.from_numpy(users[start:stop]), torch.from_numpy(items[start:stop]))
                prediction = net.to_score(raw)
            yield frame.assign(**{SCORE: raw.numpy(), PREDICTION: prediction.numpy()})
    return run


def score_index_pairs(spark: SparkSession, model: str, pairs: DataFrame, histories: DataFrame | None = None,
                      key: str = USER_IDX) -> DataFrame:
    """The model's score for each (user_idx, item_idx) row, computed on the executors.

    Parameters
    ----------
    spark : SparkSession
    model : str
        Model version folder URI from ``sparkrec.score.model_ref.resolve_model(lake_uri, name)``.
    pairs : DataFrame
        ``user_idx``, ``item_idx`` (long, not null, within the model's vocabulary) and any other
        columns, which are passed through. For a history model the user is named by ``key``.
    histories : DataFrame, optional
        History models only (and required by them): ``key``, ``items``, ``labels`` (see
        ``sparkrec.data.sequences.user_histories``); a user without a row has an empty history.

    Returns
    -------
    DataFrame
        ``pairs``' columns plus ``score`` float (raw model score, the value ranking uses: a logit,
        or the value before the rating mapping) and ``prediction`` float (user-facing: interaction
        probability, or predicted rating in the trained rating range). One row per input row.

    Raises
    ------
    SparkrecError
        (when the result is computed) a null or out-of-range index.
    """
    schema = StructType(pairs.schema.fields + [StructField(SCORE, FloatType()), StructField(PREDICTION, FloatType())])
    if is_history_model(read_meta(model)["model"]):
        if histories is None:
            raise ValueError("a history model scores users from their histories: pass histories")
        # Rows of one user side by side, so each task computes a user's vector once per batch.
        pairs = pairs.join(histories.select(key, ITEMS, LABELS), key, "left").repartition(key).sortWithinPartitions(key)
    return pairs.mapInPandas(_score(model, key), schema=schema)


def index_pairs(pairs: DataFrame, user_vocab: DataFrame, item_vocab: DataFrame, train: DataFrame) -> DataFrame:
    """Attach dense indices to pairs in original IDs, and why a pair cannot be scored.

    Parameters
    ----------
    pairs : DataFrame
        ``user_id``, ``item_id`` (any type; matched as strings) and any other columns.
    user_vocab, item_vocab : DataFrame
        Prepared vocabularies (``original_id`` string, ``index`` long).
    train : DataFrame
        The prepared train split (``user_idx``, ``item_idx``).

    Returns
    -------
    DataFrame
        ``pairs``' columns plus ``user_idx`` long, ``item_idx`` long (null when unknown) and
        ``reason`` string: null when scorable, else the first of ``REASONS`` that applies.
    """
    users = user_vocab.select(F.col(ORIGINAL_ID).alias("_uid"), F.col(INDEX).alias(USER_IDX))
    items = item_vocab.select(F.col(ORIGINAL_ID).alias("_iid"), F.col(INDEX).alias(ITEM_IDX))
    trained_users = train.select(USER_IDX).distinct().withColumn(_TRAINED_USER, F.lit(True))
    trained_items = train.select(ITEM_IDX).distinct().withColumn(_TRAINED_ITEM, F.lit(True))
    joined = (pairs.withColumn("_uid", F.col(USER_ID).cast("string")).withColumn("_iid", F.col(ITEM_ID).cast("string"))
              .join(users, "_uid", "left").join(items, "_iid", "left")
              .join(trained_users, USER_IDX, "left").join(trained_items, ITEM_IDX, "left"))
    reason = (F.when(F.col(USER_ID).isNull(), quality.NULL_USER)
              .when(F.col(ITEM_ID).isNull(), quality.NULL_ITEM)
              .when(F.col(USER_IDX).isNull(), UNKNOWN_USER)
              .when(F.col(ITEM_IDX).isNull(), UNKNOWN_ITEM)
              .when(F.col(_TRAINED_USER).isNull(), UNTRAINED_USER)
              .when(F.col(_TRAINED_ITEM).isNull(), UNTRAINED_ITEM))
    return joined.select(*pairs.columns, USER_IDX, ITEM_IDX, reason.alias(REASON))


def index_history_pairs(pairs: DataFrame, item_vocab: DataFrame, train: DataFrame, histories: DataFrame,
                        num_items: int) -> DataFrame:
    """``index_pairs`` for a history model, which knows items only: a pair is scorable when its
    user has a history (known to the vocabulary or not) and its item had training interactions.

    Returns
    -------
    DataFrame
        ``pairs``' columns plus ``user_id`` string, ``item_idx`` long (null when unknown) and
        ``reason`` string: null when scorable, else the first of null user, null item,
        ``no_history``, ``unknown_item``, ``untrained_item`` that applies.
    """
    items = item_vocab.select(F.col(ORIGINAL_ID).alias("_iid"), F.col(INDEX).alias(ITEM_IDX))
    trained_items = (train.where(F.col(ITEM_IDX) < num_items).select(ITEM_IDX).distinct()
                     .withColumn(_TRAINED_ITEM, F.lit(True)))
    with_history = histories.select(F.col(USER_ID).alias("_hid")).withColumn("_history", F.lit(True))
    joined = (pairs.withColumn("_iid", F.col(ITEM_ID).cast("string"))
              .withColumn("_hid", F.col(USER_ID).cast("string"))
              .join(items, "_iid", "left").join(trained_items, ITEM_IDX, "left").join(with_history, "_hid", "left"))
    reason = (F.when(F.col(USER_ID).isNull(), quality.NULL_USER)
              .when(F.col(ITEM_ID).isNull(), quality.NULL_ITEM)
              .when(F.col("_history").isNull(), NO_HISTORY)
              .when(F.col(ITEM_IDX).isNull(), UNKNOWN_ITEM)
              .when(F.col(_TRAINED_ITEM).isNull(), UNTRAINED_ITEM))
    return joined.select(*pairs.columns, F.col("_hid").alias("_key"), ITEM_IDX, reason.alias(REASON))


def score_pairs(spark: SparkSession, model: str, indexed: DataFrame, histories: DataFrame | None = None,
                user_baselines: bool = False) -> DataFrame:
    """Scores for the scorable rows of ``index_pairs``' output, nulls for the rest.

    With ``histories`` (a history model, rows from ``index_history_pairs``) and
    ``user_baselines``, a pair whose item the model never trained on still gets the user's part
    of the prediction (explicit ratings: the user's baseline rating), its ``reason`` kept.

    Returns
    -------
    DataFrame
        The input pairs' own columns, ``score`` float and ``prediction`` float (null when
        ``reason`` is set, see ``score_index_pairs``), ``reason`` string; one row per input row.
    """
    internal = (USER_IDX, ITEM_IDX, REASON, "_key")
    columns = [c for c in indexed.columns if c not in internal]
    key = "_key" if histories is not None else USER_IDX
    if histories is not None:
        histories = histories.withColumnRenamed(USER_ID, "_key")
    item_only = F.col(REASON).isin(UNKNOWN_ITEM, UNTRAINED_ITEM) if user_baselines else F.lit(False)
    scorable = indexed.filter(F.col(REASON).isNull() | item_only)
    if histories is not None and user_baselines:  # the item part is left out for these pairs
        scorable = scorable.withColumn(ITEM_IDX, F.when(item_only, F.lit(-1)).otherwise(F.col(ITEM_IDX)))
    scored = score_index_pairs(spark, model, scorable, histories, key=key).select(*columns, SCORE, PREDICTION, REASON)
    unscored = (indexed.filter(F.col(REASON).isNotNull() & ~item_only)
                .select(*columns, F.lit(None).cast("float").alias(SCORE),
                        F.lit(None).cast("float").alias(PREDICTION), REASON))
    return scored.unionByName(unscored)
