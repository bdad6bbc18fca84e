"""Model kinds by name: how a saved ``model.json`` (its ``model`` dict) becomes a module again.

Every model family registers its kinds here, so loading (``sparkrec.models.store``), scoring and
evaluation never need to know which family a published model belongs to. A family provides a
frozen config dataclass with ``kind``, ``to_dict()`` and ``from_dict()``, and a module class
(or a function of the config that builds one: the history model is one tower or an ensemble)
built from that config whose ``forward(user_idx, item_idx)`` returns raw scores [B] and whose
``to_score(raw)`` maps them to the user-facing score.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from sparkrec.models.autoencoders import AutoRec, AutoRecConfig, MultVAE, MultVAEConfig
from sparkrec.models.hybrid import KIND as HYBRID_KIND, HybridConfig, HybridNCF
from sparkrec.models.ncf import KINDS as NCF_KINDS, NCF, NCFConfig
from sparkrec.models.sequence import KIND as SEQUENCE_KIND, SequenceConfig, build as build_sequence

# kind -> (config class, module class or a function of the config that builds the module)
FAMILIES: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {kind: (NCFConfig, NCF) for kind in NCF_KINDS}
FAMILIES["autorec"] = (AutoRecConfig, AutoRec)
FAMILIES["multvae"] = (MultVAEConfig, MultVAE)
FAMILIES[HYBRID_KIND] = (HybridConfig, HybridNCF)
FAMILIES[SEQUENCE_KIND] = (SequenceConfig, build_sequence)  # one tower or an ensemble
# Kinds that score items without training interactions (from item content).
COLD_ITEM_KINDS = frozenset({HYBRID_KIND})


def model_from_dict(model: dict) -> nn.Module:
    """A freshly initialised module of the architecture ``model`` describes (a saved config dict).

    Raises
    ------
    ValueError
        Unknown kind, or an invalid configuration for it.
    """
    kind = model.get("kind")
    if kind not in FAMILIES:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {sorted(FAMILIES)}")
    config_cls, module_cls = FAMILIES[kind]
    return module_cls(config_cls.from_dict(model))
