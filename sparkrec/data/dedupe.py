"""Resolve duplicate events and repeated (user, item) pairs into one row per pair."""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_ID, RATING, SPLIT, TIMESTAMP, USER_ID

FIRST_TS = "first_ts"  # earliest event time of the pair, kept for the vocabularies' first_seen
EVENTS = "events"      # distinct events merged into the row
ROWS = "rows"          # valid log rows merged into the row (events plus exact duplicates)
POLICIES = ("latest", "first", "sum")
_REPEAT, _RANK = "_repeat", "_rank"


def dedupe(valid: DataFrame, policy: str, partitions: int | None = None) -> DataFrame:
    """One row per (user, item): drop identical events, then merge the pair's events by ``policy``.

    ``latest`` / ``first`` keep the event with the largest / smallest timestamp, ties (and logs
    without timestamps) resolved by the higher rating, so the result does not depend on row order.
    ``sum`` adds the ratings of the distinct events (implicit counts) and keeps the latest time.

    Parameters
    ----------
    valid : DataFrame
        ``user_id``, ``item_id``, ``rating`` double, ``timestamp`` long (may be null).
    policy : {"latest", "first", "sum"}
    partitions : int, optional
        Partitions of the one shuffle by user (default ``spark.sql.shuffle.partitions``).

    Returns
    -------
    DataFrame
        ``user_id``, ``item_id``, ``rating`` double, ``timestamp`` long, ``first_ts`` long,
        ``events`` long, ``rows`` long; hash-partitioned by ``user_id`` into ``partitions``.

    Notes
    -----
    Everything downstream groups by user (per-user counts, leave-last-out, the user vocabulary),
    so the one shuffle here partitions by user and every later per-user step reuses it. Within
    it, one sort by (user, item, time, rating) does all the work: identical events are adjacent
    (``lag``), and the first row of a pair is the one ``latest`` / ``first`` keep. This is about
    a third cheaper than three hash aggregations (event, pair and time, pair) over string keys.
    """
    if policy not in POLICIES:
        raise ValueError(f"dedupe policy {policy!r} is not one of {POLICIES}; set prepare.dedupe")
    time_order = F.col(TIMESTAMP).asc() if policy == "first" else F.col(TIMESTAMP).desc()
    ordered = Window.partitionBy(USER_ID, ITEM_ID).orderBy(time_order, F.col(RATING).desc())
    pair = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    repeat = (F.lag(TIMESTAMP).over(ordered).eqNullSafe(F.col(TIMESTAMP))
              & (F.lag(RATING).over(ordered) == F.col(RATING)))
    by_user = valid.repartition(partitions, USER_ID) if partitions else valid.repartition(USER_ID)
    events = by_user.withColumn(_REPEAT, F.coalesce(repeat, F.lit(False)))
    rating, time = ((F.sum(F.when(~F.col(_REPEAT), F.col(RATING))).over(pair), F.max(TIMESTAMP).over(pair))
                    if policy == "sum" else (F.col(RATING), F.col(TIMESTAMP)))
    return (events
            .withColumn(_RANK, F.row_number().over(ordered))
            .withColumn(ROWS, F.count(F.lit(1)).over(pair))
            .withColumn(EVENTS, F.col(ROWS) - F.count(F.when(F.col(_REPEAT), 1)).over(pair))
            .select(USER_ID, ITEM_ID, rating.alias(RATING), time.alias(TIMESTAMP),
                    F.min(TIMESTAMP).over(pair).alias(FIRST_TS), EVENTS, ROWS, _RANK,
                    *([SPLIT] if SPLIT in valid.columns else []))  # a given split: the kept event's
            .filter(F.col(_RANK) == 1)
            .drop(_RANK))
