"""Explanations of recommendations: Captum attributions of real trained Mult-VAE (history items)
and hybrid NeuMF (content tokens) models are complete, reproducible and point at the planted
cause; the job publishes them in original IDs and the evaluate report shows them."""
import pandas as pd
import pytest
import torch

from model_configs import ncf_config
from jobs.explain import main as explain_main
from sparkrec import lake as lakes
from sparkrec.config import load_config
from sparkrec.data.content import run_prepare_content
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.data.synthetic import generate_interactions, generate_item_text, write_synthetic
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.report import explanations_section
from sparkrec.evaluate.run import run_evaluate
from sparkrec.explain.attributions import history_attributions, token_attributions
from sparkrec.explain.job import run_explain
from sparkrec.explain.store import explanation_digest, explanations_root
from sparkrec.models.ncf import NCF
from sparkrec.score.job import run_score
from sparkrec.models.store import load_model, save_model
from sparkrec.train.launch import run_training

pytestmark = pytest.mark.spark
USERS = 8  # pairs checked per property
PLANTED_USERS = 40  # users of the planted-item rates
DATA = ["generate.num_rows=8000", "generate.num_users=150", "generate.num_items=80", "generate.candidates=16",
        "generate.popularity_exponent=0.7", "generate.partitions=2", "generate.kind=implicit",
        "input.columns.rating=null", "prepare.split.kind=leave_last_out", "prepare.num_files=1",
        "content.source=table", "content.max_tokens=12", "content.min_count=1",
        "train.threads_per_worker=1", "train.log_every_steps=100000"]
MODELS = {
    "vae": ["train.model=multvae", "train.epochs=10", "train.lr=0.003", "autoencoder.encoder_layers=[64]",
            "autoencoder.latent=16", "autoencoder.batch_size=32", "autoencoder.anneal_steps=200"],
    "hybrid": ["train.model=hybrid", "train.epochs=4", "train.lr=0.005", "content.token_dim=8",
               "content.cnn_filters=8", "content.cnn_widths=[1,2]"],
}


def config(root, *overrides):
    return load_config(None, [f"lake={root}/lake", f"input.path={root}/raw", f"content.path={root}/text",
                              *DATA, *overrides])


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """A small implicit lake with item text, a Mult-VAE ``vae`` and a hybrid NeuMF ``hybrid``."""
    root = tmp_path_factory.mktemp("explain")
    cfg = config(root)
    write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
    run_prepare(spark, cfg)
    generate_item_text(spark, cfg.generate).write.parquet(f"{root}/text")
    run_prepare_content(spark, cfg)
    for name, overrides in MODELS.items():
        run_training(spark, config(root, f"name={name}", *overrides))
    return root


def train_histories(lake: str) -> dict[int, list[int]]:
    manifest = load_manifest(lake)
    train = pd.read_parquet(manifest["splits"]["train"]["path"].removeprefix("file://"))
    return train.groupby("user_idx")["item_idx"].apply(lambda s: sorted(set(s))).to_dict()


def top_unseen(model, history: list[int]) -> int:
    """The Mult-VAE's best item outside ``history`` (what it would recommend)."""
    bag = torch.zeros(1, model.cfg.num_items)
    bag[0, history] = 1.0
    with torch.no_grad():
        logits = model.bag_logits(bag)[0]
    logits[history] = float("-inf")
    return int(logits.argmax())


def served_score(model, user: int, item: int) -> float:
    with torch.no_grad():
        return float(model(torch.tensor([user]), torch.tensor([item])).item())


@pytest.mark.parametrize("method", ["ig", "shapley_sampling"])
def test_history_attributions_sum_to_the_score_change(trained, method):
    model, _ = load_model(f"{trained}/lake", "vae")
    histories = train_histories(f"{trained}/lake")
    for user in range(USERS):
        item = top_unseen(model, histories[user])
        attr = history_attributions(model, torch.tensor(histories[user]), item, method=method)
        assert attr.features == histories[user]
        # The explained score is the one the model serves: the train split is its input bag.
        assert attr.score == pytest.approx(served_score(model, user, item), abs=1e-4)
        assert abs(attr.score - attr.baseline_score) > 0.05  # the history matters, so the check can fail
        assert sum(attr.values) == pytest.approx(attr.score - attr.baseline_score, abs=1e-4)
        assert abs(attr.delta) < 1e-4
    # Weighted bags (ratings as bag values), given in any order: the items keep their weights.
    items = torch.tensor(histories[0][::-1])
    weights = torch.arange(1.0, len(items) + 1)
    bag = torch.zeros(1, model.cfg.num_items)
    bag[0, items] = weights
    attr = history_attributions(model, items, 3, weights, method=method)
    with torch.no_grad():
        assert attr.score == pytest.approx(float(model.bag_logits(bag)[0, 3]), abs=1e-5)
    assert attr.features == sorted(histories[0])
    assert sum(attr.values) == pytest.approx(attr.score - attr.baseline_score, abs=1e-4)


