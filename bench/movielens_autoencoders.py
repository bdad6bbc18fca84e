"""The autoencoders against NeuMF on MovieLens ml-latest-small, same splits, same run, metrics by
the evaluate job (settings, splits and NeuMF's hyper-parameters from ``movielens_quality.py``):

- implicit (leave-last-out, validation = second latest): Mult-VAE against NeuMF on full-ranking
  NDCG@10 and recall@20 (popularity as the floor);
- explicit (90/10 random split): I-AutoRec against NeuMF on RMSE (bias model as the floor).

The autoencoders' hyper-parameters were set from the papers and one or two runs here (no
separate tuning split). With 610 users, one user is 0.0016 of a ranking metric.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/movielens_autoencoders.py [--settings implicit explicit]

The data folder is only read; everything is written under --lake (a scratch folder).
"""
from __future__ import annotations

import argparse
import os
import sys

from movielens_common import COMMON, DATA, NEUMF_SETTINGS, timed
from sparkrec.config import load_config
from sparkrec.data.prepare import run_prepare
from sparkrec.evaluate.run import run_evaluate
from sparkrec.session import get_spark
from sparkrec.train.launch import run_training

AUTOENCODERS = {
    # Liang et al.: [600] -> 200, dropout 0.5, beta annealed to 0.2; 610 users make 10 steps an
    # epoch at batch 64, so the annealing is shortened to 1000 steps.
    "implicit": ["train.model=multvae", "autoencoder.batch_size=64", "train.lr=0.001", "train.epochs=150",
                 "autoencoder.anneal_steps=1000", "train.early_stopping_patience=20", "train.weight_decay=0.0",
                 "train.dropout=0.0"],
    # Sedhain et al.: 500 hidden units on item vectors, L2 on the weights (0.001 gave RMSE 1.41,
    # 0.1 0.91, 1.0 0.88 after 10 epochs here).
    "explicit": ["train.model=autorec", "autoencoder.batch_size=16", "train.lr=0.003", "train.epochs=20",
                 "autoencoder.l2=1.0", "train.weight_decay=0.0", "train.dropout=0.0"],
}
EVALUATE = {
    "implicit": ["evaluate.k=[10,20]", "evaluate.baselines=[popularity]"],
    "explicit": ["evaluate.k=[10]", "evaluate.baselines=[bias]"],
}
METRICS = {"implicit": [("full", "ndcg@10", "higher"), ("full", "recall@20", "higher"), ("sampled", "hr@10", "higher")],
           "explicit": [("rating", "rmse", "lower"), ("rating", "mae", "lower")]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--lake", default="/tmp/sparkrec-movielens-autoencoders")
    parser.add_argument("--settings", nargs="+", default=list(AUTOENCODERS), choices=list(AUTOENCODERS))
    args = parser.parse_args()
    for setting in args.settings:
        base = [f"lake={args.lake}/{setting}", f"input.path={os.path.abspath(args.data)}", *COMMON,
                *NEUMF_SETTINGS[setting], *EVALUATE[setting]]
        contenders = {"neumf": [*base, "train.model=neumf"], "autoencoder": [*base, *AUTOENCODERS[setting]]}
        spark = get_spark(load_config(None, base).spark)
        manifest = run_prepare(spark, load_config(None, base))
        rows, seconds = {}, {}
        for role, overrides in contenders.items():
            cfg = load_config(None, overrides)
            cfg = cfg.model_copy(update={"name": f"{cfg.train.model}-{setting}"})
            with timed(seconds, f"train {cfg.name}"):
                summary = run_training(spark, cfg)
            with timed(seconds, f"evaluate {cfg.name}"):
                results = run_evaluate(spark, cfg)["results"]
            for name, result in results.items():
                rows.setdefault(name, result)
            print(f"[{setting}] {cfg.name}: best epoch {summary['best_epoch']} of {len(summary['history'])}",
                  flush=True)
        print(f"\n## ml-latest-small, {setting}: {manifest['num_users']} users, {manifest['num_items']} items, "
              f"rows {({k: v['rows'] for k, v in manifest['splits'].items()})}")
        columns = [f"{section} {metric}" for section, metric, _ in METRICS[setting]]
        print("| recommender | " + " | ".join(columns) + " |\n" + "|---" * (len(columns) + 1) + "|")
        for name, r in rows.items():
            values = [(r.get(section) or {}).get(metric) for section, metric, _ in METRICS[setting]]
            print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + " |")
        ours, theirs = (f"{load_config(None, contenders[k]).train.model}-{setting}" for k in ("autoencoder", "neumf"))
        for section, metric, better in METRICS[setting]:
            a, b = rows[ours][section][metric], rows[theirs][section][metric]
            won = a < b if better == "lower" else a > b
            print(f"{section} {metric}: {ours} {a:.4f} vs {theirs} {b:.4f} -> {'better' if won else 'NOT better'} "
                  f"(ratio {a / b:.3f})")
        print("seconds:", {k: round(v, 1) for k, v in seconds.items()}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
