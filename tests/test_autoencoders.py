"""Autoencoders through the real train job: sparse vectors built in Spark and published, read by
Petastorm as CSR batches, trained by the one loop (local and 2 DDP workers), folded into code
tables, and judged by the evaluate job like any other model."""
import numpy as np
import pandas as pd
import pytest
import torch

from prepared_lakes import read_split, train_config as config
from sparkrec.data.prepare import load_manifest
from sparkrec.data.sparse_vectors import KINDS, VALUE, publish_vectors
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.run import run_evaluate
from sparkrec.models.store import load_model
from sparkrec.train.feed import VectorShardReader, plan_dataset
from sparkrec.train.launch import run_training

pytestmark = pytest.mark.spark
# Settings that learn the planted data in a few seconds (400 users, 200 items).
MULTVAE = ["train.model=multvae", "train.epochs=15", "train.lr=0.001", "autoencoder.batch_size=32"]
AUTOREC = ["train.model=autorec", "train.epochs=20", "train.lr=0.003", "autoencoder.batch_size=16",
           "autoencoder.l2=0.001"]  # dense planted data: 200 items with ~240 ratings each


def test_sparse_vectors_reconcile_and_read_as_csr(spark, implicit_lake):
    manifest = load_manifest(implicit_lake)
    train = read_split(manifest, "train")
    for kind, (key, indices) in KINDS.items():
        vectors = publish_vectors(spark, implicit_lake, manifest, kind, num_files=4, num_workers=2,
                                  row_group_bytes=1 << 20)
        table = pd.read_parquet(vectors["path"].removeprefix("file://"))
        lengths = table[indices].map(len).to_numpy()
        assert vectors["nonzeros"] == lengths.sum() == len(train)  # every training row, once
        assert table[key].is_unique and set(table[key]) == set(train[key])
        assert vectors["files"] % 2 == 0 and sum(vectors["row_groups"]) == vectors["rows"] == len(table)
        pairs = set(zip(np.repeat(table[key].to_numpy(), lengths), np.concatenate(table[indices].to_numpy())))
        assert pairs == set(zip(train[key], train[indices]))
        assert np.concatenate(table[VALUE].to_numpy()).tolist() == [1.0] * len(train)
        again = publish_vectors(spark, implicit_lake, manifest, kind, num_files=4, num_workers=2, row_group_bytes=1)
        assert again["version"] == vectors["version"]  # same prepared data: reused, not rebuilt

        # Two ranks' CSR batches hold every vector once, exactly as written, in equal steps.
        plan = plan_dataset(vectors, f"{kind} vectors", world=2, batch_size=50)
        read = {}
        for rank in (0, 1):
            reader = VectorShardReader(plan, rank, seed=3, key=key, indices=indices)
            batches = list(reader)
            assert len(batches) == plan.steps and reader.rows_read == plan.shard_rows[rank]
            for b in batches:
                offsets = b["offsets"].numpy()
                assert len(offsets) == len(b[key]) + 1 and offsets[-1] == len(b["indices"]) == len(b["values"])
                for row, vector in enumerate(b[key].tolist()):
                    read[vector] = b["indices"][offsets[row]:offsets[row + 1]].tolist()
        assert read == {k: list(v) for k, v in zip(table[key], table[indices])}


def test_multvae_beats_popularity_in_the_evaluate_job(spark, implicit_lake):
    name = "multvae"
    summary = run_training(None, config(implicit_lake, name, *MULTVAE))
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    metrics = run_evaluate(spark, config(implicit_lake, name, "evaluate.k=[10]",
                                         "evaluate.baselines=[popularity]"))
    full = {n: r["full"]["ndcg@10"] for n, r in metrics["results"].items()}
    assert full["popularity"] > 0.1  # a real baseline on this data
    assert full[name] > full["popularity"] + 0.1, full

    # The published user codes are the encoder's mean on each training bag (fold-in), and
    # bag_logits (the explanations' entry) scores exactly as the served forward does.
    model, meta = load_model(implicit_lake, name)
    manifest = load_manifest(implicit_lake)
    train = read_split(manifest, "train")
    users = torch.arange(20)
    bags = torch.zeros(20, manifest["num_items"])
    rows = train[train.user_idx < 20]
    bags[rows.user_idx.to_numpy(), rows.item_idx.to_numpy()] = 1.0
    items = torch.arange(manifest["num_items"])
    with torch.no_grad():
        served = model(users.repeat_interleave(len(items)), items.repeat(20)).view(20, -1)
        assert torch.allclose(model.bag_logits(bags), served, atol=1e-4)


