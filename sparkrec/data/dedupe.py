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
    so the one shuffle here partitions by user and every later per-user step reuses it.
    """
    if policy not in POLICIES:
        raise ValueError(f"dedupe policy {policy!r} is not one of {POLICIES}; set prepare.dedupe")
    events = (valid.repartition(USER_ID)
              .groupBy(USER_ID, ITEM_ID, RATING, TIMESTAMP)
              .agg(F.count(F.lit(1)).alias(ROWS)))
    if policy == "sum":
        value, time = F.sum(RATING), F.max(TIMESTAMP)
    else:
        # Structs compare field by field: time first, then rating (negated for `first` so the
        # higher rating still wins a tie).
        sign = 1 if policy == "latest" else -1
        pick = (F.max if policy == "latest" else F.min)(F.struct(TIMESTAMP, (F.col(RATING) * sign).alias("r")))
        value, time = pick["r"] * sign, pick[TIMESTAMP]
    return (events.groupBy(USER_ID, ITEM_ID)
            .agg(value.alias(RATING), time.alias(TIMESTAMP), F.min(TIMESTAMP).alias(FIRST_TS),
                 F.count(F.lit(1)).alias(EVENTS), F.sum(ROWS).alias(ROWS)))