@pytest.mark.parametrize("method, steps, rel", [("ig", 256, 0.02), ("shapley_sampling", None, 1e-4)])
def test_token_attributions_sum_to_the_score_change(trained, method, steps, rel):
    model, meta = load_model(f"{trained}/lake", "hybrid")
    checked = 0
    for user in range(USERS):
        item = user * 7 % model.cfg.num_items
        attr = token_attributions(model, user, item, method=method, n_steps=steps or 64)
        text = set(model.content_tokens[item].tolist()) - {0}
        assert set(attr.features) == text and text
        assert attr.score == pytest.approx(served_score(model, user, item), abs=1e-4)
        diff = attr.score - attr.baseline_score
        # IG's error shrinks with the steps (the CNN's max-pools make the path kinked);
        # Shapley sampling telescopes exactly.
        assert abs(attr.delta) <= 1e-4 + rel * abs(diff), (user, item, attr)
        assert sum(attr.values) == pytest.approx(diff, abs=1e-4 + rel * abs(diff))
        checked += abs(diff) > 1e-3
    assert checked >= USERS // 2  # the content moves most scores


def test_same_seed_gives_identical_attributions(trained):
    model, _ = load_model(f"{trained}/lake", "vae")
    history = torch.tensor(train_histories(f"{trained}/lake")[0])
    item = top_unseen(model, history.tolist())
    runs = [history_attributions(model, history, item, method="shapley_sampling", seed=s) for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0].values != runs[2].values  # the seed drives the sampled permutations
    assert history_attributions(model, history, item) == history_attributions(model, history, item)
    hybrid, _ = load_model(f"{trained}/lake", "hybrid")
    assert token_attributions(hybrid, 1, 5, method="shapley_sampling", seed=3) == \
        token_attributions(hybrid, 1, 5, method="shapley_sampling", seed=3)


def test_planted_history_item_gets_the_largest_attribution(trained):
    """An autoencoder reconstructs its input: with the recommended item itself planted in the
    user's history, that item is usually the one whose removal lowers the score most (chance: one
    in ~50 history items), and IG's largest attribution usually names the same item as removing
    each item one at a time. Neither is a theorem for a non-linear model, so both are rates."""
    model, _ = load_model(f"{trained}/lake", "vae")
    histories = train_histories(f"{trained}/lake")
    users = range(PLANTED_USERS)
    removal_names_planted = ig_names_planted = ig_agrees_with_removal = 0
    for user in users:
        item = top_unseen(model, histories[user])
        planted = sorted(histories[user] + [item])
        bag = torch.zeros(len(planted) + 1, model.cfg.num_items)
        bag[:, planted] = 1.0
        bag[torch.arange(1, len(planted) + 1), planted] = 0.0  # row k + 1: planted[k] removed
        with torch.no_grad():
            logits = model.bag_logits(bag)[:, item]
        drops = (logits[0] - logits[1:]).tolist()
        by_removal = planted[max(range(len(planted)), key=drops.__getitem__)]
        attr = history_attributions(model, torch.tensor(planted), item)
        by_ig = attr.features[max(range(len(planted)), key=attr.values.__getitem__)]
        removal_names_planted += by_removal == item
        ig_names_planted += by_ig == item
        ig_agrees_with_removal += by_ig == by_removal
    rates = [n / len(users) for n in (removal_names_planted, ig_names_planted, ig_agrees_with_removal)]
    assert rates[0] >= 0.5 and rates[1] >= 0.5 and rates[2] >= 0.7, rates


