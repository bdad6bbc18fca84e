"""Item content settings (`content.*`): item text tokenised in Spark, the text-CNN tower, the hybrid model and cold-start items."""
from typing import Literal, Optional

from pydantic import Field, model_validator

from sparkrec.config.base import Section


class ContentConfig(Section):
    source: Literal["none", "movielens", "table"] = "none"
    """Where item text comes from. `movielens`: `path` is a MovieLens folder with movies.csv
    (movieId, title, genres split by '|') and optionally tags.csv (userId, movieId, tag,
    timestamp); `table`: `path` is an item-features table (`item_column` plus `text_columns`) in
    `format`; `none`: no content (the pipeline skips the content stage)."""

    path: Optional[str] = None
    """MovieLens folder or item-features file/folder (local path or URI)."""

    format: Literal["parquet", "csv", "json"] = "parquet"
    """`table` only: file format of the item-features table (CSV with a header line)."""

    item_column: str = "item_id"
    """`table` only: column holding the item ID, matched to the prepared item vocabulary as a string."""

    text_columns: list[str] = Field(["text"], min_length=1)
    """`table` only: text columns, tokenised in this order (string, or an array of strings)."""

    max_tokens: int = Field(32, ge=1)
    """Tokens per item: longer texts are truncated (title, year, genres, then tags by how often
    they were applied), shorter ones padded with token id 0."""

    vocab_size: int = Field(20_000, ge=1)
    """Most distinct tokens kept, by document frequency (items using the token); the rest map to
    the unknown token (id 1). Only this bounded vocabulary is collected to the driver."""

    min_count: int = Field(2, ge=1)
    """Tokens used by fewer items than this map to the unknown token."""

    title_year: bool = True
    """`movielens` only: turn a trailing "(1995)" in a title into the tokens `year:1995` and
    `decade:1990s` instead of a plain word."""

    token_dim: int = Field(32, ge=1)
    """Hybrid model: token embedding dimension of the text CNN."""

    cnn_widths: list[int] = Field([1, 2, 3], min_length=1)
    """Hybrid model: Conv1d kernel widths (token n-gram sizes), one filter bank each."""

    cnn_filters: int = Field(32, ge=1)
    """Hybrid model: filters per kernel width; the max-pooled filters feed the content vector."""

    id_dropout: float = Field(0.5, ge=0.0, le=1.0)
    """Hybrid model: probability that a training example's item ID embeddings are dropped, so
    the score must come from content alone (DropoutNet, Volkovs et al. 2017); this is what makes
    content predictive for items never seen in training."""

    keep_versions: int = Field(2, ge=1)
    """Published versions of `<lake>/content/` kept on disk."""

    @model_validator(mode="after")
    def _check(self) -> "ContentConfig":
        if self.source != "none" and not self.path:
            raise ValueError(f"source={self.source} needs path (a MovieLens folder or an item-features table)")
        if any(w < 1 for w in self.cnn_widths):
            raise ValueError(f"cnn_widths must be positive kernel widths, got {self.cnn_widths}")
        if max(self.cnn_widths) > self.max_tokens:
            raise ValueError(f"cnn_widths {self.cnn_widths} has a kernel wider than max_tokens={self.max_tokens}")
        return self
