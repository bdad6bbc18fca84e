"""Random, leave-last-out and temporal splits (prepare step 5)."""
import pytest
from pyspark.sql import functions as F

from sparkrec.config import ConfigError, load_config
from sparkrec.data.split import (
    assign_split, check_split_possible, is_cold_item, split_leave_last_out, split_random, split_temporal,
)
from sparkrec.errors import SparkrecError

pytestmark = pytest.mark.spark

SCHEMA = "user_id string, item_id string, timestamp long"


@pytest.fixture(scope="module")
def pairs(spark):
    """20k distinct (user, item) pairs with times."""
    return spark.range(0, 20_000, numPartitions=3).select(
        F.concat(F.lit("u"), (F.col("id") % 500).cast("string")).alias("user_id"),
        F.concat(F.lit("i"), (F.col("id") / 500).cast("long").cast("string")).alias("item_id"),
        (F.lit(1_600_000_000) + F.col("id") * 7919 % 1_000_000).alias("timestamp"))


def split_of(df):
    return {(r.user_id, r.item_id): r.split for r in df.select("user_id", "item_id", "split").collect()}


def test_random_fractions_seeded_and_partitioning_free(pairs):
    got = split_of(split_random(pairs, [0.7, 0.1, 0.2], seed=3))
    share = {s: sum(v == s for v in got.values()) / len(got) for s in ("train", "validation", "test")}
    assert share == pytest.approx({"train": 0.7, "validation": 0.1, "test": 0.2}, abs=0.015)
    assert split_of(split_random(pairs.repartition(7), [0.7, 0.1, 0.2], seed=3)) == got
    other = split_of(split_random(pairs, [0.7, 0.1, 0.2], seed=4))
    assert sum(other[k] != got[k] for k in got) > 0.3 * len(got)
    assert "validation" not in set(split_of(split_random(pairs, [0.8, 0.0, 0.2], seed=3)).values())


def test_leave_last_out_picks_latest_with_tie_break(spark):
    df = spark.createDataFrame([
        ("a", "i1", 10), ("a", "i2", 30), ("a", "i4", 40), ("a", "i3", 40),  # tie at 40: i3 < i4
        ("b", "i1", 5), ("b", "i2", 6),                                       # two rows: test only
        ("c", "i1", 1),                                                        # one row: stays in train
    ], SCHEMA)
    assert split_of(split_leave_last_out(df, validation=True)) == {
        ("a", "i3"): "test", ("a", "i4"): "validation", ("a", "i2"): "train", ("a", "i1"): "train",
        ("b", "i2"): "test", ("b", "i1"): "train", ("c", "i1"): "train"}
    assert "validation" not in split_of(split_leave_last_out(df, validation=False)).values()


def test_leave_last_out_leaks_nothing(pairs):
    out = split_leave_last_out(pairs, validation=True)
    per_user = out.groupBy("user_id").agg(
        F.max(F.when(F.col("split") == "train", F.col("timestamp"))).alias("train_max"),
        F.min(F.when(F.col("split") == "validation", F.col("timestamp"))).alias("val"),
        F.min(F.when(F.col("split") == "test", F.col("timestamp"))).alias("test"),
        F.sum((F.col("split") == "test").cast("int")).alias("n_test"),
        F.sum((F.col("split") == "validation").cast("int")).alias("n_val"),
        F.count(F.lit(1)).alias("n")).collect()
    assert len(per_user) == 500
    for r in per_user:
        assert (r.n_test, r.n_val) == (1, 1)
        assert r.train_max <= r.val <= r.test
    assert out.count() == pairs.count()


def test_temporal_cutoffs(pairs):
    cutoffs = [1_600_600_000, 1_600_800_000]
    out = split_temporal(pairs, cutoffs)
    bounds = {r.split: (r.lo, r.hi) for r in out.groupBy("split").agg(
        F.min("timestamp").alias("lo"), F.max("timestamp").alias("hi")).collect()}
    assert bounds["train"][1] < cutoffs[0] <= bounds["validation"][0]
    assert bounds["validation"][1] < cutoffs[1] <= bounds["test"][0]
    only_test = split_temporal(pairs, cutoffs[1:])
    assert {r.split for r in only_test.select("split").distinct().collect()} == {"train", "test"}


