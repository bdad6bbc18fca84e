"""Losses of the one training loop (``train.loss``), as functions of scores.

Dot-product losses take user vectors ``[P, d]`` (one per positive), the positives' item indices
``[P]`` and the item table ``[N, d]`` with optional biases ``[N]``:

- ``softmax``: cross-entropy of the positive against every item of the catalogue. The logits are
  computed chunk by chunk in both passes (:class:`ChunkedSoftmaxCE`), so memory is ``P x chunk``
  whatever the catalogue (1M items fit).
- ``sampled_softmax``: cross-entropy against a shared candidate set, the batch's own positives
  (in-batch negatives) plus ``K`` items drawn uniformly or by popularity, scored by one
  ``[P x (P + K)]`` matrix product. Each logit is corrected by ``-log`` of the item's expected
  count in the candidate set (logQ correction, Yi et al., RecSys 2019), so the sampled loss is an
  unbiased stand-in for the full softmax; a candidate equal to a row's own positive (other than
  the positive itself) is masked ("accidental hit"). It runs through the full softmax's kernel
  with the candidates as the catalogue.

Pairwise losses take scores of the positives and of their negatives, so they serve every model:

- ``bce``: binary cross-entropy, positives 1, negatives 0 (NCF's pointwise loss);
- ``bpr``: ``-log sigmoid(s_pos - s_neg)`` per (positive, negative) pair (Rendle et al., UAI 2009);
- ``mse``: squared error of predicted ratings (explicit data).

Every function returns the *sum* over examples (the loop scales it into a mean over ranks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "bce", "bpr", "softmax", "sampled_softmax")
DOT_PRODUCT_LOSSES = ("softmax", "sampled_softmax")
PAIRWISE_LOSSES = ("bce", "bpr")


def chunk_size(rows: int, budget_mib: float) -> int:
    """Items per logits chunk so that a ``rows x chunk`` float block fits ``budget_mib``."""
    return max(1, int(budget_mib * 2**20) // (4 * max(1, rows)))


class ChunkedSoftmaxCE(torch.autograd.Function):
    """Per-row ``logsumexp_i(u . E_i + b_i) - (u . E_t + b_t)`` without a ``[P, N]`` logits matrix.

    Forward keeps a running logsumexp over item chunks; backward recomputes each chunk's logits and
    turns them into probabilities, so both passes hold one ``[P, chunk]`` block at a time. When the
    catalogue fits one chunk, forward's block (as unnormalised probabilities) is kept for backward
    instead of recomputed: the same memory, one matrix product fewer of four (ml-latest-small's
    9.7k items at batch 64 x 100 fit the default 256 MiB). Matrix
    products run in ``dtype`` (bfloat16 halves their cost where the CPU or GPU supports it);
    the log-sum-exp and the gradients accumulate in float32.
    """

    @staticmethod
    def forward(ctx, users, table, bias, targets, chunk: int, dtype, excluded=None):
        rows, n = users.shape[0], table.shape[0]
        u, table_d = users.to(dtype), table.to(dtype)  # no copies in float32
        lse = torch.full((rows,), float("-inf"), device=users.device)
        for start in range(0, n, chunk):
            logits = _chunk_logits(u, table_d, bias, excluded, start, chunk)
            # torch.logsumexp's steps, in place: it allocates a [P, chunk] temporary (page faults).
            top = logits.amax(dim=1)
            total = logits.sub_(top[:, None]).exp_().sum(dim=1)  # logits now hold exp(logit - top)
            lse = torch.logaddexp(lse, top + total.log())
        # One chunk: exp(logit - top) / total are the probabilities backward needs; keep them.
        ctx.kept = (logits, total) if n <= chunk else None
        target = (users * table[targets]).sum(1)
        if bias is not None:
            target = target + bias[targets]
        ctx.save_for_backward(users, table, bias, targets, lse, excluded)
        ctx.chunk, ctx.dtype, ctx.table_d = chunk, dtype, table_d
        return lse - target

    @staticmethod
    def backward(ctx, grad):
        users, table, bias, targets, lse, excluded = ctx.saved_tensors
        chunk, dtype, table_d = ctx.chunk, ctx.dtype, ctx.table_d
        u = users.to(dtype)
        grad_users = torch.zeros_like(users)
        grad_table = torch.zeros_like(table)
        grad_bias = torch.zeros_like(bias) if bias is not None else None
        kept, ctx.kept = ctx.kept, None
        for start in range(0, table.shape[0], chunk):
            # d loss / d logit, softmax part, in place (a fresh [P, chunk] block costs page faults)
            if kept is not None:
                probs = kept[0].mul_((grad / kept[1])[:, None])
            else:
                logits = _chunk_logits(u, table_d, bias, excluded, start, chunk)
                probs = logits.sub_(lse[:, None]).exp_().mul_(grad[:, None])
            probs_d = probs.to(dtype)  # once for both products: a pass over the block costs ~ a bf16 product
            grad_users += (probs_d @ table_d[start:start + chunk]).float()
            grad_table[start:start + chunk] = (probs_d.T @ u).float()
            if grad_bias is not None:
                grad_bias[start:start + chunk] = probs.sum(0)
        # The target's logit enters with a minus sign.
        grad_users -= grad[:, None] * table[targets]
        grad_table.index_add_(0, targets, -grad[:, None] * users)
        if grad_bias is not None:
            grad_bias.index_add_(0, targets, -grad)
        return grad_users, grad_table, grad_bias, None, None, None, None


def _chunk_logits(u, table_d, bias, excluded, start: int, chunk: int) -> torch.Tensor:
    """Float32 logits [P, chunk] of the items ``start:start + chunk``, excluded pairs at -inf;
    ``u`` and ``table_d`` in the products' dtype."""
    logits = (u @ table_d[start:start + chunk].T).float()
    if bias is not None:
        logits += bias[start:start + chunk]
    if excluded is not None:
        logits.masked_fill_(excluded[:, start:start + chunk], float("-inf"))
    return logits


