"""Two simulated days of the scheduled pipeline on generated data: warm start, quality gate,
run history and no-op re-runs, through the real prepare, train, evaluate and score stages."""
import json
import re
from pathlib import Path

import pytest
import torch
from pyspark.sql import functions as F

from jobs.pipeline import main as pipeline_main
from sparkrec import lake as lake_io
from sparkrec.config import load_config
from sparkrec.data.prepare import load_manifest
from sparkrec.data.synthetic import generate_interactions
from sparkrec.pipeline.history import latest_summary, runs_root
from sparkrec.pipeline.run import run_pipeline
from sparkrec.score.publish import POINTER, read_published, scores_root
from sparkrec.models.store import load_model

pytestmark = pytest.mark.spark

DAY1_USERS, DAY1_ITEMS = 160, 100  # day 2 adds users u160..u199 and items i100..i119


def day_args(lake, day, *overrides):
    return [f"lake={lake}", f"input.path={lake}/raw/day{day}", "generate.num_rows=9000", "generate.num_users=200",
            "generate.num_items=120", "generate.candidates=32", "generate.partitions=2",
            "train.model=neumf", "train.epochs=2", "train.batch_size=256", "train.lr=0.005",
            "evaluate.baselines=[global_mean]", "evaluate.k=[10]", "score.k=5", "score.buckets=2", *overrides]


def day_cfg(lake, day, *overrides):
    return load_config(None, day_args(lake, day, *overrides))


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """raw/day1: the log of the first 160 users and 100 items; raw/day2: the whole grown log."""
    root = str(tmp_path_factory.mktemp("pipeline") / "lake")
    cfg = day_cfg(root, 2)
    log = generate_interactions(spark, cfg.generate, cfg.input.columns).drop("_dirt")
    num = lambda c: F.substring(c, 2, 10).cast("int")  # noqa: E731  "u17" -> 17
    log.write.parquet(f"{root}/raw/day2")
    log.where((num("user_id") < DAY1_USERS) & (num("item_id") < DAY1_ITEMS)).write.parquet(f"{root}/raw/day1")
    return root


def scores_version(lake):
    return lake_io.resolve(scores_root(lake_io.normalize_uri(lake), "default"), POINTER)["version"]


def test_two_days_warm_start_gate_and_history(spark, lake, capsys):
    # Day 1: everything runs and is published; the run becomes `latest`.
    day1 = run_pipeline(spark, day_cfg(lake, 1))
    assert day1["status"] == "succeeded"
    assert [s["status"] for s in day1["stages"].values()] == ["ran"] * 4
    assert latest_summary(lake)["run_id"] == day1["run_id"]
    day1_scores = scores_version(lake)
    day1_model, day1_meta = load_model(lake, "default")

    # Day 2, broken model (absurd learning rate): the gate blocks it, exit code 3 with both
    # numbers, nothing new is published and `latest` stays on day 1.
    capsys.readouterr()
    broken = ["train.lr=500.0", "train.optimizer=sgd", "train.epochs=1"]
    assert pipeline_main(day_args(lake, 2, *broken)) == 3
    reason = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"stage train: quality gate blocked .*rmse of the new model \d+\.\d+ vs published \d+\.\d+",
                     reason), reason
    assert scores_version(lake) == day1_scores
    assert load_model(lake, "default")[1]["version"] == day1_meta["version"]
    assert latest_summary(lake)["run_id"] == day1["run_id"]
    summaries = [json.loads(p.read_text()) for p in Path(lake, "runs").glob("*/summary.json")]
    blocked = [s for s in summaries if s["status"] == "blocked"]
    assert len(blocked) == 1 and blocked[0]["failed_stage"] == "train" and not blocked[0]["gate"]["passed"]

    # Day 2, warm start from the published day-1 model: two more epochs continue its training.
    warm = ["train.warm_start=latest"]
    day2 = run_pipeline(spark, day_cfg(lake, 2, *warm))
    assert day2["status"] == "succeeded" and day2["stages"]["prepare"]["status"] == "ran"
    assert day2["gate"]["passed"] and day2["gate"]["published_version"] == day1_meta["version"]
    model, meta = load_model(lake, "default")
    assert meta["parent"]["version"] == day1_meta["version"]
    prepared = load_manifest(lake)
    assert (prepared["num_users"], prepared["num_items"]) == (200, 120)
    # Old IDs keep their trained rows (moved only by training): far closer to day 1's rows than
    # an unrelated initialisation would be.
    old, new = day1_model.user_mlp.weight.detach(), model.user_mlp.weight.detach()[:DAY1_USERS]
    assert torch.nn.functional.cosine_similarity(old, new).mean() > 0.8
    # New users get real (not cold-start) recommendations.
    table = read_published(spark, scores_root(lake_io.normalize_uri(lake), "default")).toPandas()
    new_users = table[table["user_id"].str[1:].astype(int) >= DAY1_USERS]
    assert new_users["user_id"].nunique() == 40 and not new_users["cold_start"].any()

    # Re-running day 2 is a no-op that says so, and changes nothing.
    again = run_pipeline(spark, day_cfg(lake, 2, *warm))
    assert again["status"] == "noop"
    assert all(s["status"] == "skipped" for s in again["stages"].values())
    assert scores_version(lake) == day2["lineage"]["scores"]
    assert latest_summary(lake)["run_id"] == again["run_id"]
    assert lake_io.exists(lake_io.join(runs_root(lake), day1["run_id"], "summary.json"))



def test_the_history_model_through_two_days_with_warm_start_and_gate(spark, lake, tmp_path):
    """The explicit history model (no user table) in the scheduled pipeline: day 2 appends items,
    warm-starts from day 1's model, passes the gate and serves the 40 new users from their
    histories, with no popularity fallback."""
    history_lake = str(tmp_path / "history-lake")
    model = ["train.model=sequence", "sequence.encoder=mean", "sequence.max_len=64", "train.factors=16",
             "train.batch_size=32", "train.lr=0.003", "train.epochs=2", "name=history"]

    def args(day, *extra):
        return [*day_args(lake, day, *model, *extra), f"lake={history_lake}"]

    day1 = run_pipeline(spark, load_config(None, args(1)))
    assert day1["status"] == "succeeded"
    _, day1_meta = load_model(history_lake, "history")
    day2 = run_pipeline(spark, load_config(None, args(2, "train.warm_start=latest")))
    assert day2["status"] == "succeeded" and day2["gate"]["passed"] and day2["gate"]["metric"] == "rmse"
    model_2, meta = load_model(history_lake, "history")
    assert meta["parent"]["version"] == day1_meta["version"] and meta["model"]["num_items"] == 120
    assert "num_users" not in meta["model"]  # nothing per user to grow
    table = read_published(spark, scores_root(lake_io.normalize_uri(history_lake), "history")).toPandas()
    new_users = table[table["user_id"].str[1:].astype(int) >= DAY1_USERS]
    assert new_users["user_id"].nunique() == 40 and not new_users["cold_start"].any()
