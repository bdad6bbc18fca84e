"""Baselines fitted on the train split and scored like the model: what a user would otherwise use.

Every recommender here offers the operations the protocols need (see :class:`Recommender`).
"""
from __future__ import annotations

from typing import Sequence

from pyspark.ml.recommendation import ALS
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.columns import ITEM_IDX, LABEL, PREDICTION, RANK, SCORE, USER_IDX
from sparkrec.evaluate.ranking_metrics import rank_by_score
from sparkrec.score.popularity import item_popularity, leading_items, popularity_order


class Recommender:
    """Interface shared by the baselines and what is evaluated (model, top-K table)."""

    name: str = ""
    scores_pairs: bool = True
    """``score_pairs`` works (the sampled protocol and RMSE/MAE need it)."""
    predicts_ratings: bool = False
    """``rating_predictions`` gives ratings on the label scale (explicit data: RMSE/MAE)."""
    ranks: bool = True
    """The scores order items meaningfully (a constant predictor does not) and ``top_k`` works."""

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        """``pairs``' columns (``user_idx``, ``item_idx``, ...) plus ``score`` double/float (higher
        = better), one row per input row."""
        raise NotImplementedError

    def rating_predictions(self, pairs: DataFrame) -> DataFrame:
        """``pairs``' columns plus ``prediction`` (a rating); for the baselines the score is one."""
        return self.score_pairs(pairs).withColumnRenamed(SCORE, PREDICTION)

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        """``user_idx``, ``item_idx``, ``score``, ``rank`` (1..k, consecutive): the best ``k`` items
        for each of ``users``' ``user_idx``, never a pair of ``exclude`` (``user_idx``, ``item_idx``)."""
        raise NotImplementedError


def _excluded_counts(users: DataFrame, exclude: DataFrame) -> DataFrame:
    counts = exclude.groupBy(USER_IDX).agg(F.count(F.lit(1)).alias("_excluded"))
    return users.select(USER_IDX).distinct().join(counts, USER_IDX, "left").fillna(0, ["_excluded"])


def global_order_top_k(item_scores: DataFrame, users: DataFrame, k: int, exclude: DataFrame,
                       order: Sequence[Column]) -> DataFrame:
    """Top-k for a recommender whose item order is the same for every user (popularity, item bias).

    A user needs at most k + (its excluded items) of the global order to find k allowed ones, so
    the work is sum over users of (k + excluded), not users x catalog; only the first k + (most
    excluded items of any user) items of the order are numbered (``leading_items``).

    Parameters
    ----------
    item_scores : DataFrame
        ``item_idx``, ``score``: one row per rankable item.
    order : sequence of Column
        The global order over ``item_scores``, a total one (ties broken label-blind).

    Returns
    -------
    DataFrame
        ``user_idx``, ``item_idx``, ``score``, ``rank`` (1..k).
    """
    needed = _excluded_counts(users, exclude).withColumn("_depth", F.col("_excluded") + k)
    depth = needed.agg(F.max("_depth")).first()[0] or k
    ranked_items = leading_items(item_scores, order, depth).withColumnRenamed(RANK, "_pos")
    candidates = needed.join(F.broadcast(ranked_items), F.col("_pos") <= F.col("_depth"))
    allowed = candidates.join(exclude, [USER_IDX, ITEM_IDX], "left_anti")
    per_user = Window.partitionBy(USER_IDX).orderBy("_pos")
    return (allowed.withColumn(RANK, F.row_number().over(per_user)).where(F.col(RANK) <= k)
            .select(USER_IDX, ITEM_IDX, SCORE, RANK))


class GlobalMean(Recommender):
    """Predicts the train mean for everything: the floor any rating model must beat."""

    name = "global_mean"
    predicts_ratings = True
    ranks = False  # every item ties: its ranking would only measure the tie-break

    def __init__(self, mean: float):
        self.mean = mean

    @classmethod
    def fit(cls, train: DataFrame) -> "GlobalMean":
        return cls(float(train.agg(F.avg(LABEL)).first()[0]))

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        return pairs.withColumn(SCORE, F.lit(self.mean))


