"""The prepare job end to end on generated dirty logs: counts, quarantine, outputs, stability,
atomicity (prepare steps 2, 4, 5, 6, 7)."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

import jobs.prepare_data as prepare_job
from sparkrec.config import load_config
from sparkrec.data import quality
from sparkrec.data.prepare import (CACHE_COMPRESSED, CONCURRENT_WRITERS, PLANNED_WRITE, load_manifest,
                                   run_prepare)
from sparkrec.data.split import is_cold_item
from sparkrec.data.synthetic import START_TS, YEAR_S, generate_interactions, write_synthetic

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2


def settings(lake, raw, num_rows=4000, *extra):
    return [f"lake={lake}", f"input.path={raw}", "input.format=csv", f"generate.num_rows={num_rows}",
            "generate.num_users=200", "generate.num_items=300", "generate.dirt_rate=0.12", "generate.partitions=3",
            f"train.num_workers={WORKERS}", "prepare.num_files=3", "prepare.row_group_bytes=1024",
            # as the session fixture: main() applies these to the shared session
            "spark.shuffle_partitions=2", "spark.log_level=ERROR", *extra]


def generate(spark, overrides):
    cfg = load_config(None, overrides)
    truth = write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "csv")
    return cfg, truth


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    """One dirty CSV log prepared with the default leave-last-out split: (config, truth, manifest)."""
    root = tmp_path_factory.mktemp("prepare-e2e")
    cfg, truth = generate(spark, settings(root / "lake", root / "raw"))
    return cfg, truth, run_prepare(spark, cfg)


def read_split(spark, manifest, name):
    return spark.read.parquet(manifest["splits"][name]["path"])


def test_counts_reconcile_with_the_generator_truth(prepared):
    _, truth, manifest = prepared
    c = manifest["counts"]
    assert c["input"] == truth["rows"]
    assert c["quarantined_by_reason"] == truth["quarantined_by_reason"]
    assert c["duplicates_by_kind"]["exact"] == truth["duplicate_events"]
    assert c["duplicates_by_kind"]["repeated_pair"] > 0
    assert c["duplicates"] == sum(c["duplicates_by_kind"].values())
    assert c["input"] == c["kept"] + sum(c["quarantined_by_reason"].values()) + c["duplicates"] + c["filtered"]
    assert c["kept"] == sum(s["rows"] for s in manifest["splits"].values())


def test_quarantine_keeps_raw_values_with_reason(spark, prepared):
    _, truth, manifest = prepared
    q = spark.read.parquet(manifest["paths"]["quarantine"]).toPandas()
    assert Counter(q["reason"]) == {k: v for k, v in truth["quarantined_by_reason"].items() if v}
    by = {reason: rows for reason, rows in q.groupby("reason")}
    assert by[quality.NULL_USER]["user_id"].isna().all()
    assert by[quality.NULL_ITEM]["item_id"].fillna("").str.strip().eq("").all()  # CSV reads "" back as null
    assert by[quality.BAD_RATING]["rating"].eq("n/a").all()
    assert by[quality.RATING_OUT_OF_RANGE]["rating"].eq("7").all()
    assert by[quality.BAD_TIMESTAMP]["timestamp"].eq("not-a-time").all()


def test_output_schema_files_and_row_groups(prepared):
    cfg, _, manifest = prepared
    assert manifest["schema"] == {"user_idx": "int64", "item_idx": "int64", "label": "float32", "timestamp": "int64"}
    for name, split in manifest["splits"].items():
        files = sorted(Path(split["path"].removeprefix("file://")).glob("part-*.parquet"))
        assert len(files) == split["files"] == 4, name  # num_files=3 rounded up to a multiple of 2 workers
        metas = [pq.ParquetFile(f).metadata for f in files]
        assert split["row_groups"] == [m.row_group(i).num_rows for m in metas for i in range(m.num_row_groups)]
        assert sum(split["row_groups"]) == split["rows"]
        if name == "train":  # parquet-mr checks the block size every 100+ rows; the other splits are smaller
            assert all(m.num_row_groups > 1 for m in metas), "parquet.block.size was not applied"
        assert str(pq.read_schema(files[0])) == str(pq.read_schema(files[-1]))
    assert manifest["rating_range"] == [1.0, 5.0]
    assert manifest["implicit"] is False


def test_rows_within_a_file_are_not_grouped_by_user(spark, prepared):
    """Files come straight from the shuffle by user; each is reordered by a hash of the pair, so a
    row group (the unit a reader shuffles within) mixes users instead of holding a few whole ones.
    The write confs that keep that order (a writer per split) are the session's own again after."""
    _, _, manifest = prepared
    train = manifest["splits"]["train"]
    for path in sorted(Path(train["path"].removeprefix("file://")).glob("part-*.parquet")):
        users = pq.read_table(path, columns=["user_idx"]).column("user_idx").to_pylist()
        same_as_previous = sum(a == b for a, b in zip(users, users[1:])) / (len(users) - 1)
        assert same_as_previous < 0.2, path
    assert spark.conf.get(PLANNED_WRITE) == "true" and spark.conf.get(CONCURRENT_WRITERS) == "0"
    assert spark.conf.get(CACHE_COMPRESSED) == "true"


