"""Quality gate: is a newly trained model at least as good as the published one?

Both models are judged on the same rows: the current validation split, restricted to users and
items that both models know (the stable vocabulary makes indices below the older model's sizes
name the same users and items). Explicit data is judged by RMSE, implicit data by HR@10 against
``evaluate.num_negatives`` sampled negatives (the NCF protocol, seeded), through the evaluate
job's own metric code and the score engine, as served.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, LABEL, RANK, SCORE, USER_IDX
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.candidates import interactions, sample_negatives, sampled_lists
from sparkrec.evaluate.ranking_metrics import LIST_ID, mean_over_users, per_list_metrics, rank_by_score
from sparkrec.evaluate.rating_metrics import rating_metrics
from sparkrec.models.store import read_meta
from sparkrec.score.pairs import score_index_pairs

GATE_K = 10


@dataclass(frozen=True)
class Verdict:
    metric: str
    higher_is_better: bool
    candidate: float
    published: float
    tolerance: float
    rows: int

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
                f"{self.rows} validation rows (regression {self.regression:+.4f}, tolerance {self.tolerance})")


def _common_rows(validation: DataFrame, metas: list[dict]) -> DataFrame:
    users = min(m["num_users"] for m in metas)
    items = min(m["num_items"] for m in metas)
    return validation.where((F.col(USER_IDX) < users) & (F.col(ITEM_IDX) < items))


def _hit_rate(spark: SparkSession, model: str, lists: DataFrame, candidates: DataFrame, seed: int) -> float:
    ranked = rank_by_score(score_index_pairs(spark, model, candidates), seed)
    hits = ranked.where(F.col(ITEM_IDX) == F.col(LIST_ID)).select(USER_IDX, LIST_ID, RANK)
    return mean_over_users(per_list_metrics(lists, hits, [GATE_K]), [GATE_K])[f"hr@{GATE_K}"]


def compare(spark: SparkSession, prepared: dict, candidate: str, published: str, tolerance: float,
            num_negatives: int, seed: int) -> Verdict:
    """Judge model version ``candidate`` against ``published`` on ``prepared``'s validation split.

    Raises
    ------
    SparkrecError
        The prepared data has no validation rows the two models can both score.
    """
    metas = [read_meta(candidate), read_meta(published)]
    split = prepared["splits"].get("validation") or {}
    if not split.get("rows"):
        raise SparkrecError("the quality gate needs a validation split, the prepared data has none; enable "
                            "prepare.split.validation (leave_last_out) or give prepare.split.fractions a validation share")
    validation = _common_rows(spark.read.parquet(split["path"]), metas).cache()
    rows = validation.count()
    if rows == 0:
        raise SparkrecError(f"no validation row has a user and item known to both {candidate} and {published}")
    try:
        if not prepared["implicit"] and not metas[0]["implicit"]:
            pairs = validation.select(USER_IDX, ITEM_IDX, LABEL)
            values = [rating_metrics(score_index_pairs(spark, m, pairs).drop(SCORE))["rmse"]
                      for m in (candidate, published)]
            return Verdict("rmse", False, values[0], values[1], tolerance, rows)
        lists = sampled_lists(validation.select(USER_IDX, ITEM_IDX))
        train = spark.read.parquet(prepared["splits"]["train"]["path"])
        negatives, targets = sample_negatives(lists, interactions(train, validation), min(m["num_items"] for m in metas),
                                              num_negatives, seed)
        candidates = lists.select(USER_IDX, LIST_ID, ITEM_IDX).unionByName(negatives).cache()
        lists = lists.drop(ITEM_IDX).cache()
        values = [_hit_rate(spark, m, lists, candidates, seed) for m in (candidate, published)]
        for df in (negatives, targets, candidates, lists):
            df.unpersist()
        return Verdict(f"hr@{GATE_K}", True, values[0], values[1], tolerance, rows)
    finally:
        validation.unpersist()