class UserItemBias(Recommender):
    """Baseline predictor r = mu + b_u + b_i with damped (regularised) means (Koren 2010, sec. 2.1).

    ``b_i = sum(r - mu) / (n_i + reg)``, then ``b_u = sum(r - mu - b_i) / (n_u + reg)``; an
    unseen user or item has bias 0. Predictions are clipped to the observed rating range, as the
    NCF model's are. Ranking for one user orders items by ``b_i``.
    """

    name = "bias"
    predicts_ratings = True

    def __init__(self, mean: float, item_bias: DataFrame, user_bias: DataFrame, rating_range: tuple[float, float], seed: int):
        self.mean, self.item_bias, self.user_bias = mean, item_bias, user_bias
        self.rating_range, self.seed = rating_range, seed

    @classmethod
    def fit(cls, train: DataFrame, reg: float, rating_range: tuple[float, float], seed: int) -> "UserItemBias":
        mu = float(train.agg(F.avg(LABEL)).first()[0])
        item_bias = (train.groupBy(ITEM_IDX)
                     .agg((F.sum(F.col(LABEL) - mu) / (F.count(F.lit(1)) + reg)).alias("b_i")).cache())
        user_bias = (train.join(item_bias, ITEM_IDX).groupBy(USER_IDX)
                     .agg((F.sum(F.col(LABEL) - mu - F.col("b_i")) / (F.count(F.lit(1)) + reg)).alias("b_u")).cache())
        return cls(mu, item_bias, user_bias, rating_range, seed)

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        lo, hi = self.rating_range
        raw = F.lit(self.mean) + F.coalesce("b_u", F.lit(0.0)) + F.coalesce("b_i", F.lit(0.0))
        return (pairs.join(self.user_bias, USER_IDX, "left").join(self.item_bias, ITEM_IDX, "left")
                .select(*pairs.columns, F.least(F.greatest(raw, F.lit(lo)), F.lit(hi)).alias(SCORE)))

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        # Within one user mu + b_u is constant, so the order is b_i's. Items without a train
        # rating have no fitted bias and stay out of the pool (nothing is known of them).
        # Ties in b_i are broken by a seeded hash of the item: label-blind, the same for every user.
        order = [F.col(SCORE).desc(), F.xxhash64(F.lit(self.seed), F.col(ITEM_IDX)), F.col(ITEM_IDX)]
        top = global_order_top_k(self.item_bias.select(ITEM_IDX, F.col("b_i").alias(SCORE)), users, k, exclude, order)
        return self.score_pairs(top.select(USER_IDX, ITEM_IDX, RANK)).select(USER_IDX, ITEM_IDX, SCORE, RANK)


class Popularity(Recommender):
    """Scores an item by its number of train interactions, the same for every user; ranks in the
    order the score job serves to users without training interactions
    (``sparkrec.score.popularity``), so the report measures the list users get."""

    name = "popularity"

    def __init__(self, counts: DataFrame):
        self.counts = counts

    @classmethod
    def fit(cls, train: DataFrame) -> "Popularity":
        return cls(item_popularity(train).cache())

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        return (pairs.join(self.counts, ITEM_IDX, "left").fillna(0.0, [SCORE])
                .select(*pairs.columns, SCORE))

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        return global_order_top_k(self.counts, users, k, exclude, popularity_order())


class MllibAls(Recommender):
    """Spark MLlib ALS, explicit (ratings) or implicit (Hu, Koren, Volinsky 2008: confidence
    1 + alpha * value). A user or item absent from train gets ``fill`` (the train mean for
    explicit, 0 = no preference for implicit) instead of NaN."""

    def __init__(self, model, implicit: bool, fill: float, seed: int):
        self.model, self.fill, self.seed = model, fill, seed
        self.name = "als_implicit" if implicit else "als_explicit"
        self.predicts_ratings = not implicit

    @classmethod
    def fit(cls, train: DataFrame, implicit: bool, rank: int, reg: float, alpha: float, max_iter: int,
            blocks: int, seed: int) -> "MllibAls":
        als = ALS(userCol=USER_IDX, itemCol=ITEM_IDX, ratingCol=LABEL, rank=rank, regParam=reg, alpha=alpha,
                  maxIter=max_iter, implicitPrefs=implicit, numUserBlocks=blocks, numItemBlocks=blocks,
                  coldStartStrategy="nan", seed=seed)
        fill = 0.0 if implicit else float(train.agg(F.avg(LABEL)).first()[0])
        return cls(als.fit(train), implicit, fill, seed)

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        pred = F.col("prediction").cast("double")
        return (self.model.transform(pairs)
                .select(*pairs.columns, F.when(F.isnan(pred) | pred.isNull(), F.lit(self.fill)).otherwise(pred).alias(SCORE)))

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        # recommendForUserSubset cannot skip excluded items, so ask each user for k + (its
        # excluded items) and drop them after. Users are grouped by that depth rounded up to a
        # power of two: a few calls, and the work stays about sum over users of (k + excluded).
        # Materialised once for the bucket list and every subset; a checkpoint rather than cache():
        # both ALS baselines build this same plan, and caching an equal plan twice makes Spark warn.
        needed = _excluded_counts(users, exclude).withColumn(
            "_bucket", F.when(F.col("_excluded") > 0, F.ceil(F.log2(F.col("_excluded") + 1))).otherwise(0).cast("int")
        ).localCheckpoint()
        parts = []
        for (bucket,) in needed.select("_bucket").distinct().collect():  # at most ~40 distinct values
            depth = k + 2 ** bucket
            subset = needed.where(F.col("_bucket") == bucket).select(USER_IDX)
            recs = self.model.recommendForUserSubset(subset, depth)
            parts.append(recs.select(USER_IDX, F.explode("recommendations").alias("r"))
                         .select(USER_IDX, F.col(f"r.{ITEM_IDX}").cast("long").alias(ITEM_IDX),
                                 F.col("r.rating").cast("double").alias(SCORE)))
        if not parts:
            return users.sparkSession.createDataFrame([], f"{USER_IDX} long, {ITEM_IDX} long, {SCORE} double, {RANK} int")
        recs = parts[0]
        for p in parts[1:]:
            recs = recs.unionByName(p)
        allowed = recs.join(exclude, [USER_IDX, ITEM_IDX], "left_anti")
        ranked = rank_by_score(allowed, self.seed, list_cols=[USER_IDX])
        return ranked.where(F.col(RANK) <= k).select(USER_IDX, ITEM_IDX, SCORE, RANK)
