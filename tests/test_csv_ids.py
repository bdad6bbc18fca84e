"""IDs from an RFC 4180 CSV (what Python's csv, pandas and spreadsheets write) survive byte for
byte from the input file through prepare, training and scoring to the top-K table."""
import csv

import pytest

from sparkrec.config import load_config
from sparkrec.data.prepare import run_prepare
from sparkrec.data.read_log import read_log
from sparkrec.score.job import run_score
from sparkrec.score.publish import read_published, scores_root
from sparkrec.train.launch import run_training

pytestmark = pytest.mark.spark

# (A \r\n inside a quoted field is read as \n: Spark's CSV parser normalises line ends within
# quotes, see input.csv_multiline.)
ODD = ['quote"user', 'comma,user', "line\nbreak", "two\n\nbreaks", " leading", "trailing ", '"quoted"',
       "ünïcødé ✓ 用户", "semi;colon", "tab\tinside", "back\\slash"]
USERS = [f"u{n}" for n in range(10)] + ODD
ITEMS = [f"i{n}" for n in range(8)] + [f"item {s}" for s in ODD]


def write_log(path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)  # QUOTE_MINIMAL, "" for a quote inside a field, \r\n line ends
        out.writerow(["user", "item", "rating", "ts"])
        for u, user in enumerate(USERS):
            for i, item in enumerate(ITEMS):
                if (u + i) % 3:
                    out.writerow([user, item, 1 + (u * i) % 5, 1_600_000_000 + 60 * (u * len(ITEMS) + i)])


def config(tmp_path, *overrides):
    return load_config(None, [
        f"lake={tmp_path}/lake", f"input.path={tmp_path}/log.csv", "input.format=csv", "input.csv_multiline=true",
        "input.columns.user=user", "input.columns.item=item", "input.columns.timestamp=ts",
        "prepare.split.kind=random", "prepare.split.fractions=[0.9,0.0,0.1]", "prepare.num_files=1",
        "train.model=gmf", "train.epochs=1", "train.batch_size=64", "train.threads_per_worker=1",
        "train.log_every_steps=100000", "score.k=3", "score.buckets=2", *overrides])


def test_ids_round_trip_byte_for_byte_to_the_top_k_table(spark, tmp_path):
    write_log(tmp_path / "log.csv")
    cfg = config(tmp_path)
    raw = read_log(spark, cfg.input)
    assert raw.count() == sum(1 for u in range(len(USERS)) for i in range(len(ITEMS)) if (u + i) % 3)
    assert {r.user_id for r in raw.select("user_id").distinct().collect()} == set(USERS)
    assert {r.item_id for r in raw.select("item_id").distinct().collect()} == set(ITEMS)

    prepared = run_prepare(spark, cfg)
    assert sum(prepared["counts"]["quarantined_by_reason"].values()) == 0
    vocab = {r.original_id for r in spark.read.parquet(prepared["paths"]["user_vocab"]).collect()}
    assert vocab == set(USERS)
    run_training(spark, cfg)
    run_score(spark, cfg)

    table = read_published(spark, scores_root(f"file://{tmp_path}/lake", "default")).collect()
    assert {r.user_id for r in table} == set(USERS)  # every user, each ID exactly as in the file
    assert {r.item_id for r in table} <= set(ITEMS)
    assert {r.item_id for r in table} & {f"item {s}" for s in ODD}  # odd item IDs are served too
