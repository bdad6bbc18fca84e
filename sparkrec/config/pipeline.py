"""Pipeline job settings (`pipeline.*`): stage skipping and the quality gate."""
from typing import Literal

from pydantic import Field

from sparkrec.config.base import Section

Stage = Literal["prepare", "train", "evaluate", "score"]


class PipelineConfig(Section):
    force: bool = False
    """Run every stage even when its inputs are unchanged since the last successful run."""

    force_stages: list[Stage] = []
    """Run these stages even when their inputs are unchanged (e.g. `[score]`)."""

    gate: bool = True
    """Quality gate: publish a newly trained model (and its scores) only if its validation metric
    does not regress against the published model's on the same validation rows."""

    gate_tolerance: float = Field(0.01, ge=0.0)
    """Largest accepted regression, in the metric's units (RMSE up, or HR@10 down)."""
