"""How scoring names a model: the URI of one published model version folder.

The driver resolves ``models/<name>/manifest.json`` once (``resolve_model``) and hands executors
that plain string. Version folders never change after publishing and the last two are kept, so
every task of a job scores with the same weights even if a newer model is published meanwhile.
Executors load a version once per Python worker process (``cached_model``/``cached_scorer``).
"""
from __future__ import annotations

import io
from functools import lru_cache

import torch

from sparkrec import lake
from sparkrec.errors import SparkrecError
from sparkrec.models.ncf import NCF, NCFConfig
from sparkrec.score.fast_ncf import BlockScorer, make_scorer
from sparkrec.train.artifact import META, WEIGHTS, model_root


def resolve_model(lake_uri: str, name: str) -> str:
    """URI of the version folder of the published model ``name``: the model reference that
    ``top_k_indices`` and ``score_index_pairs`` take.

    Raises
    ------
    SparkrecError
        No model of that name is published under ``lake_uri``.
    """
    return lake.resolve(model_root(lake_uri, name))["version"]


def read_meta(model: str) -> dict:
    """``model.json`` of a model version (hyper-parameters under ``model``, ``data_hash``...),
    with ``version`` added."""
    uri = lake.join(model, META)
    if not lake.exists(uri):
        raise SparkrecError(f"{model} is not a model version folder (no {META}); pass the URI that "
                            f"resolve_model(lake_uri, name) returns")
    return {**lake.read_json(uri), "version": model}


def load_version(model: str) -> tuple[NCF, dict]:
    """The model stored in one version folder, in eval mode on the CPU, and its ``model.json``.

    Notes
    -----
    Same file format as ``sparkrec.train.artifact.load_model``, which resolves the pointer first.
    """
    meta = read_meta(model)
    net = NCF(NCFConfig.from_dict(meta["model"]))
    uri = lake.join(model, WEIGHTS)
    try:
        net.load_state_dict(torch.load(io.BytesIO(lake.read_bytes(uri)), map_location="cpu", weights_only=True))
    except Exception as e:
        raise SparkrecError(f"model weights {uri} cannot be loaded into the architecture in its {META} "
                            f"({e.__class__.__name__}: {' '.join(str(e).split())[:200]})") from None
    return net.eval(), meta


@lru_cache(maxsize=2)
def cached_model(model: str) -> tuple[NCF, dict]:
    """``load_version`` once per process and version (executors reuse it across tasks)."""
    return load_version(model)


@lru_cache(maxsize=2)
def cached_scorer(model: str) -> BlockScorer:
    """The fast top-K scorer of a model version, built once per process and version."""
    net, meta = cached_model(model)
    return make_scorer(net, meta["model"]["num_items"])
