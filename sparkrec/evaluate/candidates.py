"""What the ranking protocols rank: test positives, known interactions, sampled negatives.

Collision policy of the sampled negatives (NCF protocol, He et al. 2017; seeded like the NVIDIA
NCF example's ``_TestNegSampler``):

- a negative is never an item the user interacted with in any split (train, validation or test),
  so no true positive is ever scored as a negative;
- the negatives of one list are distinct items;
- lists are independent: one item may be a negative in several lists of the same user;
- a user with fewer uninteracted items than ``num_negatives`` gets all of them (a short list);
  :func:`sample_negatives` returns the target length so the caller can count short lists.

Items are drawn uniformly with a counter-based hash of (seed, round, user, list, draw), so the
result is the same row for row whatever the partitioning, and is built entirely in Spark.
"""
from __future__ import annotations

from typing import Optional

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.evaluate.ranking_metrics import LIST_ID, NUM_RELEVANT

TARGET = "target"
FREE = "free"
MAX_ROUNDS = 30


def interactions(*splits: DataFrame) -> DataFrame:
    """Distinct (user, item) pairs seen in any of ``splits``.

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``item_idx`` long, unique pairs.
    """
    pairs = [s.select(USER_IDX, ITEM_IDX) for s in splits]
    union = pairs[0]
    for p in pairs[1:]:
        union = union.unionByName(p)
    return union.distinct()


def relevant_test_pairs(test: DataFrame, known: DataFrame, threshold: Optional[float] = None) -> DataFrame:
    """The relevant test items of each user.

    A test row is relevant when ``label >= threshold`` (every row when ``threshold`` is None).
    Pairs already in ``known`` (train/validation: re-consumption of an item) are left out: the
    full-ranking protocol excludes known items from the ranking, so such a positive could never
    be found, and the sampled protocol must treat both protocols alike.

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``item_idx`` long, unique pairs.
    """
    relevant = test if threshold is None else test.where(F.col(LABEL) >= threshold)
    return relevant.select(USER_IDX, ITEM_IDX).distinct().join(known, [USER_IDX, ITEM_IDX], "left_anti")


def full_ranking_lists(positives: DataFrame) -> DataFrame:
    """One list per user holding test positives (list_id 0).

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``list_id`` long, ``num_relevant`` long.
    """
    return positives.groupBy(USER_IDX).agg(F.count(F.lit(1)).alias(NUM_RELEVANT)).withColumn(LIST_ID, F.lit(0).cast("long"))


def sampled_lists(positives: DataFrame) -> DataFrame:
    """One list per test positive, identified by the positive's item.

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``list_id`` long (= the positive's item_idx), ``item_idx`` long (the
        positive), ``num_relevant`` int (always 1).
    """
    return positives.select(USER_IDX, F.col(ITEM_IDX).alias(LIST_ID), ITEM_IDX, F.lit(1).alias(NUM_RELEVANT))


def sample_negatives(lists: DataFrame, interacted: DataFrame, num_items: int, num_negatives: int,
                     seed: int) -> tuple[DataFrame, DataFrame]:
    """Draw ``num_negatives`` distinct uninteracted items for every list (policy: module doc).

    Each round draws, for every list still short, enough uniform item ids to fill it given how
    many of the catalog's items are still free for that list, drops the rejected ones and keeps
    the first in draw order. Almost every list fills in the first round.

    Parameters
    ----------
    lists
        ``user_idx``, ``list_id`` (unique pairs).
    interacted
        Every (``user_idx``, ``item_idx``) the user interacted with, any split.
    num_items
        Catalog size; item ids are 0..num_items-1.

    Returns
    -------
    (DataFrame, DataFrame)
        Negatives ``user_idx``, ``list_id``, ``item_idx`` (long), and the lists with ``free``
        (items the user never interacted with) and ``target`` (negatives drawn: min(num_negatives,
        free)). Both are cached; unpersist the second when done.

    Notes
    -----
    Deterministic for the same inputs and seed, independent of partitioning: draws are hashes of
    (seed, round, user, list, draw number) and ties in draw order cannot occur.
    """
    seen = interacted.groupBy(USER_IDX).agg(F.count(F.lit(1)).alias("_seen"))
    targets = (lists.select(USER_IDX, LIST_ID).join(seen, USER_IDX, "left")
               .withColumn(TARGET, F.least(F.lit(num_negatives), F.lit(num_items) - F.coalesce("_seen", F.lit(0))))
               .withColumn(FREE, F.lit(num_items) - F.coalesce("_seen", F.lit(0)))
               .drop("_seen").cache())
    chosen = lists.sparkSession.createDataFrame([], f"{USER_IDX} long, {LIST_ID} long, {ITEM_IDX} long")
    for round_no in range(MAX_ROUNDS):
        have = chosen.groupBy(USER_IDX, LIST_ID).agg(F.count(F.lit(1)).alias("_have"))
        short = (targets.join(have, [USER_IDX, LIST_ID], "left")
                 .withColumn("_need", F.col(TARGET) - F.coalesce("_have", F.lit(0)))
                 .where(F.col("_need") > 0))
        if short.isEmpty():
            return chosen, targets
        # Expected uniform draws to hit `need` distinct items among the `left` still free is
        # num_items * (H(left) - H(left - need)) ~ num_items * ln((left + .5) / (left - need + .5))
        # (coupon collector); 20% + 4 slack fills most lists in this round, even a user who must
        # take every item it has left.
        left = F.col(FREE) - F.coalesce("_have", F.lit(0))
        expected = F.lit(float(num_items)) * F.log((left + 0.5) / (left - F.col("_need") + 0.5))
        draws = F.ceil(expected * 1.2).cast("int") + 4
        drawn = (short.select(USER_IDX, LIST_ID, "_need", F.explode(F.sequence(F.lit(0), draws - 1)).alias("_draw"))
                 .withColumn(ITEM_IDX, F.pmod(F.xxhash64(F.lit(seed), F.lit(round_no), USER_IDX, LIST_ID, "_draw"),
                                              F.lit(num_items)))
                 .join(interacted, [USER_IDX, ITEM_IDX], "left_anti")
                 .join(chosen, [USER_IDX, LIST_ID, ITEM_IDX], "left_anti")
                 .groupBy(USER_IDX, LIST_ID, ITEM_IDX).agg(F.min("_draw").alias("_draw"), F.first("_need").alias("_need")))
        order = Window.partitionBy(USER_IDX, LIST_ID).orderBy("_draw")
        fresh = (drawn.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= F.col("_need"))
                 .select(USER_IDX, LIST_ID, ITEM_IDX))
        chosen = chosen.unionByName(fresh).localCheckpoint()  # materialise; cuts the lineage that grows each round
    raise AssertionError(f"negative sampling did not fill every list in {MAX_ROUNDS} rounds")
