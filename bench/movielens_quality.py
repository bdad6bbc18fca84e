"""NCF against Spark ALS, a user/item-bias model and popularity on MovieLens ml-latest-small, every
tunable recommender tuned the same way on a validation split, then all judged on the same test split
in the same run (metrics by the evaluate job).

- explicit (NeuMF): 90/10 random split of the ratings; RMSE and MAE against ``bias`` and
  ``als_explicit``. Tuning uses the same hash split cut 81/9/10 (same test rows, never read while
  tuning); the chosen settings are then trained on the full 90% (NeuMF for its best validation epoch
  count).
- implicit (GMF or NeuMF): every rating is an interaction, leave-last-out (the second latest per user
  is the validation item); HR@10 and NDCG@10 against 99 sampled negatives and against the full
  catalog, against ``als_implicit`` and ``popularity`` (the bias model cannot rank implicit data,
  where every label is 1). Tuning and the final comparison share the split: the chosen model is
  the tuning run itself.

Last run (2026-11-28, 2 cores; tuning about 6 min explicit, 17 min implicit):

- explicit: NeuMF (64 factors, weight decay 0.001, 4 epochs) RMSE 0.8730 / MAE 0.6665 against tuned
  bias (reg 3) 0.8809 / 0.6748 and tuned ALS (rank 16, reg 0.15) 0.8857 / 0.6897; RMSE -0.0079
  [-0.0114, -0.0044] and MAE -0.0083 [-0.0115, -0.0051] against bias: better, beyond the noise.
- implicit: GMF (128 factors, 32 negatives) against tuned ALS (rank 128, reg 0.1, alpha 1):
  sampled HR@10 0.7426 vs 0.7246, sampled NDCG@10 0.4942 vs 0.5003, full HR@10 0.0623 vs 0.0803,
  full NDCG@10 0.0280 vs 0.0387 (difference -0.0108 [-0.0215, -0.0001]). Tuned ALS is ahead on
  full ranking; with its evaluate-job defaults (rank 10, reg 0.1) it is behind GMF on all four.

Each grid point is scored by the evaluate job's protocols on the validation split
(``evaluate.split=validation``: test is not read); the one with the best ``select`` metric wins.
NCF's grid and ALS's grid are about the same size. Every metric's difference to the best rival
comes with a 95% interval from the paired per-user (per-rating for RMSE/MAE) differences: with 610
test users one user is 0.0016 of HR@10, and a gap inside the interval is not a difference.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/movielens_quality.py [--settings explicit implicit]

The data folder is only read; everything is written under --lake (a scratch folder).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from contextlib import contextmanager
from functools import partial

from sparkrec.config import load_config
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.evaluate.baselines import Recommender
from sparkrec.evaluate.run import (
    build_eval_data, evaluate_recommender, fit_baselines, read_splits, run_evaluate, unpersist_units,
)
from sparkrec.evaluate.subjects import TrainedModel
from sparkrec.session import get_spark
from sparkrec.train.launch import run_training

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ml-latest-small")

COMMON = ["input.format=movielens", "prepare.rating_min=0.5", "prepare.num_files=2", "spark.log_level=ERROR",
          "train.model=neumf", "train.threads_per_worker=1", "train.log_every_steps=1000000",
          "evaluate.k=[10]", "evaluate.num_negatives=99", "evaluate.als_blocks=2", "evaluate.als_max_iter=15"]


def grid(**axes: list) -> list[list[str]]:
    """Every combination of the axes' values as ``key=value`` overrides."""
    keys = list(axes)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*axes.values())]


