"""Assign every interaction to exactly one of train / validation / test."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_ID, TIMESTAMP, USER_ID
from sparkrec.config.prepare import SplitConfig
from sparkrec.errors import SparkrecError
from sparkrec.hashing import unit_hash

from sparkrec.columns import SPLIT  # noqa: E402  (re-exported: the split column of prepare)
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
_COLD = "_cold"
_COLD_SALT = "cold_item"  # makes the cold-item hash independent of the pair hash of split_random


def is_cold_item(item: Column, fraction: float, seed: int) -> Column:
    """True for the items held out as cold-start items: a seeded hash of the original item ID
    below ``fraction``, so the same IDs are cold on every run and whatever the partitioning."""
    return unit_hash(seed, F.lit(_COLD_SALT), item) < fraction


def split_random(df: DataFrame, fractions: list[float], seed: int) -> DataFrame:
    """Each (user, item) pair goes to train / validation / test by a seeded hash of the pair.

    A hash instead of ``randomSplit`` keeps a pair in the same split on every run and whatever
    the partitioning. Returns ``df`` with ``split`` string added.
    """
    train, validation, _ = fractions
    u = unit_hash(seed, USER_ID, ITEM_ID)
    return df.withColumn(SPLIT, F.when(u < train, TRAIN).when(u < train + validation, VALIDATION).otherwise(TEST))


def split_leave_last_out(df: DataFrame, validation: bool, cold: Column | None = None) -> DataFrame:
    """Per user, the latest interaction is test and (with ``validation``) the second latest is
    validation; the rest is train. Ties in time go to the smaller ``item_id`` first.

    A user is held out from only while at least one interaction stays in train (2 rows for a
    test row, 3 for test and validation), so every evaluated user is known to the model.
    Rows where ``cold`` is true are test and are left out of the ranking and the counts.
    Returns ``df`` with ``split`` string added.
    """
    if cold is not None:  # rank each user's cold and warm rows apart; the cold ones become test below
        df = df.withColumn(_COLD, cold)
    by_user = Window.partitionBy(USER_ID, *([_COLD] if cold is not None else []))
    latest_first = by_user.orderBy(F.col(TIMESTAMP).desc(), F.col(ITEM_ID).asc())
    rank, n = F.row_number().over(latest_first), F.count(F.lit(1)).over(by_user)
    split = F.when((rank == 1) & (n >= 2), TEST)
    if validation:
        split = split.when((rank == 2) & (n >= 3), VALIDATION)
    if cold is None:
        return df.withColumn(SPLIT, split.otherwise(TRAIN))
    return df.withColumn(SPLIT, F.when(F.col(_COLD), TEST).otherwise(split.otherwise(TRAIN))).drop(_COLD)


def split_temporal(df: DataFrame, cutoffs: list[int]) -> DataFrame:
    """Global cutoffs: ``[test]`` or ``[validation, test]`` epoch seconds; an event at or after a
    cutoff goes to the later split. Returns ``df`` with ``split`` string added."""
    ts = F.col(TIMESTAMP)
    split = F.when(ts >= cutoffs[-1], TEST)
    if len(cutoffs) == 2:
        split = split.when(ts >= cutoffs[0], VALIDATION)
    return df.withColumn(SPLIT, split.otherwise(TRAIN))


def check_split_possible(cfg: SplitConfig, has_timestamp: bool, has_split: bool = False) -> None:
    """Refuse a time-based split of a log without event times, or a given split without its
    column, before any Spark work."""
    if (cfg.kind == "given") != has_split:
        raise SparkrecError(f"prepare.split.kind={cfg.kind} with input.columns.split "
                            f"{'unset' if not has_split else 'set'}: a log's own split is read with "
                            f"prepare.split.kind=given and input.columns.split naming its column, together")
    if cfg.kind in ("leave_last_out", "temporal") and not has_timestamp:
        raise SparkrecError(f"prepare.split.kind={cfg.kind} needs event times, but the log has no timestamp "
                            f"column (input.columns.timestamp is null); set input.columns.timestamp or use "
                            f"prepare.split.kind=random")


def assign_split(df: DataFrame, cfg: SplitConfig, seed: int) -> DataFrame:
    """Dispatch to the configured split.

    Parameters
    ----------
    df : DataFrame
        One row per (user, item) with ``user_id``, ``item_id``, ``timestamp`` long.

    Returns
    -------
    DataFrame
        ``df`` with ``split`` string added: one of ``train``, ``validation``, ``test``; every
        row of a cold item (``cfg.cold_item_fraction``) is ``test``.
    """
    cold = is_cold_item(F.col(ITEM_ID), cfg.cold_item_fraction, seed) if cfg.cold_item_fraction > 0 else None
    if cfg.kind == "leave_last_out":
        return split_leave_last_out(df, cfg.validation, cold)
    if cfg.kind == "given":  # validated and lower-cased when the rows were checked
        split = df
    else:
        split = split_random(df, cfg.fractions, seed) if cfg.kind == "random" else split_temporal(df, cfg.cutoffs)
    return split if cold is None else split.withColumn(SPLIT, F.when(cold, TEST).otherwise(F.col(SPLIT)))
