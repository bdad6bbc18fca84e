"""The explain job: why the published model recommends an item to a user, in its own inputs.

Run order: resolve the prepared data and the model version -> check they belong together -> pick
the pairs (``explain.pairs`` or the published top-K) -> the users' train histories -> per pair and
input kind, Captum attributions on the driver (``sparkrec.explain.attributions``) -> keep the
strongest per pair and kind, in original IDs and token strings -> publish
``<lake>/explanations/<name>/`` (``sparkrec.explain.store``).
"""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import torch
from pyspark.sql import SparkSession

from sparkrec import lake
from sparkrec.columns import ITEM_ID, ITEM_IDX, RANK, USER_ID, USER_IDX
from sparkrec.config import Config, dump_config
from sparkrec.data.prepare import load_manifest
from sparkrec.errors import SparkrecError
from sparkrec.explain.attributions import (
    Attribution, has_history_input, has_token_input, history_attributions, token_attributions,
)
from sparkrec.explain.pairs import histories, item_ids, pairs_from_file, pairs_from_top_k
from sparkrec.explain.store import HISTORY_ITEM, TOKEN, explanations_root, publish_explanations
from sparkrec.models.block_scoring import is_history_model
from sparkrec.models.store import check_same_data, load_model_version, resolve_model

TOKEN_VOCAB = "token_vocab"  # key of model.json's "model" (the model config): token strings by id


def strongest(attr: Attribution, names: dict[int, str] | list[str], top: int) -> list[tuple[str, float, int]]:
    """The ``top`` features with the largest |attribution| as (name, attribution, rank 1..),
    ties broken by name so the order is reproducible."""
    named = sorted(((names[f], v) for f, v in zip(attr.features, attr.values)), key=lambda nv: (-abs(nv[1]), nv[0]))
    return [(n, v, r) for r, (n, v) in enumerate(named[:top], start=1)]


def _explained_kinds(model, meta: dict, name: str) -> list[str]:
    if is_history_model(meta["model"]):
        raise SparkrecError(f"model {name!r} is a history model (train.model=sequence): attributing its scores to "
                            f"history items is not supported yet; explain a multvae or hybrid model")
    kinds = [k for k, has in ((HISTORY_ITEM, has_history_input(model)), (TOKEN, has_token_input(model))) if has]
    if not kinds:
        raise SparkrecError(
            f"model {name!r} (kind {meta['model'].get('kind')!r}) scores from learned user and item embeddings "
            f"only: it has no history or content input to attribute a recommendation to; explain a model that "
            f"has one (train.model=multvae for history items, train.model=hybrid for content tokens)")
    if TOKEN in kinds and not meta["model"].get(TOKEN_VOCAB):
        raise SparkrecError(f"model {name!r} ({meta['version']}) has content tokens but its model.json has no "
                            f"model.{TOKEN_VOCAB} list to name them; retrain it with the current code")
    return kinds


