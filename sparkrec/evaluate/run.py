"""The evaluate job: the model (or a top-K table) and the baselines, same split, same protocols.

Run order: resolve the prepared data -> load what is evaluated (checks it was built from this
data) -> test positives, known items, sampled negatives -> fit the baselines on train -> per
recommender: RMSE/MAE, sampled ranking, full ranking -> write ``metrics.json`` and
``report.html`` to a new version of ``<lake>/reports/<name>/`` -> switch the pointer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import lake
from sparkrec.columns import ITEM_IDX, LABEL, PREDICTION, RANK, USER_IDX
from sparkrec.config import Config, dump_config
from sparkrec.data.prepare import load_manifest
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.baselines import GlobalMean, MllibAls, Popularity, Recommender, UserItemBias
from sparkrec.evaluate.ease import Ease
from sparkrec.evaluate.candidates import (
    full_ranking_lists, interactions, relevant_test_pairs, sample_negatives, sampled_lists,
)
from sparkrec.evaluate.cold_item_protocol import evaluate_cold_items
from sparkrec.evaluate.paired_differences import (
    ABSOLUTE_ERROR, SQUARED_ERROR, paired_mean_differences, rating_differences,
)
from sparkrec.evaluate.ranking_metrics import (
    LIST_ID, average_users, catalog_coverage, metric_names, per_list_metrics, per_user_means, rank_by_score,
)
from sparkrec.evaluate.rating_metrics import rating_metrics
from sparkrec.evaluate.report import render_report
from sparkrec.evaluate.subjects import TopKTable, TrainedModel
from sparkrec.explain.store import explanation_digest
from sparkrec.models.store import read_meta

SPLITS = ("train", "validation", "test")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
# Meaningless on implicit data (every label is 1): a rating model has nothing to fit.
RATING_BASELINES = ("global_mean", "bias", "als_explicit")

DEFINITIONS = [
    "Metrics are computed per list, averaged over each user's lists, then over users; users without a "
    "relevant test item are left out (counted under counts).",
    "hr@K: 1 if a relevant item is in the top K. precision@K: hits@K / K (K even when the list is shorter). "
    "recall@K: hits@K / relevant items.",
    "ndcg@K: binary gain, DCG = sum 1/log2(rank+1) over relevant ranks <= K, divided by the ideal DCG of "
    "min(K, relevant) items. map@K: sum of precision@rank at relevant ranks <= K, / min(K, relevant).",
    "mrr: 1 / rank of the first relevant item (0 if none in the list; full ranking lists stop at max K, "
    "so there it is MRR@maxK). coverage@K: distinct items in any top K / catalog size.",
    "Ties in score are broken by a seeded hash of (user, item), blind to the label (the model's full "
    "ranking uses the score engine's order). RMSE/MAE: over every test row with a rating.",
]


@dataclass(frozen=True)
class EvalData:
    """The shared inputs every recommender is judged on (built once, cached)."""

    test: DataFrame             # the held-out split's rows (test, or validation for tuning)
    all_positives: DataFrame    # user_idx, item_idx: relevant held-out pairs, cold items included
    positives: DataFrame        # user_idx, item_idx: relevant held-out pairs the protocols rank
    known: DataFrame            # user_idx, item_idx: excluded from full ranking
    full_lists: DataFrame       # user_idx, list_id, num_relevant
    sampled: DataFrame          # user_idx, list_id, num_relevant (one list per positive)
    candidates: DataFrame       # user_idx, list_id, item_idx: positive + negatives of each list
    targets: DataFrame          # user_idx, list_id, target: negatives each sampled list should get
    num_items: int
    ks: list[int]
    seed: int

    def unpersist(self) -> None:
        for df in (self.all_positives, self.positives, self.known, self.full_lists, self.sampled,
                   self.candidates, self.targets):
            df.unpersist()


def read_splits(spark: SparkSession, prepared: dict) -> dict[str, DataFrame]:
    return {name: spark.read.parquet(info["path"]) for name, info in prepared["splits"].items()
            if name in SPLITS and info.get("rows", 0) > 0}


def _pairs_of(splits: dict[str, DataFrame], names) -> DataFrame:
    chosen = [splits[n] for n in names if n in splits]
    if not chosen:
        return next(iter(splits.values())).select(USER_IDX, ITEM_IDX).limit(0)
    return interactions(*chosen)


def build_eval_data(splits: dict[str, DataFrame], held_out: str, exclude_splits: list[str], cfg: Config,
                    prepared: dict) -> EvalData:
    """The positives, known items, ranking lists and sampled negatives of the ``held_out`` split
    (``test``, or ``validation`` to tune without looking at test), cached."""
    e, implicit = cfg.evaluate, prepared["implicit"]
    train, test = splits["train"], splits[held_out]
    known = _pairs_of(splits, exclude_splits).cache()
    threshold = None if implicit else e.relevance_threshold
    all_positives = relevant_test_pairs(test, known, threshold).cache()
    # Held-out cold items (prepare.split.cold_item_fraction) are judged by the cold-item protocol
    # alone: in the others they would only measure that untrained items cannot be ranked.
    warm_only = bool(prepared.get("cold_items"))
    positives = (all_positives.join(train.select(ITEM_IDX).distinct(), ITEM_IDX, "left_semi").cache() if warm_only
                 else all_positives)  # (cached already: caching it again only makes Spark warn)
    sampled = sampled_lists(positives)
    negatives, targets = sample_negatives(sampled, _pairs_of(splits, SPLITS), prepared["num_items"],
                                          e.num_negatives, cfg.seed)
    return EvalData(
        test=test, all_positives=all_positives, positives=positives, known=known,
        full_lists=full_ranking_lists(positives).cache(), sampled=sampled.drop(ITEM_IDX).cache(),
        candidates=sampled.select(USER_IDX, LIST_ID, ITEM_IDX).unionByName(negatives).cache(),
        targets=targets, num_items=prepared["num_items"], ks=sorted(set(e.k)), seed=cfg.seed)


def fit_baselines(train: DataFrame, cfg: Config, prepared: dict) -> tuple[list[Recommender], list[str]]:
    """The configured baselines fitted on ``train``, and notes on those skipped."""
    e, implicit = cfg.evaluate, prepared["implicit"]
    fitted, skipped = [], []
    for name in e.baselines:
        if implicit and name in RATING_BASELINES:
            skipped.append(f"{name}: skipped on implicit data (every label is 1, nothing to predict)")
            continue
        if name == "global_mean":
            fitted.append(GlobalMean.fit(train))
        elif name == "bias":
            fitted.append(UserItemBias.fit(train, e.bias_reg, tuple(prepared["rating_range"]), cfg.seed))
        elif name == "popularity":
            fitted.append(Popularity.fit(train))
        elif name == "ease":
            items = train.select(ITEM_IDX).distinct().count()
            if items > e.ease_max_items:
                skipped.append(f"ease: skipped, {items} items with training interactions exceed "
                               f"evaluate.ease_max_items={e.ease_max_items} (it inverts an items x items matrix)")
                continue
            fitted.append(Ease.fit(train, e.ease_lambda))
        else:
            fitted.append(MllibAls.fit(train, name == "als_implicit", e.als_rank, e.als_reg, e.als_alpha,
                                       e.als_max_iter, e.als_blocks, cfg.seed))
    return fitted, skipped


def evaluate_recommender(rec: Recommender, data: EvalData, implicit: bool,
                         protocols: Sequence[str] = ("rating", "sampled", "full")) -> tuple[dict, dict[str, DataFrame]]:
    """Every one of ``protocols`` that applies to ``rec``.

    Returns
    -------
    (dict, dict)
        The metrics: ``rating`` (``rmse``, ``mae``, ``rows``) or None, ``sampled`` and ``full``
        (metric -> value, ``users``, ``lists``; full adds ``coverage@K``) or None, ``seconds``.
        And what they average, cached, per protocol that applied: ``rating`` (``user_idx``,
        ``item_idx``, ``label``, ``prediction``, ``squared_error``, ``absolute_error`` per test row), ``sampled`` and ``full``
        (:func:`per_user_means`); unpersist them when done (:func:`unpersist_units`).
    """
    started = time.perf_counter()
    out: dict = {"rating": None, "sampled": None, "full": None}
    units: dict[str, DataFrame] = {}
    if "rating" in protocols and rec.predicts_ratings and not implicit:
        error = F.col(PREDICTION).cast("double") - F.col(LABEL).cast("double")
        units["rating"] = (rec.rating_predictions(data.test.select(USER_IDX, ITEM_IDX, LABEL))
                           .select(USER_IDX, ITEM_IDX, LABEL, PREDICTION, (error * error).alias(SQUARED_ERROR),
                                   F.abs(error).alias(ABSOLUTE_ERROR)).cache())
        out["rating"] = rating_metrics(units["rating"])
    if "sampled" in protocols and rec.ranks and rec.scores_pairs:
        ranked = rank_by_score(rec.score_pairs(data.candidates), data.seed)
        hits = ranked.where(F.col(ITEM_IDX) == F.col(LIST_ID)).select(USER_IDX, LIST_ID, RANK)
        units["sampled"] = per_user_means(per_list_metrics(data.sampled, hits, data.ks), data.ks).cache()
        out["sampled"] = average_users(units["sampled"], data.ks)
    if "full" in protocols and rec.ranks:
        top = rec.top_k(data.full_lists.select(USER_IDX), max(data.ks), data.known).cache()
        hits = top.join(data.positives, [USER_IDX, ITEM_IDX]).select(USER_IDX, F.lit(0).cast("long").alias(LIST_ID), RANK)
        units["full"] = per_user_means(per_list_metrics(data.full_lists, hits, data.ks), data.ks).cache()
        out["full"] = {**average_users(units["full"], data.ks), **catalog_coverage(top, data.ks, data.num_items)}
        top.unpersist()
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out, units


def unpersist_units(units: dict[str, DataFrame]) -> None:
    for df in units.values():
        df.unpersist()


def model_minus_baseline(model: tuple[dict, dict], baseline: tuple[dict, dict], ks: list[int]) -> dict:
    """The model's metrics minus the baseline's with 95% intervals, paired on the same users (test
    rows for RMSE/MAE), for each protocol both were judged by (see ``paired_differences``)."""
    (ours, our_units), (theirs, their_units) = model, baseline
    out = {}
    if "rating" in our_units and "rating" in their_units:
        out["rating"] = rating_differences(our_units["rating"], their_units["rating"], [USER_IDX, ITEM_IDX],
                                           ours["rating"]["rmse"], theirs["rating"]["rmse"])
    for protocol in ("sampled", "full"):
        if protocol in our_units and protocol in their_units:
            out[protocol] = paired_mean_differences(our_units[protocol], their_units[protocol], [USER_IDX],
                                                    metric_names(ks))
    return out


def _counts(test: DataFrame, known: DataFrame, threshold, data: EvalData, targets: DataFrame, num_negatives: int) -> dict:
    relevant = F.lit(True) if threshold is None else F.col(LABEL) >= threshold
    flagged = test.join(known.withColumn("_known", F.lit(True)), [USER_IDX, ITEM_IDX], "left")
    row = flagged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(~relevant, 1).otherwise(0)).alias("below"),
        F.sum(F.when(relevant & F.col("_known").isNotNull(), 1).otherwise(0)).alias("known"),
        F.countDistinct(USER_IDX).alias("users")).first()
    lists = targets.agg(F.count(F.lit(1)).alias("lists"),
                        F.sum(F.when(F.col("target") < num_negatives, 1).otherwise(0)).alias("short"),
                        F.sum("target").alias("negatives")).first()
    evaluated = data.full_lists.count()
    return {
        "test_rows": row["rows"],
        "test_rows_below_relevance_threshold": row["below"] or 0,
        "test_rows_already_known": row["known"] or 0,
        "relevant_test_pairs": data.positives.count(),
        "test_users": row["users"],
        "users_evaluated": evaluated,
        "test_users_without_relevant_items": row["users"] - evaluated,
        "sampled_lists": lists["lists"],
        "sampled_lists_short": lists["short"] or 0,
        "sampled_negatives": lists["negatives"] or 0,
    }


def _history(subject) -> list:
    if isinstance(subject, TrainedModel):
        return subject.meta.get("history") or []
    try:
        return read_meta(subject.manifest["model_version"]).get("history") or []
    except (SparkrecError, KeyError, TypeError):  # the model version was pruned since scoring
        return []


def run_evaluate(spark: SparkSession, cfg: Config) -> dict:
    """Evaluate ``models/<name>`` (or ``scores/<name>`` with ``evaluate.source=scores``) against
    the baselines and publish ``<lake>/reports/<name>/``.

    Returns
    -------
    dict
        The published ``metrics.json``: ``name``, ``created_at``, ``subject`` (what was evaluated),
        ``data`` (prepared version, data hash, implicit, sizes), ``k``, ``protocols`` {``full``,
        ``sampled``, ``cold_items``: description and settings}, ``counts``, ``results`` {recommender:
        ``role`` (model | scores | baseline), ``rating``, ``sampled``, ``full``, ``seconds``, ``notes``},
        ``cold_items`` (see ``sparkrec.evaluate.cold_item_protocol.evaluate_cold_items``),
        ``explanations`` (a digest of ``explanations/<name>/``, see
        ``sparkrec.explain.store.explanation_digest``; null when none are published),
        ``skipped_baselines``, ``definitions``, ``config``, ``report`` (URI of report.html) and
        ``version`` (the report's folder URI).

    Raises
    ------
    SparkrecError
        Nothing prepared, no test rows, nothing published under the name, or a model/table built
        from other prepared data.
    """
    e = cfg.evaluate
    lake_uri = lake.normalize_uri(cfg.lake)
    prepared = load_manifest(lake_uri)
    splits = read_splits(spark, prepared)
    if e.split not in splits or "train" not in splits:
        raise SparkrecError(f"prepared data {prepared['version']} has no train or no {e.split} rows "
                            f"(splits: { {n: s.get('rows') for n, s in prepared['splits'].items()} }); "
                            f"set prepare.split so that both are non-empty and re-run jobs/prepare_data.py")
    train, test = splits["train"], splits[e.split]
    implicit, num_items, ks = prepared["implicit"], prepared["num_items"], sorted(set(e.k))
    if e.source == "scores":
        subject = TopKTable.load(spark, lake_uri, cfg.name, prepared)
        exclude_splits = list(subject.manifest.get("exclude_splits") or [])
    else:
        # A history model reads the user's interactions before the held-out split.
        before = ["train", "validation"] if e.split == "test" else ["train"]
        subject = TrainedModel.load(spark, lake_uri, cfg.name, prepared, splits, before)
        if subject.meta.get("refit") and e.split == "validation":
            raise SparkrecError(f"model {cfg.name!r} was refit on train + validation (train.refit=true), so the "
                                f"validation split cannot judge it; evaluate it on test, or train without refit")
        # Evaluating on validation: its own pairs are the positives, not known items.
        exclude_splits = [name for name in e.exclude_splits if name != e.split]

    # -- what every recommender is judged on ---------------------------------------------------
    threshold = None if implicit else e.relevance_threshold
    data = build_eval_data(splits, e.split, exclude_splits, cfg, prepared)
    counts = _counts(test, data.known, threshold, data, data.targets, e.num_negatives)

    # -- the subject, then the baselines -------------------------------------------------------
    results = {}
    role = "scores" if e.source == "scores" else "model"
    judged = evaluate_recommender(subject, data, implicit)
    results[subject.name] = {"role": role, **judged[0], "notes": []}
    if isinstance(subject, TopKTable) and subject.depth < max(ks):
        results[subject.name]["notes"].append(
            f"{subject.name}: the table holds {subject.depth} items per user, so metrics at K > {subject.depth} "
            f"see at most {subject.depth} (precision@K still divides by K)")
    # Baselines learn from what the model learned from: train, or train + validation when it was refit.
    refit = isinstance(subject, TrainedModel) and subject.meta.get("refit") and "validation" in splits
    fit_on = train.unionByName(splits["validation"]) if refit else train
    baselines, skipped = fit_baselines(fit_on, cfg, prepared)
    for rec in baselines:
        name = rec.name if rec.name not in results else f"{rec.name} (baseline)"
        baseline = evaluate_recommender(rec, data, implicit)
        results[name] = {"role": "baseline", **baseline[0], "model_minus_baseline": model_minus_baseline(judged, baseline, ks),
                         "notes": []}
        unpersist_units(baseline[1])
    unpersist_units(judged[1])
    cold = evaluate_cold_items(subject, train, data.all_positives, data.known, num_items, ks)

    # -- publish -------------------------------------------------------------------------------
    root = lake.join(lake_uri, "reports", cfg.name)
    with lake.publishing(root, pointer=METRICS_FILE) as staged:
        metrics = {
            "name": cfg.name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "subject": subject.describe(),
            "data": {"prepared_version": prepared["version"], "data_hash": prepared["data_hash"], "implicit": implicit,
                     "num_users": prepared["num_users"], "num_items": num_items,
                     "relevance_threshold": threshold},
            "k": ks,
            "split": e.split,
            "protocols": {
                "full": {"description": f"Each user with a relevant {e.split} item ranks every item with training "
                                        f"interactions except its {'+'.join(exclude_splits) or 'no'} interactions; "
                                        f"lists cut at {max(ks)}.",
                         "exclude_splits": exclude_splits, "depth": max(ks)},
                "sampled": {"description": f"Each relevant {e.split} item is ranked among {e.num_negatives} items "
                                           f"drawn uniformly (seed {cfg.seed}) from those the user never interacted "
                                           f"with in any split; distinct within a list (NCF protocol).",
                            "num_negatives": e.num_negatives, "seed": cfg.seed},
                "cold_items": {"description": "Each user with training interactions and a relevant test item among the "
                                              "items without training interactions (cold items) ranks every cold item "
                                              "except its known interactions; popularity can only order them at random "
                                              "(all have zero training interactions).",
                               "depth": max(ks), "excluded_from_other_protocols": bool(prepared.get("cold_items"))},
            },
            "counts": counts,
            "results": results,
            "cold_items": cold,
            "explanations": explanation_digest(spark, lake_uri, cfg.name),
            "skipped_baselines": skipped,
            "definitions": DEFINITIONS,
            "config": dump_config(cfg),
            "report": staged.path(REPORT_FILE),
        }
        lake.write_bytes_atomic(staged.path(REPORT_FILE), render_report(metrics, _history(subject)).encode("utf-8"))
        lake.write_json_atomic(staged.path(METRICS_FILE), metrics)
        staged.manifest = metrics
    data.unpersist()
    return {**metrics, "version": staged.version}
