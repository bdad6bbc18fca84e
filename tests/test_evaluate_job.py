"""The evaluate job end to end: generated log -> prepare -> train NCF -> evaluate (and a score table)."""
import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch

from jobs.evaluate import main as evaluate_main
from model_configs import ncf_config
from sparkrec import lake as lakes
from sparkrec.config import load_config
from sparkrec.data.prepare import run_prepare
from sparkrec.data.synthetic import generate_interactions, write_synthetic
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.run import run_evaluate
from sparkrec.models.ncf import NCF
from sparkrec.models.store import load_model, save_model
from sparkrec.score.job import run_score
from sparkrec.train.launch import run_training

pytestmark = pytest.mark.spark
KS = [5, 10, 20]


def settings(root):
    """Implicit planted data, 300 users x 200 items, a few seconds of NeuMF training. Popularity is
    flattened (exponent 0.6) and choices are made among 64 candidates, so taste matters."""
    return [f"lake={root}/lake", f"input.path={root}/raw", "input.columns.rating=null",
            "generate.kind=implicit", "generate.num_rows=15000", "generate.num_users=300", "generate.num_items=200",
            "generate.candidates=64", "generate.popularity_exponent=0.6", "generate.partitions=2",
            "prepare.num_files=1", "train.epochs=8", "train.batch_size=128", "train.lr=0.002", "train.factors=16",
            "train.log_every_steps=1000",
            "evaluate.num_negatives=49", f"evaluate.k={KS}", "evaluate.als_max_iter=5", "evaluate.als_blocks=2",
            "spark.shuffle_partitions=2"]


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate-e2e")
    cfg = load_config(None, settings(root))
    write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
    run_prepare(spark, cfg)
    run_training(None, cfg)
    return root, cfg


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def full_ranking_oracle(cfg, manifest, held_out="test", known_splits=("train", "validation")):
    """HR@10 and NDCG@10 of the trained model by brute force in numpy: score every item with
    training interactions, drop each user's ``known_splits`` items, rank, look for the
    ``held_out`` items."""
    model, _ = load_model(cfg.lake, cfg.name)
    read = {s: pd.read_parquet(manifest["splits"][s]["path"].replace("file://", "")) for s in ("train", "validation", "test")}
    trained_items = np.unique(read["train"].item_idx)
    known = pd.concat([read[s] for s in known_splits]).groupby("user_idx").item_idx.apply(set)
    hr, ndcg = [], []
    for user, items in read[held_out].groupby("user_idx").item_idx:
        with torch.no_grad():
            scores = model(torch.full((len(trained_items),), user), torch.from_numpy(trained_items)).numpy()
        allowed = [(s, i) for s, i in zip(scores, trained_items) if i not in known.get(user, set())]
        top = [i for _, i in sorted(allowed, key=lambda p: -p[0])][:10]
        ranks = [top.index(i) + 1 for i in items if i in top]
        hr.append(1.0 if ranks else 0.0)
        ideal = sum(1 / np.log2(r + 1) for r in range(1, min(10, len(items)) + 1))
        ndcg.append(sum(1 / np.log2(r + 1) for r in ranks) / ideal)
    return float(np.mean(hr)), float(np.mean(ndcg))