def test_job_publishes_attributions_in_original_ids(spark, trained, tmp_path):
    lake = f"{trained}/lake"
    manifest = load_manifest(lake)
    vocab = spark.read.parquet(manifest["paths"]["item_vocab"]).toPandas()
    item_id = dict(zip(vocab["index"], vocab["original_id"]))
    users = spark.read.parquet(manifest["paths"]["user_vocab"]).toPandas()
    user_idx = dict(zip(users["original_id"], users["index"]))
    histories = train_histories(lake)

    # Mult-VAE: the published top-K of two users, by the thin job.
    cfg = config(trained, "name=vae", "score.k=5", "score.buckets=1")
    run_score(spark, cfg)
    assert explain_main([f"lake={lake}", "name=vae", "explain.users=[u1,u2,nobody]", "explain.items_per_user=2",
                         "explain.top_attributions=4"]) == 0
    published = lakes.resolve(explanations_root(cfg.lake, "vae"))
    table = spark.read.parquet(published["table"]).toPandas()
    summary = lakes.read_json(published["summary"])
    top = spark.read.parquet(lakes.resolve(f"{cfg.lake}/scores/vae", "_manifest.json")["version"]).toPandas()
    expected = top[top.user_id.isin(["u1", "u2"]) & (top["rank"] <= 2)]
    assert set(zip(table.user_id, table.item_id)) == set(zip(expected.user_id, expected.item_id))
    assert summary["pairs_explained"] == 4 and published["rows"] == len(table) == 4 * 4
    assert summary["users_without_model_recommendations"] == ["nobody"]
    assert set(table.kind) == {"history_item"}
    for (user, item), g in table.groupby(["user_id", "item_id"]):
        assert set(g.feature) <= {item_id[i] for i in histories[user_idx[user]]}
        assert sorted(g["rank"]) == [1, 2, 3, 4]
        assert g.sort_values("rank").attribution.abs().is_monotonic_decreasing
    for pair in summary["pairs"]:
        h = pair["history_item"]
        assert h["attribution_sum"] == pytest.approx(h["score"] - h["baseline_score"], abs=1e-4)
        assert table[(table.user_id == pair["user_id"]) & (table.item_id == pair["item_id"])].score.iloc[0] == \
            pytest.approx(h["score"])
    assert summary["max_abs_delta"] < 1e-4

    # Hybrid: a pairs file; features are token strings of the item's text.
    pd.DataFrame({"user_id": ["u3", "u4"], "item_id": ["i5", "i6"]}).to_parquet(tmp_path / "pairs.parquet")
    cfg = config(trained, "name=hybrid", f"explain.pairs={tmp_path}/pairs.parquet", "explain.n_steps=256")
    result = run_explain(spark, cfg)
    model, meta = load_model(lake, "hybrid")
    table = spark.read.parquet(result["table"]).toPandas()
    token = meta["model"]["token_vocab"]
    item_idx = dict(zip(vocab["original_id"], vocab["index"]))
    for (user, item), g in table.groupby(["user_id", "item_id"]):
        text = {token[t] for t in model.content_tokens[item_idx[item]].tolist() if t}
        assert set(g.kind) == {"token"} and set(g.feature) <= text and len(g) == min(10, len(text))
    assert result["pairs_explained"] == 2 and result["kinds"] == ["token"]

    # The evaluate report shows them.
    digest = explanation_digest(spark, lake, "hybrid")
    assert {(r["user_id"], r["item_id"]) for r in digest["rows"]} == {("u3", "i5"), ("u4", "i6")}
    metrics = run_evaluate(spark, config(trained, "name=hybrid", "evaluate.baselines=[]", "evaluate.k=[5]"))
    assert metrics["explanations"] == digest
    report = lakes.read_bytes(metrics["report"]).decode()
    assert explanations_section(digest) in report and "u3" in report


def test_refuses_models_without_history_or_content_and_unknown_ids(spark, trained, tmp_path):
    lake = f"{trained}/lake"
    manifest = load_manifest(lake)
    gmf = ncf_config(kind="gmf", num_users=manifest["num_users"], num_items=manifest["num_items"], use_bias=False)
    save_model(lake, "gmf", NCF(gmf).state_dict(), {"model": gmf.to_dict(), "data_hash": manifest["data_hash"]})
    pd.DataFrame({"user_id": ["u3", "nobody"], "item_id": ["i5", "i6"]}).to_parquet(tmp_path / "pairs.parquet")
    with pytest.raises(SparkrecError, match="no history or content input.*train.model=multvae"):
        run_explain(spark, config(trained, "name=gmf", f"explain.pairs={tmp_path}/pairs.parquet"))
    with pytest.raises(SparkrecError, match=r"1 pair\(s\) name a user or item unknown.*\(nobody, i6\)"):
        run_explain(spark, config(trained, "name=vae", f"explain.pairs={tmp_path}/pairs.parquet"))
    assert not lakes.exists(explanations_root(lakes.normalize_uri(lake), "gmf"))