SETTINGS = {
    "explicit": {
        # The final split, and the model settings the other MovieLens benches reuse untuned.
        "overrides": ["prepare.split.kind=random", "prepare.split.fractions=[0.9,0.0,0.1]",
                      "evaluate.baselines=[global_mean,bias,als_explicit]",
                      "train.epochs=10", "train.batch_size=128", "train.lr=0.001", "train.factors=32",
                      "train.mlp_layers=[64,32,16]", "train.weight_decay=0.005", "train.dropout=0.2"],
        "tuning_split": ["prepare.split.fractions=[0.81,0.09,0.1]", "train.epochs=15",
                         "train.early_stopping_patience=3"],
        "select": ("rating", "rmse", "lower"),
        "model_grid": grid(**{"train.factors": [16, 32, 64], "train.weight_decay": [0.001, 0.005, 0.02]}),
        "baseline_grids": {
            "bias": grid(**{"evaluate.bias_reg": [1, 3, 5, 10, 25, 50]}),
            "als_explicit": grid(**{"evaluate.als_rank": [8, 16, 32, 64],
                                    "evaluate.als_reg": [0.05, 0.1, 0.15, 0.2, 0.3]}),
        },
        "metrics": [("rating", "rmse", "lower"), ("rating", "mae", "lower")],
        "rivals": ["bias", "als_explicit"],
    },
    "implicit": {
        "overrides": ["prepare.implicit_threshold=0.5", "prepare.split.kind=leave_last_out",
                      "evaluate.baselines=[popularity,als_implicit]", "train.model=gmf",
                      "train.epochs=30", "train.batch_size=256", "train.lr=0.002", "train.factors=64",
                      "train.num_negatives=4", "train.early_stopping_patience=4"],
        "tuning_split": [],
        "select": ("full", "ndcg@10", "higher"),
        # Grids narrowed from a first pass on the validation split: more negatives helped GMF-128
        # (16 -> 32: 0.0319 -> 0.0375 validation NDCG@10; 64 costs 18 s an epoch), L2 on the
        # embeddings did not (1e-3 collapses to popularity); ALS's regParam 1 and 10 lost everywhere.
        "model_grid": [*grid(**{"train.model": ["gmf"], "train.factors": [64, 128], "train.num_negatives": [4, 16, 32],
                                "train.lr": [0.002]}),
                       *grid(**{"train.model": ["neumf"], "train.factors": [32, 64], "train.num_negatives": [4],
                                "train.lr": [0.001]})],
        "baseline_grids": {
            "popularity": [[]],
            "als_implicit": [*grid(**{"evaluate.als_rank": [32, 64, 128, 256], "evaluate.als_reg": [0.03, 0.1, 0.3],
                                      "evaluate.als_alpha": [1.0]}),
                             *grid(**{"evaluate.als_rank": [32, 64, 128, 256], "evaluate.als_reg": [0.1],
                                      "evaluate.als_alpha": [10.0]})],
        },
        "metrics": [("sampled", "hr@10", "higher"), ("sampled", "ndcg@10", "higher"),
                    ("full", "hr@10", "higher"), ("full", "ndcg@10", "higher")],
        "rivals": ["popularity", "als_implicit"],
    },
}


@contextmanager
def timed(seconds: dict, name: str):
    """Record the wall time of the block as ``seconds[name]``."""
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started


def prepare_train_evaluate(cfg) -> tuple[dict, dict, dict, dict]:
    """The three jobs on ``cfg`` in one process: prepared manifest, training summary, evaluate
    metrics and the seconds each took."""
    spark = get_spark(cfg.spark)
    seconds = {}
    with timed(seconds, "prepare"):
        manifest = run_prepare(spark, cfg)
    with timed(seconds, "train"):
        summary = run_training(None, cfg)
    with timed(seconds, "evaluate"):
        metrics = run_evaluate(spark, cfg)
    return manifest, summary, metrics, seconds


def _value(result: dict, key: tuple) -> float:
    section, metric, _ = key
    return result[section][metric]


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "lower" else a > b


def tune(spark, base: list[str], spec: dict) -> tuple[dict, list[str]]:
    """Score every grid point of the model and of each baseline on the validation split.

    Returns
    -------
    (dict, list[str])
        name (``model`` or a baseline) -> (chosen overrides, validation metric, extra), and the
        tuning table's printed lines.
    """
    cfg = load_config(None, [*base, "evaluate.split=validation"])
    prepared = load_manifest(cfg.lake)
    splits = read_splits(spark, prepared)
    data = build_eval_data(splits, "validation", ["train"], cfg, prepared)
    implicit = prepared["implicit"]
    pick = partial(min if spec["select"][2] == "lower" else max, key=lambda entry: entry[1])  # first of ties
    lines, chosen = [], {}

    def judge(rec: Recommender) -> float:
        metrics, units = evaluate_recommender(rec, data, implicit, protocols=[spec["select"][0]])
        unpersist_units(units)
        return _value(metrics, spec["select"])

    scored = []
    for i, point in enumerate(spec["model_grid"]):
        point_cfg = load_config(None, [*base, *point, f"name=tune-{i}"])
        summary = run_training(None, point_cfg)
        scored.append((point, judge(TrainedModel.load(spark, cfg.lake, point_cfg.name, prepared, splits["train"])),
                       {"name": point_cfg.name, "best_epoch": summary["best_epoch"]}))
        lines.append(f"  model {' '.join(point)}: {scored[-1][1]:.4f} (best epoch {summary['best_epoch']})")
    chosen["model"] = pick(scored)
    for name, points in spec["baseline_grids"].items():
        scored = []
        for point in points:
            rec = fit_baselines(splits["train"], load_config(None, [*base, *point, f"evaluate.baselines=[{name}]"]),
                                prepared)[0][0]
            scored.append((point, judge(rec), {}))
            lines.append(f"  {name} {' '.join(point)}: {scored[-1][1]:.4f}")
        chosen[name] = pick(scored)
    data.unpersist()
    return chosen, lines