def test_model_beats_popularity_and_the_report_parses(trained):
    root, cfg = trained
    assert evaluate_main(settings(root)) == 0

    reports = root / "lake" / "reports" / cfg.name
    metrics = json.loads((reports / "metrics.json").read_text())
    version = metrics["version"].replace("file://", "")
    assert json.loads(open(f"{version}/metrics.json").read())["results"] == metrics["results"]
    results = metrics["results"]
    assert set(results) == {cfg.name, "popularity", "als_implicit", "ease"}  # rating baselines skipped: implicit
    assert len(metrics["skipped_baselines"]) == 3
    model, pop = results[cfg.name], results["popularity"]
    assert model["role"] == "model" and model["rating"] is None
    for protocol in ("full", "sampled"):
        for k in KS:
            assert model[protocol][f"ndcg@{k}"] > pop[protocol][f"ndcg@{k}"] + 0.05, (protocol, k)
            assert model[protocol][f"hr@{k}"] > pop[protocol][f"hr@{k}"], (protocol, k)
        assert model[protocol]["mrr"] > pop[protocol]["mrr"]
    # Paired on the same users: the centre is the gap between the two means, and on planted taste
    # the gap is no noise.
    for protocol in ("full", "sampled"):
        gaps = pop["model_minus_baseline"][protocol]
        for name, gap in gaps.items():
            assert gap["difference"] == pytest.approx(model[protocol][name] - pop[protocol][name], abs=1e-9), name
            assert gap["low"] < gap["difference"] < gap["high"] and gap["units"] == model[protocol]["users"], name
        assert gaps["ndcg@10"]["low"] > 0, protocol
    # The sampled protocol is easier than ranking the whole catalog: NCF's paper numbers overstate.
    assert model["sampled"]["hr@10"] > model["full"]["hr@10"]
    assert model["full"]["coverage@10"] > pop["full"]["coverage@10"]

    counts = metrics["counts"]
    manifest = json.loads((root / "lake" / "prepared" / "manifest.json").read_text())
    assert counts["test_rows"] == manifest["splits"]["test"]["rows"]
    assert counts["users_evaluated"] + counts["test_users_without_relevant_items"] == counts["test_users"]
    assert counts["sampled_negatives"] == counts["sampled_lists"] * 49 and counts["sampled_lists_short"] == 0
    assert model["full"]["users"] == counts["users_evaluated"]

    hr, ndcg = full_ranking_oracle(cfg, manifest)
    assert model["full"]["hr@10"] == pytest.approx(hr, abs=1e-9)
    assert model["full"]["ndcg@10"] == pytest.approx(ndcg, abs=1e-9)

    page = open(f"{version}/report.html", encoding="utf-8").read()
    parsed = Collect()
    parsed.feed(page)
    # full and sampled, each with its model-minus-baseline table (no rating table on implicit data)
    assert parsed.tags.count("table") == 4
    assert len(parsed.images) == 3  # metric-vs-K for both protocols and the training curves
    for src in parsed.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for name in results:
        assert re.search(rf"<th>{re.escape(name)} <small>", page)


def test_score_table_gives_the_models_full_ranking_numbers(spark, trained):
    """The score job's published top-K table, evaluated as served, matches the model's full ranking."""
    root, _ = trained
    cfg = load_config(None, settings(root) + ["score.k=20", "score.exclude_splits=[train, validation]",
                                             "evaluate.source=scores", "evaluate.baselines=[popularity]"])
    model_metrics = json.loads((root / "lake" / "reports" / cfg.name / "metrics.json").read_text())
    run_score(spark, cfg)
    assert evaluate_main(settings(root) + ["score.k=20", "evaluate.source=scores", "evaluate.baselines=[popularity]"]) == 0
    metrics = lakes.read_json(lakes.join(str(root / "lake" / "reports" / cfg.name), "metrics.json"))
    table = metrics["results"][cfg.name]
    assert table["role"] == "scores" and table["sampled"] is None and table["rating"] is None
    assert metrics["protocols"]["full"]["exclude_splits"] == ["train", "validation"]
    for key, value in model_metrics["results"][cfg.name]["full"].items():
        assert table["full"][key] == pytest.approx(value, abs=1e-9), key


def test_validation_split_is_judged_without_reading_test(spark, trained):
    """evaluate.split=validation (for tuning): validation items are the positives, only train items
    are excluded from the ranking, and the numbers match the brute-force oracle."""
    root, _ = trained
    cfg = load_config(None, settings(root) + ["evaluate.split=validation", "evaluate.baselines=[popularity]"])
    metrics = run_evaluate(spark, cfg)
    manifest = json.loads((root / "lake" / "prepared" / "manifest.json").read_text())
    assert metrics["split"] == "validation" and metrics["protocols"]["full"]["exclude_splits"] == ["train"]
    assert metrics["counts"]["test_rows"] == manifest["splits"]["validation"]["rows"]
    hr, ndcg = full_ranking_oracle(cfg, manifest, held_out="validation", known_splits=("train",))
    model = metrics["results"][cfg.name]["full"]
    assert model["hr@10"] == pytest.approx(hr, abs=1e-9) and model["ndcg@10"] == pytest.approx(ndcg, abs=1e-9)


