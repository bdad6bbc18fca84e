"""Shared entry point for jobs: parse ``--conf`` and overrides, run, map failures to exit codes.

Exit codes (what a scheduler can act on):
  0  success
  1  the job failed (bad data, missing input, failed check); reason on the last stderr line
  2  invalid config or command line; nothing was started
  3  the pipeline's quality gate blocked a regressed model; nothing was published

spark-submit runs the Python driver with its stderr merged into stdout (client mode), so the
reason printed here would not end stderr. When ``$SPARKREC_REASON_FILE`` is set (spark-submit.sh
sets it), the one-line reason is also written to that file, and spark-submit.sh prints it on its
own stderr as the last line once spark-submit has exited.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

from sparkrec.config import Config, ConfigError, load_config
from sparkrec.errors import SparkrecError
from sparkrec.preflight import check_lake_location

EXIT_FAILED = 1
EXIT_CONFIG = 2
REASON_FILE = "SPARKREC_REASON_FILE"


def spark_master(cfg: Config) -> str:
    """The master this job's session will have: spark-submit's (read from the JVM it started,
    before any session exists) or ``spark.master`` for runs without spark-submit."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # as sparkrec.session (which imports pyspark) tells it
        from pyspark import SparkConf, SparkContext

        # Attach to spark-submit's JVM without creating a context: SparkConf() then reads its
        # settings (--master, spark-defaults.conf); before that it is an empty Python dict.
        SparkContext._ensure_initialized()

        return SparkConf().get("spark.master", cfg.spark.master)
    return cfg.spark.master


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _fail(reason: str, code: int) -> int:
    """Report a failure: ``reason`` on stderr and, for spark-submit.sh, in ``$SPARKREC_REASON_FILE``."""
    print(reason, file=sys.stderr, flush=True)
    path = os.environ.get(REASON_FILE)
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(reason + "\n")
        except OSError as e:  # the reason is on stderr anyway; say why the file is missing
            print(f"could not write the failure reason to {REASON_FILE}={path}: {e}", file=sys.stderr)
    return code


def _parse(argv: Sequence[str] | None, prog: str, doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--conf", help="YAML config file (conf/*.yaml); defaults apply when omitted")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                        help="override any config key, e.g. train.epochs=5 (see python -m sparkrec.config)")
    return parser.parse_args(argv)


def check_config(argv: Sequence[str], prog: str) -> int:
    """Validate a job's config arguments without running it (spark-submit.sh calls this first)."""
    return run_job(lambda cfg: None, argv, prog)


def run_job(job: Callable[[Config], object], argv: Sequence[str] | None, prog: str, doc: str = "") -> int:
    try:
        args = _parse(argv, prog, doc)
    except SystemExit as e:  # argparse already printed usage
        return EXIT_CONFIG if e.code else 0
    try:
        cfg = load_config(args.conf, args.overrides)
    except ConfigError as e:
        return _fail(f"{prog}: {_one_line(e)}", EXIT_CONFIG)
    try:
        check_lake_location(cfg.lake, spark_master(cfg), cfg.lake_shared)  # before any work
        job(cfg)
    except SparkrecError as e:
        return _fail(f"{prog}: failed: {_one_line(e)}", e.exit_code)
    except Exception as e:  # unexpected: keep the traceback, but end with the one-line reason
        traceback.print_exc()
        return _fail(f"{prog}: failed: {e.__class__.__name__}: {_one_line(e)}", EXIT_FAILED)
    return 0


if __name__ == "__main__":
    # python -m sparkrec.cli <job name> [--conf file] [overrides]
    sys.exit(check_config(sys.argv[2:], prog=sys.argv[1]))
