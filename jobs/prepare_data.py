"""Turn the raw interaction log at `input.path` into training-ready Parquet under `<lake>/prepared/`.

Bad rows go to the quarantine with a reason, duplicates are merged, IDs get dense indices that
stay stable across runs, and train/validation/test appear only once complete (see
sparkrec/data/prepare.py).

    ./spark-submit.sh jobs/prepare_data.py --conf conf/demo.yaml prepare.split.kind=random
"""
import json
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.data.prepare import run_prepare
from sparkrec.session import get_spark


def prepare(cfg: Config) -> None:
    spark = get_spark(cfg.spark)
    manifest = run_prepare(spark, cfg)
    summary = {"version": manifest["version"], "counts": manifest["counts"], "num_users": manifest["num_users"],
               "num_items": manifest["num_items"], "rows": {k: v["rows"] for k, v in manifest["splits"].items()}}
    print(json.dumps(summary, indent=2))


def main(argv=None) -> int:
    return run_job(prepare, argv, prog="prepare_data", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
