"""Scoring: per-user top-K and pair scores from a published model (see ``job.run_score``).

Library entry points, all in dense indices, for callers such as evaluation:
``resolve_model(lake_uri, name) -> model URI`` (from ``sparkrec.models.store``), ``top_k_indices(spark, model, users, k, exclude)``
and ``score_index_pairs(spark, model, pairs)``.
"""
from sparkrec.models.store import resolve_model
from sparkrec.score.pairs import score_index_pairs
from sparkrec.score.topk import top_k_indices

__all__ = ["resolve_model", "score_index_pairs", "top_k_indices"]
