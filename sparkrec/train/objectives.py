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
from sparkrec.train.feed import (
    ShardReader, VectorShardReader, WindowShardReader, check_rows_read, plan_dataset, plan_shards,
)
from sparkrec.train.inputs import read_item_counts
from sparkrec.train.losses import (
    DOT_PRODUCT_LOSSES, chunk_size, examples_per_positive, pairwise_loss, sampled_softmax_loss, softmax_loss,
)

_UNSET = object()
AUTOENCODERS = {"autorec": "items", "multvae": "users"}
"""Autoencoder kind -> the sparse vectors it trains on."""


def resolve_loss(setting: str, model: str, implicit: bool) -> str:
    """The loss ``train.loss`` means for ``model``: ``auto`` is ``mse`` on ratings, else
    ``softmax`` for the history model and ``bce`` for the NCF family."""
    if setting != "auto":
        return setting
    if not implicit:
        return "mse"
    return "softmax" if model == "sequence" else "bce"


class Negatives:
    """Sampled negatives drawn on the worker's device, fresh every step (uniform over the model's
    negative candidates, or by training popularity), and the log expected counts of a shared
    candidate set for the logQ correction."""

    def __init__(self, sampler: str, counts: torch.Tensor, candidates: torch.Tensor | None):
        self.sampler, self.candidates = sampler, candidates
        total = counts.sum().clamp(min=1.0)
        self.popularity = (counts / total).float()                  # q_pop(i): an in-batch positive is item i
        if sampler == "popularity":
            self.drawn = self.popularity
        else:
            drawn = torch.zeros_like(self.popularity)
            pool = candidates if candidates is not None else torch.arange(len(drawn), device=drawn.device)
            drawn[pool] = 1.0 / len(pool)
            self.drawn = drawn                                      # q_neg(i): a drawn negative is item i

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        if self.sampler == "popularity":
            return torch.multinomial(self.popularity, count, replacement=True, generator=generator)
        if self.candidates is not None:
            return self.candidates[torch.randint(len(self.candidates), (count,), generator=generator,
                                                 device=self.candidates.device)]
        return torch.randint(len(self.drawn), (count,), generator=generator, device=self.drawn.device)

    def log_expected_count(self, items: torch.Tensor, in_batch: int, drawn: int) -> torch.Tensor:
        """log E[appearances of each item in a candidate set of ``in_batch`` positives and
        ``drawn`` sampled items] (Yi et al.'s correction, for the mixture of both sources)."""
        expected = in_batch * self.popularity[items] + drawn * self.drawn[items]
        return expected.clamp(min=1e-30).log()


def _dot_loss(kind: str, users: torch.Tensor, targets: torch.Tensor, model: nn.Module, negatives: Negatives,
              num_negatives: int, in_batch: bool, generator: torch.Generator, chunk_mib: float,
              dtype: torch.dtype) -> torch.Tensor:
    """Summed ``softmax`` or ``sampled_softmax`` loss of the positives ``targets`` for user vectors
    ``users`` [P, d] (user constants cancel in a softmax and are left out)."""
    if kind == "softmax":
        table, bias = model.item_table()
        return softmax_loss(users, targets, table, bias, chunk=chunk_size(len(targets), chunk_mib), dtype=dtype)
    candidates = torch.cat([targets, negatives.draw(num_negatives, generator)])
    correction = negatives.log_expected_count(candidates, len(targets) if in_batch else 0, num_negatives)
    vectors, candidate_bias = model.item_rows(candidates)
    return sampled_softmax_loss(users, targets, vectors, candidate_bias, candidates, correction,
                                in_batch=in_batch, dtype=dtype)


class _LossSettings:
    """The loss settings every objective shares (``train.*``)."""

    def __init__(self, cfg: Config, model: str, implicit: bool):
        t = cfg.train
        self.kind = resolve_loss(t.loss, model, implicit)
        self.num_negatives, self.sampler, self.in_batch = t.num_negatives, t.negative_sampler, t.in_batch_negatives
        # adamw decays every dense parameter itself (item tables with dense gradients included);
        # the other optimizers regularise embeddings by an L2 penalty on the rows of each batch.
        self.chunk_mib, self.weight_decay = t.softmax_chunk_mib, 0.0 if t.optimizer == "adamw" else t.weight_decay
        self.dtype = torch.bfloat16 if t.amp == "bf16" else torch.float32
        self.negatives: Negatives | None = None

    def prepare(self, model: nn.Module, inputs: dict, device: torch.device) -> None:
        """Load the training item counts once (popularity negatives, logQ correction)."""
        if self.negatives is None and self.kind in ("softmax", "sampled_softmax", "bce", "bpr"):
            counts = read_item_counts(inputs, model.cfg.num_items).to(device)
            candidates = model.negative_candidates() if hasattr(model, "negative_candidates") else None
            self.negatives = Negatives(self.sampler, counts, candidates)


