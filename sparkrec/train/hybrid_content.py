"""How the train job builds a hybrid model: its config and its item content from ``<lake>/content/``.

The published content version must index the same prepared data as the training run (same
``data_hash``); its token vocabulary goes into the model config (``token_vocab``, so the saved
model.json alone names every token) and its table into the model's buffers.
"""
from __future__ import annotations

import torch

from sparkrec import lake
from sparkrec.config import Config
from sparkrec.data.content import load_content_manifest, read_content_arrays
from sparkrec.errors import SparkrecError
from sparkrec.models.hybrid import HybridConfig, HybridNCF
from sparkrec.models.ncf import NCFConfig


def hybrid_config(cfg: Config, manifest: dict, base: NCFConfig) -> HybridConfig:
    """``base`` (the NeuMF settings of ``train.*``) plus the content tower of ``content.*`` and
    the published content's vocabulary.

    Raises
    ------
    SparkrecError
        No content published for this prepared data.
    """
    content = load_content_manifest(cfg.lake, manifest)
    vocab = lake.read_json(content["paths"]["token_vocab"])
    c = cfg.content
    shared = {k: v for k, v in base.to_dict().items() if k != "kind"}
    try:
        return HybridConfig(kind="hybrid", **shared, vocab_size=len(vocab), max_tokens=content["max_tokens"],
                            token_dim=c.token_dim, cnn_widths=tuple(c.cnn_widths), cnn_filters=c.cnn_filters,
                            id_dropout=c.id_dropout, token_vocab=tuple(vocab))
    except ValueError as e:
        raise SparkrecError(f"cannot build a hybrid model on content {content['version']}: {e}; check content.* "
                            f"and train.*") from None


def hybrid_model(cfg: Config, model_cfg: HybridConfig, manifest: dict) -> HybridNCF:
    """A fresh hybrid model holding the published item content.

    Raises
    ------
    SparkrecError
        The content changed since ``model_cfg`` was built, or does not fit it.
    """
    content = load_content_manifest(cfg.lake, manifest)
    tokens, trained = read_content_arrays(content)
    model = HybridNCF(model_cfg)
    try:
        model.set_content(torch.from_numpy(tokens), torch.from_numpy(trained))
    except ValueError as e:
        raise SparkrecError(f"item content {content['version']} does not fit the model: {e}; re-run "
                            f"jobs/prepare_content.py and train again") from None
    return model
