"""Tokenise item text (`content.*`) for the published prepared items into `<lake>/content/`.

    ./spark-submit.sh jobs/prepare_content.py --conf conf/demo.yaml content.source=movielens content.path=data/ml-latest-small
"""
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.data.content import run_prepare_content
from sparkrec.session import get_spark


def prepare_content(cfg: Config) -> None:
    manifest = run_prepare_content(get_spark(cfg.spark), cfg)
    print(f"published item content {manifest['version']} for prepared data {manifest['data_hash']}: "
          f"{manifest['counts']}, {manifest['vocab_size']} token ids")


def main(argv=None) -> int:
    return run_job(prepare_content, argv, prog="prepare_content", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