def softmax_loss(users: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None,
                 *, chunk: int, dtype: torch.dtype = torch.float32, excluded: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Summed softmax cross-entropy of each positive against every row of ``table`` (see module
    doc); ``excluded`` (bool [P, N]) leaves (row, item) pairs out of a row's softmax."""
    if not len(targets):
        return users.sum() * 0.0
    return ChunkedSoftmaxCE.apply(users.float(), table.float(), None if bias is None else bias.float(),
                                  targets, chunk, dtype, excluded).sum()


def sampled_softmax_loss(users: torch.Tensor, targets: torch.Tensor, candidate_vectors: torch.Tensor,
                         candidate_bias: torch.Tensor | None, candidates: torch.Tensor,
                         log_expected_count: torch.Tensor, *, in_batch: bool = True,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Summed sampled-softmax cross-entropy with logQ correction.

    Parameters
    ----------
    users : Tensor [P, d]
    targets : LongTensor [P]
        The positives; the first P candidates are these, in the same order.
    candidate_vectors, candidate_bias : Tensor [C, d], [C] or None
        Item vectors (and biases) of ``candidates``.
    candidates : LongTensor [C]
        Item indices: the P positives, then the sampled negatives.
    log_expected_count : Tensor [C]
        ``log`` of each candidate item's expected number of appearances in the candidate set.
    in_batch : bool
        The other rows' positives are negatives of a row too; otherwise a row sees only its own
        positive and the sampled ones.
    """
    if not len(targets):
        return users.sum() * 0.0
    per_candidate = -log_expected_count
    if candidate_bias is not None:
        per_candidate = per_candidate + candidate_bias.float()
    rows = torch.arange(len(targets), device=targets.device)
    masked = candidates[None, :] == targets[:, None]  # accidental hits: the row's positive again
    if not in_batch:
        masked[:, : len(targets)] = True
    masked[rows, rows] = False
    # The full softmax's kernel over the candidates as the catalogue (row i's positive is
    # candidate i), in one block: in place, with no log-softmax and mask passes in backward
    # (F.cross_entropy over masked logits: 58k against 79k samples/s in train_bench).
    return softmax_loss(users, rows, candidate_vectors, per_candidate, chunk=len(candidates), dtype=dtype,
                        excluded=masked)


def pairwise_loss(kind: str, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Summed ``bce`` or ``bpr`` loss of positive scores [P] and their negatives' scores [P, k]."""
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="sum")
                + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="sum"))
    if kind == "bpr":
        return -F.logsigmoid(positive[:, None] - negative).sum()
    raise ValueError(f"unknown pairwise loss {kind!r}")


def examples_per_positive(kind: str, num_negatives: int) -> int:
    """Loss terms per positive (the loop divides by this to report a mean): ``bce`` counts each
    negative as an example, ``bpr`` each pair, the softmax losses one per positive."""
    return {"bce": 1 + num_negatives, "bpr": num_negatives}.get(kind, 1)
