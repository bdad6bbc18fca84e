"""Score an NCF model (gmf, mlp, neumf) against every item without repeating work that does not
depend on the pair: the fast ``BlockScorer`` of ``sparkrec.models.block_scoring``.

The raw NeuMF score of user u and item i (He et al. 2017, with the optional biases) is

    out_g . (p_u * q_i)  +  out_t . tail(W [m_u ; n_i] + b)  +  out_b  [+ b_u + b_i]

where p, q are the GMF embeddings, m, n the MLP embeddings, ``W`` the tower's first Linear and
``tail`` the rest of the tower. Since ``W [m_u ; n_i] = W_u m_u + W_i n_i``:

- the GMF term is ``(p_u * out_g) . q_i``: one matrix product per user batch against all items;
- the first tower layer is a per-user projection ``W_u m_u`` plus a per-item projection
  ``W_i n_i + b`` computed once per process, so only ``tail`` runs per pair;
- each hidden ReLU reads a pair term plus an item term, ``relu(u + s_i) = max(u, -s_i) + s_i``, and
  what follows it is linear, so ``s_i`` moves on into the next layer's item term and finally into
  the item constant: per pair, each layer is one matrix product and one ``max`` against a per-item
  floor (no bias, add or ReLU passes);
- the output bias and item bias fold into one per-item constant;
- on CPU the chain runs through a fused C++ kernel (``sparkrec.models.native``: every pair's
  activations in registers, 2.1x the torch path on one core) where the host can compile it;
  otherwise (and on GPUs) the torch path below, which computes the same scores:
- the tower runs over tiles of about ``TOWER_TILE_PAIRS`` pairs of the block, so its activations
  stay in cache whatever the block size, and the caller's blocks can be wide (one top-K merge per
  thousands of items instead of per hundred: the merges took a quarter of the time).

It runs on the device of the model's weights.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from sparkrec.errors import SparkrecError
from sparkrec.models.native import ncf_tower

TOWER_TILE_PAIRS = 16384
"""(user, item) pairs per tower tile: ~56 activation floats a pair, about 3.7 MiB. Measured on a
2-core EPYC, 1 thread, tower 64-32-16-8, K=10 (2026-12-06): 8,192-16,384 pairs 26-30 M pairs/s at
128-512 users a batch, 4,096 pairs 14-25 M; untiled blocks of 512 users x 141 items 18-22 M."""


MAX_NATIVE_WIDTH = 256
"""Widest tower layer the fused kernel takes (its stack buffers); wider towers use the torch path."""


class DecomposedNCF:
    """Block scorer for an ``NCF`` module (gmf, mlp or neumf; biases optional); see module doc.

    Parameters
    ----------
    model : torch.nn.Module
        Follows the NCF contract: ``user_gmf``/``item_gmf`` and/or ``user_mlp``/``item_mlp``/
        ``tower``, then ``output`` over ``[gmf ; tower]``, optional ``user_bias``/``item_bias``.
        Put in eval mode (dropout off), as scoring requires.
    """

    def __init__(self, model: nn.Module, native: bool = True):
        model.eval()
        self.native = None
        with torch.no_grad():
            out_w = model.output.weight.detach()
            if out_w.shape[0] != 1:
                raise SparkrecError(f"NCF output layer must produce one raw score, got {out_w.shape[0]} outputs")
            out_w = out_w[0]
            item_table = model.item_gmf if hasattr(model, "item_gmf") else model.item_mlp
            self.num_items = item_table.num_embeddings
            self.device = item_table.weight.device
            # Score terms that depend on the user only / the item only.
            self.user_const = None
            self.item_const = model.output.bias.detach().expand(self.num_items).clone()
            offset = 0
            self.user_gmf = self.item_gmf = None
            if hasattr(model, "user_gmf"):
                factors = model.user_gmf.embedding_dim
                self.user_gmf = model.user_gmf.weight.detach()
                # Fold the GMF slice of the output layer into the item side once.
                self.item_gmf = model.item_gmf.weight.detach() * out_w[:factors]
                offset = factors
            self.user_mlp = self.tail = None
            self.floats_per_pair = 1   # the block's scores; the tower's activations live per tile
            if hasattr(model, "tower"):
                user_mlp, item_mlp = model.user_mlp.weight.detach(), model.item_mlp.weight.detach()
                dim = user_mlp.shape[1]
                first, rest = _split_tower(model.tower)
                if first is None:
                    # No hidden layer: the output sees [m_u ; n_i] directly, a sum of two constants.
                    self.user_const = user_mlp @ out_w[offset:offset + dim]
                    self.item_const += item_mlp @ out_w[offset + dim:]
                else:
                    # Activations are feature-major ([width, pairs]): the narrow later layers
                    # then multiply a wide matrix, which runs ~25% faster than [pairs, width].
                    self.user_mlp = user_mlp
                    self.user_in = first.weight.detach()[:, :dim].T.contiguous()            # [dim, hidden]
                    item_proj = (item_mlp @ first.weight.detach()[:, dim:].T
                                 + first.bias.detach()).T.contiguous()                      # [hidden, items]
                    self.buffers = _Buffers(self.device)
                    self.tower_out = out_w[offset:]
                    linears = _relu_chain(rest)
                    self.item_proj = self.item_floor = self.layers = None
                    if linears is None:
                        self.item_proj, self.tail = item_proj, _tail_steps(rest)
                    else:
                        # Every hidden layer is relu(u + s_i): u depends on the pair, s_i on the
                        # item only. relu(u + s_i) = max(u, -s_i) + s_i, and what follows is linear,
                        # so s_i moves into the next layer's per-item term (W s_i + bias) and, after
                        # the last layer, into the item constant: a layer is one matrix product and
                        # one max against a per-item floor, with no bias or ReLU passes.
                        shift, self.item_floor, self.layers = item_proj, -item_proj, []
                        for linear in linears:
                            shift = linear.weight.detach() @ shift + linear.bias.detach()[:, None]
                            self.layers.append((linear.weight.detach(), -shift))   # (weight, its floor)
                        self.item_const += self.tower_out @ shift
                        if native and self.device.type == "cpu":
                            self.native = _NativeTower.build(self.item_floor, self.layers, self.tower_out)
            if hasattr(model, "user_bias"):
                user_bias = model.user_bias.weight.detach()[:, 0]
                self.user_const = user_bias if self.user_const is None else self.user_const + user_bias
                self.item_const += model.item_bias.weight.detach()[:, 0]

    @torch.inference_mode()
    def user_state(self, users: Tensor) -> tuple:
        gmf = self.user_gmf[users] if self.user_gmf is not None else None
        mlp = self.user_mlp[users] @ self.user_in if self.user_mlp is not None else None   # [batch, width]
        if mlp is not None:
            mlp = mlp.contiguous() if self.native is not None else mlp.T[:, :, None]   # torch path: [width, batch, 1]
        const = self.user_const[users][:, None] if self.user_const is not None else None
        return len(users), gmf, mlp, const

    @torch.inference_mode()  # the reused buffers are inference tensors
    def block(self, state: tuple, start: int, end: int) -> Tensor:
        batch, gmf, mlp, const = state
        item_const = self.item_const[start:end]
        if gmf is not None:
            scores = torch.addmm(item_const.expand(batch, -1), gmf, self.item_gmf[start:end].T)
        else:
            scores = item_const.repeat(batch, 1)
        if mlp is not None and self.native is not None:
            self.native(scores, mlp, start, end)
        elif mlp is not None:
            width, tile = mlp.shape[0], max(1, TOWER_TILE_PAIRS // batch)
            for tile_start in range(start, end, tile):
                tile_end = min(end, tile_start + tile)
                items = tile_end - tile_start
                hidden = self.buffers.get("first", (width, batch * items))   # [width, users x items]
                if self.item_proj is not None:
                    torch.add(mlp, self.item_proj[:, None, tile_start:tile_end], out=hidden.view(width, batch, items))
                    for pos, step in enumerate(self.tail):
                        hidden = step(hidden, self.buffers, pos)
                else:
                    torch.maximum(mlp, self.item_floor[:, None, tile_start:tile_end], out=hidden.view(width, batch, items))
                    for pos, (weight, floor) in enumerate(self.layers):
                        out = self.buffers.get(pos, (weight.shape[0], batch * items))
                        torch.mm(weight, hidden, out=out)
                        hidden = out
                        by_item = out.view(-1, batch, items)
                        torch.maximum(by_item, floor[:, None, tile_start:tile_end], out=by_item)
                scores[:, tile_start - start:tile_end - start] += (self.tower_out @ hidden).view(batch, items)
        if const is not None:
            scores += const
        return scores


class _NativeTower:
    """The tower of the ``relu(u + s_i)`` chain through the fused kernel of
    ``sparkrec.models.native`` (same scores as the torch path; 2.1x its speed on one core)."""

    @classmethod
    def build(cls, first_floor: Tensor, layers: list, tower_out: Tensor) -> "_NativeTower | None":
        """None where the kernel is unavailable or a layer is wider than it takes."""
        floors = [first_floor] + [floor for _, floor in layers]
        if max(f.shape[0] for f in floors) > MAX_NATIVE_WIDTH:
            return None
        kernel = ncf_tower()
        return cls(kernel, floors, [w for w, _ in layers], tower_out) if kernel is not None else None

    def __init__(self, kernel, floors: list[Tensor], weights: list[Tensor], tower_out: Tensor):
        self.kernel = kernel
        # The kernel reads raw pointers: keep contiguous float32 copies alive with the scorer.
        self.floors = [f.float().contiguous() for f in floors]
        self.weights = [w.float().contiguous() for w in weights]
        self.out = tower_out.float().contiguous()
        self.num_items = self.floors[0].shape[1]
        self.widths = (ctypes.c_int * len(self.floors))(*[f.shape[0] for f in self.floors])
        self.floor_ptrs = (ctypes.c_void_p * len(self.floors))(*[f.data_ptr() for f in self.floors])
        self.weight_ptrs = (ctypes.c_void_p * max(1, len(self.weights)))(*[w.data_ptr() for w in self.weights])

    def __call__(self, scores: Tensor, user_first: Tensor, start: int, end: int) -> None:
        """Add the tower's score of users x items ``start:end`` to ``scores`` [batch, end - start]."""
        # The kernel trusts its pointers: check what it assumes of them.
        if not (scores.is_contiguous() and user_first.is_contiguous() and scores.dtype == user_first.dtype == torch.float32
                and scores.shape[1] == end - start and user_first.shape == (scores.shape[0], self.widths[0])
                and 0 <= start <= end <= self.num_items):
            raise SparkrecError(f"fused NCF kernel: unexpected block {tuple(scores.shape)} {scores.dtype} for items "
                                f"{start}:{end}, users {tuple(user_first.shape)}")
        status = self.kernel(scores.shape[0], end - start, len(self.weights), self.widths, user_first.data_ptr(),
                             self.floor_ptrs, self.num_items, start, self.weight_ptrs, self.out.data_ptr(),
                             scores.data_ptr(), torch.get_num_threads())
        if status != 0:
            raise SparkrecError(f"fused NCF kernel refused widths {list(self.widths)} (status {status})")


