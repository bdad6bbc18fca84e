"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) as an evaluate
baseline: a closed-form item-item model that is hard to beat on full-ranking metrics.

With X the binary user x item matrix of the training interactions and G = X^T X its Gram matrix,

    P = (G + lambda I)^-1,    B = I - P diag(1 / diag(P))    (so diag(B) = 0),

and user u's score of item i is ``x_u . B[:, i]``: the sum of the rows of B of the items u had.

Where the work runs: each Spark task adds up the Gram matrix of its users in dense row blocks
(numpy), the blocks are summed by key and collected; the driver inverts ``G + lambda I`` (an
``n x n`` float64 matrix: ``8 n^2`` bytes, the reason for ``evaluate.ease_max_items``); ``B`` is
broadcast to the executors, which score users in batches. Only items with training interactions
are columns of X (the others would have all-zero rows and columns).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, RANK, SCORE, USER_IDX
from sparkrec.evaluate.baselines import Recommender

ROWS_PER_BLOCK = 256
USERS_PER_STEP = 256
_HISTORY, _SEEN = "_history", "_seen"


def _gram_blocks(columns: np.ndarray):
    """Per partition of (user, items) rows: the partition's part of G as (block, rows) pairs."""
    n = len(columns)

    def run(rows) -> Iterator[tuple[int, np.ndarray]]:
        gram = np.zeros((n, n), dtype=np.float32)
        for row in rows:
            cols = np.searchsorted(columns, np.asarray(row[1], dtype=np.int64))
            gram[np.ix_(cols, cols)] += 1.0
        for block in range(0, n, ROWS_PER_BLOCK):
            yield block, gram[block:block + ROWS_PER_BLOCK]
    return run


def _user_scores(weights: np.ndarray, columns: np.ndarray, histories: pd.Series) -> np.ndarray:
    """[users, n] scores of a batch of users from their training items."""
    x = np.zeros((len(histories), len(columns)), dtype=np.float32)
    for row, items in enumerate(histories):
        if items is not None and len(items):
            x[row, np.searchsorted(columns, np.asarray(items, dtype=np.int64))] = 1.0
    return x @ weights


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """``B`` of EASE from the Gram matrix (float64 inverse, float32 result)."""
    g = gram.astype(np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


class Ease(Recommender):
    """EASE fitted on the training interactions (see module doc); binary, so it ranks (implicit
    data) and predicts no ratings."""

    name = "ease"

    def __init__(self, spark: SparkSession, columns: np.ndarray, gram: np.ndarray, lam: float, histories: DataFrame):
        self.spark, self.columns, self.gram, self.lam, self.histories = spark, columns, gram, lam, histories
        self.weights = spark.sparkContext.broadcast(ease_weights(gram, lam))

    @classmethod
    def fit(cls, train: DataFrame, lam: float) -> "Ease":
        """Fit on the (user_idx, item_idx) pairs of ``train`` (the caller checks the item count)."""
        spark = train.sparkSession
        pairs = train.select(USER_IDX, F.col(ITEM_IDX).cast("long")).distinct()
        columns = np.sort(pairs.select(ITEM_IDX).distinct().toPandas()[ITEM_IDX].to_numpy().astype(np.int64))
        histories = pairs.groupBy(USER_IDX).agg(F.collect_list(ITEM_IDX).alias(_HISTORY)).cache()
        # One reduced block per partition, fetched one partition at a time: the driver's JVM never
        # holds more than a block of rows (a plain collect() of the whole matrix overflows its heap).
        blocks = math.ceil(len(columns) / ROWS_PER_BLOCK)
        summed = (histories.rdd.map(tuple).mapPartitions(_gram_blocks(columns))
                  .reduceByKey(lambda a, b: a + b, numPartitions=blocks))
        gram = np.zeros((len(columns), len(columns)), dtype=np.float32)
        for start, rows in summed.toLocalIterator():
            gram[start:start + len(rows)] = rows
        return cls(spark, columns, gram, lam, histories)

    def with_lambda(self, lam: float) -> "Ease":
        """The same fit at another ``lambda`` (only the inverse is recomputed): for tuning."""
        self.weights.unpersist()
        return Ease(self.spark, self.columns, self.gram, lam, self.histories)

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        columns, weights = self.columns, self.weights  # task closures capture plain values, not the session

        def scores_of(histories):
            return _user_scores(weights.value, columns, histories)

        def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for frame in frames:
                first = frame.drop_duplicates(USER_IDX)
                row_of = pd.Series(np.arange(len(first)), index=first[USER_IDX].to_numpy())
                scores = scores_of(first[_HISTORY])
                items = frame[ITEM_IDX].to_numpy(np.int64)
                col = np.searchsorted(columns, items).clip(max=len(columns) - 1)
                known = columns[col] == items
                out = np.zeros(len(frame))  # an item without training interactions scores 0
                out[known] = scores[row_of.loc[frame[USER_IDX].to_numpy()].to_numpy()[known], col[known]]
                yield frame.drop(columns=[_HISTORY]).assign(**{SCORE: out})

        joined = pairs.join(self.histories, USER_IDX, "left").repartition(USER_IDX).sortWithinPartitions(USER_IDX)
        return joined.mapInPandas(run, schema=f"{', '.join(f'`{c}` {t}' for c, t in pairs.dtypes)}, {SCORE} double")

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        columns, weights = self.columns, self.weights

        def scores_of(histories):
            return _user_scores(weights.value, columns, histories)

        def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for frame in frames:
                for start in range(0, len(frame), USERS_PER_STEP):
                    part = frame.iloc[start:start + USERS_PER_STEP]
                    scores = scores_of(part[_HISTORY])
                    for row, seen in enumerate(part[_SEEN]):
                        if seen is not None and len(seen):
                            col = np.searchsorted(columns, np.asarray(seen, dtype=np.int64)).clip(max=len(columns) - 1)
                            scores[row, col[columns[col] == np.asarray(seen)]] = -np.inf
                    depth = min(k, len(columns))
                    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
                    top_scores = np.take_along_axis(scores, top, 1)
                    order = np.argsort(-top_scores, axis=1, kind="stable")
                    top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
                    keep = np.isfinite(top_scores)
                    ranks = np.cumsum(keep, axis=1)
                    yield pd.DataFrame({USER_IDX: np.repeat(part[USER_IDX].to_numpy(), depth)[keep.ravel()],
                                        ITEM_IDX: columns[top][keep], SCORE: top_scores[keep],
                                        RANK: ranks[keep].astype(np.int32)})

        seen = exclude.groupBy(USER_IDX).agg(F.collect_set(F.col(ITEM_IDX).cast("long")).alias(_SEEN))
        joined = users.select(USER_IDX).distinct().join(self.histories, USER_IDX, "left").join(seen, USER_IDX, "left")
        return joined.mapInPandas(run, schema=f"{USER_IDX} long, {ITEM_IDX} long, {SCORE} double, {RANK} int")
