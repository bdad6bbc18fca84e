"""jobs/tune.py on a small prepared lake: trials of the model (pruned on the per-epoch validation
metric), ALS and EASE, a trials table, and a best.yaml that --conf accepts with the refit settings."""
import json

import pandas as pd
import pytest

from jobs.tune import main as tune_main
from prepared_lakes import QUIET
from sparkrec import lake as lakes
from sparkrec.config import load_config

pytestmark = pytest.mark.spark


def test_tune_writes_trials_and_a_config_that_refits_the_best(implicit_lake, tmp_path, capsys):
    output = tmp_path / "best.yaml"
    code = tune_main([f"lake={implicit_lake}", "name=tuned", *QUIET, "train.model=gmf", "train.epochs=3", "train.lr=0.005",
                      "tune.trials=3", "tune.targets=[model,als,ease]", "tune.als_trials=2",
                      "tune.ease_lambdas=[10.0,200.0]", "tune.space={train.factors: [8, 16], train.lr: [0.005, 0.02]}",
                      f"tune.output={output}"])
    assert code == 0, capsys.readouterr().err
    manifest = lakes.resolve(lakes.join(lakes.normalize_uri(implicit_lake), "tuning", "tuned"))
    trials = pd.read_parquet(manifest["trials_path"].removeprefix("file://"))
    assert trials.groupby("target").size().to_dict() == {"als": 2, "ease": 2, "model": 3}
    assert set(trials["metric"]) == {"ndcg@10"} and trials["value"].notna().all()
    first = json.loads(trials[(trials.target == "model") & (trials.trial == 0)]["params"].iloc[0])
    assert first["train.factors"] == 8 and first["train.lr"] == 0.005  # the config's own settings first

    best = load_config(output, [f"lake={implicit_lake}"])  # what --conf takes
    model = manifest["best"]["model"]
    assert best.train.refit and best.train.early_stopping_patience == 0
    assert best.train.epochs == model["best_epoch"] and best.train.factors == model["params"]["train.factors"]
    assert best.evaluate.ease_lambda in (10.0, 200.0) and best.evaluate.ease_lambda == manifest["best"]["ease"]["params"][
        "evaluate.ease_lambda"]
    assert model["value"] == trials[trials.target == "model"]["value"].max()
    text = output.read_text()
    assert text.startswith("# Chosen by jobs/tune.py on the validation split") and "input:" not in text


def test_refit_trains_on_train_and_validation_and_cannot_be_judged_on_validation(spark, implicit_lake):
    from sparkrec.data.prepare import load_manifest
    from sparkrec.errors import SparkrecError
    from sparkrec.evaluate.run import run_evaluate
    from sparkrec.train.launch import run_training

    manifest = load_manifest(implicit_lake)
    cfg = load_config(None, [f"lake={implicit_lake}", "name=refit", *QUIET, "train.model=gmf", "train.epochs=2",
                             "train.refit=true"])
    summary = run_training(None, cfg)
    rows = manifest["splits"]["train"]["rows"] + manifest["splits"]["validation"]["rows"]
    assert [sum(h["rows_by_rank"]) for h in summary["history"]] == [rows, rows]
    assert not any(k.startswith("val_") for h in summary["history"] for k in h)
    assert summary["best_epoch"] == 2 and summary["model"]["refit"] is True
    with pytest.raises(SparkrecError, match="refit on train \\+ validation"):
        run_evaluate(spark, cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"split": "validation"})}))
    with pytest.raises(SparkrecError, match="set train.early_stopping_patience=0"):
        run_training(None, load_config(None, [f"lake={implicit_lake}", "name=refit", "train.refit=true",
                                              "train.early_stopping_patience=2"]))
