"""Set-up and checks that run inside the Python workers of scoring tasks."""
from __future__ import annotations

import numpy as np
import torch
from pyspark import TaskContext

from sparkrec.errors import SparkrecError


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
