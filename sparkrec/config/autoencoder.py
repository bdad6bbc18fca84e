"""Autoencoder collaborative filtering settings (`autoencoder.*`): I-AutoRec and Mult-VAE.

Both train on sparse rating vectors that the train job derives from the prepared train split
(`<lake>/vectors/`); `train.lr`, `train.optimizer`, `train.epochs`, early stopping and the
launchers apply as for NCF.
"""
from pydantic import Field

from sparkrec.config.base import Section


class AutoencoderConfig(Section):
    batch_size: int = Field(128, ge=1)
    """Vectors per worker per step (item vectors for autorec, user bags for multvae); replaces
    `train.batch_size`, which counts interactions."""

    hidden: int = Field(500, ge=1)
    """autorec: hidden units of the item autoencoder (Sedhain et al. 2015 used 500)."""

    encoder_layers: list[int] = [600]
    """multvae: hidden widths of the tanh encoder after the item input; the decoder mirrors them
    (Liang et al. 2018: [600])."""

    latent: int = Field(200, ge=1)
    """multvae: dimension of the latent user code."""

    input_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    """multvae: dropout on the normalised input bag during training."""

    beta_max: float = Field(0.2, ge=0.0)
    """multvae: largest weight of the KL term; it grows linearly from 0 over `anneal_steps`."""

    anneal_steps: int = Field(20_000, ge=1)
    """multvae: optimisation steps (counted over all epochs) for the KL weight to reach `beta_max`."""

    l2: float = Field(1.0, ge=0.0)
    """autorec: L2 strength on the encoder and decoder rows each observed rating uses (the
    paper's lambda, applied per rating so gradients stay sparse). Sparse catalogs need it strong:
    on ml-latest-small 1.0 gave test RMSE 0.88, 0.001 gave 1.41 (items with few ratings overfit)."""
