"""Everything Horovod- or torch.distributed-specific, behind one small interface.

The training loop calls only these functions, so it runs unchanged in one local process, under
``horovod.spark.run`` or under Spark's ``TorchDistributor`` (DDP). ``init(backend)`` picks the
backend once per process; every other function follows it.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
from torch import nn

from sparkrec.errors import SparkrecError
from sparkrec.train.sparse_grads import SparseExchangeOptimizer, broadcast_parameters, ignore_sparse_parameters

_backend = "local"
_use_cuda = False
_gathers = 0  # collectives issued, the same sequence on every rank
DEFAULT_TIMEOUT_S = 600


def init(backend: str, device: str = "auto", timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group of ``backend`` ('local', 'horovod' or 'torch').

    ``device`` is ``train.device`` (auto: CUDA when this process sees a GPU); ``timeout_s`` bounds
    how long any collective waits for the other ranks (``train.collective_timeout_s``).
    """
    global _backend, _use_cuda
    _backend = backend
    _use_cuda = use_cuda(device)
    if _use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # NVIDIA's NCF reference numbers are TF32
        torch.backends.cudnn.allow_tf32 = True
    if backend == "horovod":
        import horovod.torch as hvd

        # Horovod: its Gloo collectives time out after this (its default is 30 s).
        os.environ["HOROVOD_GLOO_TIMEOUT_SECONDS"] = str(timeout_s)
        hvd.init()  # Horovod: ranks, sizes and the Gloo controller come from horovod.spark.run's env
        if _use_cuda:
            torch.cuda.set_device(hvd.local_rank())
    elif backend == "torch":
        import torch.distributed as dist

        if not dist.is_initialized():  # DDP: MASTER_ADDR/PORT, RANK, WORLD_SIZE come from torchrun
            dist.init_process_group("nccl" if _use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        if _use_cuda:
            torch.cuda.set_device(local_rank())
    elif backend != "local":
        raise ValueError(f"unknown backend {backend!r}")


def use_cuda(device: str) -> bool:
    """Whether ``train.device`` means CUDA in this process.

    Raises
    ------
    SparkrecError
        ``cuda`` was asked for and this process sees no GPU.
    """
    if device == "cpu":
        return False
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        import socket

        raise SparkrecError(f"train.device=cuda, but the training process on {socket.gethostname()} sees no CUDA "
                            f"device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); give the "
                            f"executors GPUs (spark.executor.resource.gpu.amount, spark.task.resource.gpu.amount) "
                            f"or set train.device=cpu")
    return available


def shutdown() -> None:
    if _backend == "horovod":
        import horovod.torch as hvd

        hvd.shutdown()
    elif _backend == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def exit_without_teardown() -> None:
    """End this torchrun-started process without the interpreter's teardown, once its script ends.

    Call it after the work succeeded. Gloo's worker threads destroy each finished collective on
    their own; when one still holds a tensor whose Python object was freed, destroying it takes
    the GIL, and if the interpreter is tearing down by then the process aborts (SIGABRT,
    "terminate called without an active exception": pytorch/pytorch#190489; a fix, #179291, was
    abandoned). ``destroy_process_group`` does not stop those threads here: DDP keeps the process
    group alive. An aborted rank fails the whole launch (torchrun's agents then wait out their
    300 s exit barrier), about one run in three on 2 cores. TorchDistributor writes the result
    before its script ends, so the exit keeps the script's status (1 after an uncaught exception)
    and only skips the teardown.
    """
    import atexit

    def exit_now():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        # Python sets sys.last_value when the script ended with an uncaught exception.
        os._exit(1 if getattr(sys, "last_value", None) is not None else 0)

    atexit.register(exit_now)


def rank() -> int:
    if _backend == "horovod":
        import horovod.torch as hvd

        return hvd.rank()
    if _backend == "torch":
        import torch.distributed as dist

        return dist.get_rank()
    return 0


def world_size() -> int:
    if _backend == "horovod":
        import horovod.torch as hvd

        return hvd.size()
    if _backend == "torch":
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def local_rank() -> int:
    if _backend == "horovod":
        import horovod.torch as hvd

        return hvd.local_rank()
    return int(os.environ.get("LOCAL_RANK", 0))


def local_size() -> int:
    """Training processes on this machine (they share its cores)."""
    if _backend == "horovod":
        import horovod.torch as hvd

        return hvd.local_size()
    if _backend == "torch":
        # One torchrun per Spark task; Spark may put several tasks on a machine, which torchrun
        # cannot see, so count the ranks on this host.
        import socket

        return all_gather_object(socket.gethostname()).count(socket.gethostname())
    return 1


def is_main() -> bool:
    """Rank 0 logs progress and writes checkpoints and the model."""
    return rank() == 0


def device() -> torch.device:
    return torch.device(f"cuda:{local_rank()}") if _use_cuda else torch.device("cpu")


def resolve_amp(setting: str, dev: torch.device) -> str:
    """``train.amp`` as used on ``dev``: ``auto`` is bf16 on a GPU with bf16 support (Ampere and
    newer), off elsewhere: on CPU, bf16 was slower than float32 without bf16 hardware (EPYC) and
    within run-to-run noise with AMX (Xeon; bench/README.md, time to quality)."""
    if setting != "auto":
        return setting
    return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "off"


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (a new tensor; the input is left alone)."""
    if _backend == "horovod":
        import horovod.torch as hvd

        return hvd.allreduce(t, op=hvd.Sum)
    if _backend == "torch":
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out
    return t.clone()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t) / world_size()


def all_gather_object(obj) -> list:
    """``obj`` of every rank, in rank order (small picklable values only)."""
    global _gathers
    if _backend == "horovod":
        import horovod.torch as hvd

        # Horovod matches collectives by name and names this one after type(obj) by default, so
        # ranks passing different types (a dict on rank 0, None elsewhere) would wait forever.
        _gathers += 1
        return hvd.allgather_object(obj, name=f"sparkrec.gather.{_gathers}")
    if _backend == "torch":
        import torch.distributed as dist

        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if _backend == "horovod":
        import horovod.torch as hvd

        hvd.barrier()
    elif _backend == "torch":
        import torch.distributed as dist

        dist.barrier()


class MainRankWork:
    """Work rank 0 does alone in a background thread (writing a checkpoint), which every rank
    waits for with :meth:`wait`.

    The others never sit in one collective for the whole write (a slow store would trip
    ``train.collective_timeout_s``): they poll with a small all-reduce every ``poll_s`` seconds
    until rank 0 reports done, then all ranks get the result, or all raise rank 0's error.
    """

    def __init__(self, fn=None, poll_s: float = 0.5):
        import threading

        self.poll_s, self.result, self.error = poll_s, None, None
        self._thread = None
        if fn is not None and is_main():
            def run():
                try:
                    self.result = fn()
                except Exception as e:  # reported to every rank by wait()
                    self.error = f"{e.__class__.__name__}: {' '.join(str(e).split())[:300]}"

            self._thread = threading.Thread(target=run, name="sparkrec-main-rank-work", daemon=True)
            self._thread.start()

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self):
        """Block until rank 0's work is done (call on every rank); returns its result.

        Raises
        ------
        SparkrecError
            On every rank, when rank 0's work failed.
        """
        import time

        if world_size() == 1:
            if self._thread is not None:
                self._thread.join()
        else:
            while all_reduce_sum(torch.tensor([float(self._running())], device=device())).item() > 0:
                time.sleep(self.poll_s)  # every rank polls alike, so the collectives match
            self.result, self.error = all_gather_object((self.result, self.error))[0]
        if self.error:
            raise SparkrecError(f"rank 0 failed writing: {self.error}")
        return self.result


def wrap_model(model: nn.Module) -> nn.Module:
    """The module the loop calls forward on. Keep the unwrapped ``model`` for saving.

    torch backend: DDP averages the dense gradients during backward; the sparse embedding
    gradients it is told to ignore (NCCL has no sparse all-reduce), and the optimizer wrapper of
    :func:`wrap_optimizer` averages them by all-gather (``sparkrec.train.sparse_grads``).
    """
    if _backend == "torch" and world_size() > 1:  # alone, DDP would still all-reduce every gradient
        sparse = set(ignore_sparse_parameters(model))
        # DDP broadcasts only what it synchronises: rank 0's sparse tables are copied here.
        broadcast_parameters([p for n, p in model.named_parameters() if n in sparse])
        if all(n in sparse for n, _ in model.named_parameters()):
            return model  # nothing dense: DDP refuses a module without parameters to synchronise
        dev = next(model.parameters()).device
        # DDP: broadcasts rank 0's dense parameters now, then averages their gradients in backward.
        return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return model


def wrap_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """Horovod averages gradients inside the optimizer (sparse ones via allgather); on the torch
    backend an optimizer of sparse embeddings averages their gradients by all-gather in ``step()``
    (DDP averages the dense ones in backward); a single process uses the optimizer as is."""
    if _backend == "torch" and world_size() > 1:
        from sparkrec.train.optim import split_parameters

        sparse = {id(p) for p in split_parameters(model)[0]}
        mine = [p for group in optimizer.param_groups for p in group["params"] if id(p) in sparse]
        return SparseExchangeOptimizer(optimizer, mine, world_size()) if mine else optimizer
    if _backend != "horovod" or world_size() == 1:
        return optimizer
    import horovod.torch as hvd

    mine = {id(p) for group in optimizer.param_groups for p in group["params"]}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in mine]
    return hvd.DistributedOptimizer(optimizer, named_parameters=named)  # Horovod: allreduce in step()


def broadcast_initial_state(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    """Make every rank start from rank 0's weights and optimizer state (DDP already broadcast the
    weights when it wrapped the model)."""
    if _backend != "horovod":
        return
    import horovod.torch as hvd

    hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # Horovod: same start weights
    for opt in optimizers:
        # Horovod: same optimizer state on resume. A fresh state is empty on every rank; skipping
        # it avoids Horovod's initialisation by a zero-gradient step, which would advance Adam's
        # step count (and apply AdamW's decay) on this backend only.
        if opt.state_dict()["state"]:
            hvd.broadcast_optimizer_state(opt, root_rank=0, model=model)


def optimizer_step(optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler | None) -> None:
    """Apply the (already averaged, or averaging) gradients; with a GradScaler (fp16), unscale
    first. Horovod must finish its allreduce before the scaler inspects the gradients."""
    if scaler is None:
        for opt in optimizers:
            opt.step()
        return
    for opt in optimizers:
        # Horovod, and the sparse exchange on torch: gradients averaged before the scaler looks for
        # infs, so every rank skips (or takes) the same steps.
        if _backend == "horovod" or isinstance(opt, SparseExchangeOptimizer):
            opt.synchronize()
            with opt.skip_synchronize():
                scaler.step(opt)
        else:
            scaler.step(opt)
    scaler.update()