def run_explain(spark: SparkSession, cfg: Config) -> dict:
    """Explain recommendations of the published model ``cfg.name`` and publish
    ``<lake>/explanations/<name>/``.

    ``attributions/`` (Parquet) has one row per kept feature: ``user_id`` string, ``item_id``
    string (original IDs), ``score`` double (the pair's raw model score), ``kind`` string
    (``history_item`` | ``token``), ``feature`` string (history item's original ID, or token),
    ``attribution`` double (its push on the raw score; positive = up), ``rank`` int (1 = largest
    |attribution| within the pair and kind). ``summary.json`` records every pair's score, baseline
    score, attribution sum and convergence delta (over all features, not only the kept ones),
    the pairs skipped and why, and the settings.

    Returns
    -------
    dict
        The published manifest: ``name``, ``model_version``, ``data_hash``, ``prepared_version``,
        ``method``, ``settings``, ``kinds``, ``source``, ``pairs_requested``, ``pairs_explained``,
        ``skipped`` (pair, kind and reason of each attribution not made),
        ``users_without_model_recommendations`` (of ``explain.users``), ``max_abs_delta``,
        ``created_at``, ``config``, ``rows``, ``table``, ``summary`` and ``version`` (URIs).

    Raises
    ------
    SparkrecError
        Nothing prepared or no model published, a model of other prepared data or without history
        or content input, or unusable pairs (see ``sparkrec.explain.pairs``).

    Notes
    -----
    Deterministic for a fixed seed: IG has no randomness, Shapley sampling seeds pair i with
    ``seed + i`` (pairs sorted by user_id, rank, item_id).
    """
    e = cfg.explain
    seed = cfg.seed if e.seed is None else e.seed
    lake_uri = lake.normalize_uri(cfg.lake)
    prepared = load_manifest(lake_uri)
    model_uri = resolve_model(lake_uri, cfg.name)
    model, meta = load_model_version(model_uri)
    check_same_data(f"model {cfg.name!r} ({model_uri})", meta["data_hash"], prepared)
    kinds = _explained_kinds(model, meta, cfg.name)
    if e.pairs:
        pairs = pairs_from_file(spark, e.pairs, prepared)
    else:
        pairs = pairs_from_top_k(spark, lake_uri, cfg.name, e, prepared, model_uri)
    # Listed users the top-K table has no model recommendation for (unknown or cold-start).
    unexplained_users = sorted(set(e.users or ()) - set(pairs[USER_ID])) if not e.pairs else []
    bags = histories(spark, prepared, sorted(set(pairs[USER_IDX]))) if HISTORY_ITEM in kinds else {}
    names = {HISTORY_ITEM: item_ids(spark, prepared, {i for items, _ in bags.values() for i in items}),
             TOKEN: meta["model"].get(TOKEN_VOCAB)}

    settings = {"n_steps": e.n_steps} if e.method == "ig" else {"n_samples": e.n_samples, "seed": seed}
    rows, explained, skipped, deltas = [], [], [], []
    for i, p in enumerate(pairs.to_dict("records")):
        user, item = p[USER_IDX], p[ITEM_IDX]
        record = {USER_ID: p[USER_ID], ITEM_ID: p[ITEM_ID], RANK: None if pd.isna(p[RANK]) else int(p[RANK])}
        for kind in kinds:
            if kind == HISTORY_ITEM:
                if user not in bags:
                    skipped.append({**record, "kind": kind, "reason": "the user has no train interactions"})
                    continue
                items, labels = bags[user]
                attr = history_attributions(model, torch.tensor(items), item, torch.tensor(labels), method=e.method,
                                            n_steps=e.n_steps, n_samples=e.n_samples, seed=seed + i)
            else:
                attr = token_attributions(model, user, item, method=e.method, n_steps=e.n_steps,
                                          n_samples=e.n_samples, seed=seed + i)
            deltas.append(attr.delta)
            record[kind] = {"score": attr.score, "baseline_score": attr.baseline_score,
                            "attribution_sum": sum(attr.values), "delta": attr.delta, "features": len(attr.features)}
            rows += [(record[USER_ID], record[ITEM_ID], attr.score, kind, feature, value, rank)
                     for feature, value, rank in strongest(attr, names[kind], e.top_attributions)]
        if any(k in record for k in kinds):
            explained.append(record)
    summary = {
        "name": cfg.name, "model_version": model_uri, "data_hash": prepared["data_hash"],
        "prepared_version": prepared["version"], "method": e.method, "settings": settings, "kinds": kinds,
        "source": e.pairs or f"scores/{cfg.name}", "pairs_requested": len(pairs), "pairs_explained": len(explained),
        "skipped": skipped, "users_without_model_recommendations": unexplained_users,
        "max_abs_delta": max((abs(d) for d in deltas), default=0.0),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": dump_config(cfg),
        "pairs": explained,
    }
    return publish_explanations(spark, explanations_root(lake_uri, cfg.name), rows, summary, e.keep_versions)
