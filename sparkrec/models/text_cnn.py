"""Text CNN over token IDs (Kim, EMNLP 2014): embed -> Conv1d per width -> ReLU -> max over time -> linear.

Only the module lives here (no I/O). Token id 0 is padding: its embedding stays zero and a window
made only of padding never wins the max-pool, so an item's vector does not depend on how much
padding follows its text; a text of nothing but padding maps to the zero vector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD_ID = 0


class TextCNN(nn.Module):
    """Token IDs [B, L] -> content vector [B, out_dim].

    Parameters
    ----------
    vocab_size : int
        Token ids are 0..vocab_size-1 (0 = padding).
    token_dim : int
        Token embedding dimension (``token_embedding``, a dense ``nn.Embedding``).
    widths : tuple of int
        Kernel widths, one ``Conv1d`` of ``filters`` channels each (n-gram detectors).
    filters : int
        Channels per width.
    out_dim : int
        Content vector dimension.
    """

    def __init__(self, vocab_size: int, token_dim: int, widths: tuple[int, ...], filters: int, out_dim: int):
        super().__init__()
        self.widths = tuple(widths)
        self.token_embedding = nn.Embedding(vocab_size, token_dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(token_dim, filters, w) for w in self.widths)
        self.project = nn.Linear(filters * len(self.widths), out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        assert tokens.shape[1] >= max(self.widths), \
            f"{tokens.shape[1]} tokens per item, but the widest kernel spans {max(self.widths)}"
        return self.from_embeddings(self.token_embedding(tokens), tokens != PAD_ID)

    def from_embeddings(self, embedded: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The content vector from token embeddings [B, L, token_dim] and the non-padding mask
        [B, L] (attribution methods perturb the embeddings directly)."""
        x = embedded.transpose(1, 2)                               # [B, token_dim, L]
        present = present.float()[:, None, :]                      # [B, 1, L]
        pooled = []
        for width, conv in zip(self.widths, self.convs):
            # A window counts when it covers at least one real token; others must not win the max.
            real = F.max_pool1d(present, width, stride=1)          # [B, 1, L - width + 1]
            pooled.append((conv(x).relu() * real).amax(dim=2))    # ReLU output >= 0, so 0 is neutral
        has_text = present.amax(dim=2)                             # [B, 1]
        return self.project(torch.cat(pooled, dim=1)) * has_text
