"""Score with the published model `<name>` and publish the result under `<lake>/scores/`.

Top-K mode (default) writes every user's `score.k` best unseen items to `scores/<name>/`; pairs
mode (`score.pairs=<Parquet of user_id, item_id>`) writes a score per pair to
`scores/<name>-pairs/`. Either table appears whole or not at all (see sparkrec/score/job.py).

    ./spark-submit.sh jobs/score.py --conf conf/demo.yaml score.k=20
"""
import json
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.score.job import run_score
from sparkrec.session import get_spark


def score(cfg: Config) -> None:
    manifest = run_score(get_spark(cfg.spark), cfg)
    print(json.dumps({k: v for k, v in manifest.items() if k != "config"}, indent=2))


def main(argv=None) -> int:
    return run_job(score, argv, prog="score", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
