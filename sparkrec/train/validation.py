"""Validation inside training (early stopping, the best checkpoint, the history), on the worker's
device, over a seeded sample of validation users (``sparkrec.train.inputs``), each rank taking
every world-th user; sums are all-reduced.

The metrics are the evaluate job's (``evaluate.split=validation``), computed by the same scoring
engine the score and evaluate jobs use (``sparkrec.models.block_scoring.top_k_items``):

- implicit, full ranking: each sampled user ranks every item with training interactions except
  its own training items; ``ndcg@10`` = DCG@10 / IDCG@10 with binary gain (DCG = sum over the
  user's validation items ranked r <= 10 of 1 / log2(r + 1), IDCG over min(10, validation items)),
  ``hr@10`` = 1 if any is in the top 10; both averaged over users. When the prepared data holds
  cold items out, validation items without training interactions are left out, as there.
- explicit: ``rmse`` and ``mae`` over every validation rating of the sampled users.

A test checks these numbers against the evaluate job's on the same model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from sparkrec.columns import USER_IDX
from sparkrec.models.block_scoring import Histories, items_per_chunk, make_scorer, top_k_items
from sparkrec.train import distributed as dist
from sparkrec.train.feed import left_padded
from sparkrec.train.inputs import HISTORY, HISTORY_LABELS, KNOWN, TARGET_LABELS, TARGETS

K = 10
RANKING = ("ndcg@10", "hr@10")
LOWER_IS_BETTER = {"rmse": True, "mae": True, "ndcg@10": False, "hr@10": False}
USERS_PER_STEP = 256
CHUNK_MIB = 64.0


def metric_name(setting: str, implicit: bool) -> str:
    """The early-stopping metric for ``train.validation_metric``; raises ValueError on a metric
    the objective does not produce."""
    name = setting if setting != "auto" else ("ndcg@10" if implicit else "rmse")
    if (name in RANKING) != implicit:
        raise ValueError(f"train.validation_metric={setting} is not computed for "
                         f"{'implicit' if implicit else 'explicit'} training; use auto or "
                         f"{' or '.join(RANKING) if implicit else 'rmse or mae'}")
    return name


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if LOWER_IS_BETTER[metric] else value > best


def _csr(column) -> tuple[torch.Tensor, torch.Tensor]:
    """(row of each element, element) of an Arrow list column (null lists are empty)."""
    lists = column.combine_chunks()
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    values = lists.flatten().to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return torch.from_numpy(rows), torch.as_tensor(values.copy())  # Arrow's buffers are read-only


@dataclass(frozen=True)
class ValidationSample:
    """One rank's validation users: indices, validation items and labels (as row, value pairs),
    the known items they must not be ranked against, and their histories (history models)."""

    users: torch.Tensor
    target_rows: torch.Tensor
    targets: torch.Tensor
    target_labels: torch.Tensor
    known_rows: torch.Tensor
    known: torch.Tensor
    history: Histories | None
    total_users: int

    def batches(self, size: int):
        """(positions, users or histories) per step of ``size`` users."""
        for start in range(0, len(self.users), size):
            positions = torch.arange(start, min(start + size, len(self.users)))
            who = (self.users[positions] if self.history is None else
                   Histories(self.history.items[positions],
                             None if self.history.labels is None else self.history.labels[positions]))
            yield positions, who


def load_sample(validation: dict, rank: int, world: int, history_len: int | None) -> ValidationSample:
    """This rank's share (every ``world``-th user from ``rank``) of the published sample."""
    fs, path = fsspec.core.url_to_fs(validation["path"])
    return sample_of(pq.read_table(path, filesystem=fs), rank, world, history_len)


def sample_of(table, rank: int, world: int, history_len: int | None) -> ValidationSample:
    """This rank's share of a validation sample given as an Arrow table (``sparkrec.train.inputs
    .validation_sample``'s columns)."""
    table = table.sort_by(USER_IDX)
    total = table.num_rows
    table = table.take(np.arange(rank, total, world))
    target_rows, targets = _csr(table.column(TARGETS))
    _, target_labels = _csr(table.column(TARGET_LABELS))
    known_rows, known = _csr(table.column(KNOWN))
    history = None
    if history_len:
        history = Histories(torch.from_numpy(left_padded(table.column(HISTORY).combine_chunks(), history_len, -1, np.int64)),
                            torch.from_numpy(left_padded(table.column(HISTORY_LABELS).combine_chunks(), history_len, 0.0,
                                                         np.float32)))
    return ValidationSample(torch.from_numpy(table.column(USER_IDX).to_numpy().astype(np.int64)), target_rows,
                            targets.long(), target_labels.float(), known_rows, known.long(), history, total)


