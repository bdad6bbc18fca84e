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
from sparkrec.errors import SparkrecError
from sparkrec.score import model_ref
from sparkrec.score.worker import check_index_range, use_task_cpus

UNKNOWN_USER = "unknown_user"      # user ID not in the prepared vocabulary
UNKNOWN_ITEM = "unknown_item"
UNTRAINED_USER = "untrained_user"  # in the vocabulary, but no training interactions
UNTRAINED_ITEM = "untrained_item"
REASONS = (quality.NULL_USER, quality.NULL_ITEM, UNKNOWN_USER, UNKNOWN_ITEM, UNTRAINED_USER, UNTRAINED_ITEM)
PAIRS_PER_STEP = 65_536

_TRAINED_USER, _TRAINED_ITEM = "_trained_user", "_trained_item"


def _score(model: str):
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        use_task_cpus()
        net, meta = model_ref.cached_model(model)
        for frame in frames:
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


def score_index_pairs(spark: SparkSession, model: str, pairs: DataFrame) -> DataFrame:
    """The model's score for each (user_idx, item_idx) row, computed on the executors.

    Parameters
    ----------
    spark : SparkSession
    model : str
        Model version folder URI from ``sparkrec.score.model_ref.resolve_model(lake_uri, name)``.
    pairs : DataFrame
        ``user_idx``, ``item_idx`` (long, not null, within the model's vocabulary) and any other
        columns, which are passed through.

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
    return pairs.mapInPandas(_score(model), schema=schema)


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


def score_pairs(spark: SparkSession, model: str, indexed: DataFrame) -> DataFrame:
    """Scores for the scorable rows of ``index_pairs``' output, nulls for the rest.

    Returns
    -------
    DataFrame
        The input pairs' own columns, ``score`` float and ``prediction`` float (null when
        ``reason`` is set, see ``score_index_pairs``), ``reason`` string; one row per input row.
    """
    columns = [c for c in indexed.columns if c not in (USER_IDX, ITEM_IDX, REASON)]
    scorable = indexed.filter(F.col(REASON).isNull())
    scored = score_index_pairs(spark, model, scorable).select(*columns, SCORE, PREDICTION, REASON)
    unscored = (indexed.filter(F.col(REASON).isNotNull())
                .select(*columns, F.lit(None).cast("float").alias(SCORE),
                        F.lit(None).cast("float").alias(PREDICTION), REASON))
    return scored.unionByName(unscored)
