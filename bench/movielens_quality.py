"""sparkrec against tuned Spark ALS, EASE and popularity on MovieLens ml-latest-small, on the exact split
files of ``../shared/data/ml-latest-small-splits`` (see its README), scored by an independent scorer
here, with paired 95% intervals.

Protocols (the split files' README):

- explicit: RMSE (and MAE) on ``explicit/test.parquet``; a test rating the model cannot predict (an
  item without training ratings, for a recommender without a user-only prediction) gets the train
  mean;
- implicit: each user's test item ranked among the 99 negatives of ``implicit/negatives.parquet``
  ("sampled") and among every item not in the user's train interactions ("full"), HR@10 and
  NDCG@10; an item a recommender cannot score ranks below every item it can (it is never a hit).

How settings are chosen, never on test:

1. the train file is split again: implicit, each user's latest train interaction (ties: the larger
   item id last, as the test file) is validation; explicit, 10% of the train ratings
   (``numpy.random.default_rng(1)``, file order); test rows go in as ``test``
   (``prepare.split.kind=given``);
2. the settings come from the shipped ``conf/movielens-<setting>.yaml`` (model, loss, refit and
   the baselines' tuned settings); ``--tune`` first runs ``jobs/tune.py``'s search of
   ``--targets`` (model, ALS, EASE) on that validation split on top of it, optionally written to
   ``--write-conf``;
3. final: the model is refit on train + validation (``train.refit``, the epochs tuning chose);
   ALS and EASE are fitted on the same rows with their tuned settings; all are scored on test once.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/movielens_quality.py [--settings implicit explicit] \\
        [--tune --trials N --write-conf conf/movielens-implicit.yaml]

``--dev`` never opens the test file: the "test" rows are carved from the train file by the split
files' own rules (and each dev user's 99 negatives drawn as the README draws them), and validation
from what is left. Recipe changes are compared there, over several ``seed=N``, before test is read.

Positional ``dotted.key=value`` overrides go before ``--targets``. The data folders are only read;
everything is written under --lake (a scratch folder). The last numbers: ``bench/README.md``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from sparkrec.columns import INDEX, ITEM_IDX, ORIGINAL_ID, USER_IDX
from sparkrec.config import load_config, with_overrides
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.evaluate.baselines import MllibAls, Popularity, UserItemBias
from sparkrec.evaluate.ease import Ease
from sparkrec.evaluate.paired_differences import Z95
from sparkrec.evaluate.subjects import TrainedModel
from sparkrec.session import get_spark
from sparkrec.train.launch import run_training
from sparkrec.tune.search import run_tune

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = os.path.join(HERE, "..", "..", "shared", "data", "ml-latest-small-splits")
K = 10
ENVIRONMENT = ["prepare.num_files=2", "spark.log_level=ERROR", "spark.shuffle_partitions=4",
               "train.threads_per_worker=2", "train.log_every_steps=1000000", "evaluate.als_blocks=2"]
RIVALS = {"implicit": ["als_implicit", "ease", "popularity"], "explicit": ["als_explicit", "bias"]}


def _latest_per_user(log: pd.DataFrame) -> pd.Index:
    """Each user's latest interaction (ties: the larger item id last, as the test file)."""
    return log.sort_values(["user_id", "timestamp", "item_id"]).groupby("user_id").tail(1).index


def _held_out(setting: str, log: pd.DataFrame, seed: int) -> pd.Index:
    if setting == "implicit":
        return _latest_per_user(log)
    return log.index[np.random.default_rng(seed).random(len(log)) < 0.1]


