"""Dense, deterministic, stable ID indexing without collecting IDs (prepare step 4)."""
import pytest
from pyspark.sql import functions as F

from sparkrec.data.index_ids import assign_indices, build_vocab, id_stats

pytestmark = pytest.mark.spark

N = 5000


def ids_frame(spark, n, partitions, prefix="u"):
    return spark.range(0, n, numPartitions=partitions).select(F.concat(F.lit(prefix), F.col("id").cast("string"))
                                                              .alias("original_id"))


def as_dict(df):
    return {r["original_id"]: r["index"] for r in df.select("original_id", "index").collect()}


def test_indices_are_dense_and_independent_of_partitioning(spark):
    a = as_dict(assign_indices(ids_frame(spark, N, 1)))
    b = as_dict(assign_indices(ids_frame(spark, N, 7).repartition(5)))
    assert sorted(a.values()) == list(range(N))
    assert a == b


def test_start_offset(spark):
    got = as_dict(assign_indices(ids_frame(spark, 100, 3), start=42))
    assert sorted(got.values()) == list(range(42, 142))


def test_indexing_collects_counts_not_ids(spark, monkeypatch):
    """The only collect is the per-bucket counts: its size does not grow with the IDs."""
    frame_class = type(spark.range(1))
    collected, original = [], frame_class.collect

    def spy(df):
        collected.append(df.columns)
        return original(df)

    monkeypatch.setattr(frame_class, "collect", spy)
    assign_indices(ids_frame(spark, N, 3)).count()
    assert collected == [["_bucket", "count"]]


def stats_frame(spark, rows):
    df = spark.createDataFrame(rows, "user_id string, first_ts long")
    return id_stats(df, "user_id", "first_ts")


def test_vocab_stable_across_runs(spark):
    """A second run over a larger log keeps every old index and appends the new IDs after them."""
    first = build_vocab(stats_frame(spark, [("a", 5), ("b", 7), ("b", 3), ("c", 9)]))
    old = {r["original_id"]: r for r in first.collect()}
    assert sorted(r["index"] for r in old.values()) == [0, 1, 2]
    assert (old["b"]["count"], old["b"]["first_seen"]) == (2, 3)

    # "a" is gone from the new log, "b" reappears earlier, "d"/"e" are new.
    second = build_vocab(stats_frame(spark, [("b", 1), ("c", 10), ("d", 4), ("e", None)]), first, 3)
    new = {r["original_id"]: r for r in second.collect()}
    assert {k: new[k]["index"] for k in old} == {k: old[k]["index"] for k in old}
    assert sorted(new[k]["index"] for k in ("d", "e")) == [3, 4]
    assert (new["a"]["count"], new["a"]["first_seen"]) == (0, 5)
    assert (new["b"]["count"], new["b"]["first_seen"]) == (1, 1)
    assert new["e"]["first_seen"] is None
    assert dict(second.dtypes) == {"original_id": "string", "index": "bigint", "count": "bigint",
                                   "first_seen": "bigint"}
