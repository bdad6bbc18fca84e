"""Test positives, sampled negatives and the baselines, on tiny inline data."""
import pytest
from pyspark.sql import functions as F

from sparkrec.evaluate.baselines import GlobalMean, MllibAls, Popularity, UserItemBias
from sparkrec.evaluate.candidates import interactions, relevant_test_pairs, sample_negatives, sampled_lists
from sparkrec.score.popularity import popular_items

pytestmark = pytest.mark.spark
SCHEMA = "user_idx long, item_idx long, label float"


def pairs(spark, rows):
    return spark.createDataFrame(rows, "user_idx long, item_idx long")


def test_relevant_test_pairs_threshold_and_known_items(spark):
    test = spark.createDataFrame([(0, 5, 4.0), (0, 6, 2.0), (0, 1, 5.0), (1, 7, 3.0)], SCHEMA)
    known = pairs(spark, [(0, 1)])
    assert sorted(map(tuple, relevant_test_pairs(test, known).collect())) == [(0, 5), (0, 6), (1, 7)]
    assert sorted(map(tuple, relevant_test_pairs(test, known, threshold=3.5).collect())) == [(0, 5)]


def test_sample_negatives_policy(spark):
    # 30 items; user 0 interacted with 25 (only 5 free: a short list), user 1 with 3.
    seen = [(0, i) for i in range(25)] + [(1, 0), (1, 1), (1, 2)]
    interacted = pairs(spark, seen)
    positives = pairs(spark, [(0, 3), (0, 4), (1, 0), (1, 2)])
    lists = sampled_lists(positives)
    negs, targets = sample_negatives(lists, interacted, num_items=30, num_negatives=8, seed=1)
    got = negs.collect()
    by_list = {}
    for r in got:
        by_list.setdefault((r.user_idx, r.list_id), []).append(r.item_idx)
    assert {k: len(v) for k, v in by_list.items()} == {(0, 3): 5, (0, 4): 5, (1, 0): 8, (1, 2): 8}
    assert {(r.user_idx, r.list_id): r.target for r in targets.collect()} == {(0, 3): 5, (0, 4): 5, (1, 0): 8, (1, 2): 8}
    assert sorted(by_list[(0, 3)]) == [25, 26, 27, 28, 29]  # all the free items, each once
    for (user, _), items in by_list.items():
        assert len(set(items)) == len(items)
        assert not set(items) & {i for u, i in seen if u == user}
        assert all(0 <= i < 30 for i in items)
    assert by_list[(1, 0)] != by_list[(1, 2)]  # lists draw independently
    # Same seed, other partitioning: the same negatives; another seed: different ones.
    again, _ = sample_negatives(lists.repartition(3), interacted.repartition(2), 30, 8, seed=1)
    assert sorted(map(tuple, again.collect())) == sorted(map(tuple, got))
    other, _ = sample_negatives(lists, interacted, 30, 8, seed=2)
    assert sorted(map(tuple, other.collect())) != sorted(map(tuple, got))


def test_interactions_union_is_distinct(spark):
    a = spark.createDataFrame([(0, 1, 1.0), (0, 2, 1.0)], SCHEMA)
    b = spark.createDataFrame([(0, 1, 3.0, 9)], SCHEMA + ", timestamp long")
    assert sorted(map(tuple, interactions(a, b).collect())) == [(0, 1), (0, 2)]


