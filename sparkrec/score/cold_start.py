"""Popularity fallback for users the model cannot score (no training interactions)."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import COUNT, ITEM_IDX
from sparkrec.score.columns import RANK, SCORE


def popular_items(train: DataFrame, k: int, item_col: str = ITEM_IDX) -> DataFrame:
    """The ``k`` items with the most training interactions (ties: smaller index first).

    Returns
    -------
    DataFrame
        ``item_col`` long, ``score`` float (training interactions of the item), ``rank`` int
        (1..min(k, items in train)); at most ``k`` rows, so it broadcasts to every cold user.
    """
    top = (train.groupBy(item_col).agg(F.count(F.lit(1)).alias(COUNT))
           .orderBy(F.desc(COUNT), F.asc(item_col)).limit(k).collect())  # k rows on the driver
    rows = [(int(r[item_col]), float(r[COUNT]), rank) for rank, r in enumerate(top, start=1)]
    return train.sparkSession.createDataFrame(rows, f"{item_col} long, {SCORE} float, {RANK} int")


def fallback_recommendations(users: DataFrame, popular: DataFrame) -> DataFrame:
    """Every user in ``users`` gets the same ``popular`` list.

    Returns
    -------
    DataFrame
        ``users``' columns, then ``popular``'s (item, ``score``, ``rank``): one row per user and
        popular item.
    """
    return users.crossJoin(F.broadcast(popular))
