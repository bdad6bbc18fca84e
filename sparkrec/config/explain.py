"""Explanation job settings (`explain.*`): Captum attributions for (user, recommended item)."""
from typing import Literal, Optional

from pydantic import Field

from sparkrec.config.base import Section


class ExplainConfig(Section):
    pairs: Optional[str] = None
    """Parquet of (user_id, item_id) in original IDs to explain; null = the recommendations in the
    published top-K table `scores/<name>/` (run jobs/score.py first), chosen by `users`,
    `max_users` and `items_per_user`."""

    users: Optional[list[str]] = None
    """Top-K source only: original user IDs whose recommendations are explained; null = the first
    `max_users` users of the table in user_id order."""

    max_users: int = Field(10, ge=1)
    """Top-K source with `users` null: how many users (smallest user_id first) are explained."""

    items_per_user: int = Field(3, ge=1)
    """Top-K source: each user's recommendations of rank 1..items_per_user are explained."""

    method: Literal["ig", "shapley_sampling"] = "ig"
    """`ig`: Integrated Gradients; `shapley_sampling`: Shapley values estimated from seeded random
    permutations (Captum's ShapleyValueSampling). Both are complete: a pair's attributions sum to
    its score minus the baseline score (IG up to the reported convergence delta). KernelSHAP is
    not offered: Captum fits it with scikit-learn, which is not in the pinned stack."""

    n_steps: int = Field(64, ge=2)
    """ig: integration steps (Gauss-Legendre); more steps shrink the convergence delta."""

    n_samples: int = Field(25, ge=1)
    """shapley_sampling: random feature permutations per pair (each costs one forward pass per
    feature)."""

    top_attributions: int = Field(10, ge=1)
    """Features kept per pair and kind (history items, tokens), largest |attribution| first; the
    summary's sums and deltas still cover every feature."""

    seed: Optional[int] = None
    """Seed of shapley_sampling's permutations (pair i uses seed + i); null = the global `seed`.
    Same seed, model and pairs give identical attributions."""

    keep_versions: int = Field(2, ge=1)
    """Published versions of `explanations/<name>/` kept on disk."""
