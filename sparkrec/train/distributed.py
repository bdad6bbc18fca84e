"""Everything Horovod- or torch.distributed-specific, behind one small interface.

The training loop calls only these functions, so it runs unchanged in one local process, under
``horovod.spark.run`` or under Spark's ``TorchDistributor`` (DDP). ``init(backend)`` picks the
backend once per process; every other function follows it.
"""
from __future__ import annotations

import os

import torch
from torch import nn

_backend = "local"
_gathers = 0  # collectives issued, the same sequence on every rank


def init(backend: str) -> None:
    """Join the process group of ``backend`` ('local', 'horovod' or 'torch')."""
    global _backend
    _backend = backend
    if backend == "horovod":
        import horovod.torch as hvd

        hvd.init()  # Horovod: ranks, sizes and the Gloo controller come from horovod.spark.run's env
        if torch.cuda.is_available():
            torch.cuda.set_device(hvd.local_rank())
    elif backend == "torch":
        import torch.distributed as dist

        if not dist.is_initialized():  # DDP: MASTER_ADDR/PORT, RANK, WORLD_SIZE come from torchrun
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
    elif backend != "local":
        raise ValueError(f"unknown backend {backend!r}")


def shutdown() -> None:
    if _backend == "horovod":
        import horovod.torch as hvd

        hvd.shutdown()
    elif _backend == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


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
    return torch.device(f"cuda:{local_rank()}") if torch.cuda.is_available() else torch.device("cpu")


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


def wrap_model(model: nn.Module) -> nn.Module:
    """The module the loop calls forward on; DDP all-reduces gradients (sparse ones too) during
    backward. Keep the unwrapped ``model`` for saving."""
    if _backend == "torch" and world_size() > 1:  # alone, DDP would still all-reduce every gradient
        dev = next(model.parameters()).device
        # DDP: broadcasts rank 0's parameters now, then averages gradients in backward.
        return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return model


def wrap_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """Horovod averages gradients inside the optimizer (sparse ones via allgather); the other
    backends use the optimizer as is."""
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
        if _backend == "horovod":
            opt.synchronize()  # Horovod: gradients complete before unscaling
            with opt.skip_synchronize():
                scaler.step(opt)
        else:
            scaler.step(opt)
    scaler.update()
