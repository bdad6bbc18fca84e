"""The training loop every rank runs: one local process, or one per Spark task.

Reads top to bottom in run order: distributed setup, data plan, model (scratch, pretrained or
resumed), optimizers, wrapping, then per epoch: train, reconcile rows read, validate, checkpoint,
early stop; finally rank 0 publishes the best epoch's weights. It never asks which launcher
started it; ``sparkrec.train.distributed`` hides that. What differs between model families (the
data read, the loss of a batch, the fold-in of the autoencoders' codes before validating or
publishing) is the objective's (``sparkrec.train.objectives``).

Determinism: every random stream of an epoch (row order, shuffle buffer, dropout, negatives) is
seeded from (seed, epoch, rank), and the learning rate is a pure function of the epoch, so a run
resumed from the checkpoint of epoch e repeats the uninterrupted run exactly.
"""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import nullcontext
from functools import partial

import torch

from sparkrec import lake
from sparkrec.config import Config, dump_config
from sparkrec.errors import SparkrecError
from sparkrec.models.autoencoders import AutoRecConfig, MultVAEConfig
from sparkrec.models import sequence
from sparkrec.models.ncf import NCF, NCFConfig, neumf_from_pretrained, warm_started
from sparkrec.models.registry import FAMILIES
from sparkrec.train import distributed as dist
from sparkrec.models.store import check_same_data, load_model_version, read_meta, resolve_model, save_model
from sparkrec.train.checkpoint import (
    checkpoint_dir, checkpoint_uri, latest_checkpoint, load_checkpoint, serialize_checkpoint, write_checkpoint,
)
from sparkrec.train.feed import check_rows_read, epoch_seed, on_device
from sparkrec.train.hybrid_content import hybrid_config, hybrid_model
from sparkrec.train.inputs import read_item_counts
from sparkrec.train.objectives import AUTOENCODERS, make_objective, resolve_loss
from sparkrec.train.optim import averaged_weights, lr_factor, make_optimizers, set_lr, weight_average
from sparkrec.train.progress import Progress
from sparkrec.train.validation import is_better, load_sample, metric_name, validate

SEED_READER, SEED_TORCH, SEED_NEGATIVES, SEED_VALIDATION = range(4)


def is_implicit(cfg: Config, manifest: dict) -> bool:
    return manifest["implicit"] if cfg.train.objective == "auto" else cfg.train.objective == "implicit"


def model_config(cfg: Config, manifest: dict) -> NCFConfig:
    """The model's config dataclass (its family's: see ``sparkrec.models.registry``)."""
    t = cfg.train
    lo, hi = manifest["rating_range"]
    implicit = is_implicit(cfg, manifest)
    dense_items = resolve_loss(t.loss, t.model, implicit) == "softmax"  # every item row gets a gradient
    if t.model == "sequence":
        q = cfg.sequence
        return sequence.SequenceConfig(kind="sequence", num_items=manifest["num_items"], factors=t.factors,
                                       max_len=q.max_len, encoder=q.encoder, blocks=q.blocks, heads=q.heads,
                                       dropout=t.dropout, implicit=implicit, rating_min=float(lo),
                                       rating_max=float(hi), use_bias=t.use_bias, dense_items=dense_items,
                                       members=q.members)
    if t.model == "autorec":
        return AutoRecConfig(kind="autorec", num_users=manifest["num_users"], num_items=manifest["num_items"],
                             hidden=cfg.autoencoder.hidden, implicit=is_implicit(cfg, manifest),
                             rating_min=float(lo), rating_max=float(hi))
    if t.model == "multvae":
        a = cfg.autoencoder
        return MultVAEConfig(kind="multvae", num_users=manifest["num_users"], num_items=manifest["num_items"],
                             encoder_layers=tuple(a.encoder_layers), latent=a.latent,
                             input_dropout=a.input_dropout, implicit=is_implicit(cfg, manifest))
    ncf = NCFConfig(kind="neumf" if t.model == "hybrid" else t.model, num_users=manifest["num_users"],
                    num_items=manifest["num_items"], factors=t.factors, mlp_layers=tuple(t.mlp_layers),
                    dropout=t.dropout, implicit=implicit, rating_min=float(lo),
                    rating_max=float(hi), use_bias=t.use_bias, dense_items=dense_items)
    return hybrid_config(cfg, manifest, ncf) if t.model == "hybrid" else ncf


