"""History-based user tower settings (`sequence.*`, for `train.model=sequence`)."""
from typing import Literal

from pydantic import Field

from sparkrec.config.base import Section


class SequenceConfig(Section):
    max_len: int = Field(50, ge=1)
    """Latest interactions of a user the model reads (training windows hold this many inputs; at
    scoring time a user's history is cut to it)."""

    encoder: Literal["attention", "mean"] = "attention"
    """`attention`: causal self-attention over the history (SASRec); `mean`: pooled item
    embeddings. Explicit ratings use `mean` (the SVD++-style pooled history with biases)."""

    blocks: int = Field(2, ge=1)
    """`attention`: self-attention blocks."""

    heads: int = Field(1, ge=1)
    """`attention`: attention heads (must divide `train.factors`)."""

    members: int = Field(1, ge=1)
    """Implicit data: independently initialised towers trained side by side on the same batches,
    each on its own loss, whose scores add (for softmax-trained towers: the product of their
    distributions, still one dot product, so scoring is unchanged). An ensemble evens out how much
    one training run depends on its seed; training and scoring cost `members` times as much.
    `train_loss` is then the towers' summed loss. Explicit ratings: 1."""
