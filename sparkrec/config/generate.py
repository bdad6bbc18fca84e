"""Synthetic interaction log (`generate.*`), used by `jobs/generate_data.py`, the demo and tests."""
from typing import Literal

from pydantic import Field

from sparkrec.config.base import Section


class GenerateConfig(Section):
    num_rows: int = Field(200_000, ge=1)
    """Interactions to generate (before injected duplicates)."""

    num_users: int = Field(2_000, ge=1)
    """Distinct users to draw from."""

    num_items: int = Field(1_000, ge=1)
    """Distinct items to draw from; popularity follows a power law."""

    factors: int = Field(8, ge=1)
    """Dimension of the planted user/item latent factors."""

    popularity_exponent: float = Field(1.0, ge=0.0)
    """Zipf exponent of item popularity (0 = uniform)."""

    candidates: int = Field(16, ge=1)
    """Popularity-drawn candidates per event; the user picks by planted affinity among them.
    More candidates = stronger personal signal relative to popularity."""

    kind: Literal["explicit", "implicit"] = "explicit"
    """`explicit`: ratings 1-5 from affinity; `implicit`: every row is an event with value 1."""

    drift: float = Field(0.0, ge=0.0, le=1.0)
    """Sequential structure: how far each user's taste leans, in each period of the year, towards a
    planted cluster drawn for that user and period (0 = static tastes)."""

    drift_segments: int = Field(12, ge=1)
    """Periods of the year between which drifting tastes move (`drift` > 0)."""

    dirt_rate: float = Field(0.0, ge=0.0, le=0.5)
    """Fraction of rows turned into bad rows (null/empty IDs, bad or out-of-range ratings, bad
    timestamps) or duplicated; true counts go to `<output>/_truth.json`."""

    partitions: int = Field(8, ge=1)
    """Spark partitions (= output files) of the generated log."""

    output_format: Literal["parquet", "csv", "json"] = "parquet"
    """File format written."""

    seed: int = 7
    """Same seed and sizes give the same log, row for row."""
