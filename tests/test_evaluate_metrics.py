"""Every ranking and rating metric against small hand-computed cases."""
import math

import numpy as np
import pytest
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import functions as F

from sparkrec.evaluate.candidates import full_ranking_lists
from sparkrec.evaluate.paired_differences import paired_mean_differences, rating_differences
from sparkrec.evaluate.ranking_metrics import (
    catalog_coverage, mean_over_users, metric_names, per_list_metrics, rank_by_score,
)
from sparkrec.evaluate.rating_metrics import rating_metrics

pytestmark = pytest.mark.spark
TOL = 1e-9


def log2(x):
    return math.log(x, 2)


def metrics(spark, lists, hits, ks):
    """lists: [(user, list_id, num_relevant)], hits: [(user, list_id, rank)]."""
    lists_df = spark.createDataFrame(lists, "user_idx long, list_id long, num_relevant long")
    hits_df = spark.createDataFrame(hits, "user_idx long, list_id long, rank int")
    return mean_over_users(per_list_metrics(lists_df, hits_df, ks), ks)


def test_single_user_every_metric_by_hand(spark):
    # Ranked list [10, 11, 12, 13, 14]; relevant {11, 14, 99}: hits at ranks 2 and 5, and item 99
    # is not in the list at all (n_rel = 3). K = 10 is larger than the list.
    got = metrics(spark, [(1, 0, 3)], [(1, 0, 2), (1, 0, 5)], [1, 3, 5, 10])
    idcg3 = 1 + 1 / log2(3) + 1 / log2(4)
    dcg5 = 1 / log2(3) + 1 / log2(6)
    want = {
        "hr@1": 0.0, "precision@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0, "map@1": 0.0,
        "hr@3": 1.0, "precision@3": 1 / 3, "recall@3": 1 / 3, "ndcg@3": (1 / log2(3)) / idcg3, "map@3": (1 / 2) / 3,
        "hr@5": 1.0, "precision@5": 2 / 5, "recall@5": 2 / 3, "ndcg@5": dcg5 / idcg3, "map@5": (1 / 2 + 2 / 5) / 3,
        # K beyond the list: precision still divides by K; recall, NDCG and MAP see the same hits.
        "hr@10": 1.0, "precision@10": 2 / 10, "recall@10": 2 / 3, "ndcg@10": dcg5 / idcg3, "map@10": (1 / 2 + 2 / 5) / 3,
        "mrr": 1 / 2, "users": 1, "lists": 1,
    }
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=TOL), name
    assert metric_names([1, 3, 5, 10]) == [n for n in got if n not in ("users", "lists")]


def test_list_without_any_hit_scores_zero_and_counts(spark):
    got = metrics(spark, [(1, 0, 1), (2, 0, 2)], [(1, 0, 1)], [1, 2])
    # User 1: hit at rank 1; user 2: nothing found -> zeros, and it still counts.
    assert got["hr@1"] == pytest.approx(0.5) and got["mrr"] == pytest.approx(0.5)
    assert got["recall@2"] == pytest.approx(0.5) and got["ndcg@2"] == pytest.approx(0.5)
    assert got["users"] == 2


def test_ndcg_and_map_when_fewer_relevant_than_k(spark):
    # Two relevant items at ranks 1 and 3, K = 5: IDCG uses min(K, n_rel) = 2 positions.
    got = metrics(spark, [(7, 0, 2)], [(7, 0, 1), (7, 0, 3)], [5])
    assert got["ndcg@5"] == pytest.approx((1 + 1 / log2(4)) / (1 + 1 / log2(3)))
    assert got["map@5"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert got["recall@5"] == pytest.approx(1.0) and got["precision@5"] == pytest.approx(2 / 5)


def test_sampled_lists_are_averaged_per_user_first(spark):
    # User 1 has two lists (positive at ranks 1 and 3), user 2 one list (rank 11). Per-user
    # averaging gives HR@1 = (0.5 + 0) / 2 = 0.25; a plain mean over lists would give 1/3.
    lists = [(1, 100, 1), (1, 101, 1), (2, 200, 1)]
    hits = [(1, 100, 1), (1, 101, 3), (2, 200, 11)]
    got = metrics(spark, lists, hits, [1, 10])
    assert got["hr@1"] == pytest.approx(0.25)
    assert got["hr@10"] == pytest.approx(0.5)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / log2(4)) / 2 / 2)
    assert got["mrr"] == pytest.approx(((1 + 1 / 3) / 2 + 1 / 11) / 2)
    assert got["precision@10"] == pytest.approx(((1 / 10 + 1 / 10) / 2 + 0) / 2)
    assert (got["users"], got["lists"]) == (2, 3)