def split_files(setting: str, dev: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(train, test, negatives) of the protocol. With ``dev`` the test file is never opened: the
    "test" rows are carved from the train file by the split files' own rules (implicit: each
    user's latest train interaction; explicit: 10% with ``default_rng(2)``), and each dev user's 99
    negatives are drawn uniformly (seeded) from the train file's items, never one the user has."""
    train = pd.read_parquet(os.path.join(SPLITS, setting, "train.parquet"))
    if not dev:
        test = pd.read_parquet(os.path.join(SPLITS, setting, "test.parquet"))
        negatives = (pd.read_parquet(os.path.join(SPLITS, "implicit", "negatives.parquet"))
                     if setting == "implicit" else None)
        return train, test, negatives
    held = _held_out(setting, train, seed=2)
    test, train = train.loc[held], train.drop(held).reset_index(drop=True)
    if setting == "explicit":
        return train, test.reset_index(drop=True), None
    rng = np.random.default_rng(0)
    catalogue = np.sort(pd.concat([train, test]).item_id.unique())
    had = pd.concat([train, test]).groupby("user_id").item_id.agg(set)
    rows = []
    for user, item in zip(test.user_id, test.item_id):
        pool = catalogue[~np.isin(catalogue, list(had[user]))]
        rows.append((user, item, rng.choice(pool, 99, replace=False)))
    return train, test.reset_index(drop=True), pd.DataFrame(rows, columns=["user_id", "item_id", "negatives"])


def raw_log(setting: str, train: pd.DataFrame, test: pd.DataFrame, out: str) -> str:
    """The split files as one Parquet log with a ``split`` column, validation carved from train."""
    held = _held_out(setting, train, seed=1)
    train = train.assign(split="train")
    train.loc[held, "split"] = "validation"
    test = test.assign(split="test")
    path = os.path.join(out, f"raw-{setting}")
    os.makedirs(path, exist_ok=True)
    pd.concat([train, test]).to_parquet(os.path.join(path, "log.parquet"), index=False)
    return path


def base_config(args, setting: str, conf: str | None, extra: list[str], train: pd.DataFrame, test: pd.DataFrame):
    lake = os.path.join(args.lake, setting)
    implicit = ["prepare.implicit_threshold=0.5"] if setting == "implicit" else []  # every rating is an interaction
    overrides = [f"lake={lake}", f"name=movielens-{setting}", f"input.path={raw_log(setting, train, test, args.lake)}",
                 "input.format=parquet", "input.columns.split=split", "prepare.split.kind=given",
                 "prepare.rating_min=0.5", *implicit, *ENVIRONMENT, *extra]
    return load_config(conf, overrides)


# -- the independent scorer -------------------------------------------------------------------
def _vocab(spark, path: str) -> dict:
    table = spark.read.parquet(path).select(ORIGINAL_ID, INDEX).toPandas()
    return dict(zip(table[ORIGINAL_ID].astype(str), table[INDEX].astype(np.int64)))


def _ndcg(rank: np.ndarray) -> np.ndarray:
    """Per user: 1 / log2(rank + 1) within the top K (rank is 1-based, 0 = not ranked)."""
    hit = (rank >= 1) & (rank <= K)
    return np.where(hit, 1.0 / np.log2(np.where(hit, rank, 1) + 1.0), 0.0)


def ranking_units(spark, rec, users: dict, items: dict, known, test: pd.DataFrame, negatives: pd.DataFrame) -> pd.DataFrame:
    """Per test user: full and sampled HR@10 / NDCG@10 of ``rec``."""
    idx = pd.DataFrame({"user_id": test.user_id.astype(str), "item_id": test.item_id.astype(str)})
    idx["user_idx"] = idx.user_id.map(users)
    idx["item_idx"] = idx.item_id.map(items)
    top = rec.top_k(spark.createDataFrame(idx[["user_idx"]].dropna().astype(np.int64)), K, known).toPandas()
    ranked = top.merge(idx.dropna().astype({"user_idx": np.int64, "item_idx": np.int64}), on=["user_idx", "item_idx"])
    full_rank = idx.user_idx.map(dict(zip(ranked.user_idx, ranked["rank"]))).fillna(0).to_numpy()
    # Sampled: the test item and its 99 negatives; unknown items score -inf (never above a known one).
    rows = []
    for user, positive, negs in zip(negatives.user_id.astype(str), negatives.item_id.astype(str), negatives.negatives):
        for pos, item in enumerate([positive, *map(str, negs)]):
            rows.append((users.get(user), items.get(item), pos))
    cand = pd.DataFrame(rows, columns=["user_idx", "item_idx", "position"]).dropna().astype(np.int64)
    scored = rec.score_pairs(spark.createDataFrame(cand)).toPandas()
    scores = np.full((len(negatives), 100), -np.inf)
    user_row = {u: r for r, u in enumerate(negatives.user_id.astype(str).map(users))}
    scores[scored.user_idx.map(user_row).to_numpy(), scored.position.to_numpy()] = scored.score.to_numpy()
    positive = scores[:, 0]
    beaten = (scores[:, 1:] >= positive[:, None]).sum(1)
    sampled_rank = np.where(np.isfinite(positive), beaten + 1, 0)
    sampled_rank = pd.Series(sampled_rank, index=negatives.user_id.astype(str)).reindex(idx.user_id).to_numpy()
    return pd.DataFrame({"user_id": idx.user_id, "full hr@10": ((full_rank >= 1) & (full_rank <= K)).astype(float),
                         "full ndcg@10": _ndcg(full_rank),
                         "sampled hr@10": ((sampled_rank >= 1) & (sampled_rank <= K)).astype(float),
                         "sampled ndcg@10": _ndcg(sampled_rank)}).set_index("user_id")


def rating_units(spark, rec, users: dict, items: dict, test: pd.DataFrame, mean: float, history_model: bool) -> pd.DataFrame:
    """Per test row: squared and absolute error of ``rec``'s rating prediction."""
    pairs = pd.DataFrame({"row": np.arange(len(test)), "user_idx": test.user_id.astype(str).map(users),
                          "item_idx": test.item_id.astype(str).map(items)})
    # Unknown items: -1, which the history model reads as "no item part" (its user baseline) and
    # the baselines as an unknown item (their own fallback).
    pairs["item_idx"] = pairs.item_idx.fillna(-1)
    pairs = pairs.dropna().astype(np.int64)
    if not history_model:
        pairs = pairs[pairs.item_idx >= 0]
    predicted = rec.rating_predictions(spark.createDataFrame(pairs)).toPandas()
    prediction = np.full(len(test), mean)
    values = predicted.prediction.to_numpy(dtype=float)
    ok = np.isfinite(values)
    prediction[predicted.row.to_numpy()[ok]] = values[ok]
    error = prediction - test.rating.to_numpy()
    return pd.DataFrame({"squared error": error ** 2, "absolute error": np.abs(error)})


def paired(ours: pd.Series, theirs: pd.Series) -> tuple[float, float, float]:
    diff = (ours - theirs).to_numpy()
    half = Z95 * diff.std(ddof=1) / math.sqrt(len(diff))
    return diff.mean(), diff.mean() - half, diff.mean() + half


# -- the run ----------------------------------------------------------------------------------
def fit_rivals(setting: str, fit_on, cfg, prepared: dict) -> dict:
    e = cfg.evaluate
    if setting == "implicit":
        return {"als_implicit": MllibAls.fit(fit_on, True, e.als_rank, e.als_reg, e.als_alpha, e.als_max_iter,
                                             e.als_blocks, cfg.seed),
                "ease": Ease.fit(fit_on, e.ease_lambda), "popularity": Popularity.fit(fit_on)}
    return {"als_explicit": MllibAls.fit(fit_on, False, e.als_rank, e.als_reg, e.als_alpha, e.als_max_iter,
                                         e.als_blocks, cfg.seed),
            "bias": UserItemBias.fit(fit_on, e.bias_reg, tuple(prepared["rating_range"]), cfg.seed)}


def run(args, setting: str) -> bool:
    spark = None
    seconds = {}
    train_rows, test, negatives = split_files(setting, args.dev)
    cfg = base_config(args, setting, args.conf.get(setting), args.overrides, train_rows, test)
    spark = get_spark(cfg.spark)
    started = time.perf_counter()
    run_prepare(spark, cfg)
    seconds["prepare"] = time.perf_counter() - started
    if args.tune:
        started = time.perf_counter()
        targets = [t for t in args.targets if setting == "implicit" or t != "ease"]  # EASE ranks; no ratings
        tuning = with_overrides(cfg, [*([f"tune.trials={args.trials}"] if args.trials else []),
                                      f"tune.targets=[{','.join(targets)}]",
                                      *([f"tune.output={args.write_conf}"] if args.write_conf else [])])
        result = run_tune(spark, tuning)
        seconds["tune"] = time.perf_counter() - started
        print(f"\n## {setting}: tuning on validation")
        for row in result["trials"]:
            print(f"  {row['target']} #{row['trial']} {row['state']} {row['metric']}={row['value']} "
                  f"epochs={row['best_epoch']} {row['params']} ({row['seconds']}s)")
        for target, best in result["best"].items():
            print(f"chosen {target}: {best['metric']} {best['value']:.4f} {best['params']}")
        cfg = with_overrides(cfg, result["overrides"])
    # -- final: refit on train + validation, rivals on the same rows, test once -----------------
    started = time.perf_counter()
    summary = run_training(None, cfg)
    seconds["train"] = time.perf_counter() - started
    prepared = load_manifest(cfg.lake)
    splits = {s: spark.read.parquet(prepared["splits"][s]["path"]) for s in ("train", "validation", "test")}
    fit_on = splits["train"].unionByName(splits["validation"])
    known = fit_on.select(USER_IDX, ITEM_IDX)
    model = TrainedModel.load(spark, cfg.lake, cfg.name, prepared, splits, ["train", "validation"])
    recs = {"sparkrec": model, **fit_rivals(setting, fit_on, cfg, prepared)}
    users = _vocab(spark, prepared["paths"]["user_vocab"])
    items = _vocab(spark, prepared["paths"]["item_vocab"])
    units = {}
    started = time.perf_counter()
    for name, rec in recs.items():
        if setting == "implicit":
            units[name] = ranking_units(spark, rec, users, items, known, test, negatives)
        else:
            mean = float(fit_on.agg(F.avg("label")).first()[0])
            units[name] = rating_units(spark, rec, users, items, test, mean, name == "sparkrec")
    seconds["score"] = time.perf_counter() - started
    return report(setting, cfg, summary, units, seconds, args.dev)


def report(setting: str, cfg, summary: dict, units: dict, seconds: dict, dev: bool) -> bool:
    t = cfg.train
    print(f"\n## ml-latest-small, {setting}, {'dev (carved from train; test not read)' if dev else 'test'} (model: {t.model}, loss {t.loss}, factors {t.factors}, "
          f"refit {t.refit}, {len(summary['history'])} epochs)")
    if setting == "implicit":
        metrics = ["sampled hr@10", "sampled ndcg@10", "full hr@10", "full ndcg@10"]
        values = {n: {m: u[m].mean() for m in metrics} for n, u in units.items()}
    else:
        metrics = ["rmse", "mae"]
        values = {n: {"rmse": math.sqrt(u["squared error"].mean()), "mae": u["absolute error"].mean()}
                  for n, u in units.items()}
    print("| recommender | " + " | ".join(metrics) + " |\n" + "|---" * (len(metrics) + 1) + "|")
    for name, v in values.items():
        print(f"| {name} | " + " | ".join(f"{v[m]:.4f}" for m in metrics) + " |")
    ok = True
    for rival in RIVALS[setting]:
        for m in metrics:
            if setting == "implicit":
                d, lo, hi = paired(units["sparkrec"][m], units[rival][m])
            else:  # RMSE: paired interval of the MSE difference over the sum of the RMSEs
                column = "squared error" if m == "rmse" else "absolute error"
                d, lo, hi = paired(units["sparkrec"][column], units[rival][column])
                if m == "rmse":
                    scale = values["sparkrec"]["rmse"] + values[rival]["rmse"]
                    d, lo, hi = values["sparkrec"]["rmse"] - values[rival]["rmse"], lo / scale, hi / scale
            print(f"sparkrec - {rival} {m}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    if setting == "implicit":
        v = values["sparkrec"]
        targets = {"full hr@10 >= 0.100": v["full hr@10"] >= 0.100, "full ndcg@10 >= 0.052": v["full ndcg@10"] >= 0.052,
                   "sampled hr@10 >= 0.75": v["sampled hr@10"] >= 0.75,
                   "sampled ndcg@10 >= 0.53": v["sampled ndcg@10"] >= 0.53}
        _, lo, _ = paired(units["sparkrec"]["full ndcg@10"], units["als_implicit"]["full ndcg@10"])
        targets["ahead of tuned ALS on full ndcg@10, interval excluding 0"] = lo > 0
        targets["ahead of EASE on full ndcg@10"] = v["full ndcg@10"] > values["ease"]["full ndcg@10"]
    else:
        targets = {"rmse <= 0.850": values["sparkrec"]["rmse"] <= 0.850}
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")
        ok &= met
    print("seconds:", {k: round(v, 1) for k, v in seconds.items()})
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="/tmp/sparkrec-movielens-quality")
    parser.add_argument("--settings", nargs="+", default=["implicit", "explicit"], choices=["implicit", "explicit"])
    parser.add_argument("--tune", action="store_true", help="search the settings on validation first")
    parser.add_argument("--trials", type=int, help="model trials (default: the conf's tune.trials)")
    parser.add_argument("--targets", nargs="+", default=["model", "als", "ease"], choices=["model", "als", "ease"],
                        help="with --tune: what to search (the rest keeps the shipped conf's settings)")
    parser.add_argument("--write-conf", help="with --tune: write the chosen settings here (one setting at a time)")
    parser.add_argument("--dev", action="store_true",
                        help="never open the test file: score on a split carved from the train file instead")
    parser.add_argument("overrides", nargs="*", help="extra dotted.key=value overrides")
    args = parser.parse_args()
    args.conf = {s: os.path.join(HERE, "..", "conf", f"movielens-{s}.yaml") for s in args.settings}
    args.conf = {s: c if os.path.exists(c) else None for s, c in args.conf.items()}
    outcome = {s: run(args, s) for s in args.settings}
    print("\nall targets met:", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
