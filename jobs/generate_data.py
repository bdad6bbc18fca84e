"""Generate a synthetic interaction log at `input.path` (format `input.format`).

    ./spark-submit.sh jobs/generate_data.py --conf conf/demo.yaml generate.num_rows=1000000
"""
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.data.synthetic import generate_interactions, write_synthetic
from sparkrec.session import get_spark


def generate(cfg: Config) -> None:
    spark = get_spark(cfg.spark)
    df = generate_interactions(spark, cfg.generate, cfg.input.columns)
    truth = write_synthetic(df, cfg.input.path, cfg.input.format, cfg.input.csv_delimiter)
    print(f"generated {truth['rows']} rows at {cfg.input.path}: {truth}")


def main(argv=None) -> int:
    return run_job(generate, argv, prog="generate_data", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
