"""Set-up and checks that run inside the Python workers of scoring tasks."""
from __future__ import annotations

import numpy as np
import torch
from pyspark import TaskContext

from sparkrec.errors import SparkrecError
from sparkrec.models.block_scoring import Histories


def use_task_cpus() -> None:
    """Let torch use the cores Spark gave this task (``spark.task.cpus``), not every core of the
    machine: concurrent tasks would otherwise oversubscribe it."""
    context = TaskContext.get()
    torch.set_num_threads(context.cpus() if context is not None else 1)


def check_index_range(values: np.ndarray, size: int, what: str) -> None:
    """Fail with the offending index instead of an opaque embedding IndexError on an executor."""
    bad = values[(values < 0) | (values >= size)]
    if len(bad):
        raise SparkrecError(f"{what} {int(bad[0])} is outside the model's 0..{size - 1} ({len(bad)} such rows); "
                            f"index IDs with the prepared vocabulary the model was trained on")


def _padded(series, width: int, fill, dtype) -> np.ndarray:
    """Arrays of a pandas column (None = empty) right-aligned in a ``[rows, width]`` matrix."""
    out = np.full((len(series), width), fill, dtype=dtype)
    for row, values in enumerate(series):
        if values is not None and len(values):
            tail = np.asarray(values, dtype=dtype)[-width:]
            out[row, width - len(tail):] = tail
    return out


def histories_of(items, labels, width: int) -> Histories:
    """``Histories`` of a batch from pandas columns of item and label arrays (oldest first)."""
    return Histories(torch.from_numpy(_padded(items, width, -1, np.int64)),
                     torch.from_numpy(_padded(labels, width, 0.0, np.float32)))
