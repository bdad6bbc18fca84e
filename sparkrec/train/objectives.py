"""What differs between model families inside the one training loop (``sparkrec.train.loop``).

An objective says what a rank reads and how one batch becomes a loss; the loop does the rest
(optimisation step, reconciling rows, validation, checkpoints, publishing) the same way for all:

- ``plan``: the training data as every rank reads it (``sparkrec.train.feed.ShardPlan``);
- ``reader(rank, seed)``: one epoch's pass over the rank's shard, ``plan.steps`` batches;
- ``examples_per_row``: loss terms per row read; the loop scales each step's summed loss by
  ``world / (rows of all ranks this step x examples_per_row)`` so gradients are a mean;
- ``loss_units``: the epoch's summed loss divided by this is ``train_loss``;
- ``trainee(model)``: the module the distributed wrapper (DDP) wraps;
- ``loss(model, trainee, batch, generator=, step=, autocast=)``: summed float32 loss of the
  batch with its graph; randomness (negatives, dropout, the VAE's noise) comes from
  ``generator``, seeded per (epoch, rank) by the loop, and ``step`` counts steps over all epochs;
- ``fold_in(model, device)``: refresh what scoring needs from the training data (call on every
  rank before validating or publishing; it all-reduces).

The autoencoders read sparse vectors (``sparkrec.data.sparse_vectors``) and store a code per
vector in their ``state_dict`` at fold-in (see ``sparkrec.models.autoencoders``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.config import Config
from sparkrec.models.autoencoders import AutoRec, MultVAE, rows_of
from sparkrec.train import distributed as dist
from sparkrec.train.feed import ShardReader, VectorShardReader, check_rows_read, plan_dataset, plan_shards

_UNSET = object()
AUTOENCODERS = {"autorec": "items", "multvae": "users"}
"""Autoencoder kind -> the sparse vectors it trains on."""


class NCFObjective:
    """Pointwise NCF training on prepared interactions: MSE on mapped ratings (explicit) or BCE
    with ``num_negatives`` negatives per positive, drawn uniformly from the model's
    ``negative_candidates()`` fresh every step (implicit)."""

    def __init__(self, cfg: Config, manifest: dict, world: int, implicit: bool):
        t = cfg.train
        self.plan = plan_shards(manifest, "train", world, t.batch_size)
        self.implicit, self.num_negatives, self.weight_decay = implicit, t.num_negatives, t.weight_decay
        self.shuffle_buffer, self.threads = t.shuffle_buffer, t.reader_threads
        self.examples_per_row = 1 + t.num_negatives if implicit else 1
        self.loss_units = self.plan.rows * self.examples_per_row
        self._candidates = _UNSET  # the model's negative candidates, looked up at the first step

    def reader(self, rank: int, seed: int) -> ShardReader:
        return ShardReader(self.plan, rank, seed=seed, shuffle_buffer=self.shuffle_buffer, threads=self.threads)

    def trainee(self, model: nn.Module) -> nn.Module:
        return model

    def loss(self, model: nn.Module, trainee: nn.Module, batch: dict, *, generator: torch.Generator, step: int,
             autocast) -> torch.Tensor:
        device = next(model.parameters()).device
        users = batch[USER_IDX].to(device, non_blocking=True)
        items = batch[ITEM_IDX].to(device, non_blocking=True)
        labels = batch[LABEL].to(device, non_blocking=True)
        if self.implicit:  # every row is a positive; k uniform negatives per positive, fresh each step
            n, k = users.numel(), self.num_negatives
            users = torch.cat([users, users.repeat_interleave(k)])
            items = torch.cat([items, self._negatives(model, n * k, generator, device)])
            labels = torch.cat([torch.ones(n, device=device), torch.zeros(n * k, device=device)])
        with autocast:
            raw = trainee(users, items)
        raw = raw.float()
        if self.implicit:
            per_row = F.binary_cross_entropy_with_logits(raw, labels, reduction="none")
        else:
            per_row = (model.to_score(raw) - labels).pow(2)
        if self.weight_decay > 0:
            per_row = per_row + self.weight_decay * model.embedding_sq_norm(users, items)
        return per_row.sum()

    def _negatives(self, model: nn.Module, count: int, generator: torch.Generator, device) -> torch.Tensor:
        """``count`` items drawn uniformly from the model's negative candidates."""
        if self._candidates is _UNSET:  # constant for the run: not recomputed every step
            self._candidates = model.negative_candidates()
        if self._candidates is None:
            return torch.randint(model.cfg.num_items, (count,), generator=generator, device=device)
        return self._candidates[torch.randint(len(self._candidates), (count,), generator=generator, device=device)]

    def fold_in(self, model: nn.Module, device: torch.device) -> None:
        """NCF scores from its embeddings alone: nothing to do."""


