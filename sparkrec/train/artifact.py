"""The published model: ``<lake>/models/<name>/manifest.json`` -> version folder with ``model.pt``
(a plain ``state_dict``) and ``model.json`` (everything needed to rebuild and judge it).

Weights load with ``torch.load(weights_only=True)``: a model file can never run code.
"""
from __future__ import annotations

import io
from datetime import datetime, timezone

import torch

from sparkrec import lake
from sparkrec.errors import SparkrecError
from sparkrec.models.ncf import NCF, NCFConfig

WEIGHTS = "model.pt"
META = "model.json"


def model_root(lake_uri: str, name: str) -> str:
    return lake.join(lake.normalize_uri(lake_uri), "models", name)


def save_model(lake_uri: str, name: str, state_dict: dict, meta: dict) -> dict:
    """Publish weights and metadata as a new version of ``models/<name>``.

    ``meta`` must hold ``model`` (the ``NCFConfig`` as a dict); the rest (config, data hash,
    history, ...) is stored as given, with ``created_at`` added.

    Returns
    -------
    dict
        The published ``model.json`` content plus ``version`` (the folder URI).
    """
    root = model_root(lake_uri, name)
    version = lake.new_version(root)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
    meta = {**meta, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lake.write_bytes_atomic(lake.join(version, WEIGHTS), buf.getvalue())
    lake.write_json_atomic(lake.join(version, META), meta)
    lake.publish(root, version, meta)
    return {**meta, "version": version}


def load_model(lake_uri: str, name: str) -> tuple[NCF, dict]:
    """The published model ``name`` in eval mode on the CPU, and its ``model.json``.

    Raises
    ------
    SparkrecError
        No model of that name is published, or its weights do not fit its recorded architecture.
    """
    meta = lake.resolve(model_root(lake_uri, name))
    version = meta["version"]
    meta = {**lake.read_json(lake.join(version, META)), "version": version}
    model = NCF(NCFConfig.from_dict(meta["model"]))
    uri = lake.join(version, WEIGHTS)
    try:
        state = torch.load(io.BytesIO(lake.read_bytes(uri)), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise SparkrecError(f"model weights {uri} cannot be loaded into the architecture in its {META} "
                            f"({e.__class__.__name__}: {' '.join(str(e).split())[:200]}); retrain model {name!r}") from None
    return model.eval(), meta