def test_global_mean_and_damped_biases_by_hand(spark):
    train = spark.createDataFrame([(0, 0, 5.0), (0, 1, 3.0), (1, 0, 4.0)], SCHEMA)
    assert GlobalMean.fit(train).mean == pytest.approx(4.0)
    model = UserItemBias.fit(train, reg=1.0, rating_range=(1.0, 5.0), seed=0)
    # mu = 4; b_i0 = (1 + 0) / (2 + 1) = 1/3; b_i1 = -1 / (1 + 1) = -1/2
    # b_u0 = ((5 - 4 - 1/3) + (3 - 4 + 1/2)) / (2 + 1) = 1/18; b_u1 = (4 - 4 - 1/3) / (1 + 1) = -1/6
    got = {(r.user_idx, r.item_idx): r.score for r in
           model.score_pairs(pairs(spark, [(0, 1), (1, 0), (1, 9), (9, 9)])).collect()}
    assert got[(0, 1)] == pytest.approx(4 + 1 / 18 - 1 / 2)
    assert got[(1, 0)] == pytest.approx(4 - 1 / 6 + 1 / 3)
    assert got[(1, 9)] == pytest.approx(4 - 1 / 6)  # unseen item: b_i = 0
    assert got[(9, 9)] == pytest.approx(4.0)  # unseen user and item: the mean
    clipped = UserItemBias.fit(train, reg=0.0, rating_range=(1.0, 4.5), seed=0)
    assert max(r.score for r in clipped.score_pairs(pairs(spark, [(0, 0)])).collect()) == pytest.approx(4.5)


def test_popularity_scores_and_top_k_skip_excluded(spark):
    train = spark.createDataFrame([(0, 2, 1.0), (1, 2, 1.0), (2, 2, 1.0), (0, 0, 1.0), (1, 0, 1.0), (2, 1, 1.0)], SCHEMA)
    pop = Popularity.fit(train)
    scores = {r.item_idx: r.score for r in pop.score_pairs(pairs(spark, [(5, 0), (5, 1), (5, 2), (5, 7)])).collect()}
    assert scores == {0: 2.0, 1: 1.0, 2: 3.0, 7: 0.0}
    users = pairs(spark, [(0, 0), (3, 0)]).select("user_idx")
    exclude = pairs(spark, [(0, 2), (0, 0)])
    top = {(r.user_idx, r["rank"]): r.item_idx for r in pop.top_k(users, 2, exclude).collect()}
    # User 0 has seen the two most popular items: only item 1 is left (K larger than the pool).
    assert top == {(0, 1): 1, (3, 1): 2, (3, 2): 0}


def test_bias_top_k_orders_by_item_bias(spark):
    train = spark.createDataFrame([(0, 0, 5.0), (1, 0, 5.0), (0, 1, 1.0), (1, 2, 3.0), (2, 2, 4.0)], SCHEMA)
    model = UserItemBias.fit(train, reg=1.0, rating_range=(1.0, 5.0), seed=0)
    top = model.top_k(pairs(spark, [(2, 0)]).select("user_idx"), 3, pairs(spark, [(2, 2)]))
    assert [r.item_idx for r in top.orderBy("rank").collect()] == [0, 1]


def test_mllib_als_explicit_and_implicit(spark):
    rows = [(u, i, float(1 + (u + i) % 5)) for u in range(12) for i in range(10) if (u * 7 + i) % 3]
    train = spark.createDataFrame(rows, SCHEMA)
    explicit = MllibAls.fit(train, implicit=False, rank=4, reg=0.05, alpha=1.0, max_iter=8, blocks=2, seed=3)
    assert explicit.predicts_ratings and explicit.name == "als_explicit"
    fit = explicit.score_pairs(train)  # pairs' columns (label included) pass through
    rmse = fit.agg(F.sqrt(F.avg((F.col("score") - F.col("label")) ** 2))).first()[0]
    assert rmse < 0.6  # a rank-4 model fits this structured table well
    cold = explicit.score_pairs(pairs(spark, [(99, 0)])).first().score
    assert cold == pytest.approx(train.agg(F.avg("label")).first()[0], rel=1e-6)  # filled with the mean

    implicit = MllibAls.fit(train, implicit=True, rank=4, reg=0.05, alpha=1.0, max_iter=5, blocks=2, seed=3)
    assert not implicit.predicts_ratings and implicit.name == "als_implicit"
    users = spark.range(12).select(F.col("id").alias("user_idx"))
    exclude = train.select("user_idx", "item_idx")
    top = implicit.top_k(users, 3, exclude).collect()
    seen = {(r.user_idx, r.item_idx) for r in exclude.collect()}
    assert not {(r.user_idx, r.item_idx) for r in top} & seen
    for user in range(12):
        mine = sorted((r["rank"], r.score) for r in top if r.user_idx == user)
        free = 10 - sum(1 for u, _ in seen if u == user)
        assert [rank for rank, _ in mine] == list(range(1, min(3, free) + 1))
        assert all(a[1] >= b[1] for a, b in zip(mine, mine[1:]))


