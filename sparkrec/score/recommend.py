"""The top-K table in original IDs: model recommendations for trained users, popularity for the rest."""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.columns import BUCKET, COLD_START, COUNT, ITEM_ID, ITEM_IDX, RANK, SCORE, USER_ID, USER_IDX
from sparkrec.score.popularity import fallback_recommendations, popular_items
from sparkrec.score.publish import user_bucket
from sparkrec.score.topk import top_k_indices


@dataclass(frozen=True)
class Recommendations:
    """The table to publish and the counts it must reconcile with."""

    table: DataFrame
    """``user_id`` string, ``item_id`` string, ``score`` float, ``rank`` int, ``cold_start``
    boolean, ``bucket`` int."""
    expected_rows: int
    users: int
    cold_start_users: int
    candidates: int


def recommend(spark: SparkSession, model: str, requested: DataFrame, item_vocab: DataFrame, train: DataFrame,
              exclude: DataFrame | None, k: int, *, only_trained_items: bool, num_items: int, buckets: int,
              batch_users: int, chunk_mib: float, users_per_task: int,
              content_items: DataFrame | None = None, histories: DataFrame | None = None) -> Recommendations:
    """Top-``k`` items for every requested user.

    Parameters
    ----------
    model : str
        Model version URI (``model_ref.resolve_model``).
    requested : DataFrame
        ``user_id`` string (unique, not null), ``user_idx`` long (null for IDs outside the vocabulary).
    item_vocab : DataFrame
        ``item_id`` string, ``item_idx`` long.
    train : DataFrame
        The train split (``user_idx``, ``item_idx``): who is trained, what is popular.
    exclude : DataFrame, optional
        ``user_idx``, ``item_idx`` pairs never recommended back (``user_id``, ``item_idx`` with
        ``histories``).
    only_trained_items : bool
        Candidates are the items in ``train``, else every item of the model (``num_items``).
    content_items : DataFrame, optional
        ``item_idx``: items the model scores from content (a hybrid model's cold items), added
        to the trained candidates.
    histories : DataFrame, optional
        For a history model: ``user_id``, ``items``, ``labels`` (``sparkrec.data.sequences``).
        Users are then keyed by ``user_id``, and every requested user with a history is scored
        from it, known to the vocabulary or not.

    Returns
    -------
    Recommendations
        ``table``: users the model can score (with training interactions; for a history model,
        with a history) get the model's ``min(k, candidates not excluded)`` best items (``score``
        = raw model score); the others (``cold_start`` true) get the ``k`` most popular items
        (``score`` = training interactions of the item).
    """
    key = USER_ID if histories is not None else USER_IDX
    scorable = histories.select(USER_ID) if histories is not None else train.select(USER_IDX).distinct()
    warm = requested.join(scorable, key, "left_semi")
    cold = requested.join(scorable, key, "left_anti")  # includes unknown IDs (null index)
    candidates = train.select(ITEM_IDX).distinct() if only_trained_items else None
    if candidates is not None and content_items is not None:
        candidates = candidates.unionByName(content_items.select(ITEM_IDX)).distinct()

    indices = top_k_indices(spark, model, warm.select(key), k, exclude, items=candidates, histories=histories,
                            key=key, batch_users=batch_users, chunk_mib=chunk_mib, users_per_task=users_per_task)
    by_model = indices.join(warm, key).withColumn(COLD_START, F.lit(False))
    popular = popular_items(train, k)
    by_popularity = fallback_recommendations(cold.select(USER_ID), popular).withColumn(COLD_START, F.lit(True))
    table = (by_model.unionByName(by_popularity, allowMissingColumns=True)
             .join(item_vocab, ITEM_IDX)
             .select(USER_ID, ITEM_ID, SCORE, RANK, COLD_START, user_bucket(USER_ID, buckets).alias(BUCKET)))

    num_candidates = candidates.count() if candidates is not None else num_items
    num_warm, num_cold = warm.count(), cold.count()
    expected = num_warm * min(k, num_candidates) - _shortfall(warm, exclude, candidates, k, num_candidates, key)
    return Recommendations(table, expected + num_cold * popular.count(), num_warm + num_cold, num_cold,
                           num_candidates)


def _shortfall(warm: DataFrame, exclude: DataFrame | None, candidates: DataFrame | None, k: int,
               num_candidates: int, key: str = USER_IDX) -> int:
    """Recommendations missing because a user has fewer than ``k`` unseen candidates."""
    if exclude is None:
        return 0
    seen = exclude.select(key, ITEM_IDX).distinct().join(warm.select(key), key, "left_semi")
    if candidates is not None:
        seen = seen.join(candidates, ITEM_IDX, "left_semi")
    elif num_candidates:  # items outside the model's catalogue are never candidates
        seen = seen.where(F.col(ITEM_IDX) < num_candidates)
    per_user = seen.groupBy(key).agg(F.count(F.lit(1)).alias(COUNT))
    full = min(k, num_candidates)
    missing = F.lit(full) - F.least(F.lit(full), F.lit(num_candidates) - F.col(COUNT))
    return per_user.agg(F.sum(missing)).first()[0] or 0