class NCFObjective:
    """Training on prepared (user, item) rows: MSE on mapped ratings (explicit), or per positive
    ``bce`` / ``bpr`` against ``num_negatives`` sampled negatives, or (GMF) ``softmax`` /
    ``sampled_softmax`` over the catalogue (implicit). NeuMF and MLP score pairs through their
    tower, so only the pairwise losses apply to them (``launch.check_settings`` refuses the rest)."""

    def __init__(self, cfg: Config, manifest: dict, inputs: dict, world: int, implicit: bool):
        t = cfg.train
        self.plan = (plan_dataset(inputs["training_rows"], "training rows (train + validation)", world, t.batch_size)
                     if inputs.get("training_rows") else plan_shards(manifest, "train", world, t.batch_size))
        self.implicit, self.inputs = implicit, inputs
        self.loss_settings = _LossSettings(cfg, t.model, implicit)
        self.shuffle_buffer, self.threads = t.shuffle_buffer, t.reader_threads
        self.examples_per_row = examples_per_positive(self.loss_settings.kind, t.num_negatives) if implicit else 1
        self.loss_units = self.plan.rows * self.examples_per_row

    def reader(self, rank: int, seed: int) -> ShardReader:
        return ShardReader(self.plan, rank, seed=seed, shuffle_buffer=self.shuffle_buffer, threads=self.threads)

    def trainee(self, model: nn.Module) -> nn.Module:
        if self.loss_settings.kind in DOT_PRODUCT_LOSSES:
            return _Trainee(model, self._dot_loss)
        return model

    def loss(self, model: nn.Module, trainee: nn.Module, batch: dict, *, generator: torch.Generator, step: int,
             autocast) -> torch.Tensor:
        device = next(model.parameters()).device
        ls = self.loss_settings
        ls.prepare(model, self.inputs, device)
        users = batch[USER_IDX].to(device, non_blocking=True)
        items = batch[ITEM_IDX].to(device, non_blocking=True)
        if ls.kind in DOT_PRODUCT_LOSSES:
            with autocast:
                return trainee({USER_IDX: users, ITEM_IDX: items}, generator, step).float()
        if not self.implicit:
            with autocast:
                raw = trainee(users, items).float()
            per_row = (model.to_score(raw) - batch[LABEL].to(device, non_blocking=True)).pow(2)
            return self._with_decay(model, per_row, users, items).sum()
        n, k = users.numel(), ls.num_negatives
        negatives = ls.negatives.draw(n * k, generator)
        with autocast:
            raw = trainee(torch.cat([users, users.repeat_interleave(k)]), torch.cat([items, negatives])).float()
        loss = pairwise_loss(ls.kind, raw[:n], raw[n:].view(n, k))
        if ls.weight_decay > 0:
            loss = loss + ls.weight_decay * (model.embedding_sq_norm(users, items).sum()
                                             + model.embedding_sq_norm(users.repeat_interleave(k), negatives).sum())
        return loss

    def _with_decay(self, model, per_row, users, items):
        if self.loss_settings.weight_decay > 0:
            per_row = per_row + self.loss_settings.weight_decay * model.embedding_sq_norm(users, items)
        return per_row

    def _dot_loss(self, model: nn.Module, batch: dict, generator: torch.Generator, step: int) -> torch.Tensor:
        ls = self.loss_settings
        users, items = batch[USER_IDX], batch[ITEM_IDX]
        vectors, _ = model.user_vectors(users)
        loss = _dot_loss(ls.kind, vectors, items, model, ls.negatives, ls.num_negatives, ls.in_batch, generator,
                         ls.chunk_mib, ls.dtype)
        if ls.weight_decay > 0:
            loss = loss + ls.weight_decay * model.embedding_sq_norm(users, items).sum()
        return loss

    def fold_in(self, model: nn.Module, device: torch.device) -> None:
        """NCF scores from its embeddings alone: nothing to do."""


