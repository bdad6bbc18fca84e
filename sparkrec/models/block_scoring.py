"""Top-K items for a batch of users over any model, in item blocks of bounded memory: the one
scoring engine of serving (the score job), evaluation and train-time validation.

A ``BlockScorer`` gives raw scores of a batch of users against a contiguous range of items;
``top_k_items`` scores the catalogue block by block and merges each block into a running top-K, so
memory stays bounded for any catalogue size. ``make_scorer`` picks the scorer:
``DotProductScorer`` for the history model (user vectors from the users' histories; one matrix
product per block) and for the autoencoders (user and item codes by index), ``DecomposedNCF``
(``sparkrec.models.decomposed_ncf``) for NCF-shaped models, each checked against the model's own
``forward`` where it takes (user, item) pairs, else ``PairwiseScorer``, which runs ``forward`` on
every pair (correct for any model, just slower). Pure torch, no I/O: it runs on the device of the
model it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from sparkrec.errors import SparkrecError
from sparkrec.models.decomposed_ncf import DecomposedNCF, has_ncf_structure

BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class Histories:
    """Users given by their histories (for history models): ``items`` long [B, L] left-padded with
    -1 (latest item last) and ``labels`` float [B, L] (ratings; None for implicit data)."""

    items: Tensor
    labels: Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)


class BlockScorer(Protocol):
    """Raw scores of a batch of users against a contiguous range of item indices."""

    num_items: int
    device: torch.device
    floats_per_pair: int
    """Activation floats held per (user, item) pair while a block is scored; sizes the chunks."""

    def user_state(self, users: Tensor | Histories) -> object:
        """Everything per user that the blocks reuse (computed once per user batch), from user
        indices, or histories for a history model."""

    def block(self, state: object, start: int, end: int) -> Tensor:
        """New float tensor [batch, end - start] (callers write into it): raw scores of the batch
        against items start..end-1."""



class PairwiseScorer:
    """Block scorer that runs ``model(user_idx, item_idx)`` on every pair: the reference path for
    models without the NCF structure, and the naive baseline the benchmark compares against."""

    def __init__(self, model: nn.Module, num_items: int, floats_per_pair: int = 256):
        model.eval()
        self.model = model
        self.num_items = num_items
        self.floats_per_pair = floats_per_pair
        self.device = next(model.parameters()).device

    def user_state(self, users: Tensor) -> Tensor:
        return users

    def block(self, state: Tensor, start: int, end: int) -> Tensor:
        items = torch.arange(start, end, dtype=torch.long, device=self.device)
        users = state.repeat_interleave(len(items))
        return self.model(users, items.repeat(len(state))).view(len(state), len(items))


class DotProductScorer:
    """Block scorer of a model whose raw score is ``user vector . item vector + item bias + user
    constant``: the history model (user vectors from ``Histories``), or a model scored by user
    index whose score is such a dot product (the autoencoders).
    The model provides ``user_vectors(...) -> (vectors [B, d], constants [B])`` and
    ``item_table() -> (vectors [N, d], biases [N] or None)``."""

    floats_per_pair = 1

    def __init__(self, model: nn.Module):
        model.eval()
        self.model = model
        with torch.no_grad():
            table, bias = model.item_table()
            self.table = table.detach()
            self.bias = bias.detach() if bias is not None else torch.zeros(len(table), device=table.device)
        self.num_items, self.device = len(self.table), self.table.device

    @torch.inference_mode()
    def user_state(self, users: Tensor | Histories) -> tuple[Tensor, Tensor]:
        if isinstance(users, Histories):
            return self.model.user_vectors(users.items.to(self.device),
                                           None if users.labels is None else users.labels.to(self.device))
        return self.model.user_vectors(users.to(self.device))

    @torch.inference_mode()
    def block(self, state: tuple[Tensor, Tensor], start: int, end: int) -> Tensor:
        vectors, constants = state
        scores = torch.addmm(self.bias[start:end].expand(len(vectors), -1), vectors, self.table[start:end].T)
        return scores.add_(constants[:, None])


def is_history_model(model_cfg: dict) -> bool:
    """Whether a saved model config (model.json's ``model``) scores users from their histories."""
    return model_cfg.get("kind") == "sequence"



def make_scorer(model: nn.Module, num_items: int, check_pairs: int = 256, seed: int = 0) -> BlockScorer:
    """The fastest correct block scorer for ``model``, checked against its own ``forward``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (LongTensor user_idx [B], LongTensor item_idx [B]) to raw scores [B], or a history
        model (scored from ``Histories``).
    num_items : int
        Item vocabulary size (scored indices are 0..num_items-1).
    check_pairs : int
        Random pairs on which the fast scores must equal ``model(u, i)``; a model whose
        structure diverges from its scorer's contract then fails loudly instead of ranking wrongly.
    seed : int
        Seed of the check pairs.

    Returns
    -------
    BlockScorer
        ``DotProductScorer`` for the history model and for models whose score is a dot product of
        a user vector and an item table (the autoencoders: ``user_vectors`` and ``item_table``
        by user index), ``DecomposedNCF`` for NCF-shaped models, else ``PairwiseScorer``.

    Raises
    ------
    SparkrecError
        The fast scorer disagrees with ``forward`` (the model no longer follows the contract), or
        the model's item count is not ``num_items``.
    """
    # A model that can bake itself into a plain NCF (the hybrid: ID + content item vectors) is
    # served through that NCF; the check below still compares against its own forward.
    served = model.as_ncf() if hasattr(model, "as_ncf") else model
    if has_ncf_structure(served):
        scorer: BlockScorer = DecomposedNCF(served)
    elif hasattr(model, "user_vectors") and hasattr(model, "item_table"):
        scorer = DotProductScorer(model)
    else:
        return PairwiseScorer(model, num_items)
    if scorer.num_items != num_items:
        raise SparkrecError(f"model has {scorer.num_items} items but {num_items} were expected; "
                            f"score with the prepared data the model was trained on")
    if served.cfg.num_users is None:   # a history model: its forward takes histories, not user indices
        return scorer
    if check_pairs:
        with torch.inference_mode():
            gen = torch.Generator().manual_seed(seed)
            users = torch.randint(served.cfg.num_users, (check_pairs,), generator=gen)
            items = torch.randint(num_items, (check_pairs,), generator=gen)
            direct = model(users, items)
            fast = torch.cat([scorer.block(scorer.user_state(users[j:j + 1]), int(i), int(i) + 1)[0]
                              for j, i in enumerate(items)])
        if not torch.allclose(fast, direct, rtol=1e-4, atol=1e-5):
            worst = (fast - direct).abs().max().item()
            raise SparkrecError(f"{type(scorer).__name__} scores differ from {type(model).__name__}.forward by up "
                                f"to {worst:.3g}; the model no longer follows its scorer's contract "
                                f"(sparkrec/models/block_scoring.py)")
    return scorer


def items_per_chunk(scorer: BlockScorer, batch_users: int, budget_mib: float) -> int:
    """Items per block so that one block's activations fit in ``budget_mib``."""
    per_item = batch_users * scorer.floats_per_pair * BYTES_PER_FLOAT
    return max(1, min(scorer.num_items, int(budget_mib * 2**20) // per_item))


def top_k_items(scorer: BlockScorer, users: Tensor, k: int, chunk: int,
                seen_rows: Tensor | None = None, seen_items: Tensor | None = None,
                allowed: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Best ``k`` items per user by raw score, skipping seen and non-candidate items, over item
    blocks of ``chunk``.

    Parameters
    ----------
    scorer : BlockScorer
    users : LongTensor [B] or Histories
        User indices of this batch, or their histories (history models).
    k : int
        Items per user.
    chunk : int
        Items scored per block (see ``items_per_chunk``).
    seen_rows, seen_items : LongTensor [S], optional
        Excluded pairs: position in ``users`` and item index (duplicates and out-of-range items
        are ignored).
    allowed : BoolTensor [num_items], optional
        Candidate items; None = all.

    Returns
    -------
    tuple of Tensor
        ``scores`` float [B, k'] and ``items`` long [B, k'] sorted by descending score
        (k' = min(k, num_items)), and ``counts`` long [B]: how many leading entries of each row
        are real recommendations (fewer than k' when the user has seen nearly every candidate).
    """
    batch, num_items, device = len(users), scorer.num_items, scorer.device
    k = min(k, num_items)
    if seen_rows is None:
        seen_rows = seen_items = torch.empty(0, dtype=torch.long)
    seen_rows, seen_items = seen_rows.to(device), seen_items.to(device)
    if allowed is not None:
        allowed = allowed.to(device)
    valid = (seen_items >= 0) & (seen_items < num_items)
    seen_rows, seen_items = seen_rows[valid], seen_items[valid]
    candidates = num_items
    if allowed is not None:
        kept = allowed[seen_items]   # a seen non-candidate must not be counted out twice
        seen_rows, seen_items = seen_rows[kept], seen_items[kept]
        candidates = int(allowed.sum())
    best_scores = torch.empty(batch, 0, device=device)
    best_items = torch.empty(batch, 0, dtype=torch.long, device=device)
    with torch.inference_mode():
        state = scorer.user_state(users)
        for start in range(0, num_items, chunk):
            end = min(num_items, start + chunk)
            scores = scorer.block(state, start, end)
            in_block = (seen_items >= start) & (seen_items < end)
            scores[seen_rows[in_block], seen_items[in_block] - start] = float("-inf")
            if allowed is not None:
                scores[:, ~allowed[start:end]] = float("-inf")
            block_scores, block_items = scores.topk(min(k, end - start), dim=1)
            merged_scores = torch.cat([best_scores, block_scores], dim=1)
            merged_items = torch.cat([best_items, block_items + start], dim=1)
            best_scores, pos = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
            best_items = merged_items.gather(1, pos)
    distinct_seen = torch.unique(seen_rows * num_items + seen_items) // num_items
    remaining = candidates - torch.bincount(distinct_seen, minlength=batch)
    return best_scores, best_items, remaining.clamp(max=k)