def test_no_lists_gives_none_not_an_error(spark):
    got = metrics(spark, [], [], [5])
    assert got["hr@5"] is None and got["users"] == 0 and got["lists"] == 0


def test_users_without_test_items_are_left_out_not_scored_zero(spark):
    positives = spark.createDataFrame([(1, 10)], "user_idx long, item_idx long")
    # User 2 got recommendations but has no test item: nothing can be right or wrong for it.
    top = spark.createDataFrame([(1, 10, 1), (2, 20, 1)], "user_idx long, item_idx long, rank int")
    hits = top.join(positives, ["user_idx", "item_idx"]).select("user_idx", F.lit(0).cast("long").alias("list_id"), "rank")
    got = mean_over_users(per_list_metrics(full_ranking_lists(positives), hits, [1]), [1])
    assert got["hr@1"] == 1.0 and got["precision@1"] == 1.0 and got["users"] == 1
    # Spark's RankingEvaluator would average user 2 in as a 0 (one reason it is not used).
    data = spark.createDataFrame([([10.0], [10.0]), ([20.0], [])], "prediction array<double>, label array<double>")
    assert RankingEvaluator(metricName="precisionAtK", k=1).evaluate(data) == pytest.approx(0.5)


def test_sampled_list_shorter_than_k_from_scores(spark):
    # One positive (item 7) among two negatives, scored and ranked: rank 3 of a 3-item list, K = 5.
    scored = spark.createDataFrame([(1, 7, 7, 0.1), (1, 7, 8, 0.9), (1, 7, 9, 0.5)],
                                   "user_idx long, list_id long, item_idx long, score double")
    ranked = rank_by_score(scored, seed=0)
    hits = ranked.where(F.col("item_idx") == F.col("list_id")).select("user_idx", "list_id", "rank")
    lists = spark.createDataFrame([(1, 7, 1)], "user_idx long, list_id long, num_relevant int")
    got = mean_over_users(per_list_metrics(lists, hits, [2, 5]), [2, 5])
    assert got["hr@2"] == 0.0 and got["hr@5"] == 1.0
    assert got["precision@5"] == pytest.approx(1 / 5) and got["recall@5"] == 1.0
    assert got["ndcg@5"] == pytest.approx(1 / log2(4)) and got["map@5"] == pytest.approx(1 / 3)
    assert got["mrr"] == pytest.approx(1 / 3)


def test_rank_by_score_orders_ties_label_blind_and_nan_last(spark):
    rows = [(1, 0, 10, 0.9), (1, 0, 11, 0.5), (1, 0, 12, 0.5), (1, 0, 13, 0.5), (1, 0, 14, 0.1),
            (1, 0, 15, float("nan")), (1, 0, 16, None)]
    df = spark.createDataFrame(rows, "user_idx long, list_id long, item_idx long, score double")
    ranked = {r.item_idx: r["rank"] for r in rank_by_score(df, seed=3).collect()}
    assert ranked[10] == 1 and ranked[14] == 5
    assert sorted(ranked[i] for i in (11, 12, 13)) == [2, 3, 4]
    assert sorted(ranked[i] for i in (15, 16)) == [6, 7]
    again = {r.item_idx: r["rank"] for r in rank_by_score(df.repartition(3), seed=3).collect()}
    assert again == ranked


def test_constant_scores_rank_the_positive_like_chance(spark):
    """A model that scores everything alike must not look good: with 1 positive among 10 tied
    candidates the positive is first for ~10% of users (positive-first tie handling gives 100%)."""
    users = 3000
    cands = (spark.range(users).withColumnRenamed("id", "user_idx")
             .crossJoin(spark.range(10).withColumnRenamed("id", "item_idx"))
             .withColumn("list_id", F.lit(0).cast("long")).withColumn("score", F.lit(1.0)))
    ranked = rank_by_score(cands, seed=11)
    hits = ranked.where(F.col("item_idx") == 0).select("user_idx", "list_id", "rank")
    lists = spark.range(users).select(F.col("id").alias("user_idx"), F.lit(0).cast("long").alias("list_id"),
                                      F.lit(1).alias("num_relevant"))
    got = mean_over_users(per_list_metrics(lists, hits, [1, 5]), [1, 5])
    assert got["hr@1"] == pytest.approx(0.1, abs=0.02)
    assert got["hr@5"] == pytest.approx(0.5, abs=0.03)


