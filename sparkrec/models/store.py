"""The model store: ``<lake>/models/<name>/manifest.json`` -> version folder with ``model.pt`` (a
plain ``state_dict``) and ``model.json`` (everything needed to rebuild and judge the model).

Every stage that touches a trained model (train writes it; score, evaluate, explain and the
pipeline read it) goes through this module, so where a model lives, how it is rebuilt and which
prepared data it belongs to is decided once. Weights load with ``torch.load(weights_only=True)``:
a model file can never run code.
"""
from __future__ import annotations

import io
from datetime import datetime, timezone

import torch
from torch import nn

from sparkrec import lake
from sparkrec.errors import SparkrecError
from sparkrec.models.registry import model_from_dict

WEIGHTS = "model.pt"
META = "model.json"
RETRAIN = "retrain (jobs/train_ncf.py) on the current prepared data"


def model_root(lake_uri: str, name: str) -> str:
    """``<lake>/models/<name>``: the versions and the pointer of one model name."""
    return lake.join(lake.normalize_uri(lake_uri), "models", name)


def save_model(lake_uri: str, name: str, state_dict: dict, meta: dict, publish: bool = True) -> dict:
    """Write weights and metadata as a new version of ``models/<name>`` and, unless ``publish``
    is false, publish it (the pipeline publishes only after its quality gate: ``publish_model``).

    ``meta`` must hold ``model`` (the model's config as a dict, see ``sparkrec.models.registry``);
    the rest (config, data hash, history, parent, ...) is stored as given, with ``created_at``
    added.

    Returns
    -------
    dict
        The ``model.json`` content plus ``version`` (the folder URI).
    """
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
    meta = {**meta, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with lake.publishing(model_root(lake_uri, name), commit=publish) as staged:
        lake.write_bytes_atomic(staged.path(WEIGHTS), buf.getvalue())
        lake.write_json_atomic(staged.path(META), meta)
        staged.manifest = meta
    return {**meta, "version": staged.version}


def publish_model(root: str, version: str, meta: dict) -> None:
    """Make the model ``version``, written by ``save_model(publish=False)``, the one
    ``models/<name>`` (``root``) resolves to."""
    lake.publish(root, version, meta)


def resolve_model(lake_uri: str, name: str) -> str:
    """URI of the version folder of the published model ``name``: the model reference that the
    score engine (``top_k_indices``, ``score_index_pairs``) takes. Version folders never change
    after publishing, so a job that resolved once scores with the same weights throughout.

    Raises
    ------
    SparkrecError
        No model of that name is published under ``lake_uri``.
    """
    return lake.resolve(model_root(lake_uri, name))["version"]


def read_meta(version: str) -> dict:
    """``model.json`` of a model version folder, with ``version`` added."""
    uri = lake.join(version, META)
    if not lake.exists(uri):
        raise SparkrecError(f"{version} is not a model version folder (no {META}); pass the URI that "
                            f"resolve_model(lake_uri, name) returns")
    return {**lake.read_json(uri), "version": version}


def load_model_version(version: str) -> tuple[nn.Module, dict]:
    """The model stored in one version folder, in eval mode on the CPU, and its ``model.json``.

    Raises
    ------
    SparkrecError
        Not a model folder, or its weights do not fit its recorded architecture.
    """
    meta = read_meta(version)
    try:
        model = model_from_dict(meta["model"])
    except ValueError as e:
        raise SparkrecError(f"{version}: {e}") from None
    uri = lake.join(version, WEIGHTS)
    try:
        model.load_state_dict(torch.load(io.BytesIO(lake.read_bytes(uri)), map_location="cpu", weights_only=True))
    except Exception as e:
        raise SparkrecError(f"model weights {uri} cannot be loaded into the architecture in its {META} "
                            f"({e.__class__.__name__}: {' '.join(str(e).split())[:200]}); retrain the model") from None
    return model.eval(), meta


def load_model(lake_uri: str, name: str) -> tuple[nn.Module, dict]:
    """The published model ``name`` in eval mode on the CPU, and its ``model.json``.

    Raises
    ------
    SparkrecError
        No model of that name is published, or its weights do not fit its recorded architecture.
    """
    return load_model_version(resolve_model(lake_uri, name))


def check_same_data(what: str, data_hash: str, prepared: dict, fix: str = RETRAIN) -> None:
    """Refuse an artifact built from other prepared data than ``prepared`` (the published
    manifest): dense indices only name the same users and items within one prepared version.

    Parameters
    ----------
    what : str
        The artifact, as the message names it (e.g. ``model 'demo' (<version URI>)``).
    data_hash : str
        The ``data_hash`` the artifact records.
    fix : str
        What the user should do instead.

    Raises
    ------
    SparkrecError
        ``data_hash`` differs from ``prepared['data_hash']``.
    """
    if data_hash != prepared["data_hash"]:
        raise SparkrecError(f"{what} was built from prepared data {data_hash}, but the published prepared data is "
                            f"{prepared['data_hash']}: its indices may name other users and items; {fix}")


def check_stable_items(what: str, meta: dict, prepared: dict) -> None:
    """Refuse prepared data whose item indices may name other items than a history model's.

    A history model (``sequence``) has no user vocabulary: it stays valid on any later prepared
    version that kept the item indices it was trained with (``prepare.extend_vocab``, which only
    appends new IDs), and scores users who arrived since from their histories.

    Raises
    ------
    SparkrecError
        The prepared data was indexed from scratch since, or knows fewer items than the model.
    """
    if meta["data_hash"] == prepared["data_hash"]:
        return
    extended = prepared.get("config", {}).get("prepare", {}).get("extend_vocab", False)
    if not extended or prepared["num_items"] < meta["model"]["num_items"]:
        raise SparkrecError(f"{what} was trained on prepared data {meta['data_hash']}, and the published prepared "
                            f"data {prepared['data_hash']} was indexed from scratch (prepare.extend_vocab=false) or "
                            f"knows fewer items ({prepared['num_items']} < {meta['model']['num_items']}), so item "
                            f"indices may name other items; {RETRAIN}")
