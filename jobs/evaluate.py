"""Evaluate the model `models/<name>` (or the top-K table `scores/<name>` with
`evaluate.source=scores`) against baselines on the test split; publish `<lake>/reports/<name>/`
(`metrics.json` and `report.html`).

    ./spark-submit.sh jobs/evaluate.py --conf conf/demo.yaml evaluate.k=[5,10,20]
"""
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.evaluate.run import run_evaluate
from sparkrec.session import get_spark


def evaluate(cfg: Config) -> None:
    metrics = run_evaluate(get_spark(cfg.spark), cfg)
    k = 10 if 10 in metrics["k"] else metrics["k"][0]
    for name, r in metrics["results"].items():
        rating = r["rating"] or {}
        full, sampled = r["full"] or {}, r["sampled"] or {}
        print(f"{name:>16} ({r['role']}): rmse={rating.get('rmse')} full ndcg@{k}={full.get(f'ndcg@{k}')} "
              f"sampled hr@{k}={sampled.get(f'hr@{k}')}")
    print(f"report: {metrics['report']}")


def main(argv=None) -> int:
    return run_job(evaluate, argv, prog="evaluate", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