def test_petastorm_shards_follow_manifest_row_group_order(prepared):
    """Petastorm's shard s reads the row groups at positions i % shards == s of the manifest's order
    (files sorted by path, then row-group index). Four shards over files of six row groups each
    make the file order visible in what each shard gets."""
    from petastorm import make_batch_reader

    _, _, manifest = prepared
    train, shards = manifest["splits"]["train"], 4
    files = [pq.ParquetFile(f) for f in sorted(Path(train["path"].removeprefix("file://")).glob("part-*.parquet"))]
    groups = [f.read_row_group(i, columns=["user_idx", "item_idx"]) for f in files for i in range(f.num_row_groups)]
    assert [g.num_rows for g in groups] == train["row_groups"]
    for shard in range(shards):
        with make_batch_reader(train["path"], num_epochs=1, cur_shard=shard, shard_count=shards,
                               shuffle_row_groups=False, reader_pool_type="dummy") as reader:
            got = sorted(pair for batch in reader for pair in zip(batch.user_idx, batch.item_idx))
        expected = sorted(pair for i, g in enumerate(groups) if i % shards == shard
                          for pair in zip(g["user_idx"].to_pylist(), g["item_idx"].to_pylist()))
        assert got == expected and got


def test_indices_dense_and_vocab_counts_match(spark, prepared):
    _, _, manifest = prepared
    rows = read_split(spark, manifest, "train").unionByName(read_split(spark, manifest, "validation")) \
        .unionByName(read_split(spark, manifest, "test"))
    for key, vocab_path, size in (("user_idx", "user_vocab", "num_users"), ("item_idx", "item_vocab", "num_items")):
        vocab = spark.read.parquet(manifest["paths"][vocab_path])
        assert sorted(r["index"] for r in vocab.select("index").collect()) == list(range(manifest[size]))
        used = {r[key]: r["count"] for r in rows.groupBy(key).count().collect()}
        assert {r["index"]: r["count"] for r in vocab.collect()} == used
        assert vocab.filter(F.col("first_seen") < START_TS).count() == 0


def test_leave_last_out_on_written_output(spark, prepared):
    _, _, manifest = prepared
    tagged = [read_split(spark, manifest, s).withColumn("split", F.lit(s)) for s in ("train", "validation", "test")]
    rows = tagged[0].unionByName(tagged[1]).unionByName(tagged[2])
    assert rows.groupBy("user_idx", "item_idx").count().filter("count > 1").count() == 0
    per_user = rows.groupBy("user_idx").agg(
        F.count(F.lit(1)).alias("n"),
        F.max(F.when(F.col("split") == "train", F.col("timestamp"))).alias("train_max"),
        F.max(F.when(F.col("split") == "validation", F.col("timestamp"))).alias("val"),
        F.max(F.when(F.col("split") == "test", F.col("timestamp"))).alias("test"),
        F.sum((F.col("split") == "test").cast("int")).alias("n_test")).toPandas()
    held = per_user[per_user.n >= 3]
    assert len(held) > 150 and (held.n_test == 1).all()
    assert (held.train_max <= held.val).all() and (held.val <= held.test).all()
    assert manifest["splits"]["test"]["rows"] == int((per_user.n >= 2).sum())


def test_vocab_stable_across_runs_on_a_larger_log(spark, prepared):
    cfg, _, first = prepared
    larger, _ = generate(spark, settings(cfg.lake, Path(cfg.input.path).parent / "raw-larger", 8000))
    second = run_prepare(spark, larger)
    assert load_manifest(cfg.lake)["version"] == second["version"] != first["version"]
    assert second["parent_data_hash"] == first["data_hash"]
    for vocab, size in (("user_vocab", "num_users"), ("item_vocab", "num_items")):
        old = {r["original_id"]: r["index"] for r in spark.read.parquet(first["paths"][vocab]).collect()}
        new = {r["original_id"]: r["index"] for r in spark.read.parquet(second["paths"][vocab]).collect()}
        assert {k: new[k] for k in old} == old
        assert sorted(v for k, v in new.items() if k not in old) == list(range(first[size], second[size]))
    assert second["num_items"] > first["num_items"]


