"""Train an NCF model (GMF, MLP or NeuMF) on the prepared data and publish `<lake>/models/<name>/`.

    ./spark-submit.sh jobs/train_ncf.py --conf conf/demo.yaml train.backend=torch train.num_workers=2
"""
import json
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.session import get_spark
from sparkrec.train.launch import run_training


def train(cfg: Config) -> None:
    spark = get_spark(cfg.spark) if cfg.train.backend != "local" else None
    summary = run_training(spark, cfg)
    last = summary["history"][-1] if summary["history"] else {}
    print(json.dumps({"model": summary["model"]["version"], "best_epoch": summary["best_epoch"],
                      "metric": summary["metric"], "last_epoch": last}, indent=2, default=str))


def main(argv=None) -> int:
    return run_job(train, argv, prog="train_ncf", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
