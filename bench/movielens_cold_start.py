"""Cold-start items on MovieLens ml-latest-small: the hybrid NeuMF (text CNN over title, year, genres
and tags) against popularity on items never seen in training, and against plain NeuMF on the
warm items, trained and evaluated in the same run on the same split.

Every rating is an interaction (implicit); a seeded 10% of the movies are cold (all their
ratings go to test, ``prepare.split.cold_item_fraction``), the rest is split leave-last-out (the
second latest per user is the validation item for early stopping). Metrics by the evaluate job:
the cold-item protocol (each user ranks every cold movie) and the full-ranking and sampled
protocols, which then judge warm test items only. Popularity can only order cold items at random (none has a training interaction), and
plain NeuMF cannot rank them at all.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/movielens_cold_start.py

The data folder is only read; everything is written under --lake (a scratch folder).
"""
from __future__ import annotations

import argparse
import os
import sys

from movielens_common import COMMON, DATA, timed  # same reader, rating range and evaluation settings

from sparkrec import lake
from sparkrec.config import load_config
from sparkrec.data.content import content_root, run_prepare_content
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.evaluate.cold_item_protocol import POPULARITY
from sparkrec.evaluate.run import run_evaluate
from sparkrec.session import get_spark
from sparkrec.train.launch import run_training

SETTINGS = ["prepare.implicit_threshold=0.5", "prepare.split.kind=leave_last_out",
            "prepare.split.cold_item_fraction=0.1", "evaluate.baselines=[popularity]",
            "train.epochs=20", "train.batch_size=256", "train.lr=0.002", "train.factors=32",
            "train.mlp_layers=[64,32,16]", "train.num_negatives=4", "train.early_stopping_patience=4",
            "content.source=movielens", "content.max_tokens=32", "content.min_count=2", "content.id_dropout=0.5"]
MODELS = ("hybrid", "neumf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--lake", default="/tmp/sparkrec-movielens-cold-start")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-evaluate the models already published in --lake (no prepare or training)")
    parser.add_argument("overrides", nargs="*", help="extra dotted.key=value config overrides")
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    cfg = load_config(None, [f"lake={args.lake}", f"input.path={data}", f"content.path={data}", *COMMON, *SETTINGS,
                             *args.overrides])
    spark = get_spark(cfg.spark)
    seconds, metrics = {}, {}
    with timed(seconds, "prepare+content"):
        if args.evaluate_only:
            prepared, content = load_manifest(cfg.lake), lake.resolve(content_root(cfg.lake))
        else:
            prepared, content = run_prepare(spark, cfg), run_prepare_content(spark, cfg)
    for kind in MODELS:
        model_cfg = cfg.model_copy(update={"name": kind, "train": cfg.train.model_copy(update={"model": kind})})
        if not args.evaluate_only:
            with timed(seconds, f"train {kind}"):
                summary = run_training(None, model_cfg)
            print(f"{kind}: best epoch {summary['best_epoch']} of {len(summary['history'])}")
        with timed(seconds, f"evaluate {kind}"):
            metrics[kind] = run_evaluate(spark, model_cfg)

    print(f"\n## ml-latest-small cold start: {prepared['num_users']} users, {prepared['num_items']} items, "
          f"rows { {k: v['rows'] for k, v in prepared['splits'].items()} }; content: {content['counts']}, "
          f"{content['vocab_size']} token ids")
    cold = metrics["hybrid"]["cold_items"]
    print(f"\ncold items: {cold['cold_items']} items, {cold['positives']} test positives of {cold['users']} users")
    print("| recommender | cold hr@10 | cold ndcg@10 |\n|---|---|---|")
    for name in ("hybrid", POPULARITY):
        r = cold["results"][name]
        print(f"| {name} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} |")
    print(f"| neumf | {metrics['neumf']['cold_items']['results']['neumf'].get('reason', '?')} | |")
    for metric in ("hr@10", "ndcg@10"):
        ours, base = cold["results"]["hybrid"][metric], cold["results"][POPULARITY][metric]
        print(f"cold {metric}: hybrid {ours:.4f} vs popularity {base:.4f} (ratio {ours / base:.3f})")

    print("\n| model | warm full hr@10 | warm full ndcg@10 | sampled hr@10 | sampled ndcg@10 |\n|---|---|---|---|---|")
    for kind in (*MODELS, POPULARITY):
        r = metrics["neumf" if kind == POPULARITY else kind]["results"][kind]
        print(f"| {kind} | {r['full']['hr@10']:.4f} | {r['full']['ndcg@10']:.4f} | "
              f"{r['sampled']['hr@10']:.4f} | {r['sampled']['ndcg@10']:.4f} |")
    for protocol in ("full", "sampled"):
        ours, base = (metrics[k]["results"][k][protocol]["ndcg@10"] for k in MODELS)
        print(f"warm {protocol} ndcg@10: hybrid {ours:.4f} vs neumf {base:.4f} (ratio {ours / base:.3f})")
    print("seconds:", {k: round(v, 1) for k, v in seconds.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
