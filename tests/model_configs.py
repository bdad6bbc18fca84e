"""Model configs for tests. The model dataclasses carry no defaults (the typed config is the one
place defaults live), so tests fill in what they do not vary from ``TrainConfig``'s defaults."""
from sparkrec.config.train import TrainConfig
from sparkrec.models.ncf import NCFConfig


def ncf_config(**kw) -> NCFConfig:
    """An ``NCFConfig`` with ``train.*``'s defaults, implicit, ratings 1-5, overridden by ``kw``."""
    t = TrainConfig()
    base = {"factors": t.factors, "mlp_layers": tuple(t.mlp_layers), "dropout": t.dropout, "use_bias": t.use_bias,
            "implicit": True, "rating_min": 1.0, "rating_max": 5.0, "dense_items": False}
    return NCFConfig(**{**base, **kw})