class _Trainee(nn.Module):
    """The module DDP wraps for an autoencoder: the model's submodules and own parameters (the
    same objects, so DDP sees which embedding bags have sparse gradients), but not its code
    buffer, which DDP would otherwise broadcast from rank 0 at every step."""

    def __init__(self, model: nn.Module, loss):
        super().__init__()
        self.parts = nn.ModuleDict(dict(model.named_children()))
        self.own = nn.ParameterDict(dict(model.named_parameters(recurse=False)))
        self._loss, self._model = loss, [model]  # a list: not registered as a submodule

    def forward(self, batch: dict, generator: torch.Generator, step: int) -> torch.Tensor:
        return self._loss(self._model[0], batch, generator, step)


class AutoencoderObjective:
    """Training on sparse vectors, one per row: ``autorec`` on item vectors, ``multvae`` on user
    bags. Batches are CSR (``offsets``, ``indices``, ``values``; see ``VectorShardReader``)."""

    def __init__(self, cfg: Config, vectors: dict, world: int):
        a = cfg.autoencoder
        self.kind = cfg.train.model
        self.plan = plan_dataset(vectors, f"{vectors['kind']} vectors", world, a.batch_size,
                                 fix=f"use fewer workers (there are {vectors['rows']} vectors)")
        self.key, self.indices, self.threads = vectors["key"], vectors["indices"], cfg.train.reader_threads
        self.l2, self.beta_max, self.anneal_steps = a.l2, a.beta_max, a.anneal_steps
        self.examples_per_row = 1
        # autorec: squared error (+ L2) per observed rating; multvae: negative ELBO per user.
        self.loss_units = vectors["nonzeros"] if self.kind == "autorec" else vectors["rows"]

    def reader(self, rank: int, seed: int, shuffle: bool = True) -> VectorShardReader:
        return VectorShardReader(self.plan, rank, seed, self.key, self.indices, shuffle=shuffle, threads=self.threads)

    def trainee(self, model: nn.Module) -> nn.Module:
        return _Trainee(model, self._autorec_loss if self.kind == "autorec" else self._multvae_loss)

    def loss(self, model: nn.Module, trainee: nn.Module, batch: dict, *, generator: torch.Generator, step: int,
             autocast) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast:
            loss = trainee(batch, generator, step)
        return loss.float()

    def _autorec_loss(self, model: AutoRec, batch: dict, generator: torch.Generator, step: int) -> torch.Tensor:
        """Masked MSE: only observed ratings of each item vector are reconstructed."""
        offsets, users, ratings = batch["offsets"], batch["indices"], batch["values"]
        codes = model.encode(offsets, users, ratings)
        per_rating = (model.to_score(model.decode(codes[rows_of(offsets)], users)) - ratings).pow(2)
        if self.l2 > 0:
            per_rating = per_rating + self.l2 * model.row_sq_norm(users)
        return per_rating.sum()

    def _multvae_loss(self, model: MultVAE, batch: dict, generator: torch.Generator, step: int) -> torch.Tensor:
        """Negative ELBO: multinomial log-likelihood of the bag plus beta x KL, beta annealed
        linearly from 0 to ``beta_max`` over ``anneal_steps`` (a pure function of the step, so
        resume needs no state)."""
        offsets, items, values = batch["offsets"], batch["indices"], batch["values"]
        mean, log_var = model.encode(offsets, items, values, generator)
        z = mean + torch.randn(mean.shape, generator=generator, device=mean.device) * (0.5 * log_var).exp()
        log_probs = F.log_softmax(model.logits(z).float(), dim=1)
        nll = -(log_probs[rows_of(offsets), items] * values).sum()
        kl = 0.5 * (log_var.exp() + mean.pow(2) - 1.0 - log_var).sum()
        beta = self.beta_max * min(1.0, step / self.anneal_steps)
        return nll + beta * kl

    @torch.no_grad()
    def fold_in(self, model: nn.Module, device: torch.device) -> None:
        """Store every training vector's code in the model: each rank encodes its shard into a
        zero table, and the all-reduced sum is the full table (each row is non-zero on one rank
        only, so the sum is exact)."""
        model.eval()
        codes = model.item_codes if self.kind == "autorec" else model.user_codes
        table = torch.zeros_like(codes)
        reader = self.reader(dist.rank(), seed=1, shuffle=False)
        for batch in reader:
            if not len(batch[self.key]):
                continue
            batch = {k: v.to(device) for k, v in batch.items()}
            if self.kind == "autorec":
                table[batch[self.key]] = model.encode(batch["offsets"], batch["indices"], batch["values"])
            else:
                mean, _ = model.encode(batch["offsets"], batch["indices"], batch["values"])
                table[batch[self.key]] = model.decoder(mean)
        check_rows_read(self.plan, dist.all_gather_object(reader.rows_read), "fold-in")
        codes.copy_(dist.all_reduce_sum(table))


def make_objective(cfg: Config, manifest: dict, vectors: dict | None, world: int, implicit: bool):
    """The objective of ``cfg.train.model``; autoencoders need their published ``vectors``."""
    if cfg.train.model in AUTOENCODERS:
        assert vectors is not None and vectors["kind"] == AUTOENCODERS[cfg.train.model], vectors
        return AutoencoderObjective(cfg, vectors, world)
    return NCFObjective(cfg, manifest, world, implicit)
