"""The history-based model through every job, on generated data with planted sequential structure
(tastes drift between periods of the year, so recent items predict the next one): it beats GMF and
popularity on full NDCG@10, its train-time validation is the evaluate job's metric, a user unseen in
training is scored from their history, every loss trains it, and an ensemble of towers trains each
on its own loss and goes through evaluate and score as one model."""
import numpy as np
import pandas as pd
import pytest
import torch

from sparkrec import lake
from sparkrec.config import load_config, with_overrides
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.data.synthetic import generate_interactions, write_synthetic
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.run import run_evaluate
from sparkrec.models.sequence import build
from sparkrec.models.store import load_model
from sparkrec.score.job import run_score
from sparkrec.score.publish import read_published, scores_root
from sparkrec.train.launch import run_training

pytestmark = pytest.mark.spark

GENERATE = ["generate.num_rows=24000", "generate.num_users=300", "generate.num_items=200", "generate.candidates=48",
            "generate.popularity_exponent=0.3", "generate.kind=implicit", "generate.drift=1.0",
            "generate.drift_segments=4", "generate.partitions=2"]
QUIET = ["train.threads_per_worker=2", "train.log_every_steps=100000", "spark.shuffle_partitions=2"]
SEQUENCE = ["train.model=sequence", "sequence.max_len=20", "train.factors=32", "train.batch_size=32",
            "train.lr=0.003", "train.epochs=4"]
MARGIN = 0.1  # full NDCG@10 points: the planted drift gives the history model about 0.2 over the others


@pytest.fixture(scope="module")
def drift_lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    cfg = load_config(None, [f"lake={root}/lake", f"input.path={root}/raw", *GENERATE, "input.columns.rating=null",
                             "prepare.split.kind=leave_last_out", "prepare.num_files=2", *QUIET])
    write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
    run_prepare(spark, cfg)
    return cfg


def test_the_history_model_beats_gmf_and_popularity_and_validation_is_the_evaluate_metric(spark, drift_lake):
    seq = with_overrides(drift_lake, ["name=seq", *SEQUENCE, "train.validation_users=0"])
    summary = run_training(None, seq)
    run_training(None, with_overrides(drift_lake, ["name=gmf", "train.model=gmf", "train.factors=32",
                                                   "train.epochs=4", "train.lr=0.01"]))
    metrics = {name: run_evaluate(spark, with_overrides(drift_lake, [f"name={name}", "evaluate.k=[10]",
                                                                    "evaluate.baselines=[popularity]"]))
               for name in ("seq", "gmf")}
    full = {name: m["results"][name]["full"]["ndcg@10"] for name, m in metrics.items()}
    popularity = metrics["seq"]["results"]["popularity"]["full"]["ndcg@10"]
    assert full["seq"] > full["gmf"] + MARGIN and full["seq"] > popularity + MARGIN, (full, popularity)
    interval = metrics["seq"]["results"]["popularity"]["model_minus_baseline"]["full"]["ndcg@10"]
    assert interval["low"] > 0

    # Train-time validation (every validation user) is the evaluate job's full-ranking NDCG@10 on
    # validation, for the model as published (its best epoch).
    on_validation = run_evaluate(spark, with_overrides(drift_lake, ["name=seq", "evaluate.split=validation",
                                                                    "evaluate.k=[10]", "evaluate.baselines=[]"]))
    best = summary["history"][summary["best_epoch"] - 1]
    assert on_validation["results"]["seq"]["full"]["ndcg@10"] == pytest.approx(best["val_ndcg@10"], abs=1e-6)
    assert on_validation["results"]["seq"]["full"]["hr@10"] == pytest.approx(best["val_hr@10"], abs=1e-6)


def test_a_user_unseen_in_training_is_scored_from_their_history(spark, drift_lake, tmp_path):
    cfg = with_overrides(drift_lake, ["name=seq-serve", *SEQUENCE, "train.epochs=2", "score.k=5"])
    run_training(None, cfg)
    train = pd.read_parquet(load_manifest(cfg.lake)["splits"]["train"]["path"].removeprefix("file://"))
    vocab = pd.read_parquet(load_manifest(cfg.lake)["paths"]["item_vocab"].removeprefix("file://"))
    item_id = dict(zip(vocab["index"], vocab["original_id"]))
    # Two newcomers, each with the recent items of a different trained user.
    donors = train["user_idx"].drop_duplicates().iloc[:2].tolist()
    rows = []
    for n, donor in enumerate(donors):
        items = train[train.user_idx == donor].sort_values("timestamp")["item_idx"].tail(8)
        rows += [{"user_id": f"newcomer{n}", "item_id": item_id[i], "timestamp": 1_700_000_000 + t}
                 for t, i in enumerate(items)]
    rows.append({"user_id": "newcomer1", "item_id": "no-such-item", "timestamp": 1_800_000_000})
    histories = tmp_path / "histories.parquet"
    pd.DataFrame(rows).to_parquet(histories)

    manifest = run_score(spark, with_overrides(cfg, [f"score.histories={histories}"]))
    table = read_published(spark, scores_root(lake.normalize_uri(cfg.lake), "seq-serve")).toPandas()
    new = table[table.user_id.str.startswith("newcomer")]
    assert sorted(new.user_id.unique()) == ["newcomer0", "newcomer1"]
    assert len(new) == 10 and not new.cold_start.any()
    for n in range(2):  # nothing they did comes back, and their lists follow their own histories
        mine = new[new.user_id == f"newcomer{n}"]
        assert not set(mine.item_id) & {r["item_id"] for r in rows if r["user_id"] == f"newcomer{n}"}
    assert set(new[new.user_id == "newcomer0"].item_id) != set(new[new.user_id == "newcomer1"].item_id)
    assert manifest["history_file_unknown_items"] == 1 and manifest["cold_start_users"] == 0


