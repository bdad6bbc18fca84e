"""What is evaluated, behind the baselines' interface: a trained model or a score-job top-K table.

The model is scored only through ``sparkrec.score`` (the functions the score job uses), so the
evaluated numbers are those of the served model, and any model the score job can load is
evaluable without code here.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import ITEM_ID, ITEM_IDX, PREDICTION, RANK, SCORE, USER_ID, USER_IDX
from sparkrec.data.index_ids import read_vocab
from sparkrec.data.sequences import user_histories
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.baselines import Recommender
from sparkrec.models.block_scoring import is_history_model
from sparkrec.models.store import check_same_data, read_meta, resolve_model
from sparkrec.score.pairs import score_index_pairs
from sparkrec.score.publish import POINTER, scores_root
from sparkrec.score.topk import top_k_indices

RESCORE = "retrain (jobs/train_ncf.py) and re-score on the current prepared data before evaluating"


class TrainedModel(Recommender):
    """A published model version, scored by ``sparkrec.score``.

    Rankings use the raw score (a logit, or the value before the rating mapping: monotone in the
    prediction); RMSE/MAE use the user-facing ``prediction``. Full-ranking candidates are the
    items with training interactions, as the score job serves by default: the other items'
    embeddings never left their initialisation, and no baseline can rank them either.
    """

    def __init__(self, spark: SparkSession, name: str, model_uri: str, meta: dict, trained_items: DataFrame,
                 histories: DataFrame | None = None):
        self.spark, self.name, self.model_uri, self.meta = spark, name, model_uri, meta
        self.trained_items, self.histories = trained_items, histories
        self.predicts_ratings = not meta["implicit"]

    @classmethod
    def load(cls, spark: SparkSession, lake_uri: str, name: str, prepared: dict, splits: dict[str, DataFrame],
             known: list[str]) -> "TrainedModel":
        """The published model ``name``; ``splits`` are the prepared splits by name and ``known``
        the ones whose interactions the user had before the held-out one (a history model reads
        them as the user's history)."""
        uri = resolve_model(lake_uri, name)
        meta = read_meta(uri)
        check_same_data(f"model {name!r} ({uri})", meta["data_hash"], prepared, fix=RESCORE)
        trained_on = ["train", "validation"] if meta.get("refit") else ["train"]
        trained = [splits[s].select(ITEM_IDX) for s in trained_on if s in splits]
        items = trained[0].unionByName(trained[1]) if len(trained) > 1 else trained[0]
        histories = None
        if is_history_model(meta["model"]):
            before = [splits[s] for s in known if s in splits]
            source = before[0]
            for more in before[1:]:
                source = source.unionByName(more)
            histories = user_histories(source, meta["model"]["max_len"]).cache()
        return cls(spark, name, uri, meta, items.distinct(), histories)

    def describe(self) -> dict:
        return {"kind": "model", "name": self.name, "version": self.model_uri, "model": self.meta.get("model"),
                "best_epoch": self.meta.get("best_epoch"), "metric": self.meta.get("metric"),
                "loss": self.meta.get("loss"), "refit": self.meta.get("refit")}

    def score_pairs(self, pairs: DataFrame) -> DataFrame:
        return score_index_pairs(self.spark, self.model_uri, pairs, self.histories).drop(PREDICTION)

    def rating_predictions(self, pairs: DataFrame) -> DataFrame:
        return score_index_pairs(self.spark, self.model_uri, pairs, self.histories).drop(SCORE)

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        # Ranks as the score engine delivers them (ties broken by torch.topk).
        return top_k_indices(self.spark, self.model_uri, users, k, exclude, items=self.trained_items,
                             histories=self.histories)


class TopKTable(Recommender):
    """The published ``scores/<name>/`` table: recommendations as served, in original IDs.

    Only the full-ranking protocol applies (a top-K list holds no scores for sampled negatives
    and no ratings); its depth is the score job's ``k``, so metrics at a larger K see at most
    that many items. The items the table excluded are its manifest's ``exclude_splits``.
    """

    scores_pairs = False

    def __init__(self, name: str, table: DataFrame, manifest: dict):
        self.name, self.table, self.manifest = name, table, manifest

    @classmethod
    def load(cls, spark: SparkSession, lake_uri: str, name: str, prepared: dict) -> "TopKTable":
        root = scores_root(lake_uri, name)
        manifest = lake.resolve(root, POINTER)
        if manifest.get("mode") != "top_k":
            raise SparkrecError(f"{root} holds a {manifest.get('mode')!r} table, not top-K recommendations; "
                                f"run jobs/score.py without score.pairs")
        check_same_data(f"score table {root}", manifest["data_hash"], prepared, fix=RESCORE)
        users = read_vocab(spark, prepared["paths"]["user_vocab"], USER_ID, USER_IDX)
        items = read_vocab(spark, prepared["paths"]["item_vocab"], ITEM_ID, ITEM_IDX)
        # Inner joins are exact here: the table was built from this vocabulary (same data hash).
        table = (spark.read.parquet(manifest["version"]).join(users, USER_ID).join(items, ITEM_ID)
                 .select(USER_IDX, ITEM_IDX, F.col(SCORE).cast("double").alias(SCORE), RANK))
        return cls(name, table, manifest)

    @property
    def depth(self) -> int:
        return int(self.manifest["k"])

    def describe(self) -> dict:
        m = self.manifest
        return {"kind": "scores", "name": self.name, "version": m["version"], "model_version": m.get("model_version"),
                "k": m.get("k"), "exclude_splits": m.get("exclude_splits")}

    def top_k(self, users: DataFrame, k: int, exclude: DataFrame) -> DataFrame:
        # ``exclude`` is the table's own choice (see the class doc); nothing is re-filtered, so
        # an excluded item the table still served counts as a miss, as a user would see it.
        return self.table.join(users.select(USER_IDX).distinct(), USER_IDX).where(F.col(RANK) <= k)
