"""The tune job: hyper-parameter search on the validation split, for the sparkrec model and the
Spark ALS and EASE baselines, with Optuna (TPE sampler, median pruning on the per-epoch
validation metric). Test is never read.

- model: each trial trains ``train.model`` in this process (``train.backend=local``) with settings
  drawn from its space (``sparkrec.tune.spaces``, ``tune.space``; the first trial keeps the
  config's own values where the space holds them) and is judged by the training
  loop's validation metric (full-ranking NDCG@10 on implicit data, RMSE on ratings; the evaluate
  job's definitions, see ``sparkrec.train.validation``) at its best epoch; the epoch count it
  needed is kept, so the refit (``train.refit``) trains that many epochs on train + validation.
- als: each trial fits MLlib ALS on train and is judged by the evaluate job's validation protocol
  (full ranking, or RMSE on ratings);
- ease: one fit, one inverse per lambda of ``tune.ease_lambdas``, judged the same way.

Writes a new version of ``<lake>/tuning/<name>/``: ``trials.parquet`` (one row per trial of every
target: ``target``, ``trial``, ``state``, ``value``, ``metric``, ``best_epoch``, ``seconds``,
``params`` as JSON) and ``best.yaml``, the config with the best settings of every target, ready
for ``--conf`` (``train.refit: true``, ``train.epochs`` = the best trial's epochs, early stopping
off); ``input``, ``lake``, ``spark`` and ``generate`` are left out: they belong to the user's
environment.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import optuna
import pandas as pd
import yaml
from pyspark.sql import SparkSession

from sparkrec import lake
from sparkrec.config import Config, dump_config, with_overrides
from sparkrec.data.prepare import load_manifest
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.ease import Ease
from sparkrec.evaluate.run import build_eval_data, evaluate_recommender, fit_baselines, read_splits, unpersist_units
from sparkrec.models.store import model_root
from sparkrec.train.launch import run_training
from sparkrec.train.loop import is_implicit
from sparkrec.train.validation import LOWER_IS_BETTER, metric_name
from sparkrec.tune.spaces import ALS_EXPLICIT, ALS_IMPLICIT, model_space, suggest

TRIALS_FILE = "trials.parquet"
BEST_FILE = "best.yaml"
LEFT_OUT = ("input", "lake", "spark", "generate")
K = 10

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(cfg: Config, direction: str, prune: bool) -> optuna.Study:
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=cfg.tune.prune_warmup_epochs)
              if prune else optuna.pruners.NopPruner())
    return optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                               pruner=pruner)


def _rows(study: optuna.Study, target: str, metric: str) -> list[dict]:
    return [{"target": target, "trial": t.number, "state": t.state.name, "value": t.value, "metric": metric,
             "best_epoch": t.user_attrs.get("best_epoch"), "seconds": t.user_attrs.get("seconds"),
             "params": json.dumps(t.params, sort_keys=True)} for t in study.trials]


def tune_model(cfg: Config, implicit: bool) -> tuple[list[str], list[dict], dict]:
    """Search the model's settings; (best overrides, trial rows, summary)."""
    t = cfg.tune
    metric = metric_name(cfg.train.validation_metric, implicit)
    space = {**model_space(cfg.train.model, implicit), **t.space}
    study = _study(cfg, "minimize" if LOWER_IS_BETTER[metric] else "maximize", t.prune)
    # The first trial keeps the config's own settings where they lie in the space (the rest drawn):
    # a search started from a known good point cannot end below it.
    own = current_params(cfg, space)
    if own:
        study.enqueue_trial(own)
    trial_name = f"{cfg.name}-tune"
    base = with_overrides(cfg, [f"name={trial_name}", "train.backend=local", "train.num_workers=1",
                                "train.publish=false", "train.resume=false", "train.refit=false"])

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        trial_cfg = with_overrides(base, suggest(trial, space))

        def report(epoch: int, record: dict) -> None:
            trial.report(record[f"val_{metric}"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            summary = run_training(None, trial_cfg, on_epoch=report)
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
            lake.remove(lake.join(model_root(cfg.lake, trial_name), "checkpoints"))
        lake.remove(summary["model"]["version"])  # written unpublished; only its settings matter
        best = summary["best_epoch"]
        trial.set_user_attr("best_epoch", best)
        return summary["history"][best - 1][f"val_{metric}"]

    study.optimize(objective, n_trials=t.trials, timeout=t.timeout_s)
    lake.remove(model_root(cfg.lake, trial_name))
    completed = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise SparkrecError(f"no model trial completed ({len(study.trials)} started, all pruned or failed); raise "
                            f"tune.trials or tune.prune_warmup_epochs, or set tune.prune=false")
    best = study.best_trial
    overrides = [f"{k}={v}" for k, v in best.params.items()]
    overrides += [f"train.epochs={best.user_attrs['best_epoch']}", "train.refit=true",
                  "train.early_stopping_patience=0"]
    return overrides, _rows(study, "model", metric), {"metric": metric, "value": best.value, "trial": best.number,
                                                       "params": best.params,
                                                       "best_epoch": best.user_attrs["best_epoch"]}


def current_params(cfg: Config, space: dict) -> dict:
    """The config's values of the ``space`` keys that the space contains."""
    settings = dump_config(cfg)
    params = {}
    for key, spec in space.items():
        value = settings
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        inside = (value in spec if isinstance(spec, list)
                  else value is not None and float(spec["low"]) <= value <= float(spec["high"]))
        if inside:
            params[key] = value
    return params


class ValidationJudge:
    """Scores baselines by the evaluate job's protocol on the validation split (test unread)."""

    def __init__(self, spark: SparkSession, cfg: Config, prepared: dict):
        self.cfg = with_overrides(cfg, [f"evaluate.k=[{K}]", "evaluate.split=validation"])
        self.prepared, self.implicit = prepared, prepared["implicit"]
        self.splits = read_splits(spark, prepared)
        if "validation" not in self.splits:
            raise SparkrecError("tuning needs a validation split; prepare with one (e.g. prepare.split.validation=true "
                                "or a validation fraction)")
        self.data = build_eval_data(self.splits, "validation", ["train"], self.cfg, prepared)
        self.protocol, self.metric = ("full", f"ndcg@{K}") if self.implicit else ("rating", "rmse")

    def __call__(self, rec) -> float:
        metrics, units = evaluate_recommender(rec, self.data, self.implicit, protocols=[self.protocol])
        unpersist_units(units)
        return metrics[self.protocol][self.metric]

    @property
    def direction(self) -> str:
        return "maximize" if self.implicit else "minimize"


def tune_als(cfg: Config, judge: ValidationJudge) -> tuple[list[str], list[dict], dict]:
    space = ALS_IMPLICIT if judge.implicit else ALS_EXPLICIT
    name = "als_implicit" if judge.implicit else "als_explicit"
    study = _study(cfg, judge.direction, prune=False)

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        trial_cfg = with_overrides(judge.cfg, [*suggest(trial, space), f"evaluate.baselines=[{name}]"])
        rec = fit_baselines(judge.splits["train"], trial_cfg, judge.prepared)[0][0]
        value = judge(rec)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        return value

    study.optimize(objective, n_trials=cfg.tune.als_trials)
    best = study.best_trial
    return ([f"{k}={v}" for k, v in best.params.items()], _rows(study, "als", judge.metric),
            {"metric": judge.metric, "value": best.value, "params": best.params})


def tune_ease(cfg: Config, judge: ValidationJudge) -> tuple[list[str], list[dict], dict]:
    rows, fitted, best = [], None, None
    train = judge.splits["train"]
    for number, lam in enumerate(cfg.tune.ease_lambdas):
        started = time.perf_counter()
        fitted = Ease.fit(train, lam) if fitted is None else fitted.with_lambda(lam)
        value = judge(fitted)
        rows.append({"target": "ease", "trial": number, "state": "COMPLETE", "value": value, "metric": judge.metric,
                     "best_epoch": None, "seconds": round(time.perf_counter() - started, 1),
                     "params": json.dumps({"evaluate.ease_lambda": lam})})
        better = best is None or (value > best[1] if judge.implicit else value < best[1])
        best = (lam, value) if better else best
    return ([f"evaluate.ease_lambda={best[0]}"], rows,
            {"metric": judge.metric, "value": best[1], "params": {"evaluate.ease_lambda": best[0]}})


def best_settings(cfg: Config) -> dict:
    """The config as ``--conf`` takes it, without the environment's sections."""
    return {k: v for k, v in dump_config(cfg).items() if k not in LEFT_OUT}


def run_tune(spark: SparkSession, cfg: Config) -> dict:
    """Tune ``cfg.tune.targets`` on the published prepared data's validation split and publish
    ``<lake>/tuning/<name>/``.

    Returns
    -------
    dict
        The published manifest: ``best`` (target -> ``metric``, ``value``, ``params``; the model's
        also ``trial`` and ``best_epoch``), ``overrides`` (all chosen settings as dotted keys),
        ``trials`` (rows), ``trials_path``, ``best_yaml``, ``version``.

    Raises
    ------
    SparkrecError
        No validation split, or no model trial completed.
    """
    prepared = load_manifest(cfg.lake)
    implicit = is_implicit(cfg, prepared)
    if not prepared["splits"].get("validation", {}).get("rows"):
        raise SparkrecError("tuning chooses settings on the validation split, and the prepared data has none; "
                            "prepare with a validation split")
    overrides, rows, best = [], [], {}
    if "model" in cfg.tune.targets:
        chosen, trials, best["model"] = tune_model(cfg, implicit)
        overrides += chosen
        rows += trials
    judge = ValidationJudge(spark, cfg, prepared) if {"als", "ease"} & set(cfg.tune.targets) else None
    if "als" in cfg.tune.targets:
        chosen, trials, best["als"] = tune_als(cfg, judge)
        overrides += chosen
        rows += trials
    if "ease" in cfg.tune.targets:
        if not implicit:
            raise SparkrecError("tune.targets=[ease]: EASE ranks implicit feedback; leave it out on ratings")
        chosen, trials, best["ease"] = tune_ease(cfg, judge)
        overrides += chosen
        rows += trials
    tuned = with_overrides(cfg, overrides)
    header = (f"# Chosen by jobs/tune.py on the validation split of prepared data {prepared['data_hash']} "
              f"({datetime.now(timezone.utc):%Y-%m-%d}):\n" +
              "".join(f"#   {target}: {b['metric']} {b['value']:.4f} with {json.dumps(b['params'], sort_keys=True)}\n"
                      for target, b in best.items()))
    text = header + yaml.safe_dump(best_settings(tuned), sort_keys=False)
    root = lake.join(lake.normalize_uri(cfg.lake), "tuning", cfg.name)
    with lake.publishing(root) as staged:
        table = pd.DataFrame(rows)
        lake.write_bytes_atomic(staged.path(TRIALS_FILE), table.to_parquet(index=False))
        lake.write_bytes_atomic(staged.path(BEST_FILE), text.encode())
        staged.manifest = {"best": best, "overrides": overrides, "trials": rows, "trials_path": staged.path(TRIALS_FILE),
                           "best_yaml": staged.path(BEST_FILE), "data_hash": prepared["data_hash"],
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if cfg.tune.output:
        with open(cfg.tune.output, "w") as f:
            f.write(text)
    return staged.published
