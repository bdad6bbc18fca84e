"""The score job end to end on generated data: real prepare, real training, real Spark scoring."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from jobs.score import main as score_main
from sparkrec import lake as lake_io
from sparkrec.config import load_config
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.data.synthetic import generate_interactions, write_synthetic
from sparkrec.score.job import run_score
from sparkrec.models.store import resolve_model
from sparkrec.score.pairs import UNKNOWN_ITEM, UNKNOWN_USER, UNTRAINED_ITEM, UNTRAINED_USER, score_index_pairs
from sparkrec.score.publish import POINTER, read_published, scores_root
from sparkrec.score.topk import top_k_indices
from sparkrec.models.store import WEIGHTS, load_model, save_model
from sparkrec.train.launch import run_training

pytestmark = pytest.mark.spark

K = 10


def score_cfg(lake, *overrides):
    return load_config(None, [
        f"lake={lake}", f"input.path={lake}/raw", "generate.num_rows=6000", "generate.num_users=200",
        "generate.num_items=150", "generate.partitions=2", "spark.shuffle_partitions=2",
        "train.epochs=2", "train.batch_size=512", f"score.k={K}", "score.buckets=4", *overrides])


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """A lake with prepared data (200 users x 150 items) and a trained NeuMF (with biases)."""
    lake = str(tmp_path_factory.mktemp("score") / "lake")
    cfg = score_cfg(lake)
    write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
    run_prepare(spark, cfg)
    run_training(spark, cfg)
    return lake


def prepared_frames(spark, lake):
    """(manifest, user vocab id->idx, item vocab id->idx, train pairs) as pandas."""
    m = load_manifest(lake)
    users = spark.read.parquet(m["paths"]["user_vocab"]).toPandas().set_index("original_id")["index"]
    items = spark.read.parquet(m["paths"]["item_vocab"]).toPandas().set_index("original_id")["index"]
    train = spark.read.parquet(m["splits"]["train"]["path"]).select("user_idx", "item_idx").toPandas()
    return m, users, items, train


def forward(model, users, items):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(users, dtype=np.int64)),
                     torch.as_tensor(np.asarray(items, dtype=np.int64))).numpy()


def test_top_k_for_every_user(spark, trained):
    manifest = run_score(spark, score_cfg(trained))
    table = read_published(spark, scores_root(lake_io.normalize_uri(trained), "default")).toPandas()
    m, users, items, train = prepared_frames(spark, trained)
    model, _ = load_model(trained, "default")

    # Every vocabulary user (original ID) gets exactly K distinct items; none are cold here.
    assert manifest["rows"] == len(table) == m["num_users"] * K
    assert set(table["user_id"]) == set(users.index) and not table["cold_start"].any()
    assert table.groupby("user_id")["item_id"].nunique().eq(K).all()
    assert set(table["item_id"]) <= set(items.index)
    # Original IDs round-trip: mapped back through the vocabulary, nothing seen in training.
    table["user_idx"], table["item_idx"] = users[table["user_id"]].to_numpy(), items[table["item_id"]].to_numpy()
    seen = set(zip(train["user_idx"], train["item_idx"]))
    assert not any(pair in seen for pair in zip(table["user_idx"], table["item_idx"]))
    # Ranks are 1..K and follow the scores.
    ordered = table.sort_values(["user_id", "rank"])
    assert ordered.groupby("user_id")["rank"].apply(list).map(lambda r: r == list(range(1, K + 1))).all()
    assert ordered.groupby("user_id")["score"].apply(lambda s: bool((np.diff(s.to_numpy()) <= 0).all())).all()
    # Scores are the model's own forward pass...
    sample = table.sample(200, random_state=0)
    np.testing.assert_allclose(sample["score"], forward(model, sample["user_idx"], sample["item_idx"]),
                               rtol=1e-4, atol=1e-5)
    # ...and they are the best K: brute force over every unseen trained item for sampled users.
    trained_items = np.array(sorted(train["item_idx"].unique()))
    for user in sample["user_idx"].unique()[:20]:
        candidates = np.setdiff1d(trained_items, train.loc[train["user_idx"] == user, "item_idx"])
        best = np.sort(forward(model, np.full(len(candidates), user), candidates))[::-1][:K]
        np.testing.assert_allclose(np.sort(table.loc[table["user_idx"] == user, "score"])[::-1], best,
                                   rtol=1e-4, atol=1e-5)
    # Laid out by user hash bucket, with the manifest a reader needs.
    assert sorted(table["bucket"].unique()) == [0, 1, 2, 3]
    published = lake_io.read_json(lake_io.join(scores_root(lake_io.normalize_uri(trained), "default"), POINTER))
    assert published["version"] == manifest["version"] and published["k"] == K
    assert published["data_hash"] == m["data_hash"] and published["model"] == "default"
    assert published["rows"] == len(table) and published["created_at"]


def test_user_list_cold_start_and_short_lists(spark, trained, tmp_path):
    """Listed users outside training get the popularity list, flagged; with K above what a user
    has left unseen, the user gets all remaining items."""
    m, users, items, train = prepared_frames(spark, trained)
    known = list(users.index[:5])
    pd.DataFrame({"user_id": known + ["u-new-1", "u-new-2", None, known[0]]}).to_parquet(tmp_path / "users.parquet")
    big_k = m["num_items"] - 5
    manifest = run_score(spark, score_cfg(trained, f"score.users={tmp_path}/users.parquet", f"score.k={big_k}"))
    table = read_published(spark, scores_root(lake_io.normalize_uri(trained), "default")).toPandas()

    assert manifest["users"] == 7 and manifest["cold_start_users"] == 2 and manifest["skipped_null_user_ids"] == 1
    cold = table[table["cold_start"]]
    assert set(cold["user_id"]) == {"u-new-1", "u-new-2"}
    popularity = train["item_idx"].value_counts()
    trained_items = len(popularity)
    for _, rows in cold.groupby("user_id"):
        ordered = rows.sort_values("rank")
        assert list(ordered["rank"]) == list(range(1, min(big_k, trained_items) + 1))
        np.testing.assert_array_equal(ordered["score"], popularity.sort_values(ascending=False)
                                      .to_numpy()[:len(ordered)])
    for user in known:
        idx = users[user]
        unseen = trained_items - train.loc[train["user_idx"] == idx, "item_idx"].nunique()
        got = table[table["user_id"] == user]
        assert len(got) == min(big_k, unseen) and got["item_id"].is_unique
        assert sorted(got["rank"]) == list(range(1, len(got) + 1))
    assert manifest["rows"] == len(table)


def test_rerun_replaces_and_failed_run_keeps_previous_table(spark, trained):
    root = scores_root(lake_io.normalize_uri(trained), "default")
    first = run_score(spark, score_cfg(trained))
    second = run_score(spark, score_cfg(trained))
    assert second["version"] != first["version"]
    assert read_published(spark, root).count() == second["rows"]  # the new version only, whole

    # A new model version whose weights file is truncated: executors fail while the table is
    # being written, so the job fails and readers keep the previous table.
    # The broken model is published into the module's shared lake: the good one is republished in
    # `finally`, so a failed assert here cannot leave the other tests a broken model.
    good, meta = load_model(trained, "default")
    same_meta = {k: v for k, v in meta.items() if k not in ("version", "created_at")}
    broken = save_model(trained, "default", good.state_dict(), same_meta)
    try:
        weights = lake_io.join(broken["version"], WEIGHTS)
        lake_io.write_bytes_atomic(weights, lake_io.read_bytes(weights)[:100])
        before = read_published(spark, root).toPandas()
        with pytest.raises(Exception, match="cannot be loaded"):
            run_score(spark, score_cfg(trained))
        assert lake_io.resolve(root, POINTER)["version"] == second["version"]
        pd.testing.assert_frame_equal(read_published(spark, root).toPandas(), before)
        versions = sorted(p.name for p in Path(trained, "scores", "default").iterdir() if p.name.startswith("v-"))
        assert [lake_io.join(root, v) for v in versions] == [first["version"], second["version"]]  # failed one removed
    finally:
        save_model(trained, "default", good.state_dict(), same_meta)


def test_pairs_mode(spark, trained, tmp_path):
    m, users, items, train = prepared_frames(spark, trained)
    model, _ = load_model(trained, "default")
    rng = np.random.default_rng(0)
    known = pd.DataFrame({"user_id": rng.choice(users.index, 50), "item_id": rng.choice(items.index, 50)})
    odd = pd.DataFrame({"user_id": ["u-nobody", users.index[0], None], "item_id": [items.index[0], "i-nothing", items.index[1]]})
    pairs = pd.concat([known, odd, known.iloc[:3]], ignore_index=True)  # duplicates are scored each time
    pairs["label"] = np.arange(len(pairs), dtype=np.float64)                # extra columns pass through
    pairs.to_parquet(tmp_path / "pairs.parquet")

    assert score_main([f"lake={trained}", f"score.pairs={tmp_path}/pairs.parquet", "spark.shuffle_partitions=2"]) == 0
    out = read_published(spark, scores_root(lake_io.normalize_uri(trained), "default-pairs")).toPandas()
    manifest = lake_io.resolve(scores_root(lake_io.normalize_uri(trained), "default-pairs"), POINTER)

    assert len(out) == len(pairs) == manifest["rows"]
    assert sorted(out["label"]) == sorted(pairs["label"])
    out = out.set_index("label").loc[pairs["label"]]
    reasons = out["reason"].tolist()
    assert reasons[50:53] == [UNKNOWN_USER, UNKNOWN_ITEM, "null_user"]
    assert out.iloc[50:53][["score", "prediction"]].isna().all(axis=None)
    trained_users, trained_items = set(train["user_idx"]), set(train["item_idx"])
    expected_reasons = [UNTRAINED_USER if users[u] not in trained_users else
                        UNTRAINED_ITEM if items[i] not in trained_items else None
                        for u, i in zip(pairs["user_id"][:50], pairs["item_id"][:50])]
    assert [r if isinstance(r, str) else None for r in reasons[:50]] == expected_reasons
    scored = out[out["reason"].isna()]
    assert manifest["scored"] == len(scored) == expected_reasons.count(None) + 3
    expected = forward(model, users[scored["user_id"]], items[scored["item_id"]])
    np.testing.assert_allclose(scored["score"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scored["prediction"], model.to_score(torch.tensor(expected)).numpy(), rtol=1e-5)
    assert manifest["unscored_by_reason"][UNKNOWN_USER] == 1 and manifest["unscored_by_reason"]["null_user"] == 1


def test_library_functions_in_dense_indices(spark, trained):
    """What evaluation calls: top-K without exclusion equals brute force, pair scores equal forward,
    and an index outside the model fails with a clear message."""
    model_uri = resolve_model(trained, "default")
    model, meta = load_model(trained, "default")
    users = spark.createDataFrame([(3,), (7,), (7,)], "user_idx long")
    top = top_k_indices(spark, model_uri, users, 5).toPandas()
    assert len(top) == 10
    for user, rows in top.groupby("user_idx"):
        brute = forward(model, np.full(meta["num_items"], user), np.arange(meta["num_items"]))
        assert list(rows.sort_values("rank")["item_idx"]) == list(np.argsort(-brute)[:5])

    pairs = spark.createDataFrame([(3, 4), (7, 0)], "user_idx long, item_idx long")
    scored = score_index_pairs(spark, model_uri, pairs).toPandas()
    np.testing.assert_allclose(scored["score"], forward(model, [3, 7], [4, 0]), rtol=1e-5)

    bad = spark.createDataFrame([(meta["num_users"] + 5,)], "user_idx long")
    with pytest.raises(Exception, match=f"user_idx {meta['num_users'] + 5} is outside the model"):
        top_k_indices(spark, model_uri, bad, 5).collect()


def test_job_errors_are_one_line(trained, capsys):
    assert score_main([f"lake={trained}", "score.pairs=/no/such/pairs.parquet"]) == 1
    assert "score.pairs=/no/such/pairs.parquet does not exist" in capsys.readouterr().err
    assert score_main([f"lake={trained}", "name=nobody"]) == 1
    assert "nothing published" in capsys.readouterr().err