def build_model(cfg: Config, model_cfg: NCFConfig, manifest: dict) -> tuple[NCF, dict | None]:
    """A fresh model (initialised from ``cfg.seed``), NeuMF from pretrained GMF and MLP, or a
    warm start from a previous model.

    Returns the model and its ``parent`` record (None when trained from scratch).
    """
    t = cfg.train
    torch.manual_seed(cfg.seed)
    if t.model in AUTOENCODERS:  # from scratch only (launch.check_settings refuses the rest)
        return FAMILIES[model_cfg.kind][1](model_cfg), None
    if t.model == "hybrid":  # the published item content goes into the model's buffers (no warm start:
        return hybrid_model(cfg, model_cfg, manifest), None  # launch.check_settings refuses it)
    if t.warm_start:
        return _warm_start(cfg, model_cfg, manifest)
    if t.model == "sequence":
        return sequence.build(model_cfg), None
    if not t.pretrained_gmf:
        return NCF(model_cfg), None
    parts, parent = {}, {}
    names = {"gmf": t.pretrained_gmf, "mlp": t.pretrained_mlp}
    for kind, version in pretrained_parts(cfg, manifest).items():
        parts[kind], _ = load_model_version(version)
        parent[kind] = {"name": names[kind], "version": version}
    try:
        return neumf_from_pretrained(model_cfg, parts["gmf"], parts["mlp"], t.pretrain_alpha), parent
    except ValueError as e:
        raise SparkrecError(f"cannot initialise neumf from {t.pretrained_gmf!r} and {t.pretrained_mlp!r}: {e}") from None


def warm_start_version(cfg: Config, manifest: dict) -> str:
    """The model version ``train.warm_start`` names, checked to index the same IDs as ``manifest``.

    Raises
    ------
    SparkrecError
        Nothing published under the name, or the prepared data was indexed from scratch since.
    """
    source = cfg.train.warm_start
    version = resolve_model(cfg.lake, cfg.name) if source == "latest" else lake.normalize_uri(source)
    meta = read_meta(version)
    stable = meta["data_hash"] == manifest["data_hash"] or manifest["config"]["prepare"]["extend_vocab"]
    if not stable:
        raise SparkrecError(f"train.warm_start={source}: the prepared data was indexed from scratch "
                            f"(prepare.extend_vocab=false), so the previous model's rows may name other IDs; "
                            f"prepare with prepare.extend_vocab=true or train without warm_start")
    return version


def pretrained_parts(cfg: Config, manifest: dict) -> dict[str, str]:
    """``{"gmf": version, "mlp": version}`` of ``train.pretrained_gmf``/``pretrained_mlp``, checked
    to be of that kind and trained on ``manifest``'s prepared data.

    Raises
    ------
    SparkrecError
        A model is not published, is of another kind, or was trained on other prepared data.
    """
    t, versions = cfg.train, {}
    for kind, name in (("gmf", t.pretrained_gmf), ("mlp", t.pretrained_mlp)):
        version = resolve_model(cfg.lake, name)
        meta = read_meta(version)
        if meta["model"].get("kind") != kind:
            raise SparkrecError(f"train.pretrained_{kind}={name!r} is a {meta['model'].get('kind')} model "
                                f"({version}); name a trained {kind} model")
        check_same_data(f"pretrained {kind} model {name!r} ({version})", meta["data_hash"], manifest)
        versions[kind] = version
    return versions


def _warm_start(cfg: Config, model_cfg: NCFConfig, manifest: dict) -> tuple[NCF, dict]:
    source = cfg.train.warm_start
    previous, meta = load_model_version(warm_start_version(cfg, manifest))
    try:
        model = (sequence.warm_started(model_cfg, previous) if model_cfg.kind == "sequence"
                 else warm_started(model_cfg, previous))
    except ValueError as e:
        raise SparkrecError(f"cannot warm start from {meta['version']}: {e}") from None
    return model, {"warm_start": source, "name": cfg.name, "version": meta["version"]}


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_step(objective, model: torch.nn.Module, trainee: torch.nn.Module, optimizers: list, scaler,
               batch: dict, *, loss_scale: float, generator: torch.Generator, step: int, autocast) -> torch.Tensor:
    """One optimisation step on one batch; the objective computes the batch's summed loss.

    ``loss_scale`` multiplies the summed loss; returns the detached sum.
    """
    loss_sum = objective.loss(model, trainee, batch, generator=generator, step=step, autocast=autocast)
    loss = loss_sum * loss_scale
    for opt in optimizers:
        opt.zero_grad()
    (scaler.scale(loss) if scaler else loss).backward()
    dist.optimizer_step(optimizers, scaler)
    return loss_sum.detach().double()


