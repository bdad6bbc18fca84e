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