@pytest.mark.parametrize("kind", ["random", "leave_last_out", "temporal"])
def test_cold_items_go_wholly_to_test(spark, kind):
    """20k distinct pairs over 997 items: a quarter of the items are cold, chosen by ID alone."""
    df = spark.range(0, 20_000, numPartitions=3).select(
        F.concat(F.lit("u"), (F.col("id") % 500).cast("string")).alias("user_id"),
        F.concat(F.lit("i"), (F.col("id") % 997).cast("string")).alias("item_id"),
        (F.lit(1_600_000_000) + F.col("id") * 7919 % 1_000_000).alias("timestamp"))
    cfg = load_config(None, [f"prepare.split.kind={kind}", "prepare.split.cold_item_fraction=0.25",
                             "prepare.split.cutoffs=[1600800000]"]).prepare.split
    got = split_of(assign_split(df, cfg, seed=5))
    again = split_of(assign_split(df.repartition(7, "item_id"), cfg, seed=5))
    assert again == got and len(got) == 20_000
    by_item = {}
    for (_, item), split in got.items():
        by_item.setdefault(item, set()).add(split)
    cold = {item for item, splits in by_item.items() if splits == {"test"}}
    assert 200 <= len(cold) <= 300
    flagged = {r.item_id for r in df.select("item_id").distinct()
               .filter(is_cold_item(F.col("item_id"), 0.25, seed=5)).collect()}
    assert cold == flagged
    assert cold != {r.item_id for r in df.select("item_id").distinct()
                    .filter(is_cold_item(F.col("item_id"), 0.25, seed=6)).collect()}
    warm = {k: v for k, v in got.items() if k[1] not in cold}
    assert {"train", "test"} <= set(warm.values())
    if kind == "leave_last_out":  # every user still has exactly one warm test row, the latest warm one
        rows = df.filter(~is_cold_item(F.col("item_id"), 0.25, seed=5)).collect()
        latest = {}
        for r in rows:
            if r.user_id not in latest or (-r.timestamp, r.item_id) < (-latest[r.user_id][1], latest[r.user_id][0]):
                latest[r.user_id] = (r.item_id, r.timestamp)
        assert {(u, i) for (u, i), s in warm.items() if s == "test"} == {(u, i) for u, (i, _) in latest.items()}


def test_time_splits_refused_without_timestamps_and_bad_config(spark):
    cfg = load_config(None, ["prepare.split.kind=temporal", "prepare.split.cutoffs=[5]"]).prepare.split
    with pytest.raises(SparkrecError, match=r"kind=temporal needs event times.*input\.columns\.timestamp"):
        check_split_possible(cfg, has_timestamp=False)
    check_split_possible(load_config(None, ["prepare.split.kind=random"]).prepare.split, has_timestamp=False)
    with pytest.raises(ConfigError, match=r"cutoffs \[test\] or \[validation, test\]"):
        load_config(None, ["prepare.split.kind=temporal"])
    with pytest.raises(ConfigError, match=r"summing to 1, got \[0.5, 0.1, 0.1\]"):
        load_config(None, ["prepare.split.fractions=[0.5, 0.1, 0.1]"])
    with pytest.raises(ConfigError, match="cold_item_fraction"):
        load_config(None, ["prepare.split.cold_item_fraction=1.0"])
    with pytest.raises(ConfigError, match="strictly ascending"):
        load_config(None, ["prepare.split.kind=temporal", "prepare.split.cutoffs=[9, 5]"])
    df = spark.createDataFrame([("a", "i", 1)], SCHEMA)
    assert assign_split(df, cfg, seed=1).first().split == "train"


def test_a_given_split_is_kept_and_a_bad_one_quarantined(spark, tmp_path):
    """prepare.split.kind=given reads the log's own split column (any case); a value that names no
    split is a quarantine row, and every row is accounted for."""
    from sparkrec.config import load_config
    from sparkrec.data.prepare import run_prepare

    rows = [("u1", "a", 1, "train"), ("u1", "b", 2, "TRAIN"), ("u1", "c", 3, "Validation"), ("u1", "d", 4, "test"),
            ("u2", "a", 1, "train"), ("u2", "c", 2, "test"), ("u2", "e", 3, "holdout")]
    raw = tmp_path / "raw"
    spark.createDataFrame(rows, "user_id string, item_id string, timestamp long, part string").write.parquet(str(raw))
    cfg = load_config(None, [f"lake={tmp_path}/lake", f"input.path={raw}", "input.columns.rating=null",
                             "input.columns.split=part", "prepare.split.kind=given", "prepare.num_files=1"])
    manifest = run_prepare(spark, cfg)
    assert manifest["counts"]["quarantined_by_reason"]["bad_split"] == 1
    assert {name: s["rows"] for name, s in manifest["splits"].items()} == {"train": 3, "validation": 1, "test": 2}
    with pytest.raises(Exception, match="prepare.split.kind=given and input.columns.split"):
        run_prepare(spark, load_config(None, [f"lake={tmp_path}/lake", f"input.path={raw}",
                                              "input.columns.rating=null", "prepare.split.kind=given"]))
