"""Prepared lakes shared by the training tests: generated logs with planted preferences, run through
the real generate -> prepare path once per test session.

- ``implicit``: events only, leave-last-out split with validation, 4 train files (even shards
  for 2 workers);
- ``explicit``: ratings 1-5, random 80/10/10 split, 3 train files, so 2 workers get uneven shards
  (row groups 0 and 2 against row group 1).

Popularity is flattened (Zipf 0.7) and each event picks among 32 popular candidates, so a model
that learns the planted user/item factors clearly beats popularity (an oracle scoring by the
planted factors reaches HR@10 ~0.78 against ~0.43 for popularity).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sparkrec.config import load_config
from sparkrec.data.prepare import run_prepare
from sparkrec.data.synthetic import generate_interactions, write_synthetic

GENERATE = ["generate.num_rows=60000", "generate.num_users=400", "generate.num_items=200",
            "generate.candidates=32", "generate.popularity_exponent=0.7", "generate.partitions=4"]
KINDS = {
    "implicit": ["generate.kind=implicit", "input.columns.rating=null", "prepare.split.kind=leave_last_out",
                 "prepare.num_files=4", "train.num_workers=2"],
    "explicit": ["generate.kind=explicit", "prepare.split.kind=random", "prepare.split.fractions=[0.8,0.1,0.1]",
                 "prepare.num_files=3", "train.num_workers=1"],
}
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
QUIET = ["train.threads_per_worker=1", "train.log_every_steps=100000"]
_made: dict[str, str] = {}


def prepared_lake(spark, tmp_path_factory, kind: str) -> str:
    """Path of a lake holding published prepared data of ``kind`` (built once per session)."""
    if kind not in _made:
        root = tmp_path_factory.mktemp(f"lake-{kind}")
        cfg = load_config(None, [f"lake={root}/lake", f"input.path={root}/raw", *GENERATE, *KINDS[kind]])
        # Same rows whatever the session's shuffle partitions, but not in the same order within
        # the files (which the training trajectory follows): pin it, as another test's
        # get_spark(...) may have reset it on the shared session.
        previous = spark.conf.get(SHUFFLE_PARTITIONS)
        spark.conf.set(SHUFFLE_PARTITIONS, "2")
        try:
            write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
            run_prepare(spark, cfg)
        finally:
            spark.conf.set(SHUFFLE_PARTITIONS, previous)
        _made[kind] = cfg.lake
    return _made[kind]


def read_split(manifest: dict, split: str) -> pd.DataFrame:
    return pd.read_parquet(manifest["splits"][split]["path"].removeprefix("file://"))


def sampled_hr_at_10(score, manifest: dict, negatives: int = 99, seed: int = 0) -> float:
    """HR@10 of each test positive ranked against ``negatives`` items the user never interacted
    with in train, drawn uniformly with ``seed``; ties count against the positive.

    ``score(users, items) -> np.ndarray`` scores aligned pairs.
    """
    train, test = read_split(manifest, "train"), read_split(manifest, "test")
    seen = train.groupby("user_idx")["item_idx"].apply(set).to_dict()
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u, i in zip(test["user_idx"], test["item_idx"]):
        drawn: list[int] = []
        while len(drawn) < negatives:
            c = int(rng.integers(manifest["num_items"]))
            if c != i and c not in seen.get(u, ()):
                drawn.append(c)
        users.append(np.full(negatives + 1, u))
        items.append(np.array([i, *drawn]))
    scores = np.asarray(score(np.concatenate(users), np.concatenate(items))).reshape(len(test), negatives + 1)
    return float(((scores[:, 1:] >= scores[:, :1]).sum(axis=1) < 10).mean())


def train_config(lake: str, name: str, *overrides: str):
    """A quiet single-threaded training config on a prepared lake."""
    return load_config(None, [f"lake={lake}", f"name={name}", *QUIET, *overrides])
