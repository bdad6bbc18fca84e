"""Read a raw interaction log (Parquet, CSV, JSON lines or MovieLens) into prepare's input contract."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import ITEM_ID, RATING, SPLIT, TIMESTAMP, USER_ID
from sparkrec.config.input import InputConfig
from sparkrec.errors import SparkrecError

# MovieLens releases by ratings file: (separator, header). Their column order is always
# user, item, rating, timestamp (epoch seconds).
MOVIELENS_FILES = {
    "ratings.csv": (",", True),   # ml-latest, ml-latest-small, ml-20m, ml-25m
    "u.data": ("\t", False),      # ml-100k
    "ratings.dat": ("::", False),  # ml-1m, ml-10m
}


def _find_movielens(uri: str) -> tuple[str, str]:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if name in MOVIELENS_FILES:
        return uri, name
    for name in MOVIELENS_FILES:
        candidate = lake.join(uri, name)
        if lake.exists(candidate):
            return candidate, name
    raise SparkrecError(f"no MovieLens ratings file in {uri} (looked for {', '.join(MOVIELENS_FILES)}); "
                        f"set input.path to the extracted MovieLens folder or file")


def _read_movielens(spark: SparkSession, uri: str) -> DataFrame:
    path, name = _find_movielens(uri)
    sep, header = MOVIELENS_FILES[name]
    df = spark.read.option("sep", sep).option("header", header).csv(path)
    if len(df.columns) != 4:
        raise SparkrecError(f"{path} has {len(df.columns)} columns (found {df.columns}); a MovieLens ratings "
                            f"file has user, item, rating, timestamp")
    return df.toDF(USER_ID, ITEM_ID, RATING, TIMESTAMP)


def _read_mapped(spark: SparkSession, uri: str, cfg: InputConfig) -> DataFrame:
    if cfg.format == "parquet":
        df = spark.read.parquet(uri)
    elif cfg.format == "csv":
        df = spark.read.option("header", cfg.csv_header).option("sep", cfg.csv_delimiter).csv(uri)
    else:  # json lines; strings keep e.g. "4.50" or "007" exactly as logged
        df = spark.read.option("primitivesAsString", True).json(uri)
    wanted = {USER_ID: cfg.columns.user, ITEM_ID: cfg.columns.item,
              RATING: cfg.columns.rating, TIMESTAMP: cfg.columns.timestamp, SPLIT: cfg.columns.split}
    keys = {USER_ID: "user", ITEM_ID: "item", RATING: "rating", TIMESTAMP: "timestamp", SPLIT: "split"}
    for target, source in wanted.items():
        if source is not None and source not in df.columns:
            raise SparkrecError(f"column {source!r} not found in {uri} (found {', '.join(df.columns)}); "
                                f"set input.columns.{keys[target]}")
    return df.select(*(F.col(f"`{source}`").alias(target) for target, source in wanted.items() if source))


def read_log(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """Read ``cfg.path`` and rename its columns to prepare's input names, values as strings.

    Values are cast to strings so that validation sees what was logged (``"n/a"``, ``" "``,
    ``"2021-03-01T10:00:00Z"``) whatever the file type, and the quarantine can keep it verbatim.

    Returns
    -------
    DataFrame
        ``user_id`` string, ``item_id`` string, then ``rating`` string and ``timestamp`` string
        only when the log has them (MovieLens always does; otherwise ``cfg.columns`` decides).

    Raises
    ------
    SparkrecError
        The path does not exist, a configured column is missing, or no MovieLens file is found.
    """
    uri = lake.normalize_uri(cfg.path)
    if not lake.exists(uri):
        raise SparkrecError(f"input.path {cfg.path} not found ({uri}); generate a log with "
                            f"jobs/generate_data.py or point input.path at your interaction log")
    df = _read_movielens(spark, uri) if cfg.format == "movielens" else _read_mapped(spark, uri, cfg)
    return df.select(*(F.col(c).cast("string").alias(c) for c in df.columns))