def test_killed_before_commit_leaves_previous_output(spark, tmp_path):
    argv = settings(tmp_path / "lake", tmp_path / "raw", 2000)
    cfg, _ = generate(spark, argv)
    before = run_prepare(spark, cfg)
    pointer = tmp_path / "lake" / "prepared" / "manifest.json"
    published = pointer.read_bytes()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, "jobs/prepare_data.py", *argv], cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # Kill as soon as the new version has started writing: well before it could publish.
        while not [v for v in (tmp_path / "lake" / "prepared").glob("v-*/quarantine/_SUCCESS")
                   if v.parents[1].name != Path(before["version"]).name]:
            assert job.poll() is None, f"prepare exited ({job.returncode}) before it could be killed"
            assert time.monotonic() < deadline, "the new version never started writing"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the job's own process group: python and its JVM
        job.wait()
    assert job.returncode == -signal.SIGKILL

    assert pointer.read_bytes() == published
    after = load_manifest(cfg.lake)
    assert after["version"] == before["version"]
    assert read_split(spark, after, "train").count() == before["splits"]["train"]["rows"]
    assert len(list((tmp_path / "lake" / "prepared").glob("v-*"))) == 2  # the old one + the unpublished one


def test_job_kcore_implicit_temporal(spark, tmp_path):
    cutoff = START_TS + int(0.8 * YEAR_S)
    overrides = settings(tmp_path / "lake", tmp_path / "raw", 4000, "prepare.implicit_threshold=4",
                         "prepare.min_user_interactions=5", "prepare.min_item_interactions=5",
                         "prepare.split.kind=temporal", f"prepare.split.cutoffs=[{cutoff}]")
    generate(spark, overrides)
    assert prepare_job.main(overrides) == 0
    manifest = load_manifest(tmp_path / "lake")
    c = manifest["counts"]
    assert manifest["implicit"] is True and manifest["rating_range"] == [1.0, 1.0]
    assert c["filtered_by"]["below_threshold"] > 0 and c["filtered_by"]["kcore"] > 0
    assert c["filtered"] == sum(c["filtered_by"].values())
    assert c["input"] == c["kept"] + sum(c["quarantined_by_reason"].values()) + c["duplicates"] + c["filtered"]
    assert manifest["kcore"]["converged"] is True
    train, validation, test = (read_split(spark, manifest, s) for s in ("train", "validation", "test"))
    rows = train.unionByName(test)
    assert validation.count() == 0 and manifest["splits"]["validation"]["rows"] == 0
    assert rows.groupBy("user_idx").count().agg(F.min("count")).first()[0] >= 5
    assert rows.groupBy("item_idx").count().agg(F.min("count")).first()[0] >= 5
    assert train.agg(F.max("timestamp")).first()[0] < cutoff <= test.agg(F.min("timestamp")).first()[0]


def test_job_refuses_time_split_without_timestamps(tmp_path, capsys):
    raw = tmp_path / "log.csv"
    raw.write_text("user_id,item_id,rating\nu1,i1,4\n")
    code = prepare_job.main([f"lake={tmp_path / 'lake'}", f"input.path={raw}", "input.format=csv",
                             "input.columns.timestamp=null"])
    assert code == 1
    assert "prepare.split.kind=leave_last_out needs event times" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_cold_items_held_out_wholly_in_test_and_stable(spark, tmp_path):
    """Two runs on one log, with other split kinds and shuffle partitions, hold out the same items."""
    raw, runs = tmp_path / "raw", {}
    for kind, partitions in (("leave_last_out", 2), ("random", 5)):
        overrides = settings(tmp_path / kind, raw, 3000, "prepare.split.cold_item_fraction=0.2",
                             f"prepare.split.kind={kind}")
        cfg = generate(spark, overrides)[0] if not runs else load_config(None, overrides)
        spark.conf.set("spark.sql.shuffle.partitions", str(partitions))  # the choice ignores partitioning
        try:
            manifest = run_prepare(spark, cfg)
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", "2")
        vocab_df = spark.read.parquet(manifest["paths"]["item_vocab"])
        items = {r["index"]: r["original_id"] for r in vocab_df.collect()}
        vocab = {r["original_id"]: r["count"] for r in vocab_df.collect()}
        counts = {name: {items[r["item_idx"]]: r["count"] for r in read_split(spark, manifest, name)
                         .groupBy("item_idx").count().collect()} for name in ("train", "validation", "test")}
        cold = {r["original_id"] for r in vocab_df.filter(is_cold_item(F.col("original_id"), 0.2, cfg.seed)).collect()}
        assert 0.1 * len(vocab) < len(cold) < 0.3 * len(vocab)
        assert not cold & (set(counts["train"]) | set(counts["validation"]))
        assert all(counts["test"].get(item, 0) == vocab[item] for item in cold)
        assert manifest["cold_items"] == sum(vocab[item] > 0 for item in cold) > 0
        assert sum(counts["train"].values()) > 0.5 * manifest["counts"]["kept"]
        c = manifest["counts"]
        assert c["kept"] == sum(s["rows"] for s in manifest["splits"].values())
        assert c["input"] == c["kept"] + sum(c["quarantined_by_reason"].values()) + c["duplicates"] + c["filtered"]
        runs[kind] = cold, manifest["cold_items"]
    assert runs["leave_last_out"] == runs["random"]