def report(setting: str, metrics: dict) -> bool:
    spec = SETTINGS[setting]
    results = metrics["results"]
    model_name = next(name for name, r in results.items() if r["role"] == "model")
    columns = [f"{section} {metric}" for section, metric, _ in spec["metrics"]]
    print("| recommender | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in [model_name, *spec["rivals"]]:
        values = [(results[name].get(section) or {}).get(metric) for section, metric, _ in spec["metrics"]]
        print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + " |")
    all_won = True
    for key in spec["metrics"]:
        section, metric, direction = key
        ours = _value(results[model_name], key)
        theirs = {name: _value(results[name], key) for name in spec["rivals"]}
        won = all(_better(ours, v, direction) for v in theirs.values())
        all_won &= won
        best_name = (min if direction == "lower" else max)(theirs, key=theirs.get)
        gap = results[best_name]["model_minus_baseline"][section][metric]
        print(f"{section} {metric}: {model_name} {ours:.4f} vs best baseline {best_name} {theirs[best_name]:.4f} -> "
              f"{'better' if won else 'NOT better'} (ratio {ours / theirs[best_name]:.3f}; difference "
              f"{gap['difference']:+.4f}, 95% interval [{gap['low']:+.4f}, {gap['high']:+.4f}])")
    return all_won


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--lake", default="/tmp/sparkrec-movielens-quality")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("overrides", nargs="*", help="extra dotted.key=value config overrides")
    args = parser.parse_args()
    outcome = {}
    for setting in args.settings:
        spec = SETTINGS[setting]
        # ALS cuts its lineage every 10 iterations only with a checkpoint dir; without one, 15
        # iterations overflowed the task deserializer's stack here.
        final = [f"lake={args.lake}/{setting}", f"input.path={os.path.abspath(args.data)}", *COMMON,
                 f"spark.conf.spark.checkpoint.dir={os.path.abspath(args.lake)}/_spark_checkpoints",
                 *spec["overrides"], *args.overrides]
        tuning = [*final, f"lake={args.lake}/{setting}-tuning", *spec["tuning_split"]] if spec["tuning_split"] else final
        spark = get_spark(load_config(None, final).spark)
        seconds = {}
        with timed(seconds, "tune"):
            run_prepare(spark, load_config(None, tuning))
            chosen, lines = tune(spark, tuning, spec)
        print(f"\n## ml-latest-small, {setting}: validation {'/'.join(spec['select'][:2])} of every grid point")
        print("\n".join(lines))
        for name, (point, value, _) in chosen.items():
            print(f"chosen {name}: {' '.join(point) or 'no settings'} (validation {value:.4f})")

        baseline_points = [o for name, (point, _, _) in chosen.items() if name != "model" for o in point]
        model_point, _, tuned = chosen["model"]
        with timed(seconds, "final"):
            if tuning is final:  # the split is the same: judge the chosen tuning run on test
                cfg = load_config(None, [*final, *model_point, *baseline_points, f"name={tuned['name']}"])
                manifest = load_manifest(cfg.lake)
            else:  # retrain the chosen settings on the full train split, for the epochs validation chose
                cfg = load_config(None, [*final, *model_point, *baseline_points, f"train.epochs={tuned['best_epoch']}",
                                         f"name={setting}-final"])
                manifest = run_prepare(spark, cfg)
                run_training(None, cfg)
            metrics = run_evaluate(spark, cfg)
        print(f"\n## ml-latest-small, {setting}, test: {manifest['num_users']} users, {manifest['num_items']} items, "
              f"rows {({k: v['rows'] for k, v in manifest['splits'].items()})}; model {cfg.name}")
        outcome[setting] = report(setting, metrics)
        print("seconds:", {k: round(v, 1) for k, v in seconds.items()}, "report:", metrics["report"])
    print("\nmodel better than every tuned baseline on every metric:", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
