"""Hybrid NeuMF: NeuMF whose item representation is an ID embedding plus a text-CNN content vector.

For item i with token IDs t_i, the GMF and MLP item vectors are

    q_i = keep_i * E_gmf[i] + C_gmf(t_i),      n_i = keep_i * E_mlp[i] + C_mlp(t_i)

(``C`` = one text CNN whose output is split between the two parts), and the item bias is
``keep_i * b_i``. ``keep_i`` is 0 for items without training interactions (their ID embeddings
never left initialisation), so such cold items are scored from content alone. In training each
example's ID part is also dropped with probability ``id_dropout`` (DropoutNet, Volkovs et al.,
NeurIPS 2017), which forces the content vector to predict preference on its own.

The rest is NeuMF unchanged (``neumf``: an ``NCF`` holding the user and item ID embeddings, the
tower and the output layer), so ``as_ncf`` can bake the effective item vectors into a plain NCF
that the fast top-K scorer serves.

Contract other modules rely on: buffer ``content_tokens`` LongTensor[num_items, max_tokens]
(0 = padding), submodule ``content`` with ``token_embedding``, ``forward_with_tokens(user_idx,
item_idx, tokens) -> raw [B]``; ``forward(user_idx, item_idx)`` uses the buffer's tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from sparkrec.models.ncf import NCF, NCFConfig
from sparkrec.models.text_cnn import TextCNN

KIND = "hybrid"
CONTENT_BATCH = 4096  # items per content-tower pass in as_ncf


@dataclass(frozen=True)
class HybridConfig:
    """The model's interface: everything needed to rebuild it from a saved ``state_dict``.

    Hyper-parameters have no defaults here: they come from ``train.*`` and ``content.*``."""

    kind: str
    """Always 'hybrid'."""
    num_users: int
    num_items: int
    vocab_size: int
    """Token ids 0..vocab_size-1 (0 = padding, 1 = unknown token)."""
    max_tokens: int
    """Tokens per item (the ``content_tokens`` width)."""
    factors: int
    mlp_layers: tuple[int, ...]
    dropout: float
    implicit: bool
    rating_min: float
    rating_max: float
    use_bias: bool
    dense_items: bool
    """Always false: the hybrid trains with pairwise losses, whose gradients touch the batch's items only."""
    token_dim: int
    cnn_widths: tuple[int, ...]
    cnn_filters: int
    id_dropout: float
    """Training only: probability of dropping an example's item ID part."""
    token_vocab: tuple[str, ...] = ()
    """Token strings by id (for explanations); empty when unknown."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mlp_layers", tuple(int(w) for w in self.mlp_layers))
        object.__setattr__(self, "cnn_widths", tuple(int(w) for w in self.cnn_widths))
        object.__setattr__(self, "token_vocab", tuple(self.token_vocab))
        if self.kind != KIND:
            raise ValueError(f"HybridConfig is for kind {KIND!r}, got {self.kind!r}")
        self.ncf()  # validates the NeuMF part
        widths = self.cnn_widths
        if self.vocab_size < 2 or not widths or min(widths) < 1 or max(widths) > self.max_tokens:
            raise ValueError(f"need vocab_size >= 2 and 1 <= cnn_widths <= max_tokens, got vocab_size="
                             f"{self.vocab_size}, cnn_widths={list(self.cnn_widths)}, max_tokens={self.max_tokens}")
        if not 0.0 <= self.id_dropout <= 1.0:
            raise ValueError(f"id_dropout must be in [0, 1], got {self.id_dropout}")
        if self.token_vocab and len(self.token_vocab) != self.vocab_size:
            raise ValueError(f"token_vocab holds {len(self.token_vocab)} tokens, vocab_size is {self.vocab_size}")

    def ncf(self) -> NCFConfig:
        """The NeuMF part's config."""
        shared = {f.name for f in fields(NCFConfig)} - {"kind"}
        return NCFConfig(kind="neumf", **{name: getattr(self, name) for name in shared})

    def to_dict(self) -> dict:
        return {**asdict(self), "mlp_layers": list(self.mlp_layers), "cnn_widths": list(self.cnn_widths),
                "token_vocab": list(self.token_vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> "HybridConfig":
        return cls(**{"dense_items": False, **d})


class HybridNCF(nn.Module):
    """Hybrid NeuMF (see module doc). Submodules: ``neumf`` (an ``NCF``), ``content`` (a
    ``TextCNN``); buffers ``content_tokens`` [num_items, max_tokens] and ``id_mask``
    [num_items] (1.0 = the item has training interactions), both set by ``set_content``."""

    def __init__(self, cfg: HybridConfig):
        super().__init__()
        self.cfg = cfg
        self.neumf = NCF(cfg.ncf())
        self.content = TextCNN(cfg.vocab_size, cfg.token_dim, cfg.cnn_widths, cfg.cnn_filters,
                               cfg.factors + cfg.mlp_layers[0] // 2)
        self.register_buffer("content_tokens", torch.zeros(cfg.num_items, cfg.max_tokens, dtype=torch.long))
        self.register_buffer("id_mask", torch.zeros(cfg.num_items))

    def set_content(self, tokens: torch.Tensor, trained: torch.Tensor) -> None:
        """Load the item content table: token IDs [num_items, max_tokens] and which items have
        training interactions [num_items] (bool)."""
        expected = (self.cfg.num_items, self.cfg.max_tokens)
        if tuple(tokens.shape) != expected or tuple(trained.shape) != expected[:1]:
            raise ValueError(f"content tokens {tuple(tokens.shape)} / trained {tuple(trained.shape)} do not fit "
                             f"{expected[0]} items x {expected[1]} tokens")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.cfg.vocab_size}), got [{int(tokens.min())}, "
                             f"{int(tokens.max())}]")
        with torch.no_grad():
            self.content_tokens.copy_(tokens)
            self.id_mask.copy_(trained.float())

    def _item_vectors(self, item_idx: torch.Tensor, tokens: torch.Tensor) -> tuple:
        keep = self.id_mask[item_idx]
        if self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand(keep.shape, device=keep.device) >= self.cfg.id_dropout)
        keep = keep[:, None]
        content = self.content(tokens)
        f = self.cfg.factors
        gmf = self.neumf.item_gmf(item_idx) * keep + content[:, :f]
        mlp = self.neumf.item_mlp(item_idx) * keep + content[:, f:]
        bias = self.neumf.item_bias(item_idx) * keep if self.cfg.use_bias else None
        return gmf, mlp, bias

    def forward_with_tokens(self, user_idx: torch.Tensor, item_idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Raw score [B] of each pair with the given item tokens [B, max_tokens] instead of the
        stored ones (attributions perturb them)."""
        return self.neumf.combine(user_idx, *self._item_vectors(item_idx, tokens))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Raw score per pair, shape [B] (a logit when implicit), from the stored item tokens."""
        return self.forward_with_tokens(user_idx, item_idx, self.content_tokens[item_idx])

    def negative_candidates(self) -> torch.Tensor:
        """Only items with training interactions: any other item could only ever be a sampled
        negative, so its content would learn "never chosen" (in production such an item does
        not exist yet at training time)."""
        return self.id_mask.nonzero().flatten()

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        return self.neumf.to_score(raw)

    def predict(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.to_score(self.forward(user_idx, item_idx))

    def embedding_sq_norm(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.neumf.embedding_sq_norm(user_idx, item_idx)

    def servable_items(self) -> torch.Tensor:
        """BoolTensor [num_items]: items with training interactions or any content token."""
        return (self.id_mask > 0) | (self.content_tokens != 0).any(dim=1)

    @torch.no_grad()
    def as_ncf(self) -> NCF:
        """A plain NeuMF (eval mode) scoring every pair exactly as this model does at inference:
        its item tables hold the effective item vectors (masked ID part + content)."""
        f = self.cfg.factors
        model = NCF(self.cfg.ncf())
        model.load_state_dict(self.neumf.state_dict())
        was_training = self.content.training
        self.content.eval()
        content = torch.cat([self.content(self.content_tokens[start:start + CONTENT_BATCH])
                             for start in range(0, self.cfg.num_items, CONTENT_BATCH)])
        self.content.train(was_training)
        keep = self.id_mask[:, None]
        model.item_gmf.weight.copy_(self.neumf.item_gmf.weight * keep + content[:, :f])
        model.item_mlp.weight.copy_(self.neumf.item_mlp.weight * keep + content[:, f:])
        if self.cfg.use_bias:
            model.item_bias.weight.copy_(self.neumf.item_bias.weight * keep)
        return model.eval()
