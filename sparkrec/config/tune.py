"""Hyper-parameter search settings (`tune.*`, for `jobs/tune.py`)."""
from typing import Literal, Optional, Union

from pydantic import Field

from sparkrec.config.base import Section

Range = dict[str, Union[float, int, bool]]
"""`{low: .., high: .., log: true|false}`: a float range (an int range when both ends are ints)."""


class TuneConfig(Section):
    targets: list[Literal["model", "als", "ease"]] = ["model"]
    """What to tune on the validation split: the sparkrec model of `train.*`, the Spark ALS baseline
    (`als_explicit` or `als_implicit` by the data) and the EASE baseline (implicit data)."""

    trials: int = Field(20, ge=1)
    """Optuna trials of the model (TPE sampler, seeded by `seed`)."""

    timeout_s: Optional[int] = Field(None, ge=1)
    """Stop starting model trials after this many seconds (the running one finishes)."""

    space: dict[str, Union[list, Range]] = {}
    """Search space of the model as `dotted.key: [values]` (categorical) or `dotted.key: {low, high,
    log}`; keys given replace the built-in space of the model kind (see `sparkrec.tune.spaces`),
    `{}` uses it as is."""

    prune: bool = True
    """Stop unpromising model trials early: a trial whose validation metric after an epoch is worse
    than the median of earlier trials at that epoch is pruned (Optuna's MedianPruner)."""

    prune_warmup_epochs: int = Field(3, ge=0)
    """Epochs every trial runs before it can be pruned."""

    als_trials: int = Field(16, ge=1)
    """Optuna trials of the ALS baseline (rank, regParam and, implicit, alpha)."""

    ease_lambdas: list[float] = [25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]
    """EASE lambdas tried (one fit, one matrix inverse each)."""

    output: Optional[str] = None
    """Also write the best settings to this local YAML file (besides the lake's tuning folder)."""
