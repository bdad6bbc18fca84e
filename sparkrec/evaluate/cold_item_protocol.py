"""The cold-item protocol: test positives on items without training interactions, ranked among
those items only.

Cold items are the prepared items absent from the train split (``prepare.split.
cold_item_fraction`` sends every interaction of a seeded share of items to test). Each user with
training interactions and at least one relevant test item among them gets one list: every cold
item except its known interactions, cut at max K. Only a model that scores items from content
(a hybrid) can rank them; for any other model the protocol reports why it was not scored.
Popularity ranks them by training interactions, i.e. all tied at zero, so its order is the served
tie rule's (smaller item index first; indices follow a hash of the ID, so the order is arbitrary
and label-blind): what a recommender without content can do for a new item.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, RANK, SCORE, USER_IDX
from sparkrec.evaluate.baselines import global_order_top_k
from sparkrec.evaluate.candidates import full_ranking_lists
from sparkrec.evaluate.ranking_metrics import LIST_ID, mean_over_users, per_list_metrics
from sparkrec.score.content_items import scores_cold_items
from sparkrec.score.popularity import popularity_order
from sparkrec.score.topk import top_k_indices

POPULARITY = "popularity"


def cold_items(train: DataFrame, num_items: int) -> DataFrame:
    """Prepared items without training interactions.

    Returns
    -------
    DataFrame
        ``item_idx`` long, unique.
    """
    spark = train.sparkSession
    return (spark.range(num_items).select(F.col("id").alias(ITEM_IDX))
            .join(train.select(ITEM_IDX).distinct(), ITEM_IDX, "left_anti"))


def cold_positives(positives: DataFrame, train: DataFrame, cold: DataFrame) -> DataFrame:
    """Relevant test pairs of users with training interactions on cold items.

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``item_idx`` long, unique pairs.
    """
    return (positives.join(cold, ITEM_IDX, "left_semi")
            .join(train.select(USER_IDX).distinct(), USER_IDX, "left_semi"))


def _metrics(top: DataFrame, lists: DataFrame, positives: DataFrame, ks: list[int]) -> dict:
    hits = top.join(positives, [USER_IDX, ITEM_IDX]).select(USER_IDX, F.lit(0).cast("long").alias(LIST_ID), RANK)
    return mean_over_users(per_list_metrics(lists, hits, ks), ks)


def evaluate_cold_items(subject, train: DataFrame, positives: DataFrame, known: DataFrame, num_items: int,
                        ks: list[int]) -> dict:
    """The cold-item protocol for the evaluated model and popularity.

    Parameters
    ----------
    subject
        A ``TrainedModel`` (``model_uri``, ``meta``, ``name``); anything else (a top-K table) is
        reported as not scored.
    positives
        All relevant test pairs (``user_idx``, ``item_idx``).
    known
        Pairs excluded from ranking (``user_idx``, ``item_idx``).

    Returns
    -------
    dict
        ``cold_items`` (items without training interactions), ``positives``, ``users`` (with a
        cold positive and training interactions), and ``results`` {name: metric -> value plus
        ``users``, ``lists``; or ``{"scored": False, "reason": ...}``}; ``results`` is empty when
        there is no cold positive.
    """
    cold = cold_items(train, num_items).cache()
    relevant = cold_positives(positives, train, cold).cache()
    lists = full_ranking_lists(relevant).cache()
    out = {"cold_items": cold.count(), "positives": relevant.count(), "users": lists.count(), "results": {}}
    if out["users"]:
        users, depth = lists.select(USER_IDX), max(ks)
        meta = getattr(subject, "meta", None)
        if meta is None:
            out["results"][subject.name] = {"scored": False, "reason": "a top-K table ranks every candidate item "
                                            "together; evaluate the model (evaluate.source=model)"}
        elif not scores_cold_items(meta):
            out["results"][subject.name] = {
                "scored": False, "reason": f"a {meta['model']['kind']} model has no item content: items without "
                                           f"training interactions keep untrained embeddings (train.model=hybrid)"}
        else:
            top = top_k_indices(subject.spark, subject.model_uri, users, depth, known, items=cold)
            out["results"][subject.name] = _metrics(top, lists, relevant, ks)
        # Popularity: every cold item has 0 training interactions, so its order is the tie rule's.
        pop = global_order_top_k(cold.withColumn(SCORE, F.lit(0.0)), users, depth, known, popularity_order())
        out["results"][POPULARITY] = _metrics(pop, lists, relevant, ks)
    for df in (cold, relevant, lists):
        df.unpersist()
    return out
