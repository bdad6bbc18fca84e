"""Averaging sparse embedding gradients over ranks by all-gather, on any torch.distributed backend.

NCCL has no sparse all-reduce (pytorch/pytorch#22400), so DDP over NCCL fails at the first
backward pass of a model with ``sparse=True`` embeddings. Horovod sends sparse gradients by
all-gather instead; this module does the same for ``train.backend=torch`` on gloo and NCCL alike,
so the CPU tests exercise the code that runs on GPUs:

1. each rank coalesces each sparse gradient (one row per touched id) and divides it by the world
   size (DDP's own order: scale, then sum);
2. three collectives per step for all sparse parameters together: all-gather of the per-parameter
   row counts, then of the padded row ids and of the padded values;
3. every rank sums the gathered rows of each parameter (``coalesce``) and sets the result as the
   gradient, identical on all ranks.

DDP is told to ignore the sparse parameters (:func:`ignore_sparse_parameters`), so it neither
broadcasts them at wrap time (:func:`broadcast_parameters` does) nor all-reduces their gradients;
the dense ones it still averages in backward. :class:`SparseExchangeOptimizer` runs the exchange
inside ``step()``, as Horovod's ``DistributedOptimizer`` does, so the training loop is unchanged.

Traffic per step is ``world x`` the rows a rank touched (a dense all-reduce would move the whole
table); the result has at most ``world x`` the rows of one rank's gradient.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as tdist
from torch import nn

from sparkrec.train.optim import split_parameters


def sparse_parameter_names(model: nn.Module) -> list[str]:
    """Fully qualified names of the parameters whose gradients are sparse (see ``split_parameters``)."""
    sparse = {id(p) for p in split_parameters(model)[0]}
    return [name for name, p in model.named_parameters() if id(p) in sparse]


def ignore_sparse_parameters(model: nn.Module) -> list[str]:
    """Make a not yet wrapped ``model``'s sparse parameters invisible to DDP; returns their names."""
    names = sparse_parameter_names(model)
    # DDP's documented workaround for parameters it must not synchronise (pytorch/pytorch#43690).
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return names


def broadcast_parameters(params: list[nn.Parameter], src: int = 0) -> None:
    """Copy rank ``src``'s values of ``params`` to every rank (what DDP does for the rest)."""
    with torch.no_grad():
        for p in params:
            tdist.broadcast(p.data, src=src)


def all_gather_sparse_mean(grads: list[torch.Tensor], world: int,
                           present: list[bool] | None = None) -> list[torch.Tensor | None]:
    """The mean over ranks of each sparse gradient in ``grads`` (call on every rank, same order).

    Parameters
    ----------
    grads : list of sparse COO tensors
        This rank's gradients, sparse along dimension 0 (embedding rows, as
        ``nn.Embedding``/``nn.EmbeddingBag(sparse=True)`` produce); same shapes on every rank.
    world : int
        Ranks in the default process group.
    present : list of bool, optional
        False where this rank had no gradient (pass an empty sparse tensor of the right shape).

    Returns
    -------
    list of sparse COO tensors or None
        Coalesced means, identical on every rank; None only where no rank had a gradient (so
        optimizers with per-parameter step counts, such as SparseAdam, stay in step on all ranks).
    """
    if not grads:
        return []
    present = present or [True] * len(grads)
    local = [g.coalesce() for g in grads]
    assert all(g.is_sparse and g.sparse_dim() == 1 for g in local), "expected row-sparse gradients"
    device = local[0].device
    # Row counts per parameter; -1 marks "no gradient" (distinct from a gradient of no rows).
    counts = torch.tensor([g._nnz() if here else -1 for g, here in zip(local, present)],
                          dtype=torch.int64, device=device)
    gathered = [torch.empty_like(counts) for _ in range(world)]
    tdist.all_gather(gathered, counts)
    counts_by_rank = torch.stack(gathered).tolist()  # the one host sync of the exchange
    rows = [[max(c, 0) for c in rank] for rank in counts_by_rank]
    widths = [math.prod(g.shape[1:]) for g in local]

    # DDP's order (scale each rank's gradient, then sum): the same rounding as its sparse all-reduce.
    flat_ids = torch.cat([g.indices()[0] for g in local])
    flat_vals = torch.cat([(g.values() / world).reshape(-1) for g in local])
    all_ids = _all_gather_padded(flat_ids, max(sum(r) for r in rows), world)
    all_vals = _all_gather_padded(flat_vals, max(sum(n * w for n, w in zip(r, widths)) for r in rows), world)

    ids_by_rank = [all_ids[r][: sum(rows[r])].split(rows[r]) for r in range(world)]
    vals_by_rank = [all_vals[r][: sum(n * w for n, w in zip(rows[r], widths))]
                    .split([n * w for n, w in zip(rows[r], widths)]) for r in range(world)]
    out: list[torch.Tensor | None] = []
    for i, g in enumerate(local):
        if all(counts_by_rank[r][i] < 0 for r in range(world)):
            out.append(None)
            continue
        ids = torch.cat([ids_by_rank[r][i] for r in range(world)])
        values = torch.cat([vals_by_rank[r][i] for r in range(world)]).reshape(-1, *g.shape[1:])
        out.append(torch.sparse_coo_tensor(ids.unsqueeze(0), values, g.shape).coalesce())
    return out


def _all_gather_padded(t: torch.Tensor, length: int, world: int) -> list[torch.Tensor]:
    """All-gather 1-d tensors of different lengths (collectives need equal sizes: pad to the longest)."""
    padded = torch.zeros(length, dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    tdist.all_gather(out, padded)
    return out


class SparseExchangeOptimizer:
    """An optimizer whose ``step()`` first replaces each sparse gradient of its parameters by the
    mean over ranks (:func:`all_gather_sparse_mean`). Every other attribute is the wrapped
    optimizer's (``param_groups``, ``state_dict``, ``zero_grad``), so schedules, checkpoints and
    ``GradScaler`` see the optimizer they know.

    ``synchronize()`` runs the exchange ahead of ``step()`` (a ``GradScaler`` must inspect the
    averaged gradients, or ranks could disagree about skipping a step); inside
    ``skip_synchronize()`` the next ``step()`` does not exchange again. The names follow Horovod's
    ``DistributedOptimizer``, so the loop drives both alike.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], world: int):
        self.optimizer, self.params, self.world = optimizer, params, world
        self._synchronized = False
        self._skip = False

    def __getattr__(self, name):  # only called for attributes not found on the wrapper
        return getattr(self.optimizer, name)

    def synchronize(self) -> None:
        params = self.params
        # A rank whose batch was empty has no gradient but must still take part.
        present = [p.grad is not None for p in params]
        grads = [p.grad if p.grad is not None else _empty_sparse_like(p) for p in params]
        for p, mean in zip(params, all_gather_sparse_mean(grads, self.world, present)):
            p.grad = mean
        self._synchronized = True

    @contextlib.contextmanager
    def skip_synchronize(self):
        self._skip = True
        try:
            yield
        finally:
            self._skip = False

    def step(self, closure=None):
        if not (self._skip and self._synchronized):
            self.synchronize()
        self._synchronized = False
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._synchronized = False
        self.optimizer.zero_grad(set_to_none=set_to_none)


def _empty_sparse_like(p: nn.Parameter) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64, device=p.device),
                                   torch.zeros(0, *p.shape[1:], dtype=p.dtype, device=p.device), p.shape)