def test_matches_spark_ranking_evaluator_where_definitions_agree(spark):
    rng = np.random.default_rng(5)
    rows, lists, hits = [], [], []
    for user in range(25):
        ranking = rng.permutation(40)[: rng.integers(3, 15)].tolist()
        relevant = rng.choice(40, size=rng.integers(1, 6), replace=False).tolist()
        rows.append(([float(i) for i in ranking], [float(i) for i in relevant]))
        lists.append((user, 0, len(relevant)))
        hits += [(user, 0, pos + 1) for pos, item in enumerate(ranking) if item in relevant]
    data = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    ks = [1, 3, 10]
    got = metrics(spark, lists, hits, ks)
    spark_names = {"precision": "precisionAtK", "recall": "recallAtK", "ndcg": "ndcgAtK", "map": "meanAveragePrecisionAtK"}
    for k in ks:
        for ours, theirs in spark_names.items():
            expected = RankingEvaluator(metricName=theirs, k=k).evaluate(data)
            assert got[f"{ours}@{k}"] == pytest.approx(expected, abs=1e-9), f"{ours}@{k}"


def test_catalog_coverage(spark):
    top = spark.createDataFrame([(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 1), (2, 4, 2), (2, 5, 3)],
                                "user_idx long, item_idx long, rank int")
    assert catalog_coverage(top, [1, 2, 3, 50], num_items=10) == pytest.approx(
        {"coverage@1": 0.1, "coverage@2": 0.3, "coverage@3": 0.5, "coverage@50": 0.5})


def test_rating_metrics_by_hand(spark):
    df = spark.createDataFrame([(5.0, 4.0), (3.0, 3.0), (1.0, 2.0), (2.0, 4.0)], "label float, prediction double")
    got = rating_metrics(df)
    assert got["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 4) / 4))
    assert got["mae"] == pytest.approx((1 + 0 + 1 + 2) / 4)
    assert got["rows"] == 4


def test_rating_metrics_refuse_missing_predictions_and_handle_empty(spark):
    df = spark.createDataFrame([(5.0, 4.0), (3.0, float("nan"))], "label float, prediction double")
    with pytest.raises(ValueError, match="1 of 2 predictions"):
        rating_metrics(df)
    empty = spark.createDataFrame([], "label float, prediction double")
    assert rating_metrics(empty) == {"rmse": None, "mae": None, "rows": 0}


def test_paired_mean_differences_match_numpy_on_the_shared_units(spark):
    rng = np.random.default_rng(3)
    ours, theirs = rng.random(50), rng.random(50)
    a = spark.createDataFrame([(i, float(v)) for i, v in enumerate(ours)], "user_idx long, `hr@10` double")
    # The baseline lacks user 0: only the 49 shared users are paired.
    b = spark.createDataFrame([(i, float(v)) for i, v in enumerate(theirs) if i > 0], "user_idx long, `hr@10` double")
    got = paired_mean_differences(a, b, ["user_idx"], ["hr@10"])["hr@10"]
    d = ours[1:] - theirs[1:]
    half = 1.959963984540054 * d.std(ddof=1) / math.sqrt(49)
    assert got["units"] == 49
    assert got["difference"] == pytest.approx(d.mean(), abs=TOL)
    assert (got["low"], got["high"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=TOL)


def test_rating_differences_center_on_the_rmse_gap(spark):
    errors_a, errors_b = np.array([0.5, -1.0, 0.2, 1.5]), np.array([1.0, -1.5, 0.4, 2.0])
    schema = "user_idx long, item_idx long, squared_error double, absolute_error double"
    a = spark.createDataFrame([(i, i, float(e * e), float(abs(e))) for i, e in enumerate(errors_a)], schema)
    b = spark.createDataFrame([(i, i, float(e * e), float(abs(e))) for i, e in enumerate(errors_b)], schema)
    rmse_a, rmse_b = math.sqrt(np.mean(errors_a ** 2)), math.sqrt(np.mean(errors_b ** 2))
    got = rating_differences(a, b, ["user_idx", "item_idx"], rmse_a, rmse_b)
    d = errors_a ** 2 - errors_b ** 2
    half = 1.959963984540054 * d.std(ddof=1) / 2 / (rmse_a + rmse_b)
    assert got["rmse"]["difference"] == pytest.approx(rmse_a - rmse_b)
    # sqrt(x) - sqrt(y) = (x - y) / (sqrt(x) + sqrt(y)): the interval is centred on the exact gap.
    assert (got["rmse"]["low"], got["rmse"]["high"]) == pytest.approx((rmse_a - rmse_b - half, rmse_a - rmse_b + half))
    assert got["mae"]["difference"] == pytest.approx(np.mean(np.abs(errors_a) - np.abs(errors_b)))
    assert got["mae"]["high"] < 0  # every absolute error of a is smaller
