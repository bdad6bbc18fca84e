"""Score job settings (`score.*`)."""
from typing import Literal, Optional

from pydantic import Field

from sparkrec.config.base import Section


class ScoreConfig(Section):
    k: int = Field(10, ge=1)
    """Recommendations per user."""

    pairs: Optional[str] = None
    """Pairs mode: Parquet of (user_id, item_id) in original IDs to score instead of top-K; written
    to `scores/<name>-pairs/` with a `score` per pair (null plus a `reason` when an ID is unknown
    or had no training interactions)."""

    users: Optional[str] = None
    """Parquet with a `user_id` column (original IDs) to recommend for; null = every user in the
    prepared vocabulary. Users unseen in training get the popularity fallback."""

    exclude_splits: list[Literal["train", "validation", "test"]] = ["train"]
    """Prepared splits whose (user, item) pairs are never recommended back to that user; `[]`
    recommends seen items too."""

    history_splits: list[Literal["train", "validation", "test"]] = ["train", "validation", "test"]
    """History models (`train.model=sequence`): the prepared splits whose interactions make up each
    user's history, the latest `sequence.max_len` of which the model reads. Every user with a
    history is scored from it, including users who arrived after the model was trained."""

    histories: Optional[str] = None
    """History models: Parquet of interactions in original IDs (`user_id`, `item_id`, optional
    `timestamp` and `rating`) of users to score from these histories without retraining (e.g.
    users who signed up since the last prepare). They join the lake's histories of the same
    users; their items are never recommended back; items unknown to the vocabulary are skipped
    and counted."""

    only_trained_items: bool = True
    """Recommend only items with training interactions: the others' embeddings never left their
    random initialisation, so their scores would be noise."""

    buckets: int = Field(16, ge=1)
    """User hash buckets: the table is partitioned by `bucket = pmod(xxhash64(user_id), buckets)`,
    so a reader of one user opens one folder."""

    batch_users: int = Field(512, ge=1)
    """Users scored together against the catalog in one executor step."""

    chunk_mib: float = Field(16.0, gt=0)
    """Memory budget (MiB) of one user-batch x item-chunk block of scores (NCF towers add a fixed
    few MiB of activations per tile); the item chunk is sized to fit it, so executor memory stays
    bounded for any catalog size."""

    users_per_task: int = Field(100_000, ge=1)
    """Users per Spark task (at least one task per core): more tasks balance load, fewer load the
    model less often."""

    keep_versions: int = Field(2, ge=1)
    """Published versions kept on disk, so a reader that resolved an older pointer can finish."""
