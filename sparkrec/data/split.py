"""Assign every interaction to exactly one of train / validation / test."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_ID, TIMESTAMP, USER_ID
from sparkrec.config.prepare import SplitConfig
from sparkrec.errors import SparkrecError

SPLIT = "split"
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)


def _unit_hash(seed: int, *cols: str) -> Column:
    """A uniform [0, 1) number that is a pure function of (seed, cols): stable across runs."""
    bits = F.pmod(F.xxhash64(F.lit(seed), *cols), F.lit(1 << 53))
    return bits.cast("double") / float(1 << 53)


def split_random(df: DataFrame, fractions: list[float], seed: int) -> DataFrame:
    """Each (user, item) pair goes to train / validation / test by a seeded hash of the pair.

    A hash instead of ``randomSplit`` keeps a pair in the same split on every run and whatever
    the partitioning. Returns ``df`` with ``split`` string added.
    """
    train, validation, _ = fractions
    u = _unit_hash(seed, USER_ID, ITEM_ID)
    return df.withColumn(SPLIT, F.when(u < train, TRAIN).when(u < train + validation, VALIDATION).otherwise(TEST))


def split_leave_last_out(df: DataFrame, validation: bool) -> DataFrame:
    """Per user, the latest interaction is test and (with ``validation``) the second latest is
    validation; the rest is train. Ties in time go to the smaller ``item_id`` first.

    A user is held out from only while at least one interaction stays in train (2 rows for a
    test row, 3 for test and validation), so every evaluated user is known to the model.
    Returns ``df`` with ``split`` string added.
    """
    by_user = Window.partitionBy(USER_ID)
    latest_first = by_user.orderBy(F.col(TIMESTAMP).desc(), F.col(ITEM_ID).asc())
    rank, n = F.row_number().over(latest_first), F.count(F.lit(1)).over(by_user)
    split = F.when((rank == 1) & (n >= 2), TEST)
    if validation:
        split = split.when((rank == 2) & (n >= 3), VALIDATION)
    return df.withColumn(SPLIT, split.otherwise(TRAIN))


def split_temporal(df: DataFrame, cutoffs: list[int]) -> DataFrame:
    """Global cutoffs: ``[test]`` or ``[validation, test]`` epoch seconds; an event at or after a
    cutoff goes to the later split. Returns ``df`` with ``split`` string added."""
    ts = F.col(TIMESTAMP)
    split = F.when(ts >= cutoffs[-1], TEST)
    if len(cutoffs) == 2:
        split = split.when(ts >= cutoffs[0], VALIDATION)
    return df.withColumn(SPLIT, split.otherwise(TRAIN))


def check_split_possible(cfg: SplitConfig, has_timestamp: bool) -> None:
    """Refuse a time-based split of a log without event times, before any Spark work."""
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
        ``df`` with ``split`` string added: one of ``train``, ``validation``, ``test``.
    """
    if cfg.kind == "random":
        return split_random(df, cfg.fractions, seed)
    if cfg.kind == "leave_last_out":
        return split_leave_last_out(df, cfg.validation)
    return split_temporal(df, cfg.cutoffs)
