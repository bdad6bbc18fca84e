"""Reading every supported log format, row validation and dedupe policies (prepare steps 1-2)."""
import datetime as dt

import numpy as np
import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from sparkrec.config import load_config
from sparkrec.data import quality
from sparkrec.data.dedupe import dedupe
from sparkrec.data.prepare import run_prepare
from sparkrec.data.read_log import FORMAT_NAMES, read_log
from sparkrec.data.validate import check_rows, quarantined_rows, valid_rows
from sparkrec.errors import SparkrecError

pytestmark = pytest.mark.spark

# The same four events in every format: user, item, rating, epoch seconds.
EVENTS = [("1", "10", "4.0", "964982703"), ("1", "20", "3.5", "964982224"), ("2", "10", "5.0", "964983815")]


def input_cfg(path, *overrides):
    return load_config(None, [f"input.path={path}", *overrides]).input


def as_tuples(df):
    return sorted(tuple(r) for r in df.collect())


@pytest.mark.parametrize("name, line", [
    ("ratings.csv", "{},{},{},{}"),
    ("u.data", "{}\t{}\t{}\t{}"),
    ("ratings.dat", "{}::{}::{}::{}"),
])
def test_movielens_layouts(spark, tmp_path, name, line):
    header = "userId,movieId,rating,timestamp\n" if name == "ratings.csv" else ""
    (tmp_path / name).write_text(header + "".join(line.format(*e) + "\n" for e in EVENTS))
    (tmp_path / "movies.csv").write_text("movieId,title\n10,A\n")  # present in real releases; ignored
    df = read_log(spark, input_cfg(tmp_path, "input.format=movielens"))
    assert df.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert as_tuples(df) == sorted(EVENTS)
    # A path to the ratings file itself works too.
    assert read_log(spark, input_cfg(tmp_path / name, "input.format=movielens")).count() == 3


def test_movielens_folder_without_ratings_file(spark, tmp_path):
    (tmp_path / "movies.csv").write_text("movieId,title\n")
    with pytest.raises(SparkrecError, match=r"no MovieLens ratings file.*ratings\.csv, u\.data, ratings\.dat"):
        read_log(spark, input_cfg(tmp_path, "input.format=movielens"))


def test_typed_parquet_columns_are_mapped_and_parse_back(spark, tmp_path):
    when = dt.datetime(2021, 3, 1, 10, 0, 0)
    spark.createDataFrame([(7, "a", 4.5, when, "extra")], "uid int, iid string, stars double, ts timestamp, x string") \
        .write.parquet(str(tmp_path / "log"))
    cfg = input_cfg(tmp_path / "log", "input.columns.user=uid", "input.columns.item=iid",
                    "input.columns.rating=stars", "input.columns.timestamp=ts")
    raw = read_log(spark, cfg)
    assert raw.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert dict(raw.dtypes) == {c: "string" for c in raw.columns}
    valid = valid_rows(check_rows(raw, 1.0, 5.0)).collect()
    assert valid == [Row(user_id="7", item_id="a", rating=4.5,
                         timestamp=int(when.replace(tzinfo=dt.timezone.utc).timestamp()))]


def test_csv_with_delimiter_and_json_lines(spark, tmp_path):
    (tmp_path / "log.csv").write_text("who;what;when\n" + "".join(f"{u};{i};{t}\n" for u, i, _, t in EVENTS))
    csv = read_log(spark, input_cfg(tmp_path / "log.csv", "input.format=csv", "input.csv_delimiter=;",
                                    "input.columns.user=who", "input.columns.item=what",
                                    "input.columns.rating=null", "input.columns.timestamp=when"))
    assert csv.columns == ["user_id", "item_id", "timestamp"]
    assert as_tuples(csv) == sorted((u, i, t) for u, i, _, t in EVENTS)

    (tmp_path / "log.json").write_text('{"user_id": 1, "item_id": "10", "rating": 4.50}\n'
                                       '{"user_id": null, "item_id": "20", "rating": "x"}\n')
    js = read_log(spark, input_cfg(tmp_path / "log.json", "input.format=json", "input.columns.timestamp=null"))
    assert as_tuples(js.fillna("<null>")) == [("1", "10", "4.50"), ("<null>", "20", "x")]


def test_missing_column_and_path_are_clear_errors(spark, tmp_path):
    spark.createDataFrame([("u", "i")], "uid string, item_id string").write.parquet(str(tmp_path / "log"))
    with pytest.raises(SparkrecError, match=r"column 'user_id' not found .*found uid, item_id.*input\.columns\.user"):
        read_log(spark, input_cfg(tmp_path / "log"))
    with pytest.raises(SparkrecError, match=r"input\.path .*nope not found"):
        read_log(spark, input_cfg(tmp_path / "nope"))


