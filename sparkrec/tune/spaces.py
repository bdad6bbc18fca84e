"""Built-in search spaces of the model kinds (``tune.space`` replaces any of their keys).

A value is a list (categorical) or a ``{low, high, log}`` range (int when both ends are ints).
The spaces cover what moved validation metrics in published comparisons (Rendle et al. 2020 on
regularisation and dimensions for factor models; Kang and McAuley 2018 and Petrov and Macdonald
2022 on SASRec's length, depth, dropout and loss), kept small enough that ~20 trials explore them.
"""
from __future__ import annotations

SEQUENCE_IMPLICIT = {
    "train.factors": [32, 64, 128],
    "train.lr": {"low": 3e-4, "high": 3e-3, "log": True},
    "train.dropout": {"low": 0.1, "high": 0.6, "log": False},
    "train.batch_size": [64, 128, 256],
    "sequence.max_len": [50, 100, 200],
    "sequence.blocks": [1, 2, 3],
    "train.loss": ["softmax", "sampled_softmax"],
}
SEQUENCE_EXPLICIT = {
    "train.factors": [16, 32, 64, 128],
    "train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
    "train.dropout": {"low": 0.0, "high": 0.5, "log": False},
    "train.weight_decay": {"low": 1e-4, "high": 1e-1, "log": True},
    "train.batch_size": [16, 32, 64],
}
GMF = {
    "train.factors": [32, 64, 128],
    "train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
    "train.weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
    "train.num_negatives": [4, 8, 16, 32],
}
NEUMF = {
    "train.factors": [16, 32, 64],
    "train.lr": {"low": 3e-4, "high": 1e-2, "log": True},
    "train.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "train.dropout": {"low": 0.0, "high": 0.5, "log": False},
}
ALS_IMPLICIT = {
    "evaluate.als_rank": [16, 32, 64, 128, 256],
    "evaluate.als_reg": {"low": 0.01, "high": 10.0, "log": True},
    "evaluate.als_alpha": {"low": 0.5, "high": 50.0, "log": True},
}
ALS_EXPLICIT = {
    "evaluate.als_rank": [8, 16, 32, 64, 128],
    "evaluate.als_reg": {"low": 0.01, "high": 1.0, "log": True},
}


def model_space(model: str, implicit: bool) -> dict:
    """The built-in space of ``train.model`` on implicit or explicit data."""
    if model == "sequence":
        return dict(SEQUENCE_IMPLICIT if implicit else SEQUENCE_EXPLICIT)
    if model == "gmf":
        return dict(GMF)
    return dict(NEUMF)


def suggest(trial, space: dict) -> list[str]:
    """``dotted.key=value`` overrides drawn by an Optuna ``trial`` from ``space``."""
    overrides = []
    for key, spec in space.items():
        if isinstance(spec, list):
            value = trial.suggest_categorical(key, spec)
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            value = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log")))
        else:
            value = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        overrides.append(f"{key}={value}")
    return overrides
