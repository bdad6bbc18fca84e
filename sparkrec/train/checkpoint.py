"""Epoch checkpoints under ``<lake>/models/<name>/checkpoints/``: written whole or not at all.

A checkpoint holds only tensors and plain values, so it loads with ``torch.load(weights_only=True)``
(no arbitrary unpickling). It records what it must be resumed with (model hyper-parameters, the
prepared data's hash, the optimizer), and :func:`load_checkpoint` refuses anything else with the
reason and the fix.
"""
from __future__ import annotations

import io
import re

import torch

from sparkrec import lake
from sparkrec.errors import SparkrecError

FORMAT = 1
_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


def checkpoint_dir(lake_uri: str, name: str) -> str:
    return lake.join(lake.normalize_uri(lake_uri), "models", name, "checkpoints")


def _epochs(directory: str) -> dict[int, str]:
    fs, path = lake.filesystem(directory)
    if not fs.exists(path):
        return {}
    found = {}
    for entry in fs.ls(path, detail=False):
        match = _NAME.match(entry.rstrip("/").rsplit("/", 1)[-1])
        if match:
            found[int(match.group(1))] = lake.join(directory, match.group(0))
    return found


def latest_checkpoint(directory: str) -> str | None:
    """URI of the checkpoint with the most completed epochs, or None."""
    found = _epochs(directory)
    return found[max(found)] if found else None


def checkpoint_uri(directory: str, epoch: int) -> str:
    return lake.join(directory, f"epoch-{epoch:04d}.pt")


def save_checkpoint(directory: str, state: dict, keep: int, also_keep: int | None = None) -> str:
    """Write ``state`` (``state['epoch']`` = epochs completed) atomically, then drop all but the
    ``keep`` newest checkpoints and the one of epoch ``also_keep`` (the best so far)."""
    return write_checkpoint(directory, state["epoch"], serialize_checkpoint(state), keep, also_keep)


def serialize_checkpoint(state: dict) -> bytes:
    """``state`` as checkpoint bytes: a snapshot (training may go on while they are written)."""
    buf = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buf)
    return buf.getvalue()


def write_checkpoint(directory: str, epoch: int, data: bytes, keep: int, also_keep: int | None = None) -> str:
    """Write serialized checkpoint ``data`` of ``epoch`` atomically and prune as :func:`save_checkpoint`."""
    uri = checkpoint_uri(directory, epoch)
    lake.write_bytes_atomic(uri, data)
    found = _epochs(directory)
    for epoch in sorted(found)[:-keep]:
        if epoch != also_keep:
            lake.remove(found[epoch])
    return uri


def load_checkpoint(uri: str, expect: dict) -> dict:
    """Load a checkpoint and check it belongs to this training run.

    Parameters
    ----------
    expect : dict
        Values that must equal the checkpoint's ``resume_key`` (model hyper-parameters, data hash,
        optimizer).

    Raises
    ------
    SparkrecError
        The file is unreadable or not a checkpoint (corrupt, truncated, foreign pickle), or it was
        written for another model, other data or another optimizer.
    """
    fix = f"delete {uri.rsplit('/', 1)[0]} or set train.resume=false to start fresh"
    try:
        state = torch.load(io.BytesIO(lake.read_bytes(uri)), map_location="cpu", weights_only=True)
    except Exception as e:  # zip, unpickling and weights_only errors all mean "not a usable checkpoint"
        raise SparkrecError(f"checkpoint {uri} cannot be read ({e.__class__.__name__}: "
                            f"{' '.join(str(e).split())[:200]}); {fix}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "resume_key" not in state:
        raise SparkrecError(f"{uri} is not a sparkrec checkpoint of format {FORMAT}; {fix}")
    found = state["resume_key"]
    diffs = [f"{k}: checkpoint has {found.get(k)!r}, this run has {v!r}" for k, v in expect.items() if found.get(k) != v]
    if diffs:
        raise SparkrecError(f"checkpoint {uri} belongs to another training run ({'; '.join(diffs)}); {fix}")
    return state


def clear_checkpoints(directory: str) -> None:
    lake.remove(directory)
