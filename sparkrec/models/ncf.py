"""Neural Collaborative Filtering (He et al., WWW 2017): GMF, MLP and NeuMF in one module.

Only the model lives here (no I/O). Embeddings are ``sparse=True`` so a step touches only the rows
of its batch: with SparseAdam on the embeddings the per-step cost does not grow with the
vocabulary. Score and evaluate rely on the submodule names below (see the model contract in the
project notes); renaming one breaks their fast top-K path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

KINDS = ("gmf", "mlp", "neumf")
INIT_STD = 0.01  # embeddings ~ N(0, 0.01), as in the paper


@dataclass(frozen=True)
class NCFConfig:
    """The model's interface: everything needed to rebuild it from a saved ``state_dict``.

    No field has a default: the defaults live in the typed config (``train.*``), which
    ``sparkrec.train.loop.model_config`` turns into this."""

    kind: str
    """'gmf', 'mlp' or 'neumf'."""
    num_users: int
    num_items: int
    factors: int
    """GMF embedding dimension."""
    mlp_layers: tuple[int, ...]
    """Tower widths; the first is the concatenated input, so each MLP embedding has mlp_layers[0] // 2."""
    dropout: float
    """Dropout after each hidden ReLU of the tower."""
    implicit: bool
    """Implicit feedback (a logit for BCE) or explicit ratings (mapped to the rating range)."""
    rating_min: float
    rating_max: float
    use_bias: bool
    """Add per-user and per-item biases to the raw output."""
    dense_items: bool
    """GMF item tables get dense gradients (a full-softmax loss touches every item every step)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mlp_layers", tuple(int(w) for w in self.mlp_layers))
        if self.kind not in KINDS:
            raise ValueError(f"model kind {self.kind!r} is not one of {KINDS}; set train.model")
        if self.num_users < 1 or self.num_items < 1:
            raise ValueError(f"need at least one user and one item, got {self.num_users} users, {self.num_items} items")
        if self.kind != "mlp" and self.factors < 1:
            raise ValueError(f"factors must be >= 1 for {self.kind}, got {self.factors}")
        if self.kind != "gmf":
            if len(self.mlp_layers) < 1 or self.mlp_layers[0] < 2 or self.mlp_layers[0] % 2:
                raise ValueError(f"mlp_layers[0] must be an even width >= 2 (it is the concatenated user/item "
                                 f"embedding), got {list(self.mlp_layers)}; set train.mlp_layers")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.implicit and not self.rating_max > self.rating_min:
            raise ValueError(f"rating range [{self.rating_min}, {self.rating_max}] is empty")

    def to_dict(self) -> dict:
        return {**asdict(self), "mlp_layers": list(self.mlp_layers)}

    @classmethod
    def from_dict(cls, d: dict) -> "NCFConfig":
        # Models saved before train.loss existed trained sparse tables only.
        return cls(**{"dense_items": False, **d, "mlp_layers": tuple(d["mlp_layers"])})


def _embedding(n: int, dim: int, sparse: bool = True) -> nn.Embedding:
    emb = nn.Embedding(n, dim, sparse=sparse)
    nn.init.normal_(emb.weight, std=INIT_STD)
    return emb


def _tower(widths: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class NCF(nn.Module):
    """GMF, MLP or NeuMF, chosen by ``cfg.kind``.

    Submodules (present per kind): ``user_gmf``/``item_gmf`` (GMF), ``user_mlp``/``item_mlp`` and
    ``tower`` (MLP), ``output`` over ``[gmf_vector ; tower_output]``, and ``user_bias``/``item_bias``
    when ``cfg.use_bias``.
    """

    def __init__(self, cfg: NCFConfig):
        super().__init__()
        self.cfg = cfg
        width = 0
        if cfg.kind in ("gmf", "neumf"):
            self.user_gmf = _embedding(cfg.num_users, cfg.factors)
            self.item_gmf = _embedding(cfg.num_items, cfg.factors, sparse=not cfg.dense_items)
            width += cfg.factors
        if cfg.kind in ("mlp", "neumf"):
            self.user_mlp = _embedding(cfg.num_users, cfg.mlp_layers[0] // 2)
            self.item_mlp = _embedding(cfg.num_items, cfg.mlp_layers[0] // 2)
            self.tower = _tower(cfg.mlp_layers, cfg.dropout)
            width += cfg.mlp_layers[-1]
        self.output = nn.Linear(width, 1)
        if cfg.use_bias:
            self.user_bias = nn.Embedding(cfg.num_users, 1, sparse=True)
            self.item_bias = nn.Embedding(cfg.num_items, 1, sparse=not cfg.dense_items)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Raw score per pair, shape [B]: a logit (implicit) or the value before mapping (explicit)."""
        has_gmf, has_mlp = self.cfg.kind in ("gmf", "neumf"), self.cfg.kind in ("mlp", "neumf")
        return self.combine(user_idx, self.item_gmf(item_idx) if has_gmf else None,
                            self.item_mlp(item_idx) if has_mlp else None,
                            self.item_bias(item_idx) if self.cfg.use_bias else None)

    def combine(self, user_idx: torch.Tensor, item_gmf: torch.Tensor | None, item_mlp: torch.Tensor | None,
                item_bias: torch.Tensor | None) -> torch.Tensor:
        """Raw score [B] of each user with the given item vectors (GMF [B, factors], MLP
        [B, mlp_layers[0] // 2], bias [B, 1]; None where the kind has no such part): ``forward``
        with the item tables replaced, for models whose item vectors are computed (the hybrid)."""
        parts = []
        if item_gmf is not None:
            parts.append(self.user_gmf(user_idx) * item_gmf)
        if item_mlp is not None:
            parts.append(self.tower(torch.cat([self.user_mlp(user_idx), item_mlp], dim=1)))
        raw = self.output(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]).squeeze(1)
        if item_bias is not None:
            raw = raw + self.user_bias(user_idx).squeeze(1) + item_bias.squeeze(1)
        return raw

    def is_dot_product(self) -> bool:
        """GMF's score is a dot product of a user vector and an item vector (plus biases):
        ``output(p_u * q_i) = (p_u * w) . q_i + b``, so the softmax losses and matrix-product
        top-K apply. The MLP tower of mlp and neumf breaks that."""
        return self.cfg.kind == "gmf"

    def user_vectors(self, user_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GMF only: (user vectors [B, factors], user constants [B]) such that the raw score of
        item i is ``vector . item_table()[0][i] + item bias + constant``."""
        vectors = self.user_gmf(user_idx) * self.output.weight[0]
        constants = self.output.bias.expand(len(user_idx))
        if self.cfg.use_bias:
            constants = constants + self.user_bias(user_idx)[:, 0]
        return vectors, constants

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GMF only: (item vectors [num_items, factors], item biases [num_items] or None)."""
        return self.item_gmf.weight, self.item_bias.weight[:, 0] if self.cfg.use_bias else None

    def item_rows(self, item_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GMF only: ``item_table()`` rows of ``item_idx`` through the embedding lookups (so a
        sparse table gets a sparse gradient)."""
        return self.item_gmf(item_idx), self.item_bias(item_idx)[..., 0] if self.cfg.use_bias else None

    def negative_candidates(self) -> torch.Tensor | None:
        """Items a training step may draw as sampled negatives; None = every item."""
        return None

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        """Map raw output to the user-facing score (monotone, so ranking may use ``raw``)."""
        if self.cfg.implicit:
            return torch.sigmoid(raw)
        return self.cfg.rating_min + (self.cfg.rating_max - self.cfg.rating_min) * torch.sigmoid(raw)

    def predict(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Probability of interaction (implicit) or predicted rating (explicit), shape [B]."""
        return self.to_score(self.forward(user_idx, item_idx))

    def embedding_sq_norm(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Squared L2 norm of every embedding row a pair uses, shape [B]; weight decay on the
        embeddings goes through this so their gradients stay sparse (decoupled decay would touch
        every row every step)."""
        total = torch.zeros(user_idx.shape[0], device=user_idx.device)
        for name in ("user_gmf", "user_mlp", "user_bias"):
            if hasattr(self, name):
                total = total + getattr(self, name)(user_idx).pow(2).sum(1)
        for name in ("item_gmf", "item_mlp", "item_bias"):
            if hasattr(self, name):
                total = total + getattr(self, name)(item_idx).pow(2).sum(1)
        return total


def neumf_from_pretrained(cfg: NCFConfig, gmf: NCF, mlp: NCF, alpha: float = 0.5) -> NCF:
    """NeuMF initialised from trained GMF and MLP models (paper section 3.4.1).

    Embeddings and tower are copied; the output layer is ``[alpha * h_gmf ; (1 - alpha) * h_mlp]``
    with the biases blended the same way.

    Raises
    ------
    ValueError
        The parts do not match ``cfg`` (sizes, factors, tower widths or objective).
    """
    if cfg.kind != "neumf":
        raise ValueError(f"pretraining initialises a neumf model, not {cfg.kind!r}")
    for part, kind in ((gmf, "gmf"), (mlp, "mlp")):
        p = part.cfg
        if p.kind != kind:
            raise ValueError(f"pretrained {kind} model is a {p.kind!r} model")
        if (p.num_users, p.num_items, p.implicit) != (cfg.num_users, cfg.num_items, cfg.implicit):
            raise ValueError(f"pretrained {kind} model has {p.num_users} users, {p.num_items} items, "
                             f"implicit={p.implicit}; this model needs {cfg.num_users}, {cfg.num_items}, "
                             f"implicit={cfg.implicit} (train it on the same prepared data)")
    if gmf.cfg.factors != cfg.factors:
        raise ValueError(f"pretrained gmf has factors={gmf.cfg.factors}, neumf has {cfg.factors}")
    if mlp.cfg.mlp_layers != cfg.mlp_layers:
        raise ValueError(f"pretrained mlp has mlp_layers={list(mlp.cfg.mlp_layers)}, neumf has {list(cfg.mlp_layers)}")
    model = NCF(cfg)
    with torch.no_grad():
        for name in ("user_gmf", "item_gmf"):
            getattr(model, name).weight.copy_(getattr(gmf, name).weight)
        for name in ("user_mlp", "item_mlp"):
            getattr(model, name).weight.copy_(getattr(mlp, name).weight)
        model.tower.load_state_dict(mlp.tower.state_dict())
        model.output.weight.copy_(torch.cat([alpha * gmf.output.weight, (1 - alpha) * mlp.output.weight], dim=1))
        model.output.bias.copy_(alpha * gmf.output.bias + (1 - alpha) * mlp.output.bias)
        for name in ("user_bias", "item_bias") if cfg.use_bias else ():
            target = getattr(model, name).weight  # zeros; a part without biases contributes none
            for weight, part in ((alpha, gmf), (1 - alpha, mlp)):
                if part.cfg.use_bias:
                    target.add_(weight * getattr(part, name).weight)
    return model


USER_TABLES = ("user_gmf", "user_mlp", "user_bias")
ITEM_TABLES = ("item_gmf", "item_mlp", "item_bias")


def warm_started(cfg: NCFConfig, previous: NCF) -> NCF:
    """A model for a grown vocabulary that continues from ``previous`` (incremental retraining).

    Rows of existing users and items (indices below ``previous``'s sizes: the prepare job keeps
    them stable) and every dense layer are copied; rows of new IDs keep this model's fresh
    initialisation, as from scratch (N(0, 0.01) embeddings, zero biases).

    Raises
    ------
    ValueError
        ``previous`` has another architecture or objective, or more users or items than ``cfg``.
    """
    p = previous.cfg
    same = ("kind", "factors", "mlp_layers", "implicit", "use_bias")
    if any(getattr(p, f) != getattr(cfg, f) for f in same):
        raise ValueError("the previous model has " + ", ".join(f"{f}={getattr(p, f)}" for f in same) +
                         "; this one " + ", ".join(f"{f}={getattr(cfg, f)}" for f in same))
    if p.num_users > cfg.num_users or p.num_items > cfg.num_items:
        raise ValueError(f"the previous model knows {p.num_users} users and {p.num_items} items, the data only "
                         f"{cfg.num_users} and {cfg.num_items}: its vocabulary is not a prefix of this one")
    model = NCF(cfg)
    old = previous.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            table = name.split(".")[0]
            rows = p.num_users if table in USER_TABLES else p.num_items if table in ITEM_TABLES else None
            if rows is None:
                tensor.copy_(old[name])
            else:
                tensor[:rows].copy_(old[name])
    return model
