"""Resolve duplicate events and repeated (user, item) pairs into one row per pair."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_ID, RATING, TIMESTAMP, USER_ID

FIRST_TS = "first_ts"  # earliest event time of the pair, kept for the vocabularies' first_seen
EVENTS = "events"      # distinct events merged into the row
ROWS = "rows"          # valid log rows merged into the row (events plus exact duplicates)
POLICIES = ("latest", "first", "sum")


def dedupe(valid: DataFrame, policy: str) -> DataFrame:
    """One row per (user, item): drop identical events, then merge the pair's events by ``policy``.

    ``latest`` / ``first`` keep the event with the largest / smallest timestamp, ties (and logs
    without timestamps) resolved by the higher rating, so the result does not depend on row order.
    ``sum`` adds the ratings (implicit counts) and keeps the latest timestamp.

    Parameters
    ----------
    valid : DataFrame
        ``user_id``, ``item_id``, ``rating`` double, ``timestamp`` long (may be null).
    policy : {"latest", "first", "sum"}

    Returns
    -------
    DataFrame
        ``user_id``, ``item_id``, ``rating`` double, ``timestamp`` long, ``first_ts`` long,
        ``events`` long, ``rows`` long; hash-partitioned by ``user_id``.

    Notes
    -----
    Everything downstream groups by user (per-user counts, leave-last-out, the user vocabulary),
    so the one shuffle here partitions by user and every later per-user step reuses it. The three
    aggregations (event, pair and time, pair) all run on that partitioning, and all are hash
    aggregations (a ``max`` over a struct would force a sort-based one).
    """
    if policy not in POLICIES:
        raise ValueError(f"dedupe policy {policy!r} is not one of {POLICIES}; set prepare.dedupe")
    by_user = valid.repartition(USER_ID)
    events = by_user.groupBy(USER_ID, ITEM_ID, TIMESTAMP, RATING).agg(F.count(F.lit(1)).alias(ROWS))
    # Then one row per (pair, time): its best rating (the tie-break) or, for `sum`, the total.
    at_time = events.groupBy(USER_ID, ITEM_ID, TIMESTAMP).agg(
        (F.sum if policy == "sum" else F.max)(RATING).alias(RATING),
        F.count(F.lit(1)).alias(EVENTS), F.sum(ROWS).alias(ROWS))
    # Times are now unique per pair, so max_by / min_by are deterministic; logs without times
    # have one row per pair here (bad times were quarantined, so times are all null or none).
    time = F.coalesce(F.col(TIMESTAMP), F.lit(0))
    value = {"latest": F.max_by(RATING, time), "first": F.min_by(RATING, time), "sum": F.sum(RATING)}[policy]
    picked_time = F.min(TIMESTAMP) if policy == "first" else F.max(TIMESTAMP)
    return (at_time.groupBy(USER_ID, ITEM_ID)
            .agg(value.alias(RATING), picked_time.alias(TIMESTAMP), F.min(TIMESTAMP).alias(FIRST_TS),
                 F.sum(EVENTS).alias(EVENTS), F.sum(ROWS).alias(ROWS)))
