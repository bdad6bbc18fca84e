"""Quality gate: is a newly trained model at least as good as the published one?

Both models are judged on the same users and by the training loop's own validation metric
(``sparkrec.train.validation``: full-ranking NDCG@10 on implicit data, RMSE on ratings; the evaluate
job's definitions): a seeded sample of the current validation split's users (``train.validation_users``),
restricted to the users and items both models know (the stable vocabulary makes indices below the
older model's sizes name the same users and items; a history model knows every user with a
history). The sample is built in Spark; the two small computations run on the driver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, USER_IDX
from sparkrec.config import Config
from sparkrec.errors import SparkrecError
from sparkrec.models.block_scoring import is_history_model
from sparkrec.models.store import load_model_version
from sparkrec.train.inputs import validation_sample
from sparkrec.train.validation import LOWER_IS_BETTER, sample_of, validate


@dataclass(frozen=True)
class Verdict:
    metric: str
    higher_is_better: bool
    candidate: float
    published: float
    tolerance: float
    rows: int
    """Validation users judged."""

    @property
    def regression(self) -> float:
        """How much worse the candidate is (positive = worse), in the metric's units."""
        diff = self.candidate - self.published
        return -diff if self.higher_is_better else diff

    @property
    def passed(self) -> bool:
        return self.regression <= self.tolerance

    def describe(self) -> str:
        return (f"{self.metric} of the new model {self.candidate:.4f} vs published {self.published:.4f} on "
                f"{self.rows} validation users (regression {self.regression:+.4f}, tolerance {self.tolerance})")


def compare(spark: SparkSession, cfg: Config, prepared: dict, candidate: str, published: str) -> Verdict:
    """Judge model version ``candidate`` against ``published`` on ``prepared``'s validation split.

    Raises
    ------
    SparkrecError
        The prepared data has no validation rows the two models can both score.
    """
    if not prepared["splits"].get("validation", {}).get("rows"):
        raise SparkrecError("the quality gate needs a validation split, the prepared data has none; enable "
                            "prepare.split.validation (leave_last_out) or give prepare.split.fractions a validation share")
    models = [load_model_version(v) for v in (candidate, published)]
    model_cfgs = [meta["model"] for _, meta in models]
    items = min(m["num_items"] for m in model_cfgs)
    users = [m.get("num_users") for m in model_cfgs if not is_history_model(m)]
    history_len = max((m["max_len"] for m in model_cfgs if is_history_model(m)), default=None)
    sample = validation_sample(spark, prepared, ["train"], cfg.train.validation_users, cfg.seed, history_len)
    if users:
        sample = sample.where(F.col(USER_IDX) < min(users))
    table = pa.Table.from_pandas(sample.toPandas(), preserve_index=False)
    table = _known_items_only(table, items)
    if table.num_rows == 0:
        raise SparkrecError(f"no validation user has an item known to both {candidate} and {published}")
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    trained = np.zeros(items, dtype=bool)
    trained[train.where(F.col(ITEM_IDX) < items).select(ITEM_IDX).distinct().toPandas()[ITEM_IDX].to_numpy()] = True
    values, metric = [], None
    for model, meta in models:
        implicit = meta["implicit"]
        metric = "ndcg@10" if implicit else "rmse"
        own = sample_of(table, 0, 1, meta["model"]["max_len"] if is_history_model(meta["model"]) else None)
        allowed = torch.from_numpy(np.pad(trained, (0, meta["model"]["num_items"] - items)))
        values.append(validate(model, own, allowed, bool(prepared.get("cold_items")), torch.device("cpu"))[metric])
    return Verdict(metric, not LOWER_IS_BETTER[metric], values[0], values[1], cfg.pipeline.gate_tolerance,
                   table.num_rows)


def _known_items_only(table: pa.Table, items: int) -> pa.Table:
    """Targets restricted to items both models know; users left without a target are dropped."""
    frame = table.to_pandas()
    for col, labels in (("targets", "target_labels"),):
        kept = [(np.asarray(t)[np.asarray(t) < items], np.asarray(lab)[np.asarray(t) < items])
                for t, lab in zip(frame[col], frame[labels])]
        frame[col] = [k[0] for k in kept]
        frame[labels] = [k[1] for k in kept]
    frame = frame[frame["targets"].map(len) > 0]
    return pa.Table.from_pandas(frame, preserve_index=False)
