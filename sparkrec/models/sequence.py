"""A history-based user tower: the user's vector is computed from the items they interacted with.

There is no per-user table: the model's size depends on the item catalogue only, so 100M users cost
nothing extra, and a user who arrives after training is scored from their history without
retraining. Only the module lives here (no I/O).

- ``implicit``: the history is the user's last ``max_len`` items in time order. ``encoder=attention``
  runs a small causal self-attention encoder over it (SASRec, Kang and McAuley, ICDM 2018: learned
  positions, pre-norm blocks, embeddings shared between input and output); ``encoder=mean`` pools
  the embeddings seen so far. Every position yields a state that predicts the next item, so one
  window trains every prefix at once. A score is ``state . E[i] (+ b_i)``: a dot product, so every
  loss of ``sparkrec.train.losses`` applies and top-K is a matrix product.
- explicit (SVD++-style, Koren KDD 2008, in its "asymmetric" form without a user table): the user
  vector pools the rated items twice, their implicit embeddings ``y_j`` and their residual ratings
  times ``z_j``, and the prediction has biases::

      r(u, i) = mu + b_u + b_i + q_i . |H|^-1/2 sum_j (y_j + (r_j - mu - b_j) z_j),
      b_u = sum_j (r_j - mu - b_j) / (|H| + damping)

  ``b_u`` is a damped mean residual (Koren's baseline estimate), computed from the history rather
  than stored. In training each rating is predicted from the user's other ratings (leave-one-out),
  so the label never feeds its own prediction.

Histories arrive as item-index matrices left-padded with -1 (the latest item last). Item index
``num_items`` is the padding row of the input tables.

Implicit models may hold several towers (``members``, :class:`SequenceEnsemble`): independently
initialised copies trained side by side, each on its own loss, whose scores add. For towers trained
by a softmax, the sum of their scores ranks as the product of their distributions, and it is still
one dot product (user vectors and item tables concatenated), so every consumer of
``user_vectors`` and ``item_table`` scores an ensemble unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

KIND = "sequence"
ENCODERS = ("attention", "mean")
INIT_STD = 0.02


@dataclass(frozen=True)
class SequenceConfig:
    """The model's interface: everything needed to rebuild it from a saved ``state_dict`` (the
    values come from ``train.*`` and ``sequence.*``; see ``sparkrec.config``)."""

    kind: str
    num_items: int
    factors: int
    max_len: int
    encoder: str
    blocks: int
    heads: int
    dropout: float
    implicit: bool
    rating_min: float
    rating_max: float
    use_bias: bool
    dense_items: bool
    """The item table gets dense gradients (full softmax touches every row every step)."""
    members: int = 1
    """Towers whose scores add (:class:`SequenceEnsemble` when more than one); saved models from
    before the setting have one."""

    def __post_init__(self) -> None:
        if self.kind != KIND:
            raise ValueError(f"SequenceConfig is for kind {KIND!r}, got {self.kind!r}")
        if self.num_items < 1 or self.factors < 1 or self.max_len < 1:
            raise ValueError(f"need num_items, factors and max_len >= 1, got {self.num_items}, {self.factors}, "
                             f"{self.max_len}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"sequence.encoder={self.encoder!r} is not one of {ENCODERS}")
        if self.encoder == "attention" and (self.blocks < 1 or self.heads < 1 or self.factors % self.heads):
            raise ValueError(f"attention needs blocks >= 1 and heads dividing train.factors, got blocks={self.blocks}, "
                             f"heads={self.heads}, factors={self.factors}")
        if not self.implicit and self.encoder != "mean":
            raise ValueError("explicit ratings use the pooled (SVD++-style) history: set sequence.encoder=mean")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.members < 1 or (self.members > 1 and not self.implicit):
            raise ValueError(f"sequence.members must be >= 1, and 1 for explicit ratings (their predictions are "
                             f"ratings, not scores to add), got {self.members}")
        if not self.implicit and not self.rating_max > self.rating_min:
            raise ValueError(f"rating range [{self.rating_min}, {self.rating_max}] is empty")

    @property
    def num_users(self) -> None:
        """History models have no user vocabulary."""
        return None

    def to_dict(self) -> dict:
        # One tower saves as before the setting existed: its model.json and checkpoints' resume
        # key stay those of earlier versions.
        d = asdict(self)
        if d["members"] == 1:
            del d["members"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SequenceConfig":
        return cls(**d)


def _table(rows: int, dim: int, sparse: bool, std: float = INIT_STD, padding: int | None = None) -> nn.Embedding:
    table = nn.Embedding(rows, dim, padding_idx=padding, sparse=sparse)
    nn.init.normal_(table.weight, std=std)
    if padding is not None:
        with torch.no_grad():
            table.weight[padding].zero_()
    return table


class _Block(nn.Module):
    """Pre-norm causal self-attention and a position-wise feed-forward layer, both residual."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.attention_norm(x)
        attended, _ = self.attention(q, q, q, attn_mask=mask, need_weights=False)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class SequenceModel(nn.Module):
    """See the module doc. Submodules: ``item_embedding`` (input and, implicit, output table with the
    padding row ``num_items``), ``item_bias`` (when ``use_bias`` or explicit), implicit attention:
    ``positions``, ``blocks``, ``norm``; implicit mean: ``norm``; explicit: ``history_embedding``
    (``y``), ``rated_embedding`` (``z``), ``global_bias`` (``mu``), ``log_damping``."""

    def __init__(self, cfg: SequenceConfig):
        super().__init__()
        if cfg.members != 1:
            raise ValueError(f"a SequenceModel is one tower; build {cfg.members} members with build()")
        self.cfg = cfg
        n, d, sparse = cfg.num_items, cfg.factors, not cfg.dense_items
        self.item_embedding = _table(n + 1, d, sparse, padding=n)
        if cfg.use_bias or not cfg.implicit:
            self.item_bias = nn.Embedding(n, 1, sparse=sparse)
            nn.init.zeros_(self.item_bias.weight)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.implicit:
            self.norm = nn.LayerNorm(d)
            if cfg.encoder == "attention":
                self.positions = _table(cfg.max_len, d, sparse=False)
                self.blocks = nn.ModuleList(_Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.blocks))
        else:
            self.history_embedding = _table(n + 1, d, sparse, std=0.01, padding=n)
            self.rated_embedding = _table(n + 1, d, sparse, std=0.01, padding=n)
            self.global_bias = nn.Parameter(torch.tensor(0.5 * (cfg.rating_min + cfg.rating_max)))
            self.log_damping = nn.Parameter(torch.tensor(math.log(5.0)))

    # -- shared ----------------------------------------------------------------------------------
    def towers(self) -> list["SequenceModel"]:
        """The towers that each train on their own loss: this model alone."""
        return [self]

    def padded(self, items: torch.Tensor) -> torch.Tensor:
        """Map the -1 padding of a history matrix to the padding row (also any out-of-range index,
        e.g. an item added to the vocabulary after training: the model knows nothing of it)."""
        n = self.cfg.num_items
        return torch.where((items < 0) | (items >= n), torch.full_like(items, n), items)

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output item vectors [num_items, factors], item biases [num_items] or None): a score is
        ``user_vector . vectors[i] + bias[i] + user_const``."""
        bias = self.item_bias.weight[:, 0] if hasattr(self, "item_bias") else None
        return self.item_embedding.weight[: self.cfg.num_items], bias

    def item_rows(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``item_table()`` rows of ``items`` (any shape) through the embedding lookups, so a
        sparse table gets a sparse gradient."""
        bias = self.item_bias(items)[..., 0] if hasattr(self, "item_bias") else None
        return self.item_embedding(items), bias

    # -- implicit: one state per position ---------------------------------------------------------
    def states(self, items: torch.Tensor) -> torch.Tensor:
        """Causal user states [B, W, factors] of left-padded histories [B, W] (W <= max_len):
        state t depends on items 0..t only and scores the item that follows it."""
        items = self.padded(items)
        valid = items != self.cfg.num_items
        x = self.item_embedding(items)
        if self.cfg.encoder == "mean":
            x = self.dropout(x)
            seen = valid.float().cumsum(1).clamp(min=1.0)[..., None]
            return self.norm(x.cumsum(1) / seen)
        width = items.shape[1]
        x = x * math.sqrt(self.cfg.factors) + self.positions.weight[self.cfg.max_len - width:]
        x = self.dropout(x) * valid[..., None]
        # Causal, and padded keys are never attended to; a query may always attend to itself so
        # that no row of the mask is empty (padded queries then attend only to themselves).
        causal = torch.ones(width, width, dtype=torch.bool, device=items.device).tril()
        allowed = causal[None] & (valid[:, None, :] | torch.eye(width, dtype=torch.bool, device=items.device)[None])
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.cfg.heads, dim=0)
        for block in self.blocks:
            x = block(x, mask) * valid[..., None]
        return self.norm(x)

    # -- explicit: pooled history with biases -------------------------------------------------------
    def _bias_of(self, items: torch.Tensor) -> torch.Tensor:
        """Item biases of a padded index tensor (0 at padding), through the lookup so a sparse
        table gets a sparse gradient."""
        n = self.cfg.num_items
        return self.item_bias(items.clamp(max=n - 1))[..., 0] * (items < n)

    def _pooled(self, items: torch.Tensor, labels: torch.Tensor):
        items = self.padded(items)
        valid = (items != self.cfg.num_items).float()
        residual = (labels - self.global_bias - self._bias_of(items)) * valid
        y, z = self.history_embedding(items), self.rated_embedding(items)
        return items, valid, residual, y, z * residual[..., None]

    def _rating(self, items, vector, user_bias) -> torch.Tensor:
        """Predictions for each position's own item [B, W] from per-position user parts."""
        target = self.item_embedding(items)
        return self.global_bias + user_bias + self._bias_of(items) + (target * vector).sum(-1)

    def leave_one_out(self, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Predicted rating of every history item from the user's other history items [B, W]
        (padded positions hold garbage; mask them)."""
        items, valid, residual, y, zr = self._pooled(items, labels)
        others = (valid.sum(1, keepdim=True) - valid).clamp(min=0.0)  # per position: the rest
        pooled = (y.sum(1, keepdim=True) - y) + (zr.sum(1, keepdim=True) - zr)
        vector = self.dropout(pooled * others.clamp(min=1.0).rsqrt()[..., None])
        user_bias = (residual.sum(1, keepdim=True) - residual) / (others + self.log_damping.exp())
        return self._rating(items, vector, user_bias)

    # -- serving --------------------------------------------------------------------------------
    def user_vectors(self, items: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors [B, factors], user constants [B]) of left-padded histories [B, W]: a
        user's score of item i is ``vector . item_table()[0][i] + item bias + constant``. An empty
        history gives a zero vector (explicit: the global bias alone)."""
        if self.cfg.implicit:
            states = self.states(items)[:, -1]
            return states, torch.zeros(len(states), device=states.device)
        if labels is None:
            raise ValueError("an explicit sequence model needs the history's ratings")
        _, valid, residual, y, zr = self._pooled(items, labels)
        count = valid.sum(1)
        vector = (y.sum(1) + zr.sum(1)) * count.clamp(min=1.0).rsqrt()[:, None]
        return vector, self.global_bias + residual.sum(1) / (count + self.log_damping.exp())

    def scores(self, vectors: torch.Tensor, constants: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Raw score of user row b with ``items[b]`` ([B] or [B, C]) given ``user_vectors``' output."""
        table, bias = self.item_table()
        out = (vectors[:, None] * table[items.view(len(vectors), -1)]).sum(-1) + constants[:, None]
        if bias is not None:
            out = out + bias[items.view(len(vectors), -1)]
        return out.view(items.shape)

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        """User-facing score: an interaction probability (implicit), or the rating clipped to the
        trained range (explicit)."""
        if self.cfg.implicit:
            return torch.sigmoid(raw)
        return raw.clamp(self.cfg.rating_min, self.cfg.rating_max)

    def embedding_sq_norm(self, items: torch.Tensor) -> torch.Tensor:
        """Squared L2 norm of the item rows a batch touches, per index (weight decay that keeps
        sparse gradients sparse), shape of ``items``."""
        items = self.padded(items)
        total = self.item_embedding(items).pow(2).sum(-1)
        if hasattr(self, "item_bias"):
            total = total + self._bias_of(items).pow(2)
        if not self.cfg.implicit:
            total = total + self.history_embedding(items).pow(2).sum(-1) + self.rated_embedding(items).pow(2).sum(-1)
        return total


class SequenceEnsemble(nn.Module):
    """``cfg.members`` implicit towers (one-member :class:`SequenceModel` s, initialised one after
    the other) whose scores add: user vectors and item tables are the members' concatenated,
    biases and constants their sums. Training gives each tower its own loss (``towers()``), so they
    are an ensemble, not one wider model whose towers co-adapt."""

    def __init__(self, cfg: SequenceConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(SequenceModel(replace(cfg, members=1)) for _ in range(cfg.members))

    def towers(self) -> list[SequenceModel]:
        return list(self.members)

    def states(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.states(items) for m in self.members], -1)

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _joined([m.item_table() for m in self.members])

    def item_rows(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _joined([m.item_rows(items) for m in self.members])

    def user_vectors(self, items: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, constants = zip(*(m.user_vectors(items, labels) for m in self.members))
        return torch.cat(vectors, -1), sum(constants)

    def embedding_sq_norm(self, items: torch.Tensor) -> torch.Tensor:
        return sum(m.embedding_sq_norm(items) for m in self.members)

    scores = SequenceModel.scores

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        """The sigmoid of the towers' mean raw score (the sum's sigmoid would pile up near 0 and 1)."""
        return torch.sigmoid(raw / self.cfg.members)


def _joined(parts: list[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Members' (vectors, biases) as one: vectors side by side, biases summed (None if none has)."""
    vectors, biases = zip(*parts)
    return torch.cat(vectors, -1), None if biases[0] is None else sum(biases)


def build(cfg: SequenceConfig) -> SequenceModel | SequenceEnsemble:
    """A freshly initialised history model of ``cfg``: one tower, or an ensemble of ``members``."""
    return SequenceEnsemble(cfg) if cfg.members > 1 else SequenceModel(cfg)


def warm_started(cfg: SequenceConfig, previous: SequenceModel | SequenceEnsemble) -> SequenceModel | SequenceEnsemble:
    """A model for a grown item catalogue that continues from ``previous``: rows of existing items
    and every dense layer are copied, tower by tower; new items keep their fresh initialisation
    (the padding row moves to the new end).

    Raises
    ------
    ValueError
        ``previous`` has another architecture, or more items than ``cfg``.
    """
    p = previous.cfg
    same = ("encoder", "factors", "max_len", "blocks", "heads", "implicit", "use_bias", "members")
    if any(getattr(p, f) != getattr(cfg, f) for f in same):
        raise ValueError("the previous model has " + ", ".join(f"{f}={getattr(p, f)}" for f in same) +
                         "; this one " + ", ".join(f"{f}={getattr(cfg, f)}" for f in same))
    if p.num_items > cfg.num_items:
        raise ValueError(f"the previous model knows {p.num_items} items, the data only {cfg.num_items}: its "
                         f"vocabulary is not a prefix of this one")
    model = build(cfg)
    with torch.no_grad():
        for tower, old_tower in zip(model.towers(), previous.towers()):
            old = old_tower.state_dict()
            for name, tensor in tower.state_dict().items():
                table = name.split(".")[0]
                if table in ("item_embedding", "history_embedding", "rated_embedding"):
                    tensor[: p.num_items].copy_(old[name][: p.num_items])  # the old padding row stays behind
                elif table == "item_bias":
                    tensor[: p.num_items].copy_(old[name])
                else:
                    tensor.copy_(old[name])
    return model
