"""Synthetic interaction logs with planted structure, generated inside Spark.

Every random draw is a pure function of (seed, row id, stream) through a counter-based hash, so
the log is identical row for row whatever the partitioning, and it scales with executors (nothing
is built on the driver). Structure planted so that a good model measurably beats popularity:

- item popularity follows a Zipf law over a seeded random ranking of items;
- users and items have latent factors (users grouped around cluster centroids);
- each event draws ``candidates`` items by popularity and the user picks one by Gumbel-max over
  planted affinity, so choices are personal but still popularity-shaped;
- explicit ratings are 3 + 1.5 * affinity + noise, rounded and clipped to 1..5; timestamps are
  spread uniformly over one year;
- with ``drift`` > 0, tastes move: the year is cut into ``drift_segments`` periods and in each a
  user's taste leans (by ``drift``) towards a planted cluster drawn for that (user, period), so a
  user's recent items predict their next one better than their whole history does (the
  sequential structure a history-based model can use and a static factor model cannot).

Dirt (``dirt_rate``) turns rows into exactly one kind of bad row, or duplicates them verbatim;
the ``_dirt`` column records which, so the true counts can be written beside the data.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from sparkrec.config.generate import GenerateConfig
from sparkrec.config.input import ColumnsConfig
from sparkrec.data import quality

DIRT_COL = "_dirt"
DUPLICATE = "duplicate_event"
DIRT_KINDS = (quality.NULL_USER, quality.NULL_ITEM, quality.BAD_RATING,
              quality.RATING_OUT_OF_RANGE, quality.BAD_TIMESTAMP, DUPLICATE)
START_TS = 1_600_000_000
YEAR_S = 365 * 24 * 3600
NUM_CLUSTERS = 16

# Independent random streams per row.
_S_USER, _S_DIRT, _S_DIRT_KIND, _S_TIME, _S_NOISE, _S_CAND, _S_GUMBEL, _S_UFAC = range(8)
_S_TEXT_TOPIC, _S_TEXT_NOISE, _S_TEXT_ORDER = range(8, 11)
_S_DRIFT = 11

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, counters: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) floats, a pure function of (seed, counter, stream)."""
    with np.errstate(over="ignore"):
        key = _splitmix(np.uint64(seed & 0xFFFFFFFF) * _GOLDEN + np.uint64(stream + 1))
        x = _splitmix(counters.astype(np.uint64) * _GOLDEN ^ key)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(seed: int, counters: np.ndarray, stream: int) -> np.ndarray:
    u1 = uniform(seed, counters, 2 * stream)
    u2 = uniform(seed, counters, 2 * stream + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@lru_cache(maxsize=4)
def item_model(seed: int, num_items: int, factors: int, exponent: float) -> tuple[np.ndarray, np.ndarray]:
    """(item factors [num_items, factors], popularity CDF over items); cached per executor."""
    rng = np.random.default_rng([seed, 1])
    item_factors = rng.standard_normal((num_items, factors)).astype(np.float32)
    weights = np.empty(num_items)
    weights[rng.permutation(num_items)] = 1.0 / np.arange(1, num_items + 1) ** exponent
    cdf = np.cumsum(weights)
    return item_factors, cdf / cdf[-1]


def cluster_centroids(seed: int, factors: int) -> np.ndarray:
    """The planted taste clusters [NUM_CLUSTERS, factors] users are grouped around."""
    return np.random.default_rng([seed, 2]).standard_normal((NUM_CLUSTERS, factors))


def user_factors(seed: int, users: np.ndarray, factors: int) -> np.ndarray:
    """Planted user factors: a cluster centroid plus personal noise, a pure function of the ID."""
    centroids = cluster_centroids(seed, factors)
    cluster = (uniform(seed, users, 100) * NUM_CLUSTERS).astype(np.int64)
    cells = users[:, None].astype(np.uint64) * np.uint64(factors) + np.arange(factors, dtype=np.uint64)
    noise = _normal(seed, cells.ravel(), _S_UFAC).reshape(len(users), factors)
    return 0.8 * centroids[cluster] + 0.6 * noise


def planted_affinity(cfg: GenerateConfig, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Affinity of each (user, item) pair under the planted factors (the oracle for tests)."""
    q, _ = item_model(cfg.seed, cfg.num_items, cfg.factors, cfg.popularity_exponent)
    p = user_factors(cfg.seed, np.asarray(users), cfg.factors)
    return (p * q[np.asarray(items)]).sum(axis=1) / np.sqrt(cfg.factors)


def _events(cfg: GenerateConfig, ids: np.ndarray) -> dict[str, np.ndarray]:
    s = cfg.seed
    q, cdf = item_model(s, cfg.num_items, cfg.factors, cfg.popularity_exponent)
    users = (uniform(s, ids, _S_USER) * cfg.num_users).astype(np.int64)
    cells = ids[:, None].astype(np.uint64) * np.uint64(cfg.candidates) + np.arange(cfg.candidates, dtype=np.uint64)
    cand = np.searchsorted(cdf, uniform(s, cells.ravel(), _S_CAND), side="right")
    cand = np.minimum(cand, cfg.num_items - 1).reshape(len(ids), cfg.candidates)
    timestamps = START_TS + (uniform(s, ids, _S_TIME) * YEAR_S).astype(np.int64)
    p = user_factors(s, users, cfg.factors)
    if cfg.drift > 0:  # the user's taste in this period of the year leans towards a drawn cluster
        period = ((timestamps - START_TS) * cfg.drift_segments // YEAR_S).astype(np.uint64)
        user_periods = users.astype(np.uint64) * np.uint64(cfg.drift_segments) + period
        current = (uniform(s, user_periods, _S_DRIFT) * NUM_CLUSTERS).astype(np.int64)
        p = (1.0 - cfg.drift) * p + cfg.drift * 1.5 * cluster_centroids(s, cfg.factors)[current]
    affinity = np.einsum("nk,nck->nc", p, q[cand]) / np.sqrt(cfg.factors)
    gumbel = -np.log(-np.log(np.clip(uniform(s, cells.ravel(), _S_GUMBEL), 1e-12, 1 - 1e-12)))
    pick = np.argmax(affinity / 0.5 + gumbel.reshape(affinity.shape), axis=1)
    rows = np.arange(len(ids))
    chosen_affinity = affinity[rows, pick]
    if cfg.kind == "explicit":
        noisy = 3.0 + 1.5 * chosen_affinity + 0.5 * _normal(s, ids, _S_NOISE)
        rating = np.clip(np.rint(noisy), 1, 5)
    else:
        rating = np.ones(len(ids))
    return {
        "user": users,
        "item": cand[rows, pick],
        "rating": rating,
        "timestamp": timestamps,
    }


def _dirt_kinds(cfg: GenerateConfig, cols: ColumnsConfig, ids: np.ndarray) -> np.ndarray:
    """The dirt of each row (None = clean), drawn among the kinds the log's columns can carry: a
    log without ratings (or times) cannot hold a bad rating (or time)."""
    kinds = [k for k in DIRT_KINDS
             if not (k in (quality.BAD_RATING, quality.RATING_OUT_OF_RANGE) and not cols.rating)
             and not (k == quality.BAD_TIMESTAMP and not cols.timestamp)]
    dirty = uniform(cfg.seed, ids, _S_DIRT) < cfg.dirt_rate
    kind = (uniform(cfg.seed, ids, _S_DIRT_KIND) * len(kinds)).astype(np.int64)
    return np.where(dirty, np.asarray(kinds, dtype=object)[kind], None)


def _as_frame(cfg: GenerateConfig, cols: ColumnsConfig, ids: np.ndarray) -> pd.DataFrame:
    ev = _events(cfg, ids)
    dirt = _dirt_kinds(cfg, cols, ids)
    out = {
        cols.user: pd.Series("u" + pd.Series(ev["user"]).astype(str), dtype=object),
        cols.item: pd.Series("i" + pd.Series(ev["item"]).astype(str), dtype=object),
    }
    dirty = cfg.dirt_rate > 0  # with dirt, rating/timestamp are strings so bad values fit
    if cols.rating:
        r = pd.Series(ev["rating"])
        out[cols.rating] = r.map(lambda v: f"{v:g}") if dirty else r
    if cols.timestamp:
        t = pd.Series(ev["timestamp"])
        out[cols.timestamp] = t.astype(str) if dirty else t
    frame = pd.DataFrame(out)
    frame[DIRT_COL] = dirt
    if dirty:
        frame.loc[dirt == quality.NULL_USER, cols.user] = None
        frame.loc[dirt == quality.NULL_ITEM, cols.item] = np.where(ids[dirt == quality.NULL_ITEM] % 2, "", "  ")
        if cols.rating:
            frame.loc[dirt == quality.BAD_RATING, cols.rating] = "n/a"
            frame.loc[dirt == quality.RATING_OUT_OF_RANGE, cols.rating] = "7"
        if cols.timestamp:
            frame.loc[dirt == quality.BAD_TIMESTAMP, cols.timestamp] = "not-a-time"
        frame = pd.concat([frame, frame[dirt == DUPLICATE]], ignore_index=True)
    return frame


def _schema(cfg: GenerateConfig, cols: ColumnsConfig) -> str:
    dirty = cfg.dirt_rate > 0
    fields = [f"`{cols.user}` string", f"`{cols.item}` string"]
    if cols.rating:
        fields.append(f"`{cols.rating}` {'string' if dirty else 'double'}")
    if cols.timestamp:
        fields.append(f"`{cols.timestamp}` {'string' if dirty else 'bigint'}")
    return ", ".join(fields + [f"`{DIRT_COL}` string"])


def generate_interactions(spark: SparkSession, cfg: GenerateConfig, cols: ColumnsConfig) -> DataFrame:
    """The synthetic log as a DataFrame with the configured column names plus ``_dirt``.

    Returns
    -------
    DataFrame
        ``cols.user`` string, ``cols.item`` string, ``cols.rating`` (double, or string with dirt;
        omitted when ``cols.rating`` is None), ``cols.timestamp`` (epoch seconds; bigint, or
        string with dirt; omitted when None), ``_dirt`` (null for clean rows, else the
        quarantine reason or ``duplicate_event``; both copies of a duplicate carry it).
    """
    if cols.rating is None and cfg.kind == "explicit":
        raise ValueError("generate.kind=explicit needs input.columns.rating to name the rating column")
    if cfg.candidates > cfg.num_items:
        raise ValueError(f"generate.candidates={cfg.candidates} exceeds generate.num_items={cfg.num_items}")

    def batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            yield _as_frame(cfg, cols, frame["id"].to_numpy())

    ids = spark.range(0, cfg.num_rows, numPartitions=cfg.partitions)
    return ids.mapInPandas(batches, schema=_schema(cfg, cols))


def dirt_truth(df: DataFrame) -> dict:
    """True counts of the generated log: rows, each quarantine reason, extra duplicate copies."""
    by_kind = {r[DIRT_COL]: r["count"] for r in df.groupBy(DIRT_COL).count().collect()}
    quarantine = {reason: by_kind.get(reason, 0) for reason in quality.REASONS}
    return {
        "rows": sum(by_kind.values()),
        "quarantined_by_reason": quarantine,
        "duplicate_events": by_kind.get(DUPLICATE, 0) // 2,  # copies beyond the first
    }


def write_synthetic(df: DataFrame, path: str, fmt: str, csv_delimiter: str = ",") -> dict:
    """Write the log (without ``_dirt``) to ``path`` and its true counts to ``path/_truth.json``
    (Spark skips ``_``-prefixed files when it reads the folder)."""
    from sparkrec import lake

    if fmt not in ("parquet", "csv", "json"):
        raise ValueError(f"synthetic logs are written as parquet, csv or json, not {fmt!r}; set input.format")
    uri = lake.normalize_uri(path)
    writer = df.drop(DIRT_COL).write.mode("overwrite").format(fmt)
    if fmt == "csv":
        writer = writer.option("header", True).option("sep", csv_delimiter)
    writer.save(uri)
    truth = dirt_truth(df)
    lake.write_json_atomic(lake.join(uri, "_truth.json"), truth)
    return truth


# Item text: words of the item's planted taste cluster, words naming the signs of its strongest
# latent factors, and noise words shared by all items.
TOPIC_WORDS = 12       # distinct words per cluster
NOISE_WORDS = 40       # distinct noise words


def item_clusters(cfg: GenerateConfig) -> np.ndarray:
    """Planted cluster of every item [num_items]: the taste cluster whose centroid likes it most."""
    q, _ = item_model(cfg.seed, cfg.num_items, cfg.factors, cfg.popularity_exponent)
    return np.argmax(q @ cluster_centroids(cfg.seed, cfg.factors).T, axis=1)


def _item_text(cfg: GenerateConfig, items: np.ndarray, topic_words: int, factor_words: int,
               noise_words: int) -> list[str]:
    q, _ = item_model(cfg.seed, cfg.num_items, cfg.factors, cfg.popularity_exponent)
    cluster = item_clusters(cfg)[items]
    per_item = topic_words + factor_words + noise_words
    cells = items[:, None].astype(np.uint64) * np.uint64(per_item) + np.arange(per_item, dtype=np.uint64)
    topic = (uniform(cfg.seed, cells[:, :topic_words].ravel(), _S_TEXT_TOPIC) * TOPIC_WORDS).astype(np.int64)
    noise = (uniform(cfg.seed, cells[:, per_item - noise_words:].ravel(), _S_TEXT_NOISE) * NOISE_WORDS).astype(np.int64)
    order = uniform(cfg.seed, cells.ravel(), _S_TEXT_ORDER).reshape(len(items), per_item)
    strongest = np.argsort(-np.abs(q[items]), axis=1)[:, :factor_words]
    texts = []
    for row in range(len(items)):
        words = [f"topic{cluster[row]}w{w}" for w in topic[row * topic_words:(row + 1) * topic_words]]
        words += [f"factor{k}{'up' if q[items[row], k] > 0 else 'down'}" for k in strongest[row]]
        words += [f"noise{w}" for w in noise[row * noise_words:(row + 1) * noise_words]]
        texts.append(" ".join(np.asarray(words)[np.argsort(order[row])]))
    return texts


def generate_item_text(spark: SparkSession, cfg: GenerateConfig, *, topic_words: int = 3, factor_words: int = 3,
                       noise_words: int = 3, item_col: str = "item_id", text_col: str = "text") -> DataFrame:
    """Item text whose words carry the planted structure, so content predicts preference.

    Each item's text mixes, in a seeded random order: ``topic_words`` words drawn from the 12
    words of its planted cluster (:func:`item_clusters`), one word per each of its
    ``factor_words`` largest latent factors naming that factor's sign, and ``noise_words`` words
    drawn from 40 shared noise words. A pure function of (seed, item), like the log.

    Returns
    -------
    DataFrame
        ``item_col`` string ("i<n>", the log's item IDs), ``text_col`` string (space-separated
        words); one row per item of ``cfg.num_items``.
    """
    if not 0 <= factor_words <= cfg.factors:
        raise ValueError(f"factor_words={factor_words} must be between 0 and generate.factors={cfg.factors}")

    def batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            items = frame["id"].to_numpy()
            yield pd.DataFrame({item_col: "i" + pd.Series(items).astype(str),
                                text_col: _item_text(cfg, items, topic_words, factor_words, noise_words)})

    ids = spark.range(0, cfg.num_items, numPartitions=min(cfg.partitions, cfg.num_items))
    return ids.mapInPandas(batches, schema=f"`{item_col}` string, `{text_col}` string")
