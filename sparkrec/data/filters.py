"""Optional row filters: implicit conversion and the iterated k-core."""
from __future__ import annotations

from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_ID, RATING, USER_ID


def positives(df: DataFrame, threshold: float) -> DataFrame:
    """Keep the rows whose rating reaches ``threshold`` (implicit conversion); columns unchanged."""
    return df.filter(F.col(RATING) >= threshold)


def _supported(df: DataFrame, key: str, minimum: int) -> DataFrame:
    return df.groupBy(key).count().filter(F.col("count") >= minimum).select(key)


def core_pass(df: DataFrame, min_user: int, min_item: int) -> DataFrame:
    """One filter pass: drop rows whose user has fewer than ``min_user`` rows or whose item has
    fewer than ``min_item`` rows in ``df`` (rows are distinct pairs, so rows = distinct items /
    users). Columns unchanged."""
    return (df.join(_supported(df, USER_ID, min_user), USER_ID, "left_semi")
            .join(_supported(df, ITEM_ID, min_item), ITEM_ID, "left_semi"))


@dataclass(frozen=True)
class CoreResult:
    rows: int
    """Rows left."""
    iterations: int
    """Filter passes run."""
    converged: bool
    """True when the last pass removed nothing: every user and item meets its minimum."""


def kcore(df: DataFrame, rows: int, min_user: int, min_item: int, max_iterations: int) -> tuple[DataFrame, CoreResult]:
    """Repeat ``core_pass`` until a pass removes nothing (a stable k-core) or ``max_iterations``.

    Removing a user can push an item below its minimum and back, so one pass is not enough.

    Parameters
    ----------
    df : DataFrame
        One row per (user, item), persisted by the caller (each pass reads it).
    rows : int
        ``df.count()``, already known to the caller.

    Returns
    -------
    (DataFrame, CoreResult)
        The filtered rows (same columns, persisted when any pass ran; the caller unpersists) and
        what the iteration did.
    """
    if min_user <= 1 and min_item <= 1:
        return df, CoreResult(rows, 0, True)
    current, iterations = df, 0
    while iterations < max_iterations:
        # Persist each pass so the next one reads it instead of replaying every earlier pass.
        nxt = core_pass(current, min_user, min_item).persist(StorageLevel.MEMORY_AND_DISK)
        left = nxt.count()
        if current is not df:
            current.unpersist()
        current, iterations = nxt, iterations + 1
        if left == rows:
            return current, CoreResult(left, iterations, True)
        rows = left
    return current, CoreResult(rows, iterations, False)