def test_popularity_baseline_ranks_the_list_the_score_job_serves(spark):
    """One "most popular": with nothing to exclude, the evaluated baseline's list is exactly the
    served fallback, ties included (items 3, 5 and 8 tie; the served rule puts the smaller index
    first)."""
    rows = [(u, i, 1.0) for u, items in {0: [8, 3, 5, 1], 1: [8, 3, 5, 1], 2: [1, 4], 3: [1]}.items() for i in items]
    train = spark.createDataFrame(rows, SCHEMA)
    served = [r.item_idx for r in popular_items(train, 4).orderBy("rank").collect()]
    assert served == [1, 3, 5, 8]
    users = pairs(spark, [(7, 0)]).select("user_idx")
    evaluated = Popularity.fit(train).top_k(users, 4, pairs(spark, [(0, 0)]).where("user_idx < 0"))
    assert [r.item_idx for r in evaluated.orderBy("rank").collect()] == served


def test_ease_is_the_closed_form_and_ranks_by_it(spark):
    """EASE's weights equal numpy's closed form; its scores and top-k follow x_u . B exactly."""
    import numpy as np

    from sparkrec.evaluate.ease import Ease

    rows = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 3), (2, 0), (2, 3), (2, 4), (3, 2), (3, 4), (4, 5), (4, 0)]
    train = pairs(spark, rows)
    lam = 2.0
    ease = Ease.fit(train, lam)
    x = np.zeros((5, 6))
    for u, i in rows:
        x[u, i] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(6))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert list(ease.columns) == list(range(6))
    np.testing.assert_allclose(ease.weights.value, b, rtol=1e-5, atol=1e-6)

    expected = x @ b
    scored = ease.score_pairs(pairs(spark, [(0, 3), (0, 5), (3, 0), (2, 9)])).collect()
    got = {(r.user_idx, r.item_idx): r.score for r in scored}
    assert got[(2, 9)] == 0.0  # an item without training interactions
    for (u, i), value in got.items():
        if i < 6:
            assert value == pytest.approx(expected[u, i], rel=1e-5, abs=1e-6)

    top = ease.top_k(pairs(spark, [(0, 0), (3, 0)]).select("user_idx"), 2, train).collect()
    for user in (0, 3):
        scores = expected[user].copy()
        scores[x[user] > 0] = -np.inf
        want = list(np.argsort(-scores, kind="stable")[:2])
        assert [r.item_idx for r in sorted((r for r in top if r.user_idx == user), key=lambda r: r.rank)] == want


def test_ease_is_skipped_above_its_item_limit_with_a_note(spark):
    from sparkrec.config import load_config
    from sparkrec.evaluate.run import fit_baselines

    train = spark.createDataFrame([(0, 0, 1.0), (0, 1, 1.0), (1, 1, 1.0), (1, 2, 1.0)], SCHEMA)
    prepared = {"implicit": True, "rating_range": [1.0, 1.0]}
    fitted, skipped = fit_baselines(train, load_config(None, ["evaluate.baselines=[popularity,ease]",
                                                             "evaluate.ease_max_items=2"]), prepared)
    assert [r.name for r in fitted] == ["popularity"]
    assert skipped == ["ease: skipped, 3 items with training interactions exceed evaluate.ease_max_items=2 "
                       "(it inverts an items x items matrix)"]
