"""Autoencoder collaborative filtering: I-AutoRec (Sedhain et al., WWW 2015) and Mult-VAE (Liang
et al., WWW 2018). Only the modules live here (no I/O).

Both read a batch of sparse vectors as CSR tensors: ``offsets`` long [B + 1], ``indices`` long
[nnz] and ``values`` float [nnz] (row ``b`` holds ``indices[offsets[b]:offsets[b + 1]]``). Their
input layer is an ``nn.EmbeddingBag(..., mode='sum', sparse=True)`` weighted by the values, which
equals the dense product ``x @ W`` but touches (and sends gradients for) only the nonzero rows.

Scoring uses the (user_idx, item_idx) interface of every model family through *fold-in*: the
training loop stores each vector's code in a buffer (``item_codes`` / ``user_codes``, part of the
``state_dict``), so ``forward(user_idx, item_idx)`` is a dot product with no access to the data.
A row whose vector was empty keeps a zero code: AutoRec then predicts from the user's bias,
Mult-VAE from the items' output bias (their popularity).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.01  # AutoRec's tables ~ N(0, 0.01), as NCF's embeddings


def rows_of(offsets: torch.Tensor) -> torch.Tensor:
    """Row of each nonzero of a CSR batch, long [nnz]."""
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)


@dataclass(frozen=True)
class AutoRecConfig:
    """I-AutoRec's interface: everything needed to rebuild it from a saved ``state_dict`` (no
    defaults: they live in ``autoencoder.*``)."""

    kind: str
    """'autorec'."""
    num_users: int
    num_items: int
    hidden: int
    """Hidden units (the item code size)."""
    implicit: bool
    """Always false: AutoRec reconstructs observed ratings."""
    rating_min: float
    rating_max: float

    def __post_init__(self) -> None:
        if self.kind != "autorec":
            raise ValueError(f"AutoRecConfig is for kind 'autorec', got {self.kind!r}")
        if self.num_users < 1 or self.num_items < 1 or self.hidden < 1:
            raise ValueError(f"need users, items and hidden >= 1, got {self.num_users}, {self.num_items}, {self.hidden}")
        if self.implicit:
            raise ValueError("autorec reconstructs explicit ratings; use multvae for implicit data")
        if not self.rating_max > self.rating_min:
            raise ValueError(f"rating range [{self.rating_min}, {self.rating_max}] is empty")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AutoRecConfig":
        return cls(**d)


class AutoRec(nn.Module):
    """I-AutoRec: each item's vector of user ratings r_i is encoded to h_i = sigmoid(V r_i + mu)
    and decoded to user u's rating by W[u] . h_i + b[u], mapped into the rating range.

    Submodules: ``encoder`` (EmbeddingBag over users: V), ``encoder_bias`` (mu), ``decoder``
    (Embedding over users: W), ``decoder_bias`` (b), buffer ``item_codes`` [num_items, hidden].
    The decoder is an embedding because the loss only needs the observed users' outputs, so its
    gradient is sparse too.
    """

    def __init__(self, cfg: AutoRecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.EmbeddingBag(cfg.num_users, cfg.hidden, mode="sum", sparse=True, include_last_offset=True)
        self.encoder_bias = nn.Parameter(torch.zeros(cfg.hidden))
        self.decoder = nn.Embedding(cfg.num_users, cfg.hidden, sparse=True)
        self.decoder_bias = nn.Embedding(cfg.num_users, 1, sparse=True)
        nn.init.normal_(self.encoder.weight, std=INIT_STD)
        nn.init.normal_(self.decoder.weight, std=INIT_STD)
        nn.init.zeros_(self.decoder_bias.weight)
        self.register_buffer("item_codes", torch.zeros(cfg.num_items, cfg.hidden))

    def encode(self, offsets: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Codes h of a CSR batch of item vectors (indices are users, values ratings), [B, hidden]."""
        return torch.sigmoid(self.encoder(indices, offsets, per_sample_weights=values) + self.encoder_bias)

    def decode(self, codes: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Raw output for user ``users[k]`` from code ``codes[k]``, [K]."""
        return (self.decoder(users) * codes).sum(1) + self.decoder_bias(users).squeeze(1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Raw score per pair, [B], from the folded-in item codes."""
        return self.decode(self.item_codes[item_idx], user_idx)

    def user_vectors(self, user_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors [B, hidden], user constants [B]) such that the raw score of item i is
        ``vector . item_table()[0][i] + constant``: top-K is one matrix product per block."""
        return self.decoder.weight[user_idx], self.decoder_bias.weight[user_idx, 0]

    def item_table(self) -> tuple[torch.Tensor, None]:
        """(item codes [num_items, hidden], no item bias)."""
        return self.item_codes, None

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        return self.cfg.rating_min + (self.cfg.rating_max - self.cfg.rating_min) * torch.sigmoid(raw)

    def predict(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Predicted rating, [B]."""
        return self.to_score(self.forward(user_idx, item_idx))

    def row_sq_norm(self, users: torch.Tensor) -> torch.Tensor:
        """Squared norm of the encoder and decoder rows of each user, [K]; L2 goes through this so
        the gradients stay sparse."""
        encoder_rows = F.embedding(users, self.encoder.weight, sparse=True)
        return encoder_rows.pow(2).sum(1) + self.decoder(users).pow(2).sum(1)


@dataclass(frozen=True)
class MultVAEConfig:
    """Mult-VAE's interface: everything needed to rebuild it from a saved ``state_dict`` (no
    defaults: they live in ``autoencoder.*``)."""

    kind: str
    """'multvae'."""
    num_users: int
    num_items: int
    encoder_layers: tuple[int, ...]
    """Hidden widths of the encoder; the decoder mirrors them."""
    latent: int
    input_dropout: float
    implicit: bool
    """Always true: Mult-VAE models which items a user interacts with."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_layers", tuple(int(w) for w in self.encoder_layers))
        if self.kind != "multvae":
            raise ValueError(f"MultVAEConfig is for kind 'multvae', got {self.kind!r}")
        if self.num_users < 1 or self.num_items < 1 or self.latent < 1 or any(w < 1 for w in self.encoder_layers):
            raise ValueError(f"need users, items, latent and every encoder width >= 1, got {self.num_users}, "
                             f"{self.num_items}, {self.latent}, {list(self.encoder_layers)}")
        if not self.implicit:
            raise ValueError("multvae models implicit feedback; use autorec for explicit ratings")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {self.input_dropout}")

    def to_dict(self) -> dict:
        return {**asdict(self), "encoder_layers": list(self.encoder_layers)}

    @classmethod
    def from_dict(cls, d: dict) -> "MultVAEConfig":
        return cls(**{**d, "encoder_layers": tuple(d["encoder_layers"])})


def _tanh_stack(widths: list[int], tanh_first: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Tanh(), nn.Linear(w_in, w_out)] if tanh_first else [nn.Linear(w_in, w_out), nn.Tanh()]
    return nn.Sequential(*layers)


class MultVAE(nn.Module):
    """Mult-VAE: a user's bag of items x (L2-normalised, dropout while training) is encoded to
    q(z | x) = N(mu, sigma^2); the decoder maps z to logits over all items, trained with the
    multinomial log-likelihood sum_i x_i log softmax(logits)_i and a KL term weighted by beta.

    Submodules: ``encoder_input`` (EmbeddingBag over items) and ``encoder_input_bias``, then
    ``encoder`` (tanh, Linear ... ending in 2 * latent: mean, log-variance), ``decoder`` (Linear,
    tanh ... mirroring the encoder) and ``decoder_output`` (Linear to the items). Buffer
    ``user_codes`` [num_users, width] holds ``decoder(mean of q(z | x_u))`` of each user's
    training bag, so a score is a dot product with ``decoder_output``.
    """

    def __init__(self, cfg: MultVAEConfig):
        super().__init__()
        self.cfg = cfg
        widths = [*cfg.encoder_layers, 2 * cfg.latent]
        self.encoder_input = nn.EmbeddingBag(cfg.num_items, widths[0], mode="sum", sparse=True,
                                             include_last_offset=True)
        self.encoder_input_bias = nn.Parameter(torch.zeros(widths[0]))
        self.encoder = _tanh_stack(widths, tanh_first=True)
        decoder_widths = [cfg.latent, *reversed(cfg.encoder_layers)]
        self.decoder = _tanh_stack(decoder_widths, tanh_first=False)
        self.decoder_output = nn.Linear(decoder_widths[-1], cfg.num_items)
        # Liang et al.: Xavier weights, biases ~ N(0, 0.001).
        for weight in [self.encoder_input.weight, self.decoder_output.weight,
                       *(m.weight for m in [*self.encoder, *self.decoder] if isinstance(m, nn.Linear))]:
            nn.init.xavier_uniform_(weight)
        for bias in [self.encoder_input_bias, self.decoder_output.bias,
                     *(m.bias for m in [*self.encoder, *self.decoder] if isinstance(m, nn.Linear))]:
            nn.init.normal_(bias, std=0.001)
        self.register_buffer("user_codes", torch.zeros(cfg.num_users, decoder_widths[-1]))

    def encode(self, offsets: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z | x) for a CSR batch of bags, each [B, latent]. In training
        mode the normalised input goes through dropout drawn from ``generator``."""
        rows = rows_of(offsets)
        norm = torch.zeros(len(offsets) - 1, device=values.device).index_add_(0, rows, values * values).sqrt()
        weights = values / norm.clamp_min(1e-12)[rows]
        if self.training and self.cfg.input_dropout > 0:
            keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= self.cfg.input_dropout
            weights = weights * keep / (1.0 - self.cfg.input_dropout)
        hidden = self.encoder_input(indices, offsets, per_sample_weights=weights) + self.encoder_input_bias
        return self._split(self.encoder(hidden))

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out[:, :self.cfg.latent], out[:, self.cfg.latent:]

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits over every item, [B, num_items]."""
        return self.decoder_output(self.decoder(z))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logit per pair, [B], from the folded-in user codes (monotone in the user's softmax)."""
        return (self.user_codes[user_idx] * self.decoder_output.weight[item_idx]).sum(1) \
            + self.decoder_output.bias[item_idx]

    def user_vectors(self, user_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user codes [B, width], zero constants [B]) such that the logit of item i is
        ``code . item_table()[0][i] + item_table()[1][i]``: top-K is one matrix product per block."""
        return self.user_codes[user_idx], self.user_codes.new_zeros(len(user_idx))

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder output weights [num_items, width], output biases [num_items])."""
        return self.decoder_output.weight, self.decoder_output.bias

    def to_score(self, raw: torch.Tensor) -> torch.Tensor:
        """sigmoid of the logit: in (0, 1) and monotone, not a calibrated probability (the model's
        probabilities are a softmax over the whole catalog)."""
        return torch.sigmoid(raw)

    def predict(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.to_score(self.forward(user_idx, item_idx))

    def bag_logits(self, bag: torch.Tensor) -> torch.Tensor:
        """Logits over every item for dense bags ``bag`` [B, num_items] -> [B, num_items].

        Deterministic (the latent mean, no dropout, whatever the module's mode) and differentiable
        in ``bag``: explanations attribute scores to the input items through this method.
        """
        x = F.normalize(bag, dim=1)
        hidden = x @ self.encoder_input.weight + self.encoder_input_bias
        mean, _ = self._split(self.encoder(hidden))
        return self.logits(mean)