def ranking_sums(top_items: torch.Tensor, counts: torch.Tensor, target_rows: torch.Tensor,
                 targets: torch.Tensor, users: int) -> torch.Tensor:
    """[ndcg@K sum, hr@K sum, users with targets] of a batch: ``top_items`` [B, >=K] ranked lists
    (``counts`` real entries per row), ``targets`` the relevant items of row ``target_rows``."""
    device = top_items.device
    top = top_items[:, :K]
    real = torch.arange(top.shape[1], device=device)[None] < counts[:, None]
    hit = (top[target_rows] == targets[:, None]).int()                    # [targets, K]
    relevant = torch.zeros(users, top.shape[1], dtype=torch.int32, device=device).index_add_(0, target_rows, hit)
    relevant = (relevant > 0) & real
    discount = 1.0 / torch.log2(torch.arange(2, top.shape[1] + 2, device=device, dtype=torch.float64))
    dcg = (relevant.double() * discount).sum(1)
    num_relevant = torch.bincount(target_rows.to(device), minlength=users)
    ideal_discount = 1.0 / torch.log2(torch.arange(2, K + 2, device=device, dtype=torch.float64))
    idcg = torch.cumsum(ideal_discount, 0)[(num_relevant.clamp(min=1, max=K) - 1)]
    has = num_relevant > 0
    return torch.stack([(dcg / idcg)[has].sum(), relevant.any(1)[has].double().sum(), has.double().sum()])


@torch.no_grad()
def validate(model: nn.Module, sample: ValidationSample, trained_items: torch.Tensor, warm_only: bool,
             device: torch.device) -> dict:
    """Validation metrics over every rank's share of the sample (call on every rank: it
    all-reduces).

    Parameters
    ----------
    trained_items : BoolTensor [num_items]
        Items with training interactions: the candidates of the ranking.
    warm_only : bool
        Leave out validation items without training interactions (cold items held out).

    Returns
    -------
    dict
        implicit: ``ndcg@10``, ``hr@10``; explicit: ``rmse``, ``mae``; plus ``users``.
    """
    model.eval()
    allowed = trained_items.to(device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    if model.cfg.implicit:
        scorer = make_scorer(model, model.cfg.num_items, check_pairs=0)
        chunk = items_per_chunk(scorer, USERS_PER_STEP, CHUNK_MIB)
        for positions, who in sample.batches(USERS_PER_STEP):
            seen = torch.isin(sample.known_rows, positions)
            aimed = torch.isin(sample.target_rows, positions)
            rows, targets = sample.target_rows[aimed] - positions[0], sample.targets[aimed].to(device)
            if warm_only:
                keep = allowed[targets]
                rows, targets = rows[keep.cpu()], targets[keep]
            _, top, counts = top_k_items(scorer, who, K, chunk, sample.known_rows[seen] - positions[0],
                                         sample.known[seen], allowed)
            sums += ranking_sums(top, counts, rows.to(device), targets, len(positions))
        total = dist.all_reduce_sum(sums).tolist()
        users = max(1.0, total[2])
        return {"ndcg@10": total[0] / users, "hr@10": total[1] / users, "users": int(total[2])}
    for positions, who in sample.batches(USERS_PER_STEP):
        aimed = torch.isin(sample.target_rows, positions)
        rows = (sample.target_rows[aimed] - positions[0]).to(device)
        items, labels = sample.targets[aimed].to(device), sample.target_labels[aimed].to(device)
        if isinstance(who, Histories):
            vectors, constants = model.user_vectors(who.items.to(device), who.labels.to(device))
            raw = (vectors[rows] * model.item_table()[0][items]).sum(1) + constants[rows]
            bias = model.item_table()[1]
            predicted = model.to_score(raw + (bias[items] if bias is not None else 0.0))
        else:
            predicted = model.predict(who.to(device)[rows], items)
        error = (predicted.float() - labels).double()
        sums += torch.stack([error.pow(2).sum(), error.abs().sum(), torch.tensor(float(len(error)), device=device,
                                                                              dtype=torch.float64)])
    total = dist.all_reduce_sum(sums).tolist()
    rows = max(1.0, total[2])
    return {"rmse": math.sqrt(total[0] / rows), "mae": total[1] / rows, "users": sample.total_users}
