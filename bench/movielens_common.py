"""What the older MovieLens benches (``movielens_eval``, ``movielens_autoencoders``,
``movielens_cold_start``) share: the raw ml-latest-small reader settings, the NeuMF settings they
compare against, and a timer. They ran on these before ``movielens_quality`` moved to the exact
split files and the shipped confs; kept here so those benches keep their own splits and numbers.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from sparkrec.data.prepare import run_prepare
from sparkrec.evaluate.run import run_evaluate
from sparkrec.session import get_spark
from sparkrec.train.launch import run_training

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ml-latest-small")

COMMON = ["input.format=movielens", "prepare.rating_min=0.5", "prepare.num_files=2", "spark.log_level=ERROR",
          "train.model=neumf", "train.threads_per_worker=1", "train.log_every_steps=1000000",
          "evaluate.k=[10]", "evaluate.num_negatives=99", "evaluate.als_blocks=2", "evaluate.als_max_iter=15"]

NEUMF_SETTINGS = {
    "explicit": ["prepare.split.kind=random", "prepare.split.fractions=[0.9,0.0,0.1]",
                 "evaluate.baselines=[global_mean,bias,als_explicit]",
                 "train.epochs=10", "train.batch_size=128", "train.lr=0.001", "train.factors=32",
                 "train.mlp_layers=[64,32,16]", "train.weight_decay=0.005", "train.dropout=0.2"],
    "implicit": ["prepare.implicit_threshold=0.5", "prepare.split.kind=leave_last_out",
                 "evaluate.baselines=[popularity,als_implicit]", "train.model=gmf",
                 "train.epochs=30", "train.batch_size=256", "train.lr=0.002", "train.factors=64",
                 "train.num_negatives=4", "train.early_stopping_patience=4"],
}
"""Per setting: the split and the NCF settings the autoencoders are compared against (untuned)."""


@contextmanager
def timed(seconds: dict, name: str):
    """Record the wall time of the block as ``seconds[name]``."""
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started


def prepare_train_evaluate(cfg) -> tuple[dict, dict, dict, dict]:
    """The three jobs on ``cfg`` in one process: prepared manifest, training summary, evaluate
    metrics and the seconds each took."""
    spark = get_spark(cfg.spark)
    seconds = {}
    with timed(seconds, "prepare"):
        manifest = run_prepare(spark, cfg)
    with timed(seconds, "train"):
        summary = run_training(None, cfg)
    with timed(seconds, "evaluate"):
        metrics = run_evaluate(spark, cfg)
    return manifest, summary, metrics, seconds
