"""Quality table on MovieLens ml-latest-small: NeuMF vs the baselines under both ranking protocols.

Runs prepare -> train (local backend) -> evaluate in one process for two settings:

- implicit (the NCF paper's setting): every rating is an interaction, leave-last-out split;
- explicit: ratings as labels, NeuMF trained on MSE, RMSE/MAE next to the ranking metrics.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/movielens_eval.py [--data DIR] [--lake DIR] \
        [--epochs N] [--settings implicit explicit]

Prints one table per setting and the model / popularity ratio of NDCG@10 in each protocol. The
data folder is only read; everything is written under --lake (a scratch folder).
"""
from __future__ import annotations

import argparse
import os
import sys

from movielens_common import prepare_train_evaluate
from sparkrec.config import load_config

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

SETTINGS = {
    # ml-latest-small has half-star ratings from 0.5; every one counts as an interaction.
    "implicit": ["prepare.implicit_threshold=0.5", "train.num_negatives=4"],
    "explicit": [],
}
COLUMNS = ["rmse", "full ndcg@10", "full hr@10", "full recall@20", "full map@10", "full mrr", "full coverage@10",
           "sampled hr@10", "sampled ndcg@10", "sampled mrr"]


def row(result: dict) -> list:
    def get(section, key):
        values = result.get(section) or {}
        return values.get(key)
    out = [get("rating", "rmse")]
    for col in COLUMNS[1:]:
        protocol, metric = col.split(" ")
        out.append(get(protocol, metric))
    return out


def print_table(title: str, metrics: dict) -> None:
    print(f"\n## {title}")
    print("| recommender | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, result in metrics["results"].items():
        cells = ["–" if v is None else f"{v:.4f}" for v in row(result)]
        print(f"| {name} ({result['role']}) | " + " | ".join(cells) + " |")
    results = metrics["results"]
    model = next(r for r in results.values() if r["role"] == "model")
    if "popularity" in results:
        for protocol in ("full", "sampled"):
            ratio = model[protocol]["ndcg@10"] / results["popularity"][protocol]["ndcg@10"]
            print(f"{protocol}: model / popularity NDCG@10 = {ratio:.2f}")
    print("counts:", metrics["counts"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                       "ml-latest-small"))
    parser.add_argument("--lake", default="/tmp/sparkrec-movielens-eval")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    for setting in args.settings:
        cfg = load_config(None, [
            f"lake={args.lake}/{setting}", f"input.path={os.path.abspath(args.data)}", "input.format=movielens",
            "prepare.rating_min=0.5", "prepare.num_files=2", "spark.log_level=ERROR",
            "train.model=neumf", f"train.epochs={args.epochs}", "train.batch_size=256", "train.lr=0.001",
            "train.early_stopping_patience=3", "train.log_every_steps=100000",
            "evaluate.k=[5, 10, 20]", "evaluate.num_negatives=99", *SETTINGS[setting]])
        manifest, summary, metrics, timings = prepare_train_evaluate(cfg)
        print_table(f"ml-latest-small, {setting} (users {manifest['num_users']}, items {manifest['num_items']}, "
                    f"splits { {k: v['rows'] for k, v in manifest['splits'].items()} }, best epoch "
                    f"{summary['best_epoch']} by {summary['metric']})", metrics)
        print("seconds:", {k: round(v, 1) for k, v in timings.items()}, "report:", metrics["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
