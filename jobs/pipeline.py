"""The scheduled run: prepare -> train -> quality gate -> evaluate -> score, skipping unchanged stages.

    ./spark-submit.sh jobs/pipeline.py --conf conf/demo.yaml train.warm_start=latest

Exit codes: 0 published (or nothing to do), 1 a stage failed, 2 bad config, 3 the quality gate
blocked a regressed model (the previous model and top-K table stay live).
"""
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.pipeline.run import headline, run_pipeline
from sparkrec.session import get_spark


def pipeline(cfg: Config) -> None:
    summary = run_pipeline(get_spark(cfg.spark), cfg)
    stages = ", ".join(f"{name} {s['status']}" for name, s in summary["stages"].items())
    print(f"run {summary['run_id']} {summary['status']}: {stages}")
    # What a user opens next: the report, the served table, and how the model compares.
    scores = summary["stages"]["score"]["outputs"]
    print(f"report:   {summary['stages']['evaluate']['outputs']['report']}")
    print(f"scores:   {scores['version']} ({scores['rows']} rows, top {scores['k']} for {scores['users']} users)")
    print(f"headline: {cfg.name}: {headline(summary)}")


def main(argv=None) -> int:
    return run_job(pipeline, argv, prog="pipeline", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
