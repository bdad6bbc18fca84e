"""The one definition of "most popular", served and evaluated alike.

Order: most training interactions first; ties go to the smaller item index (indices are numbered
by a hash of the ID, so this is blind to labels and the same on every run). The score job serves
the first K of this order to users without training interactions (``cold_start`` rows); the
evaluate job's popularity baseline ranks with the same order, skipping each user's known items,
so the report measures the list users actually get.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StructField, StructType

from sparkrec.columns import ITEM_IDX, RANK, SCORE


def item_popularity(train: DataFrame, item_col: str = ITEM_IDX) -> DataFrame:
    """Training interactions of every item of ``train``.

    Returns
    -------
    DataFrame
        ``item_col`` long (each item of ``train`` once), ``score`` double (its rows in ``train``).
    """
    return train.groupBy(item_col).agg(F.count(F.lit(1)).cast("double").alias(SCORE))


def popularity_order(item_col: str = ITEM_IDX) -> list[Column]:
    """The sort keys of "most popular" over :func:`item_popularity`'s output (a total order)."""
    return [F.col(SCORE).desc(), F.col(item_col).asc()]


def leading_items(item_scores: DataFrame, order: Sequence[Column], n: int, item_col: str = ITEM_IDX) -> DataFrame:
    """The first ``n`` items of a catalogue-wide order, numbered.

    A ranking shared by every user needs one order over the whole catalogue. Spark can only
    number such an order in a single task (a window without partitions), so the top ``n`` are
    taken by a distributed top-N (``orderBy().limit()``), collected (``n`` rows, at most the
    catalogue) and handed back as a small DataFrame to broadcast.

    Parameters
    ----------
    item_scores : DataFrame
        ``item_col`` and ``score``, one row per item.
    order : sequence of Column
        Sort keys; make them a total order (end with the item) so the result is deterministic.

    Returns
    -------
    DataFrame
        ``item_col``, ``score`` (types as in ``item_scores``) and ``rank`` int 1..min(n, items).
    """
    rows = item_scores.select(item_col, SCORE).orderBy(*order).limit(n).collect()
    schema = StructType([item_scores.schema[item_col], item_scores.schema[SCORE],
                         StructField(RANK, IntegerType(), False)])
    return item_scores.sparkSession.createDataFrame(
        [(r[item_col], r[SCORE], rank) for rank, r in enumerate(rows, start=1)], schema)


def popular_items(train: DataFrame, k: int, item_col: str = ITEM_IDX) -> DataFrame:
    """The ``k`` most popular items of ``train`` (see the module doc for the order).

    Returns
    -------
    DataFrame
        ``item_col`` long, ``score`` float (training interactions of the item), ``rank`` int
        (1..min(k, items in train)); at most ``k`` rows, so it broadcasts to every cold user.
    """
    top = leading_items(item_popularity(train, item_col), popularity_order(item_col), k, item_col)
    return top.select(item_col, F.col(SCORE).cast("float").alias(SCORE), RANK)


def fallback_recommendations(users: DataFrame, popular: DataFrame) -> DataFrame:
    """Every user in ``users`` gets the same ``popular`` list.

    Returns
    -------
    DataFrame
        ``users``' columns, then ``popular``'s (item, ``score``, ``rank``): one row per user and
        popular item.
    """
    return users.crossJoin(F.broadcast(popular))
