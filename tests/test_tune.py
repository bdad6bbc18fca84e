"""jobs/tune.py on a small prepared lake: trials of the model (pruned on the per-epoch validation
metric), ALS and EASE, a trials table, and a best.yaml that --conf accepts with the refit settings."""
import pandas as pd
import pytest

from jobs.tune import main as tune_main
from prepared_lakes import QUIET
from sparkrec import lake as lakes
from sparkrec.config import load_config

pytestmark = pytest.mark.spark


def test_tune_writes_trials_and_a_config_that_refits_the_best(implicit_lake, tmp_path, capsys):
    output = tmp_path / "best.yaml"
    code = tune_main([f"lake={implicit_lake}", "name=tuned", *QUIET, "train.model=gmf", "train.epochs=3",
                      "tune.trials=3", "tune.targets=[model,als,ease]", "tune.als_trials=2",
                      "tune.ease_lambdas=[10.0,200.0]", "tune.space={train.factors: [8, 16], train.lr: [0.005, 0.02]}",
                      f"tune.output={output}"])
    assert code == 0, capsys.readouterr().err
    manifest = lakes.resolve(lakes.join(lakes.normalize_uri(implicit_lake), "tuning", "tuned"))
    trials = pd.read_parquet(manifest["trials_path"].removeprefix("file://"))
    assert trials.groupby("target").size().to_dict() == {"als": 2, "ease": 2, "model": 3}
    assert set(trials["metric"]) == {"ndcg@10"} and trials["value"].notna().all()

    best = load_config(output, [f"lake={implicit_lake}"])  # what --conf takes
    model = manifest["best"]["model"]
    assert best.train.refit and best.train.early_stopping_patience == 0
    assert best.train.epochs == model["best_epoch"] and best.train.factors == model["params"]["train.factors"]
    assert best.evaluate.ease_lambda in (10.0, 200.0) and best.evaluate.ease_lambda == manifest["best"]["ease"]["params"][
        "evaluate.ease_lambda"]
    assert model["value"] == trials[trials.target == "model"]["value"].max()
    text = output.read_text()
    assert text.startswith("# Chosen by jobs/tune.py on the validation split") and "input:" not in text