class SequenceObjective:
    """Training the history model on per-user windows (``sparkrec.train.inputs``).

    Implicit: every position of a window predicts the next item from the items before it
    (``softmax``, ``sampled_softmax``, ``bce`` or ``bpr``), so one window trains every prefix.
    Explicit: every rating of a window is predicted from the window's other ratings (MSE).
    """

    def __init__(self, cfg: Config, manifest: dict, inputs: dict, world: int, implicit: bool):
        t, windows = cfg.train, inputs["windows"]
        self.implicit, self.inputs, self.width = implicit, inputs, windows["width"]
        self.plan = plan_dataset(windows, "history windows", world, t.batch_size,
                                 fix=f"use fewer workers (there are {windows['rows']} windows)")
        self.loss_settings = _LossSettings(cfg, "sequence", implicit)
        self.threads = t.reader_threads
        # Targets per window vary; scaling each step by the mean keeps the gradient an unbiased
        # mean over targets without a collective per step to count them.
        per_target = examples_per_positive(self.loss_settings.kind, t.num_negatives)
        self.examples_per_row = windows["targets"] / max(1, windows["rows"]) * per_target
        self.loss_units = windows["targets"] * per_target

    def reader(self, rank: int, seed: int) -> WindowShardReader:
        return WindowShardReader(self.plan, rank, seed, self.width, threads=self.threads)

    def trainee(self, model: nn.Module) -> nn.Module:
        return _Trainee(model, self._loss)

    def loss(self, model: nn.Module, trainee: nn.Module, batch: dict, *, generator: torch.Generator, step: int,
             autocast) -> torch.Tensor:
        device = next(model.parameters()).device
        self.loss_settings.prepare(model, self.inputs, device)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast:
            return trainee(batch, generator, step).float()

    def _loss(self, model: nn.Module, batch: dict, generator: torch.Generator, step: int) -> torch.Tensor:
        ls, items = self.loss_settings, batch["items"]
        if not self.implicit:
            valid = items >= 0
            error = (model.leave_one_out(items, batch["labels"]).float() - batch["labels"]).pow(2)
            loss = error[valid].sum()
        else:
            inputs, targets = items[:, :-1], items[:, 1:]
            valid = inputs >= 0  # left padding: a real input item is always followed by a real target
            targets = targets[valid]
            # Each tower of an ensemble on its own loss (sequence.members): trained side by side,
            # not as one wider model.
            loss = sum(self._next_item_loss(tower, inputs, targets, valid, generator) for tower in model.towers())
        if ls.weight_decay > 0:
            loss = loss + ls.weight_decay * model.embedding_sq_norm(items[items >= 0]).sum()
        return loss

    def _next_item_loss(self, tower: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
        """Summed loss of every real position's next item ``targets`` for one tower."""
        ls = self.loss_settings
        states = tower.states(inputs)[valid].float()
        if ls.kind in DOT_PRODUCT_LOSSES:
            return _dot_loss(ls.kind, states, targets, tower, ls.negatives, ls.num_negatives, ls.in_batch,
                             generator, ls.chunk_mib, ls.dtype)
        k = ls.num_negatives
        negatives = ls.negatives.draw(len(targets) * k, generator).view(len(targets), k)
        vectors, bias = tower.item_rows(torch.cat([targets[:, None], negatives], 1))
        scores = (states[:, None] * vectors).sum(-1) + (bias if bias is not None else 0.0)
        return pairwise_loss(ls.kind, scores[:, 0], scores[:, 1:])

    def fold_in(self, model: nn.Module, device: torch.device) -> None:
        """The history model scores from its item tables alone: nothing to do."""


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


def make_objective(cfg: Config, manifest: dict, inputs: dict, vectors: dict | None, world: int, implicit: bool):
    """The objective of ``cfg.train.model``; autoencoders need their published ``vectors``, every
    other model the published training ``inputs`` (``sparkrec.train.inputs``)."""
    if cfg.train.model in AUTOENCODERS:
        assert vectors is not None and vectors["kind"] == AUTOENCODERS[cfg.train.model], vectors
        return AutoencoderObjective(cfg, vectors, world)
    if cfg.train.model == "sequence":
        return SequenceObjective(cfg, manifest, inputs, world, implicit)
    return NCFObjective(cfg, manifest, inputs, world, implicit)
