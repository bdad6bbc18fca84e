"""Autoencoder collaborative filtering settings (`autoencoder.*`): I-AutoRec and Mult-VAE."""
from sparkrec.config.base import Section


class AutoencoderConfig(Section):
    pass
