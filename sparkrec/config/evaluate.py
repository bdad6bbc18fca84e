"""Evaluate job settings (`evaluate.*`)."""
from typing import Literal, Optional

from pydantic import Field, PositiveInt, model_validator

from sparkrec.config.base import Section

Baseline = Literal["global_mean", "bias", "popularity", "als_explicit", "als_implicit", "ease"]


class EvaluateConfig(Section):
    k: list[PositiveInt] = Field([5, 10, 20], min_length=1)
    """Cut-offs K for the ranking metrics (HR, NDCG, precision, recall, MAP@K) and coverage."""

    num_negatives: int = Field(99, ge=1)
    """Sampled protocol: negatives drawn per test positive (NCF paper: 99)."""

    split: Literal["test", "validation"] = "test"
    """The split whose interactions are the held-out positives. `validation` is for choosing
    hyper-parameters (of the model or of the baselines) without looking at test; its full-ranking
    protocol excludes the train interactions only (test interactions lie in the future)."""

    source: Literal["model", "scores"] = "model"
    """What to evaluate: `model` = the train job's artifact models/<name> (all protocols);
    `scores` = the score job's precomputed top-K table scores/<name> (full-ranking metrics only:
    a top-K table holds no scores for sampled negatives or rating predictions)."""

    exclude_splits: list[Literal["train", "validation"]] = ["train", "validation"]
    """Full-ranking protocol: the user's interactions in these splits are not ranked (nor counted as
    test positives). Validation items are excluded too by default: they are known interactions,
    not test targets, and a model that ranks them high must not be penalised. With
    `source=scores` the table's own `score.exclude_splits` applies instead."""

    relevance_threshold: Optional[float] = None
    """Explicit data: a test rating counts as relevant for the ranking metrics when >= this value;
    null = every test interaction is relevant (the NCF convention). Ignored for implicit data."""

    baselines: list[Baseline] = ["global_mean", "bias", "popularity", "als_explicit", "als_implicit", "ease"]
    """Baselines fitted on the same training interactions as the model (train, or train +
    validation when it was refit) and scored on the same split. The rating models (`global_mean`,
    `bias`, `als_explicit`) are skipped on implicit data, where every label is 1; `ease` ranks
    (from which items a user had) and predicts no ratings."""

    bias_reg: float = Field(10.0, ge=0.0)
    """User/item bias baseline: damping added to each count (b_i = sum(r - mu) / (n_i + reg)),
    so items and users with few ratings shrink toward the global mean."""

    als_rank: int = Field(10, ge=1)
    """MLlib ALS baselines: latent factors."""

    als_reg: float = Field(0.1, ge=0.0)
    """MLlib ALS baselines: `regParam`."""

    als_alpha: float = Field(1.0, ge=0.0)
    """MLlib implicit ALS: confidence `alpha` (c = 1 + alpha * value)."""

    als_max_iter: int = Field(10, ge=1)
    """MLlib ALS baselines: alternating iterations. Above 10, set a checkpoint dir
    (`spark.conf.spark.checkpoint.dir`): ALS cuts its lineage every 10 iterations only then, and a
    longer lineage can overflow the stack when tasks are deserialised."""

    ease_lambda: float = Field(500.0, gt=0.0)
    """EASE baseline: L2 strength lambda of the closed form (tune it with jobs/tune.py)."""

    ease_max_items: int = Field(20_000, ge=1)
    """EASE baseline: skipped (with a note in the report) above this many items with training
    interactions; it inverts an items x items matrix on the driver (8 x items^2 bytes)."""

    als_blocks: int = Field(10, ge=1)
    """MLlib ALS baselines: `numUserBlocks` and `numItemBlocks` (MLlib's default 10; about the
    cores available suits small data, more on a cluster)."""

    @model_validator(mode="after")
    def _check(self) -> "EvaluateConfig":
        if self.split == "validation" and self.source == "scores":
            raise ValueError("split=validation needs source=model: a top-K table excludes its own "
                             "score.exclude_splits and cannot be judged on validation")
        return self