def test_each_bad_row_gets_its_reason_and_keeps_its_raw_values(spark):
    rows = [
        # user, item, rating, timestamp, expected reason
        ("u1", "i1", "4", "1600000000", None),
        ("u1", "i2", "2.5", "2021-03-01T10:00:00Z", None),
        ("u2", "i1", "1", "1600000000.9", None),
        (None, "i1", "4", "1600000000", quality.NULL_USER),
        ("  ", "i1", "4", "1600000000", quality.NULL_USER),
        ("u3", "", "4", "1600000000", quality.NULL_ITEM),
        ("u3", None, "n/a", "bad", quality.NULL_ITEM),  # first reason wins
        ("u3", "i1", "n/a", "1600000000", quality.BAD_RATING),
        ("u3", "i1", "NaN", "1600000000", quality.BAD_RATING),
        ("u3", "i1", None, "1600000000", quality.BAD_RATING),
        ("u3", "i1", "7", "1600000000", quality.RATING_OUT_OF_RANGE),
        ("u3", "i1", "0.5", "1600000000", quality.RATING_OUT_OF_RANGE),
        ("u3", "i1", "Infinity", "1600000000", quality.RATING_OUT_OF_RANGE),
        ("u3", "i1", "3", "not-a-time", quality.BAD_TIMESTAMP),
        ("u3", "i1", "3", None, quality.BAD_TIMESTAMP),
        ("u3", "i1", "3", "1e30", quality.BAD_TIMESTAMP),
    ]
    schema = "user_id string, item_id string, rating string, timestamp string"
    raw = spark.createDataFrame([r[:4] for r in rows], schema)
    checked = check_rows(raw, 1.0, 5.0)
    got = [r["reason"] for r in checked.collect()]
    assert got == [r[4] for r in rows]

    expected_bad = [Row(user_id=u, item_id=i, rating=r, timestamp=t, reason=why) for u, i, r, t, why in rows if why]
    assertDataFrameEqual(quarantined_rows(checked), expected_bad)
    assertDataFrameEqual(valid_rows(checked), [
        Row(user_id="u1", item_id="i1", rating=4.0, timestamp=1600000000),
        Row(user_id="u1", item_id="i2", rating=2.5, timestamp=1614592800),
        Row(user_id="u2", item_id="i1", rating=1.0, timestamp=1600000000),
    ])


def test_implicit_log_without_rating_or_time(spark):
    raw = spark.createDataFrame([("u1", "i1"), ("u1", ""), ("u2", "i1")], "user_id string, item_id string")
    checked = check_rows(raw, 1.0, 5.0)
    assertDataFrameEqual(quarantined_rows(checked),
                         [Row(user_id="u1", item_id="", rating=None, timestamp=None, reason=quality.NULL_ITEM)])
    assertDataFrameEqual(valid_rows(checked), [Row(user_id="u1", item_id="i1", rating=1.0, timestamp=None),
                                               Row(user_id="u2", item_id="i1", rating=1.0, timestamp=None)])


@pytest.fixture(scope="module")
def repeated(spark):
    """u1/i1: an exact duplicate (dropped by every policy), ties in time; u2/i2 once."""
    return spark.createDataFrame([
        ("u1", "i1", 3.0, 100), ("u1", "i1", 3.0, 100),   # exact duplicate
        ("u1", "i1", 2.0, 300), ("u1", "i1", 4.0, 300),   # latest time, tied: higher rating wins
        ("u1", "i1", 1.0, 50), ("u1", "i1", 5.0, 50),     # earliest time, tied
        ("u2", "i2", 2.0, 10),
    ], "user_id string, item_id string, rating double, timestamp long")


@pytest.mark.parametrize("policy, rating, timestamp", [("latest", 4.0, 300), ("first", 5.0, 50), ("sum", 15.0, 300)])
def test_dedupe_policies(repeated, policy, rating, timestamp):
    out = dedupe(repeated, policy)
    assertDataFrameEqual(out, [
        Row(user_id="u1", item_id="i1", rating=rating, timestamp=timestamp, first_ts=50, events=5, rows=6),
        Row(user_id="u2", item_id="i2", rating=2.0, timestamp=10, first_ts=10, events=1, rows=1),
    ])


def test_dedupe_without_timestamps_is_order_independent(spark):
    rows = [("u1", "i1", 2.0, None), ("u1", "i1", 4.0, None), ("u1", "i1", 2.0, None)]
    schema = "user_id string, item_id string, rating double, timestamp long"
    for order in (rows, rows[::-1]):
        out = dedupe(spark.createDataFrame(order, schema), "latest").collect()
        assert [(r.rating, r.events, r.rows) for r in out] == [(4.0, 2, 3)]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_unreadable_input_is_one_line_naming_the_file_and_the_format(spark, tmp_path, fmt):
    """Random bytes where the log should be: one line naming the file and the format it is not,
    not a page of ``Job aborted due to stage failure``."""
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / f"part-0.{fmt}").write_bytes(np.random.default_rng(1).bytes(8192))
    cfg = load_config(None, [f"lake={tmp_path}/lake", f"input.path={folder}", f"input.format={fmt}"])
    with pytest.raises(SparkrecError) as failed:
        run_prepare(spark, cfg)
    reason = str(failed.value)
    assert "\n" not in reason and len(reason) < 600, reason
    assert f"part-0.{fmt}" in reason and FORMAT_NAMES[fmt] in reason and f"input.format={fmt}" in reason, reason


def test_a_corrupt_file_among_good_parquet_files_is_named(spark, tmp_path):
    folder = tmp_path / "log"
    spark.createDataFrame([e for e in EVENTS], "user_id string, item_id string, rating string, timestamp string") \
        .coalesce(1).write.parquet(str(folder))
    (folder / "part-zz-corrupt.parquet").write_bytes(b"PAR1" + np.random.default_rng(2).bytes(4096))
    cfg = load_config(None, [f"lake={tmp_path}/lake", f"input.path={folder}"])
    with pytest.raises(SparkrecError, match=r"part-zz-corrupt\.parquet is not a valid Parquet file") as failed:
        run_prepare(spark, cfg)
    assert "\n" not in str(failed.value)
