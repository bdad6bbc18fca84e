"""Row validation: give each raw row a quarantine reason (or none) and parse the valid ones."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_ID, RATING, REASON, SPLIT, TIMESTAMP, USER_ID
from sparkrec.data import quality

_PARSED_RATING = "_parsed_rating"
_PARSED_TIME = "_parsed_time"
GIVEN_SPLITS = ("train", "validation", "test")
# Epoch seconds beyond this (year ~5138) are not times but garbage, and would overflow a long.
_MAX_EPOCH_S = 1e11


def _blank(col: Column) -> Column:
    return col.isNull() | (F.length(F.trim(col)) == 0)


def parse_rating(raw: Column) -> Column:
    """A rating string as a double; null when it is not a number (``NaN`` included; infinities
    parse and then fail the range check)."""
    value = raw.try_cast("double")
    return F.when(~F.isnan(value), value)


def parse_epoch_seconds(raw: Column) -> Column:
    """Epoch seconds (long) from a number of seconds or a timestamp string; null when neither.

    Numeric strings are seconds (fractions floored); anything else is read as an ISO-8601 / SQL
    timestamp (``2021-03-01T10:00:00Z``, ``2021-03-01 10:00:00``) in the session time zone (UTC).
    """
    number = raw.try_cast("double")
    in_range = number.isNotNull() & (F.abs(number) < _MAX_EPOCH_S)  # NaN compares false
    return (F.when(in_range, F.floor(number).cast("long"))
            .when(number.isNull(), F.unix_timestamp(F.try_to_timestamp(raw))))


def check_rows(raw: DataFrame, rating_min: float, rating_max: float) -> DataFrame:
    """Attach a quarantine reason to every row (null = valid) and the parsed rating and time.

    Reasons are tested in the order of ``quality.REASONS``; a row gets the first that applies.
    A rating or timestamp column absent from the log is not checked.

    Returns
    -------
    DataFrame
        The raw string columns of ``raw``, ``_parsed_rating`` double, ``_parsed_time`` long and
        ``reason`` string (one of ``quality.REASONS``, null for a valid row).
    """
    df = raw
    df = df.withColumn(_PARSED_RATING, parse_rating(F.col(RATING)) if RATING in raw.columns else F.lit(1.0))
    df = df.withColumn(_PARSED_TIME, parse_epoch_seconds(F.col(TIMESTAMP)) if TIMESTAMP in raw.columns
                       else F.lit(None).cast("long"))
    reason = (F.when(_blank(F.col(USER_ID)), quality.NULL_USER)
              .when(_blank(F.col(ITEM_ID)), quality.NULL_ITEM))
    if RATING in raw.columns:
        rating = F.col(_PARSED_RATING)
        reason = (reason.when(rating.isNull(), quality.BAD_RATING)
                  .when((rating < rating_min) | (rating > rating_max), quality.RATING_OUT_OF_RANGE))
    if TIMESTAMP in raw.columns:
        reason = reason.when(F.col(_PARSED_TIME).isNull(), quality.BAD_TIMESTAMP)
    if SPLIT in raw.columns:
        df = df.withColumn(SPLIT, F.lower(F.trim(F.col(SPLIT))))
        reason = reason.when(~F.coalesce(F.col(SPLIT).isin(*GIVEN_SPLITS), F.lit(False)), quality.BAD_SPLIT)
    return df.withColumn(REASON, reason)


def quarantined_rows(checked: DataFrame) -> DataFrame:
    """The rows with a reason, as logged.

    Returns
    -------
    DataFrame
        ``user_id``, ``item_id``, ``rating``, ``timestamp`` (strings as read; null when the log
        has no such column) and ``reason`` string.
    """
    raw = [F.col(c) if c in checked.columns else F.lit(None).cast("string").alias(c)
           for c in (USER_ID, ITEM_ID, RATING, TIMESTAMP)]
    return checked.filter(F.col(REASON).isNotNull()).select(*raw, REASON)


def valid_rows(checked: DataFrame) -> DataFrame:
    """The rows without a reason, parsed. IDs are kept verbatim (they are opaque keys).

    Returns
    -------
    DataFrame
        ``user_id`` string, ``item_id`` string, ``rating`` double (1.0 when the log has no
        rating column: every row is one event), ``timestamp`` long epoch seconds (null when the
        log has no timestamp column), and ``split`` string (lower case) when the log gives one.
    """
    given = [SPLIT] if SPLIT in checked.columns else []
    return checked.filter(F.col(REASON).isNull()).select(
        USER_ID, ITEM_ID, F.col(_PARSED_RATING).alias(RATING), F.col(_PARSED_TIME).alias(TIMESTAMP), *given)
