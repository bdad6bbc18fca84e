"""Tune the model of `train.*` (and the ALS / EASE baselines, `tune.targets`) on the validation
split of the prepared data; writes `<lake>/tuning/<name>/` (trials table, best.yaml for --conf).

    ./spark-submit.sh jobs/tune.py --conf conf/demo.yaml tune.trials=20 tune.targets=[model,als,ease]
"""
import json
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.session import get_spark
from sparkrec.tune.search import run_tune


def tune(cfg: Config) -> None:
    result = run_tune(get_spark(cfg.spark), cfg)
    print(json.dumps({"best": result["best"], "best_yaml": result["best_yaml"], "trials": result["trials_path"]},
                     indent=2, default=str))


def main(argv=None) -> int:
    return run_job(tune, argv, prog="tune", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