def test_autorec_beats_the_bias_baseline_and_resumes_exactly(explicit_lake):
    manifest = load_manifest(explicit_lake)
    train, test = read_split(manifest, "train"), read_split(manifest, "test")
    run_training(None, config(explicit_lake, "autorec", *AUTOREC))
    model, meta = load_model(explicit_lake, "autorec")
    with torch.no_grad():
        predicted = model.predict(torch.as_tensor(test.user_idx.to_numpy()),
                                  torch.as_tensor(test.item_idx.to_numpy())).numpy()
    rmse = np.sqrt(np.mean((predicted - test.label) ** 2))
    mean = train.label.mean()
    user_bias = (train.label - mean).groupby(train.user_idx).sum() / (train.groupby("user_idx").size() + 10)
    item_bias = (train.label - mean - train.user_idx.map(user_bias)).groupby(train.item_idx).sum() \
        / (train.groupby("item_idx").size() + 10)
    biased = mean + test.user_idx.map(user_bias).fillna(0) + test.item_idx.map(item_bias).fillna(0)
    rmse_mean = np.sqrt(np.mean((mean - test.label) ** 2))
    rmse_bias = np.sqrt(np.mean((biased - test.label) ** 2))
    assert not meta["implicit"] and 1.0 <= predicted.min() and predicted.max() <= 5.0
    assert rmse < rmse_bias - 0.1 < rmse_mean - 0.1, (rmse, rmse_bias, rmse_mean)

    # Two epochs, then resumed to three: the same weights and codes as three straight epochs.
    short = [*AUTOREC, "train.epochs=3"]
    run_training(None, config(explicit_lake, "straight", *short))
    run_training(None, config(explicit_lake, "resumed", *short, "train.epochs=2"))
    summary = run_training(None, config(explicit_lake, "resumed", *short, "train.resume=true"))
    assert summary["resumed_from"] == 2
    straight, resumed = load_model(explicit_lake, "straight")[0], load_model(explicit_lake, "resumed")[0]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_settings_the_autoencoders_cannot_train_are_refused(implicit_lake):
    with pytest.raises(SparkrecError, match="autorec reconstructs explicit ratings"):
        run_training(None, config(implicit_lake, "bad", "train.model=autorec"))
    with pytest.raises(SparkrecError, match="warm_start is not supported for train.model=multvae"):
        run_training(None, config(implicit_lake, "bad", "train.model=multvae", "train.warm_start=latest"))


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_ddp_workers_train_multvae_to_identical_weights(spark, implicit_lake):
    summary = run_training(spark, config(implicit_lake, "multvae-ddp", *MULTVAE, "train.epochs=2",
                                         "train.backend=torch", "train.num_workers=2"))
    assert summary["weights_by_rank"][0] == summary["weights_by_rank"][1]
    vectors = publish_vectors(spark, implicit_lake, load_manifest(implicit_lake), "users", num_files=4,
                              num_workers=2, row_group_bytes=1 << 20)
    plan = plan_dataset(vectors, "users vectors", world=2, batch_size=32)
    for epoch in summary["history"]:
        assert epoch["rows_by_rank"] == list(plan.shard_rows) and sum(epoch["rows_by_rank"]) == vectors["rows"]
    model, meta = load_model(implicit_lake, "multvae-ddp")
    assert meta["config"]["train"]["backend"] == "torch"
    assert model.user_codes.abs().sum(1).gt(0).sum() == vectors["rows"]  # every user folded in, across ranks
