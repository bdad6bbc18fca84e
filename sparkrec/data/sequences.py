"""Per-user interaction histories in time order, built in Spark, for history-based models.

- :func:`user_histories`: each user's latest ``max_len`` interactions (what a history model reads
  to score the user);
- :func:`history_windows`: each user's whole history cut into windows of ``width`` items from the
  latest backwards, consecutive windows sharing ``overlap`` items, so every interaction is a
  training target exactly once (a next-item model predicts positions 1.. of each window from the
  ones before it: overlap 1; a leave-one-out model predicts every position: overlap 0);
- :func:`item_counts`: training interactions per item (popularity sampling, logQ correction).

Order within a history is by event time, ties by item index (a log without times is ordered by
item index alone). Everything runs on the executors; nothing is collected on the driver.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import COUNT, ITEM_IDX, LABEL, TIMESTAMP, USER_IDX

ITEMS = "items"
LABELS = "labels"
_EVENTS = "_events"


def _ordered_events(interactions: DataFrame, key: str = USER_IDX) -> DataFrame:
    """``key`` and ``_events``: the user's (time, item, label) structs in time order."""
    time = F.coalesce(F.col(TIMESTAMP).cast("long"), F.lit(0)) if TIMESTAMP in interactions.columns else F.lit(0)
    label = F.col(LABEL).cast("float") if LABEL in interactions.columns else F.lit(1.0).cast("float")
    event = F.struct(time.alias("t"), F.col(ITEM_IDX).cast("long").alias("i"), label.alias("r"))
    return interactions.groupBy(key).agg(F.sort_array(F.collect_list(event)).alias(_EVENTS))


def user_histories(interactions: DataFrame, max_len: int, key: str = USER_IDX) -> DataFrame:
    """Each user's latest ``max_len`` interactions, oldest first.

    Parameters
    ----------
    interactions : DataFrame
        ``key`` (the user: ``user_idx``, or any column naming users), ``item_idx`` long,
        ``label`` float (optional: 1.0) and ``timestamp`` long (optional).

    Returns
    -------
    DataFrame
        ``key`` (each user with interactions once), ``items`` array<long>, ``labels``
        array<float> (aligned, at most ``max_len`` long).
    """
    events = F.col(_EVENTS)
    last = F.slice(events, F.greatest(F.size(events) - max_len + 1, F.lit(1)), max_len)
    return (_ordered_events(interactions, key).select(key, last.alias(_EVENTS))
            .select(key, F.col(f"{_EVENTS}.i").alias(ITEMS), F.col(f"{_EVENTS}.r").alias(LABELS)))


def history_windows(interactions: DataFrame, width: int, overlap: int) -> DataFrame:
    """Every user's whole history as windows of at most ``width`` interactions.

    Window k (k = 0 is the latest) ends ``k * (width - overlap)`` interactions before the last one,
    so consecutive windows share ``overlap`` items and the first window starts at the first
    interaction. A history of ``n`` items gives ``max(1, ceil((n - overlap) / (width - overlap)))``
    windows, every interaction past the first ``overlap`` of the history lying in exactly one
    window outside its first ``overlap`` positions.

    Returns
    -------
    DataFrame
        ``user_idx`` long, ``items`` array<long>, ``labels`` array<float> (oldest first, 1 to
        ``width`` long); users with fewer than ``overlap + 1`` interactions give no window.
    """
    if not 0 <= overlap < width:
        raise ValueError(f"need 0 <= overlap < width, got overlap={overlap}, width={width}")
    step = width - overlap
    events = F.col(_EVENTS)
    n = F.size(events)
    count = F.greatest(F.lit(1), F.ceil((n - overlap) / F.lit(float(step))).cast("int"))
    end = n - F.col("_k") * step
    start = F.greatest(F.lit(0), end - width)
    return (_ordered_events(interactions).where(n > overlap)
            .select(USER_IDX, events, F.explode(F.sequence(F.lit(0), count - 1)).alias("_k"))
            .select(USER_IDX, F.slice(events, start + 1, end - start).alias(_EVENTS))
            .select(USER_IDX, F.col(f"{_EVENTS}.i").alias(ITEMS), F.col(f"{_EVENTS}.r").alias(LABELS)))


def item_counts(interactions: DataFrame) -> DataFrame:
    """``item_idx`` long, ``count`` long: interactions per item (items without any are absent)."""
    return interactions.groupBy(ITEM_IDX).agg(F.count(F.lit(1)).alias(COUNT))