def _split_tower(tower: nn.Sequential) -> tuple[nn.Linear | None, nn.Sequential]:
    """(first Linear, the modules after it), or (None, empty) for a tower without hidden layers;
    only modules that are the identity at inference may precede the first Linear."""
    for pos, module in enumerate(tower):
        if isinstance(module, nn.Linear):
            return module, tower[pos + 1:]
        if not isinstance(module, (nn.Dropout, nn.Identity)):
            raise SparkrecError(
                f"NCF tower must start with a Linear over [user_mlp ; item_mlp] (optionally after Dropout), "
                f"found {[type(m).__name__ for m in tower]}")
    return None, nn.Sequential()


def _relu_chain(rest: nn.Sequential) -> list[nn.Linear] | None:
    """The Linears of a tower tail ``ReLU, (Linear, ReLU)*`` (modules that are the identity at
    inference aside), or None for any other tail."""
    real = [module for module in rest if not isinstance(module, (nn.Dropout, nn.Identity))]
    if not real or len(real) % 2 == 0:
        return None
    if not all(isinstance(m, nn.ReLU) for m in real[::2]) or not all(isinstance(m, nn.Linear) for m in real[1::2]):
        return None
    return real[1::2]


class _Buffers:
    """Activation buffers reused from block to block. A fresh multi-MiB tensor per block costs page
    faults on every use (the CPU allocator hands large blocks back to the OS); reuse measured
    10-25% faster. One scorer serves one task at a time (a Python worker runs tasks serially)."""

    def __init__(self, device: torch.device):
        self._store: dict = {}
        self.device = device

    def get(self, key, shape: tuple[int, int]) -> Tensor:
        """A contiguous float tensor of ``shape`` (contents undefined)."""
        size = shape[0] * shape[1]
        buf = self._store.get(key)
        if buf is None or buf.numel() < size:
            buf = self._store[key] = torch.empty(size, device=self.device)
        return buf[:size].view(shape)


def _tail_steps(modules: nn.Sequential) -> list:
    """The tower after its first Linear as steps ``(hidden, buffers, position) -> hidden`` on
    feature-major [width, pairs]: Linear writes into a reused buffer, ReLU runs in place and
    dropout (identity at inference) is dropped, which halves the memory traffic per pair."""
    steps = []
    for module in modules:
        if isinstance(module, nn.Linear):
            weight, bias = module.weight.detach(), module.bias.detach()[:, None]
            steps.append(lambda x, buffers, pos, w=weight, b=bias:
                         torch.addmm(b, w, x, out=buffers.get(pos, (w.shape[0], x.shape[1]))))
        elif isinstance(module, nn.ReLU):
            steps.append(lambda x, buffers, pos: x.relu_())
        elif not isinstance(module, (nn.Dropout, nn.Identity)):
            steps.append(lambda x, buffers, pos, m=module: m(x.T).T)  # modules expect features last
    return steps



def has_ncf_structure(model: nn.Module) -> bool:
    return hasattr(model, "output") and (hasattr(model, "user_gmf") or hasattr(model, "tower"))