def train(cfg: Config, manifest: dict, inputs: dict, vectors: dict | None = None, on_epoch=None) -> dict:
    """Train on every rank; rank 0 writes checkpoints and publishes the model.

    ``inputs`` is the manifest of the published training inputs (``sparkrec.train.inputs``:
    item counts, the validation sample, history windows); ``vectors`` that of the sparse vectors
    an autoencoder trains on (``sparkrec.data.sparse_vectors``; None otherwise). ``on_epoch(epoch,
    record)``, if given, is called after each epoch's validation (one local process only: the
    tune job prunes trials with it by raising).

    Returns
    -------
    dict
        The same on every rank: ``history`` (per epoch: ``epoch``, ``lr``, ``train_loss``,
        ``rows_by_rank``, ``samples_per_s``, ``seconds``, ``val_*`` metrics), ``best_epoch``,
        ``metric``, ``resumed_from`` (epochs completed before this run, or 0), ``weights_by_rank``
        (digest of each rank's final weights), ``model`` (published model.json plus ``version``).
    """
    t = cfg.train
    # -- distributed setup ------------------------------------------------------------------
    dist.init(t.backend, t.device, t.collective_timeout_s)
    rank, world = dist.rank(), dist.world_size()
    device = dist.device()
    torch.set_num_threads(t.threads_per_worker or max(1, (os.cpu_count() or 1) // dist.local_size()))
    log = Progress(enabled=dist.is_main(), every=t.log_every_steps)

    # -- data: every rank plans every rank's shard from the manifest --------------------------
    objective = make_objective(cfg, manifest, inputs, vectors, world, is_implicit(cfg, manifest))
    train_plan = objective.plan
    model_cfg = model_config(cfg, manifest)
    implicit = model_cfg.implicit
    sample = (load_sample(inputs["validation"], rank, world, cfg.sequence.max_len if model_cfg.kind == "sequence" else None)
              if inputs.get("validation") else None)
    trained_items = read_item_counts(inputs, model_cfg.num_items) > 0 if sample else None
    metric = metric_name(t.validation_metric, implicit) if sample else None  # None: keep the last epoch

    # -- model and optimizers: from scratch / pretrained, then the latest checkpoint if any -----
    model, parent = build_model(cfg, model_cfg, manifest)
    model.to(device)
    lr = t.lr * (world if t.scale_lr else 1)
    optimizers = make_optimizers(model, t, lr)
    amp = dist.resolve_amp(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    ckpt_dir = checkpoint_dir(cfg.lake, cfg.name)
    resume_key = {"model": model_cfg.to_dict(), "data_hash": manifest["data_hash"], "optimizer": t.optimizer}
    if t.average_half_life:
        resume_key["average_half_life"] = t.average_half_life
    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_metric": None, "bad_epochs": 0}
    latest = latest_checkpoint(ckpt_dir)
    ckpt = load_checkpoint(latest, resume_key) if latest else None
    if ckpt:
        model.load_state_dict(ckpt["model"])
        state = {k: ckpt[k] for k in state}
        log.info(f"resuming from {latest} ({state['epoch']} epochs done)")
    # What is validated, kept as the best epoch and published: the moving average of the weights
    # when train.average_half_life is set, else the trained model itself.
    average = weight_average(model, t, train_plan.steps)
    if average is not None and ckpt:
        average.load_state_dict(ckpt["average"])
    served = average.module if average is not None else model

    # -- distributed wrapping: identical start on every rank ---------------------------------
    trainee = dist.wrap_model(objective.trainee(model))
    optimizers = [dist.wrap_optimizer(opt, model) for opt in optimizers]
    if ckpt:  # after wrapping: Horovod's wrapper starts from a fresh optimizer state
        for opt, saved in zip(optimizers, ckpt["optimizers"]):
            opt.load_state_dict(saved)
        if scaler and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
    dist.broadcast_initial_state(model, optimizers)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if amp != "off" else nullcontext())
    resumed_from = state["epoch"]
    checkpoint_write = dist.MainRankWork()  # none pending yet
    log.start(epochs=t.epochs, steps_per_epoch=train_plan.steps, first_epoch=resumed_from)

    # -- epochs ----------------------------------------------------------------------------
    for epoch in range(state["epoch"], t.epochs):
        started = time.perf_counter()
        epoch_lr = lr * lr_factor(t, epoch)
        set_lr(optimizers, epoch_lr)
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rank, SEED_TORCH))  # dropout, shuffle buffer
        generator = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch, rank, SEED_NEGATIVES))
        reader = on_device(objective.reader(rank, seed=epoch_seed(cfg.seed, epoch, rank, SEED_READER)), device)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for step, batch in enumerate(reader):
            # Gradients are averaged over ranks; weighting by world / (rows of all ranks this step)
            # makes that the mean over every row of the step, whatever each rank's share.
            scale = world / (train_plan.step_rows(step) * objective.examples_per_row)
            loss_sum += train_step(objective, model, trainee, optimizers, scaler, batch, loss_scale=scale,
                                   generator=generator, step=epoch * train_plan.steps + step, autocast=autocast)
            if average is not None:
                average.update_parameters(model)
            log.step(epoch, step, loss_sum, reader.rows_read * objective.examples_per_row,
                     train_plan.step_rows(step))

        # -- reconcile: every rank must have read exactly its shard ---------------------------
        rows_by_rank = dist.all_gather_object(reader.rows_read)
        check_rows_read(train_plan, rows_by_rank, f"epoch {epoch + 1}")
        train_loss = dist.all_reduce_sum(loss_sum).item() / objective.loss_units
        record = {"epoch": epoch + 1, "lr": epoch_lr, "train_loss": train_loss, "rows_by_rank": rows_by_rank,
                  "samples_per_s": train_plan.rows / (time.perf_counter() - started)}
        if sample:
            objective.fold_in(served, device)  # the checkpoint then holds this epoch's codes too
            scores = validate(served, sample, trained_items, bool(manifest.get("cold_items")), device)
            record.update({f"val_{k}": v for k, v in scores.items() if k != "users"})
        record["seconds"] = time.perf_counter() - started
        state["history"].append(record)
        state["epoch"] = epoch + 1

        # -- best epoch, early stopping, checkpoint --------------------------------------------
        if metric is None or is_better(metric, record[f"val_{metric}"], state["best_metric"]):
            state.update(best_epoch=epoch + 1, best_metric=record.get(f"val_{metric}"), bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        log.epoch(record, metric, state["best_epoch"])
        # Rank 0 snapshots the state now and writes it while all ranks train on; the previous
        # write is waited for by polling (MainRankWork), never in one long collective.
        checkpoint_write.wait()
        blob = serialize_checkpoint({**state, "model": model.state_dict(),
                                     "average": average.state_dict() if average is not None else None,
                                     "optimizers": [opt.state_dict() for opt in optimizers],
                                     "scaler": scaler.state_dict() if scaler else None,
                                     "resume_key": resume_key}) if dist.is_main() else None
        checkpoint_write = dist.MainRankWork(partial(write_checkpoint, ckpt_dir, state["epoch"], blob,
                                                     keep=t.keep_checkpoints, also_keep=state["best_epoch"]))
        if on_epoch is not None:
            try:
                on_epoch(epoch + 1, record)
            except BaseException:  # e.g. a pruned tuning trial: let the checkpoint land first
                checkpoint_write.wait()
                raise
        if t.early_stopping_patience and state["bad_epochs"] >= t.early_stopping_patience:
            log.info(f"early stop: {metric} did not improve for {state['bad_epochs']} epochs")
            break

    # -- publish the best epoch's weights ----------------------------------------------------
    checkpoint_write.wait()  # the best epoch's checkpoint may be read back below
    if not sample:  # the best epoch is the last one; its codes were not folded in yet
        objective.fold_in(served, device)
    digests = dist.all_gather_object(weights_digest(served))
    published = None
    if dist.is_main():
        best = state["best_epoch"]
        if best == state["epoch"]:
            weights = served.state_dict()
        else:
            best_ckpt = load_checkpoint(checkpoint_uri(ckpt_dir, best), resume_key)
            weights = averaged_weights(best_ckpt["average"]) if average is not None else best_ckpt["model"]
        lo, hi = manifest["rating_range"]
        published = save_model(cfg.lake, cfg.name, weights, {
            "model": model_cfg.to_dict(), "config": dump_config(cfg), "num_users": model_cfg.num_users,
            "loss": resolve_loss(t.loss, t.model, implicit) if t.model not in AUTOENCODERS else "auto",
            "refit": t.refit, "inputs": inputs.get("version"),
            "num_items": model_cfg.num_items, "implicit": implicit, "rating_range": [lo, hi],
            "data_hash": manifest["data_hash"], "prepared_version": manifest["version"],
            "history": state["history"], "best_epoch": best, "metric": metric, "parent": parent,
        }, publish=t.publish)
        log.info(f"{'published' if t.publish else 'wrote (unpublished)'} model {cfg.name!r} (epoch {best}) "
                 f"at {published['version']}")
    published = dist.all_gather_object(published)[0]
    dist.shutdown()
    return {"history": state["history"], "best_epoch": state["best_epoch"], "metric": metric,
            "resumed_from": resumed_from, "weights_by_rank": digests, "model": published}
