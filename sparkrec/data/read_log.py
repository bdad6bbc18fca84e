"""Read a raw interaction log (Parquet, CSV, JSON lines or MovieLens) into prepare's input contract."""
from __future__ import annotations

import re

import fsspec
from pyspark.sql import DataFrame, DataFrameReader, SparkSession
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
FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV", "json": "JSON lines", "movielens": "MovieLens ratings"}
CORRUPT_RECORD = "_corrupt_record"  # the column Spark's JSON reader puts lines it cannot parse in
# Spark's messages when a file cannot be decoded at all (Parquet footers, compression, encodings).
_UNREADABLE = re.compile(r"not a Parquet file|CANNOT_READ_FILE_FOOTER|Could not read footer|FAILED_READ_FILE|"
                         r"MALFORMED_RECORD|Malformed records|Unexpected end of input|not in GZIP format|"
                         r"Invalid (?:UTF-8|byte)|CorruptedException|magic number", re.I)
_FILE_URI = re.compile(r"((?:file|hdfs|s3a?|gs|abfss?|wasbs?)://?[^\s'\"\]\[,]*?)(?=\.?\s|\.$|$|['\"\],])")
_CAUSE = re.compile(r"(?:Caused by: )?(?:[\w.]+\.)?(?:\w+(?:Exception|Error)): ([^\n]*(?:is not a|magic|Malformed|"
                    r"Unexpected|GZIP|Invalid)[^\n]*)")


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
    df = csv_reader(spark, header, sep).csv(path)
    if len(df.columns) != 4:
        raise SparkrecError(f"{path} has {len(df.columns)} columns (found {df.columns}); a MovieLens ratings "
                            f"file has user, item, rating, timestamp")
    return df.toDF(USER_ID, ITEM_ID, RATING, TIMESTAMP)


def csv_reader(spark: SparkSession, header: bool, sep: str = ",", multiline: bool = False) -> DataFrameReader:
    """A reader of RFC 4180 CSV (Python's csv, pandas, spreadsheets): ``"`` quotes a field and, doubled,
    stands for itself inside one (Spark's default escape is a backslash, which would keep
    ``"quote""user"`` as is). Values are kept as written: no trimming, UTF-8."""
    return (spark.read.option("header", header).option("sep", sep).option("quote", '"').option("escape", '"')
            .option("multiLine", multiline).option("encoding", "UTF-8"))


def _read_mapped(spark: SparkSession, uri: str, cfg: InputConfig) -> DataFrame:
    if cfg.format == "parquet":
        df = spark.read.parquet(uri)
    elif cfg.format == "csv":
        df = csv_reader(spark, cfg.csv_header, cfg.csv_delimiter, cfg.csv_multiline).csv(uri)
    else:  # json lines; strings keep e.g. "4.50" or "007" exactly as logged
        df = spark.read.option("primitivesAsString", True).json(uri)
        _check_parsed(df, uri, cfg)
    wanted = {USER_ID: cfg.columns.user, ITEM_ID: cfg.columns.item,
              RATING: cfg.columns.rating, TIMESTAMP: cfg.columns.timestamp, SPLIT: cfg.columns.split}
    keys = {USER_ID: "user", ITEM_ID: "item", RATING: "rating", TIMESTAMP: "timestamp", SPLIT: "split"}
    configured = {target: source for target, source in wanted.items() if source is not None}
    missing = [target for target, source in configured.items() if source not in df.columns]
    if missing and len(missing) == len(configured) and cfg.format != "parquet":
        files = _data_files(uri)
        raise SparkrecError(f"input.path {cfg.path}: {files[0] if files else uri} does not read as a "
                            f"{FORMAT_NAMES[cfg.format]} file with the configured columns (found "
                            f"{', '.join(df.columns)[:200]}); check input.format={cfg.format}"
                            f"{', input.csv_delimiter, input.csv_header' if cfg.format == 'csv' else ''} "
                            f"and input.columns")
    if missing:
        source = configured[missing[0]]
        raise SparkrecError(f"column {source!r} not found in {uri} (found {', '.join(df.columns)}); "
                            f"set input.columns.{keys[missing[0]]}")
    return df.select(*(F.col(f"`{source}`").alias(target) for target, source in wanted.items() if source))


def _data_files(uri: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.isfile(path):
        return [uri]
    return sorted(f"{uri.rstrip('/')}/{name[len(path.rstrip('/')) + 1:]}" for name in fs.find(path)
                  if not name.rsplit("/", 1)[-1].startswith(("_", ".")))


def unreadable_input(error: BaseException, cfg: InputConfig) -> SparkrecError | None:
    """A one-line reason for a Spark error raised while reading ``cfg.path``, naming the file and
    the format it is not; None when ``error`` is not about undecodable input.

    Spark reports such files as a multi-page ``Job aborted due to stage failure``; the file and
    the decoder's complaint are somewhere inside.
    """
    text = str(error)
    if not _UNREADABLE.search(text):
        return None
    files = _FILE_URI.findall(text)
    file = files[0] if files else lake.normalize_uri(cfg.path)
    cause = _CAUSE.search(text)
    why = f" ({' '.join(cause.group(1).split())[:200]})" if cause else ""
    return SparkrecError(f"input.path {cfg.path}: {file} is not a valid {FORMAT_NAMES[cfg.format]} file{why}; "
                         f"check input.format={cfg.format} or move the file out of input.path")


def _check_parsed(df: DataFrame, uri: str, cfg: InputConfig) -> None:
    """A JSON log in which no line parses has only Spark's corrupt-record column."""
    if cfg.format == "json" and CORRUPT_RECORD in df.columns and len(df.columns) == 1:
        files = _data_files(uri)
        raise SparkrecError(f"input.path {cfg.path}: no line of {files[0] if files else uri}"
                            f"{f' (or of the other {len(files) - 1} files)' if len(files) > 1 else ''} is a JSON "
                            f"object, so it is not a valid JSON lines file; check input.format={cfg.format}")


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
        The path does not exist, a configured column is missing, no MovieLens file is found, or a
        file is not of ``cfg.format`` (when Spark finds out reading the schema; a file it finds
        out about only when the rows are read fails the first action on the result, which
        ``unreadable_input`` turns into the same one-line reason).
    """
    uri = lake.normalize_uri(cfg.path)
    if not lake.exists(uri):
        raise SparkrecError(f"input.path {cfg.path} not found ({uri}); generate a log with "
                            f"jobs/generate_data.py or point input.path at your interaction log")
    try:
        df = _read_movielens(spark, uri) if cfg.format == "movielens" else _read_mapped(spark, uri, cfg)
    except SparkrecError:
        raise
    except Exception as e:  # e.g. schema inference read a file that is not of the format
        raise unreadable_input(e, cfg) or e
    return df.select(*(F.col(c).cast("string").alias(c) for c in df.columns))