def test_explicit_ratings_of_a_published_model_match_numpy(spark, tmp_path):
    """RMSE/MAE go through the served model's rating prediction; a model built from other
    prepared data is refused."""
    cfg = load_config(None, [
        f"lake={tmp_path}/lake", f"input.path={tmp_path}/raw", "generate.num_rows=2000", "generate.num_users=100",
        "generate.num_items=60", "generate.partitions=2", "prepare.num_files=1", "spark.shuffle_partitions=2",
        "evaluate.k=[5]", "evaluate.num_negatives=10", "evaluate.baselines=[global_mean]"])
    write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
    manifest = run_prepare(spark, cfg)
    lo, hi = manifest["rating_range"]
    # Planted weights instead of training: the item bias carries the predicted rating.
    model_cfg = ncf_config(kind="gmf", num_users=manifest["num_users"], num_items=manifest["num_items"], factors=4,
                           implicit=False, rating_min=lo, rating_max=hi, use_bias=True)
    torch.manual_seed(0)
    net = NCF(model_cfg).eval()
    with torch.no_grad():
        net.item_bias.weight.normal_(0.0, 1.0)
    meta = {"model": model_cfg.to_dict(), "num_users": model_cfg.num_users, "num_items": model_cfg.num_items,
            "implicit": False, "rating_range": [lo, hi], "data_hash": manifest["data_hash"], "history": []}
    save_model(cfg.lake, cfg.name, net.state_dict(), meta)

    metrics = run_evaluate(spark, cfg)
    test = pd.read_parquet(manifest["splits"]["test"]["path"].replace("file://", ""))
    train = pd.read_parquet(manifest["splits"]["train"]["path"].replace("file://", ""))
    with torch.no_grad():
        pred = net.predict(torch.from_numpy(test.user_idx.to_numpy()), torch.from_numpy(test.item_idx.to_numpy())).numpy()
    err = pred.astype(np.float64) - test.label.to_numpy()
    model = metrics["results"][cfg.name]["rating"]
    assert model["rows"] == len(test)
    assert model["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-5)
    assert model["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)
    mean_err = train.label.mean() - test.label.to_numpy()
    assert metrics["results"]["global_mean"]["rating"]["rmse"] == pytest.approx(np.sqrt(np.mean(mean_err ** 2)), rel=1e-6)
    assert metrics["results"]["global_mean"]["full"] is None  # a constant predictor is not ranked
    page = open(metrics["version"].replace("file://", "") + "/report.html", encoding="utf-8").read()
    assert page.count("<table>") == 4 and "No per-epoch history" in page  # rating (+ difference), full, sampled
    gap = metrics["results"]["global_mean"]["model_minus_baseline"]
    assert set(gap) == {"rating"}  # the constant predictor is in no ranking protocol
    assert gap["rating"]["rmse"]["difference"] == pytest.approx(model["rmse"] - np.sqrt(np.mean(mean_err ** 2)), rel=1e-6)
    abs_gap = np.abs(err) - np.abs(mean_err)
    assert gap["rating"]["mae"]["difference"] == pytest.approx(abs_gap.mean(), rel=1e-5)
    assert gap["rating"]["mae"]["high"] - gap["rating"]["mae"]["low"] == pytest.approx(
        2 * 1.959963984540054 * abs_gap.std(ddof=1) / np.sqrt(len(test)), rel=1e-4)

    save_model(cfg.lake, "stale", net.state_dict(), {**meta, "data_hash": "0123456789abcdef"})
    stale = load_config(None, [f"lake={tmp_path}/lake", "name=stale"])
    with pytest.raises(SparkrecError, match="built from prepared data 0123456789abcdef"):
        run_evaluate(spark, stale)
