"""Train job settings (`train.*`)."""
from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field

from sparkrec.config.base import Section


class TrainConfig(Section):
    model: Literal["gmf", "mlp", "neumf", "hybrid", "autorec", "multvae", "sequence"] = "neumf"
    """Model: `gmf`, `mlp`, `neumf` (He et al., Neural Collaborative Filtering, WWW 2017);
    `hybrid` (NeuMF plus a text-CNN item content tower, `content.*`); `autorec` (I-AutoRec,
    explicit) and `multvae` (Mult-VAE, implicit), see `autoencoder.*`; `sequence`, a history-based
    user tower with no per-user table (SASRec-style self-attention or pooled embeddings over the
    user's latest items; SVD++-style with biases on explicit ratings), see `sequence.*`."""

    backend: Literal["local", "horovod", "torch"] = "local"
    """Launcher: one local process, horovod.spark.run, or Spark's TorchDistributor (DDP)."""

    num_workers: int = Field(1, ge=1)
    """World size: training processes (one Petastorm shard each)."""

    objective: Literal["auto", "explicit", "implicit"] = "auto"
    """`explicit`: learn the ratings; `implicit`: every prepared row is a positive interaction;
    `auto` follows the prepared data's `implicit`."""

    loss: Literal["auto", "mse", "bce", "bpr", "softmax", "sampled_softmax"] = "auto"
    """`mse` (explicit ratings); for implicit data `bce` (pointwise, `num_negatives` sampled per
    positive), `bpr` (pairwise, the same negatives), `softmax` (cross-entropy against every item,
    computed in chunks of `softmax_chunk_mib`), `sampled_softmax` (against the batch's other
    positives and `num_negatives` items shared by the batch, with the logQ correction of Yi et al.
    2019). The softmax losses need a dot-product model: `gmf` or `sequence`; `mlp`, `neumf` and
    `hybrid` take `bce` or `bpr`. `auto`: `mse` on ratings, else `softmax` for `sequence` and `bce`
    for the NCF family. The autoencoders have their own losses and take `auto` only."""

    factors: int = Field(8, ge=1)
    """GMF embedding dimension (gmf, neumf)."""

    mlp_layers: list[int] = [64, 32, 16, 8]
    """MLP tower widths (mlp, neumf); the first is the concatenated user+item MLP embedding, so
    each MLP embedding has mlp_layers[0] / 2 dimensions."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout after each hidden layer of the tower."""

    use_bias: bool = True
    """Add per-user and per-item bias terms to the output."""

    num_negatives: int = Field(4, ge=1)
    """Implicit only: sampled negatives, drawn fresh every step on the worker; per positive for
    `bce` and `bpr`, shared by the whole batch for `sampled_softmax` (collisions with the user's
    positives are not rejected for `bce`/`bpr`: rare when items >> history)."""

    negative_sampler: Literal["uniform", "popularity"] = "uniform"
    """How sampled negatives are drawn: uniformly over the items, or in proportion to their
    training interactions."""

    in_batch_negatives: bool = True
    """`sampled_softmax`: the batch's other positives are negatives too (popularity-distributed,
    corrected like the sampled ones)."""

    softmax_chunk_mib: float = Field(256.0, gt=0)
    """`softmax`: memory budget of one block of logits (positives x item chunk); the catalogue is
    scored chunk by chunk in both passes, so 1M items train in bounded memory."""

    epochs: int = Field(10, ge=1)
    """Passes over the training data (fewer when early stopping triggers)."""

    batch_size: int = Field(1024, ge=1)
    """Positives per worker per step (implicit steps add num_negatives per positive). A worker
    whose shard is smaller takes proportionally smaller batches so all take the same steps."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    """Optimizer of the dense layers; embeddings always use SparseAdam (SGD when `sgd`) on sparse
    gradients, so a step costs the same whatever the vocabulary size."""

    lr: float = Field(0.001, gt=0.0)
    """Learning rate (before `scale_lr`)."""

    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    """SGD only: momentum of the dense layers (embeddings use plain sparse SGD)."""

    weight_decay: float = Field(0.0, ge=0.0)
    """L2 strength. Dense layers: the optimizer's weight decay (decoupled for adamw). Embeddings:
    an L2 penalty on the rows in each batch, which keeps their gradients sparse; with adamw,
    embedding tables trained with dense gradients (the full-softmax loss) are decayed by the
    optimizer instead, and no penalty is added."""

    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    """Per-epoch learning-rate schedule: constant, cosine to 0 over `epochs`, or times `lr_decay`
    each epoch."""

    lr_decay: float = Field(0.9, gt=0.0, le=1.0)
    """Per-epoch factor of the `exponential` schedule."""

    average_half_life: float = Field(0.0, ge=0.0)
    """Validate, checkpoint as best and publish an exponential moving average of the weights
    (updated after every step) instead of the last step's weights, with this half-life in epochs;
    0 = off. The average evens out the step-to-step noise of the final weights, which moves the
    result of one run from seed to seed (Polyak averaging); it costs one more copy of the model."""

    scale_lr: bool = False
    """Multiply the learning rate by the world size (Horovod's rule for a larger global batch)."""

    validation_metric: Literal["auto", "rmse", "mae", "ndcg@10", "hr@10"] = "auto"
    """Metric on the validation split for early stopping and the best checkpoint; `auto` is rmse
    (explicit) or ndcg@10 (implicit). The ranking metrics are the evaluate job's full-ranking ones:
    every validation user of the sample (`validation_users`) ranks every item with training
    interactions except its own training items, on the worker's device."""

    validation_users: int = Field(10_000, ge=0)
    """Validation users sampled (seeded) for the per-epoch validation metric; 0 = all of them."""

    refit: bool = False
    """Train on train + validation for exactly `epochs` epochs, with no validation (the settings
    and epoch count chosen beforehand on validation, e.g. by jobs/tune.py), so the published model
    learns from every interaction but test."""

    early_stopping_patience: int = Field(0, ge=0)
    """Stop after this many epochs without a better validation metric (0 = never stop early).
    The saved model is the best epoch's."""

    shuffle_buffer: int = Field(100_000, ge=0)
    """Rows in the shuffling buffer mixed across row groups (0 = no buffer; row groups and rows
    inside them are still shuffled)."""

    reader_threads: int = Field(1, ge=1)
    """Petastorm reader threads per worker. One keeps the row order a pure function of the seed
    (resume reproduces an uninterrupted run exactly); more can read faster, in timing-dependent
    order."""

    resume: bool = False
    """Continue from the latest checkpoint in models/<name>/checkpoints/ (false: start fresh and
    delete old checkpoints). A restart of the same run (`max_restarts`) always resumes its own."""

    max_restarts: int = Field(0, ge=0)
    """horovod/torch: after the workers crash (one killed by a signal, a lost executor, a broken
    connection between them), launch all workers again up to this many times; they resume from
    this run's last checkpoint. An error a worker raises itself (bad data, a checkpoint of another
    run) fails the run at once: a restart would fail the same way. Spark itself does not retry
    these stages (a failed barrier stage is not recoverable), so the restart happens here."""

    keep_checkpoints: int = Field(2, ge=1)
    """Most recent epoch checkpoints kept (the best epoch's is kept too)."""

    # YAML 1.1 reads a bare `off` (file or `train.amp=off`) as false: take it as the word.
    amp: Annotated[Literal["auto", "off", "bf16", "fp16"], BeforeValidator(lambda v: "off" if v is False else v)] = "auto"
    """Mixed precision of the forward pass: `bf16`, or `fp16` with loss scaling, for GPUs; `bf16`
    also runs on CPU. `auto`: bf16 on a GPU that supports it (Ampere and newer), off otherwise (CPU,
    older GPUs: pick `fp16` there explicitly). Losses and optimizer state stay float32."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where each worker trains: `auto` uses its GPU when the process sees one; `cuda` requires one
    (with horovod/torch, the job refuses to start unless Spark gives each task a GPU:
    spark.task.resource.gpu.amount); `cpu` never uses a GPU."""

    collective_timeout_s: int = Field(600, ge=10)
    """Longest any collective (all-reduce, all-gather, barrier) waits for the other ranks before
    the run fails (torch.distributed's process-group timeout; Horovod's Gloo timeout). Rank 0's
    checkpoint and model writes never hold the others in a collective: they wait in short polls."""

    executor_wait_s: int = Field(120, ge=0)
    """horovod/torch: how long the driver waits for executors to register until there are
    `num_workers` task slots (a cluster starts executors after the application); then it refuses
    to start with the slots it saw."""

    threads_per_worker: Optional[int] = Field(None, ge=1)
    """torch intra-op threads per worker; null = the machine's cores divided by the workers on it."""

    warm_start: Optional[str] = None
    """Incremental retraining: start from a trained model instead of scratch, `latest` (the
    published models/<name>) or a model version folder. Rows of existing IDs and the dense layers
    are copied, new IDs start as from scratch (see sparkrec.models.ncf.warm_started); the artifact
    records the model as its `parent`. Needs the prepare job's stable vocabulary (extend_vocab)."""

    publish: bool = True
    """Publish models/<name> when training ends. The pipeline sets it false and publishes only
    after its quality gate passes."""

    pretrained_gmf: Optional[str] = None
    """neumf only: name of a trained GMF model (models/<name>) to initialise from; needs pretrained_mlp."""

    pretrained_mlp: Optional[str] = None
    """neumf only: name of a trained MLP model to initialise from; needs pretrained_gmf."""

    pretrain_alpha: float = Field(0.5, ge=0.0, le=1.0)
    """Weight of the GMF output layer when blending pretrained output layers (paper: 0.5)."""

    log_every_steps: int = Field(200, ge=1)
    """Rank 0 prints progress (loss, samples/s, ETA) every this many steps."""
