"""Local processes for tests: ``free_port`` for servers and process groups, and ``spawn``, which
starts N processes through ``torch.multiprocessing`` and ends each one that succeeded without the
interpreter's teardown.

Gloo's worker threads can abort a finishing process (SIGABRT, "terminate called without an active
exception", pytorch/pytorch#190489), the same abort ``sparkrec.train.distributed.exit_without_teardown``
keeps from torchrun's workers; in CI it failed two of these tests in one run. A worker that
raises keeps the normal path, so its traceback still reaches the test.
"""
import os
import socket
import sys

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_without_teardown(rank, worker, *args):
    worker(rank, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(worker, args, nprocs=2, join=True):
    """``mp.spawn(worker, args, nprocs, join)``; ``worker`` must be importable (a module-level function)."""
    return mp.spawn(_run_without_teardown, args=(worker, *args), nprocs=nprocs, join=join)