def test_an_ensemble_trains_each_tower_on_its_own_loss_and_every_job_takes_it(spark, drift_lake):
    # refit publishes the last epoch, so the two runs' models compare step for step.
    common = [*SEQUENCE, "train.epochs=2", "train.loss=softmax", "train.refit=true", "train.early_stopping_patience=0",
              "score.k=5"]
    run_training(None, with_overrides(drift_lake, ["name=seq-one", *common]))
    cfg = with_overrides(drift_lake, ["name=seq-two", *common, "sequence.members=2"])
    run_training(None, cfg)
    one, two = load_model(cfg.lake, "seq-one")[0], load_model(cfg.lake, "seq-two")[0]
    first, second = two.towers()
    # Same seed, so the first tower starts as the one-tower model; trained on its own loss, it ends
    # as that model did. A joint loss over the summed scores would have moved it elsewhere.
    # Not bit for bit: threads may sum in another order, and Adam's step magnifies that on weights
    # whose gradients are near 0 (up to 0.5% of one small tensor's norm seen). Trained by a joint
    # loss over the summed scores instead, the first tower ended 10% of the weights' norm away.
    ours, solo = first.state_dict(), one.state_dict()
    apart = sum((ours[k] - solo[k]).pow(2).sum() for k in solo) / sum(solo[k].pow(2).sum() for k in solo)
    assert apart.sqrt() < 0.01, apart.sqrt()
    assert not torch.allclose(second.item_embedding.weight, first.item_embedding.weight, atol=1e-3)
    torch.manual_seed(cfg.seed)  # the second tower trained too: it left its initialisation
    untrained = build(two.cfg).towers()[1]
    assert not torch.allclose(second.item_embedding.weight, untrained.item_embedding.weight, atol=1e-3)

    report = run_evaluate(spark, with_overrides(cfg, ["evaluate.k=[10]", "evaluate.baselines=[popularity]"]))
    full = report["results"]["seq-two"]["full"]["ndcg@10"]
    assert full > report["results"]["popularity"]["full"]["ndcg@10"] + MARGIN, report["results"]
    run_score(spark, cfg)
    table = read_published(spark, scores_root(lake.normalize_uri(cfg.lake), "seq-two")).toPandas()
    assert (table.groupby("user_id").size() == 5).all() and table.user_id.nunique() == 300


@pytest.mark.parametrize("model,loss", [("sequence", "bce"), ("sequence", "bpr"), ("sequence", "sampled_softmax"),
                                        ("gmf", "softmax"), ("gmf", "sampled_softmax"), ("gmf", "bpr")])
def test_every_loss_trains_the_dot_product_models(drift_lake, model, loss):
    base = SEQUENCE if model == "sequence" else ["train.model=gmf", "train.factors=32", "train.lr=0.01",
                                                  "train.batch_size=256"]
    summary = run_training(None, with_overrides(drift_lake, [f"name={model}-{loss}", *base, "train.epochs=3",
                                                            f"train.loss={loss}", "train.num_negatives=64"]))
    losses = [h["train_loss"] for h in summary["history"]]
    ndcg = [h["val_ndcg@10"] for h in summary["history"]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert max(ndcg) > 0.1, ndcg  # popularity scores about 0.13 here; random about 0.03


def test_losses_a_model_cannot_take_are_refused_before_training(drift_lake, explicit_lake):
    with pytest.raises(SparkrecError, match="train.loss=softmax .* train.model=neumf"):
        run_training(None, with_overrides(drift_lake, ["name=bad", "train.model=neumf", "train.loss=softmax"]))
    with pytest.raises(SparkrecError, match="does not fit implicit data"):
        run_training(None, with_overrides(drift_lake, ["name=bad", "train.model=gmf", "train.loss=mse"]))
    with pytest.raises(SparkrecError, match=r"^sequence.members=2 sums its towers' scores, which ranks items but does "
                                            r"not predict a rating \(this data is explicit\); set sequence.members=1$"):
        run_training(None, load_config(None, [f"lake={explicit_lake}", "name=bad", "train.model=sequence",
                                              "sequence.encoder=mean", "sequence.members=2", *QUIET]))
