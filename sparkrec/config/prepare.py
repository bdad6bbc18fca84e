"""Prepare job settings (`prepare.*`): validation, dedupe, filters, indexing, splits, output."""
from typing import Literal, Optional

from pydantic import Field, model_validator

from sparkrec.config.base import Section


class SplitConfig(Section):
    kind: Literal["random", "leave_last_out", "temporal", "given"] = "leave_last_out"
    """`random`: each (user, item) pair goes to a split by a seeded hash of the pair (fractions);
    `leave_last_out`: per user the latest interaction is test (and the second latest validation);
    `temporal`: global cutoff times (these two need event times in the log); `given`: the log's
    own split column (`input.columns.split`), e.g. a benchmark's published splits."""

    fractions: list[float] = [0.8, 0.1, 0.1]
    """`random` only: [train, validation, test] fractions, summing to 1 (validation may be 0)."""

    validation: bool = True
    """`leave_last_out` only: also hold out each user's second latest interaction as validation.
    A user is held out from only when they keep at least one training interaction."""

    cutoffs: list[int] = []
    """`temporal` only: ascending epoch-second cutoffs, `[test]` or `[validation, test]`; an event
    at or after a cutoff goes to the later split."""

    cold_item_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of items held out as cold-start items (0 = none): an item is cold when a seeded hash of
    its original ID falls below this, so the choice is stable across runs and partitionings. All
    of a cold item's kept interactions go to test, whatever `kind`; it keeps its vocabulary index.
    `leave_last_out` ranks each user's other interactions only."""

    @model_validator(mode="after")
    def _check(self) -> "SplitConfig":
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-9:
            raise ValueError(f"fractions must be three non-negative numbers [train, validation, test] summing "
                             f"to 1, got {self.fractions}")
        if self.kind == "temporal" and len(self.cutoffs) not in (1, 2):
            raise ValueError(f"kind=temporal needs cutoffs [test] or [validation, test] in epoch seconds, "
                             f"got {self.cutoffs}")
        if self.cutoffs != sorted(set(self.cutoffs)):
            raise ValueError(f"cutoffs must be strictly ascending, got {self.cutoffs}")
        return self


class PrepareConfig(Section):
    rating_min: float = 1.0
    """Lowest valid rating; smaller values are quarantined as rating_out_of_range."""

    rating_max: float = 5.0
    """Highest valid rating; larger values are quarantined as rating_out_of_range."""

    dedupe: Literal["latest", "first", "sum"] = "latest"
    """How repeated (user, item) pairs become one row, after identical events are dropped:
    `latest` / `first` keep the pair's latest / earliest event (ties: the higher rating);
    `sum` adds the values of its distinct events (implicit counts only) and keeps the latest time."""

    implicit_threshold: Optional[float] = None
    """Implicit conversion: rows with rating >= threshold become positives (label 1.0), the rest
    are filtered. Null keeps ratings as labels, unless the log has no rating column (implicit)."""

    min_user_interactions: int = Field(1, ge=1)
    """Keep only users with at least this many distinct items (1 = no filter); iterated to a
    k-core together with min_item_interactions."""

    min_item_interactions: int = Field(1, ge=1)
    """Keep only items with at least this many distinct users (1 = no filter)."""

    kcore_max_iterations: int = Field(10, ge=1)
    """Bound on k-core filter passes; the manifest records whether it reached a stable core."""

    extend_vocab: bool = True
    """Keep the published vocabularies' indices and append new IDs after them, so a model trained
    on the previous version stays valid (incremental retraining); false indexes from scratch."""

    num_files: int = Field(4, ge=1)
    """Parquet files per split; rounded up to a multiple of train.num_workers so Petastorm
    shards come out even."""

    row_group_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Target Parquet row-group size (`parquet.block.size`); Petastorm shards by row group."""

    split: SplitConfig = SplitConfig()
    """How kept interactions are split into train / validation / test."""

    @model_validator(mode="after")
    def _check(self) -> "PrepareConfig":
        if self.rating_min > self.rating_max:
            raise ValueError(f"rating_min={self.rating_min} is above rating_max={self.rating_max}")
        return self
