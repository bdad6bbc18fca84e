"""How scoring names a model: the URI of one published model version folder.

The driver resolves ``models/<name>/manifest.json`` once (``sparkrec.models.store.resolve_model``)
and hands executors that plain string. Version folders never change after publishing and the last two are kept, so
every task of a job scores with the same weights even if a newer model is published meanwhile.
Executors load a version once per Python worker process (``cached_model``/``cached_scorer``).
"""
from __future__ import annotations

from functools import lru_cache

from sparkrec.models.ncf import NCF
from sparkrec.models.block_scoring import BlockScorer, make_scorer
from sparkrec.models.store import load_model_version


@lru_cache(maxsize=2)
def cached_model(model: str) -> tuple[NCF, dict]:
    """``load_model_version`` once per process and version (executors reuse it across tasks)."""
    return load_model_version(model)


@lru_cache(maxsize=2)
def cached_scorer(model: str) -> BlockScorer:
    """The fast top-K scorer of a model version, built once per process and version."""
    net, meta = cached_model(model)
    return make_scorer(net, meta["model"]["num_items"])
