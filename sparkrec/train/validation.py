"""Validation metrics computed inside training (for early stopping and the history), summed on
each rank's shard and all-reduced. The full evaluation protocols live in ``sparkrec.evaluate``.

- explicit: RMSE and MAE of the predicted rating;
- implicit: HR@10 and NDCG@10 of each validation positive ranked among ``num_negatives`` items
  drawn uniformly from the others (the NCF paper's protocol). Negatives never equal the positive;
  other items of the same user are not excluded (rare at realistic catalog sizes, and the same
  for every epoch). They are drawn from a fixed seed, so epochs are compared on the same lists.
  A negative scoring equal to the positive counts against it, so a constant model scores 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.train import distributed as dist
from sparkrec.train.feed import ShardPlan, ShardReader, check_rows_read

HR_K = 10
LOWER_IS_BETTER = {"rmse": True, "mae": True, "loss": True, "hr@10": False, "ndcg@10": False}


def metric_name(setting: str, implicit: bool) -> str:
    """The early-stopping metric for ``train.validation_metric``; raises ValueError on a metric
    the objective does not produce."""
    name = setting if setting != "auto" else ("hr@10" if implicit else "rmse")
    if name == "rmse" and implicit or name == "hr@10" and not implicit:
        raise ValueError(f"train.validation_metric={setting} is not computed for "
                         f"{'implicit' if implicit else 'explicit'} training; use auto, loss or "
                         f"{'hr@10' if implicit else 'rmse'}")
    return name


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if LOWER_IS_BETTER[metric] else value > best


@torch.no_grad()
def validate(model: nn.Module, plan: ShardPlan, seed: int, num_negatives: int, device: torch.device) -> dict:
    """Validation metrics over every rank's shard (call on every rank; it all-reduces).

    ``model`` is any registered model family (``forward(user_idx, item_idx)`` raw scores,
    ``predict``, ``cfg.implicit``, ``cfg.num_items``); autoencoders must have been folded in.

    Returns
    -------
    dict
        explicit: ``rmse``, ``mae``, ``loss`` (MSE); implicit: ``hr@10``, ``ndcg@10``, ``loss``
        (BCE over positives and their negatives); plus ``rows``.
    """
    model.eval()
    rank = dist.rank()
    implicit, num_items = model.cfg.implicit, model.cfg.num_items
    gen = torch.Generator(device=device).manual_seed(seed + rank)
    reader = ShardReader(plan, rank, seed=seed, shuffle=False)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in reader:
        users, items = batch[USER_IDX].to(device), batch[ITEM_IDX].to(device)
        n = users.numel()
        if n == 0:
            continue
        if implicit:
            # (positive + offset) mod items with offset in 1..items-1: uniform over the other items.
            offsets = torch.randint(1, num_items, (n, num_negatives), generator=gen, device=device)
            candidates = torch.cat([items[:, None], (items[:, None] + offsets) % num_items], dim=1)
            raw = model(users.repeat_interleave(num_negatives + 1), candidates.flatten()).float()
            raw = raw.view(n, num_negatives + 1)
            rank_of_positive = (raw[:, 1:] >= raw[:, :1]).sum(dim=1)
            hit = rank_of_positive < HR_K
            labels = torch.zeros_like(raw)
            labels[:, 0] = 1.0
            bce = F.binary_cross_entropy_with_logits(raw, labels, reduction="sum") / (num_negatives + 1)
            ndcg = torch.where(hit, 1.0 / torch.log2(rank_of_positive.double() + 2.0), 0.0)
            sums += torch.stack([hit.sum().double(), ndcg.sum(), bce.double()])
        else:
            err = (model.predict(users, items).float() - batch[LABEL].to(device)).double()
            sums += torch.stack([err.pow(2).sum(), err.abs().sum(), err.pow(2).sum()])
    check_rows_read(plan, dist.all_gather_object(reader.rows_read), "validation")
    total = dist.all_reduce_sum(sums).tolist()
    rows = plan.rows
    if implicit:
        return {"hr@10": total[0] / rows, "ndcg@10": total[1] / rows, "loss": total[2] / rows, "rows": rows}
    return {"rmse": math.sqrt(total[0] / rows), "mae": total[1] / rows, "loss": total[2] / rows, "rows": rows}
