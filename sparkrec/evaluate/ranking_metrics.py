"""Ranking metrics as Spark aggregations: one pass per protocol, averaged per user.

A *list* is one ranking shown to one user: in the full-ranking protocol one list per user (every
item the user has not interacted with, cut at max K); in the sampled protocol one list per test
positive (the positive plus its sampled negatives). Metrics are computed per list, averaged over
each user's lists, then over users, so a user with many test items weighs as much as one with few.

Definitions (``rank`` is 1-based; ``n_rel`` = relevant items of the list, >= 1; ``hits@K`` =
relevant items at rank <= K):

- ``hr@K``        1 if hits@K > 0 else 0
- ``precision@K`` hits@K / K (K even when the list is shorter than K, as in Spark's RankingMetrics)
- ``recall@K``    hits@K / n_rel
- ``ndcg@K``      DCG@K / IDCG@K, binary gain: DCG@K = sum over relevant ranks r <= K of
                  1 / log2(r + 1); IDCG@K = sum_{i=1..min(K, n_rel)} 1 / log2(i + 1)
- ``map@K``       AP@K = sum over relevant ranks r <= K of (hits@r / r), divided by min(K, n_rel)
- ``mrr``         1 / rank of the first relevant item, 0 if none is in the list (so in the
                  full-ranking protocol, whose lists stop at max K, it is MRR@maxK)

Precision, recall, NDCG and MAP@K equal Spark's ``RankingMetrics`` (``RankingEvaluator``) on the
same ordered lists; the tests check that. ``RankingEvaluator`` is not used here because it has no
hit rate, MRR or coverage, averages per list rather than per user, scores a user without test
items as 0 instead of leaving it out, and runs one Spark job per metric and K.

Ties are broken by :func:`rank_by_score` with a seeded hash of (user, item): blind to the label,
so equal scores neither help nor hurt in expectation (ranking the positive first among ties, a
common mistake, makes a constant model look perfect).
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, RANK, SCORE, USER_IDX

LIST_ID = "list_id"
NUM_RELEVANT = "num_relevant"
RANKING_METRICS = ("hr", "ndcg", "precision", "recall", "map")


def tie_break(seed: int, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> Column:
    """A per-(user, item) pseudo-random key: the order among equal scores, same on every run."""
    return F.xxhash64(F.lit(seed), F.col(user_col), F.col(item_col))


def rank_by_score(scored: DataFrame, seed: int, list_cols: Sequence[str] = (USER_IDX, LIST_ID),
                  score_col: str = SCORE, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> DataFrame:
    """Add a 1-based ``rank`` within each list: highest score first, ties by :func:`tie_break`.

    Null or NaN scores rank after every real score (Spark would otherwise sort NaN first in a
    descending order and hand an unscored item the top rank).

    Returns
    -------
    DataFrame
        ``scored``'s columns plus ``rank`` int.
    """
    score = F.col(score_col)
    unscored = F.when(score.isNull() | F.isnan(score), 1).otherwise(0)
    order = Window.partitionBy(*list_cols).orderBy(unscored.asc(), score.desc(), tie_break(seed, user_col, item_col).asc())
    return scored.withColumn(RANK, F.row_number().over(order))


def _idcg(k: int, num_relevant: Column) -> Column:
    ideal = F.sequence(F.lit(1), F.least(F.lit(k), num_relevant))
    return F.aggregate(ideal, F.lit(0.0), lambda acc, i: acc + 1.0 / F.log2(i + 1))


def per_list_metrics(lists: DataFrame, hits: DataFrame, ks: Sequence[int],
                     list_cols: Sequence[str] = (USER_IDX, LIST_ID)) -> DataFrame:
    """Every metric of every list, from the ranks at which its relevant items were found.

    Parameters
    ----------
    lists
        One row per list: ``list_cols`` and ``num_relevant`` (int >= 1: relevant items the list
        should contain, found or not). Lists with no row in ``hits`` score 0 everywhere.
    hits
        ``list_cols`` and ``rank`` of each relevant item found in the ranked list (unique ranks
        per list; relevant items ranked past the list's end are simply absent).
    ks
        Cut-offs.

    Returns
    -------
    DataFrame
        ``list_cols`` then ``hr@K``, ``ndcg@K``, ``precision@K``, ``recall@K``, ``map@K`` double
        for each K, and ``mrr`` double.
    """
    keys = list(list_cols)
    rank = F.col(RANK)
    within = Window.partitionBy(*keys).orderBy(rank)
    found = hits.select(*keys, rank).withColumn("hit_no", F.row_number().over(within))
    sums = [F.min(rank).alias("first_hit")]
    for k in ks:
        top = rank <= k
        sums += [
            F.sum(F.when(top, 1).otherwise(0)).alias(f"_hits{k}"),
            F.sum(F.when(top, 1.0 / F.log2(rank + 1)).otherwise(0.0)).alias(f"_dcg{k}"),
            F.sum(F.when(top, F.col("hit_no") / rank).otherwise(0.0)).alias(f"_ap{k}"),
        ]
    per_list = lists.select(*keys, NUM_RELEVANT).join(found.groupBy(*keys).agg(*sums), keys, "left")
    n_rel = F.col(NUM_RELEVANT)
    out = []
    for k in ks:
        hits_k = F.coalesce(F.col(f"_hits{k}"), F.lit(0))
        out += [
            F.when(hits_k > 0, 1.0).otherwise(0.0).alias(f"hr@{k}"),
            (F.coalesce(F.col(f"_dcg{k}"), F.lit(0.0)) / _idcg(k, n_rel)).alias(f"ndcg@{k}"),
            (hits_k / F.lit(float(k))).alias(f"precision@{k}"),
            (hits_k / n_rel).alias(f"recall@{k}"),
            (F.coalesce(F.col(f"_ap{k}"), F.lit(0.0)) / F.least(F.lit(k), n_rel)).alias(f"map@{k}"),
        ]
    out.append(F.coalesce(1.0 / F.col("first_hit"), F.lit(0.0)).alias("mrr"))
    return per_list.select(*keys, *out)


def metric_names(ks: Sequence[int]) -> list[str]:
    """Column names :func:`per_list_metrics` produces, in its order."""
    return [f"{m}@{k}" for k in ks for m in RANKING_METRICS] + ["mrr"]


def per_user_means(per_list: DataFrame, ks: Sequence[int], user_col: str = USER_IDX) -> DataFrame:
    """Each metric averaged over each user's lists: ``user_col``, the metrics, ``lists`` (count)."""
    return per_list.groupBy(user_col).agg(*[F.avg(F.col(f"`{n}`")).alias(n) for n in metric_names(ks)],
                                          F.count(F.lit(1)).alias("lists"))


def mean_over_users(per_list: DataFrame, ks: Sequence[int], user_col: str = USER_IDX) -> dict:
    """Average each metric over a user's lists, then over users (one small aggregation).

    Returns
    -------
    dict
        metric name -> mean (None when there are no lists), plus ``users`` and ``lists`` (int).
    """
    return average_users(per_user_means(per_list, ks, user_col), ks)


def average_users(per_user: DataFrame, ks: Sequence[int]) -> dict:
    """:func:`mean_over_users` from the output of :func:`per_user_means`."""
    names = metric_names(ks)
    row = per_user.agg(*[F.avg(F.col(f"`{n}`")).alias(n) for n in names],
                       F.count(F.lit(1)).alias("users"), F.sum("lists").alias("lists")).first()
    result = {n: row[n] for n in names}
    result["users"] = int(row["users"])
    result["lists"] = int(row["lists"] or 0)
    return result


def catalog_coverage(top_k: DataFrame, ks: Sequence[int], num_items: int) -> dict:
    """Share of the catalog recommended to at least one user in the top K.

    Parameters
    ----------
    top_k
        ``item_idx`` and ``rank`` of every recommendation shown.

    Returns
    -------
    dict
        ``coverage@K`` -> distinct items at rank <= K / ``num_items``.
    """
    aggs = [F.countDistinct(F.when(F.col(RANK) <= k, F.col(ITEM_IDX))).alias(f"coverage@{k}") for k in ks]
    row = top_k.agg(*aggs).first()
    return {name: row[name] / num_items for name in row.asDict()}
