import json

import numpy as np
import pytest
from pyspark.testing import assertDataFrameEqual

from sparkrec.config import load_config
from sparkrec.data import quality
from sparkrec.data.synthetic import (
    DIRT_COL, DUPLICATE, generate_interactions, item_model, planted_affinity, write_synthetic,
)

pytestmark = pytest.mark.spark


def gen_cfg(*overrides):
    return load_config(None, ["generate.num_rows=4000", "generate.num_users=200", "generate.num_items=300",
                              "generate.partitions=3", *overrides])


def test_deterministic_whatever_the_partitioning(spark):
    a = gen_cfg()
    b = gen_cfg("generate.partitions=5")
    df_a = generate_interactions(spark, a.generate, a.input.columns)
    df_b = generate_interactions(spark, b.generate, b.input.columns)
    assertDataFrameEqual(df_a, df_b)
    other = gen_cfg("generate.seed=8")
    assert generate_interactions(spark, other.generate, other.input.columns).exceptAll(df_a).count() > 3000


def test_shape_ids_ratings_and_timestamps(spark):
    cfg = gen_cfg()
    pdf = generate_interactions(spark, cfg.generate, cfg.input.columns).toPandas()
    assert len(pdf) == 4000
    assert pdf["user_id"].str.match(r"^u\d+$").all() and pdf["item_id"].str.match(r"^i\d+$").all()
    assert set(pdf["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert pdf["rating"].nunique() >= 4
    assert pdf["timestamp"].between(1_600_000_000, 1_600_000_000 + 365 * 86400).all()
    assert pdf[DIRT_COL].isna().all()


def test_power_law_popularity(spark):
    cfg = gen_cfg("generate.num_rows=20000")
    counts = generate_interactions(spark, cfg.generate, cfg.input.columns).groupBy("item_id").count().toPandas()
    top = counts["count"].sort_values(ascending=False).to_numpy()
    # Top 10% of the 300 items take far more than 10% of the events.
    assert top[:30].sum() > 0.35 * top.sum()


def test_planted_preferences_beat_popularity(spark):
    """Chosen items have higher planted affinity than items drawn by popularity alone, and explicit
    ratings rise with affinity: the signal a model must find to beat popularity."""
    cfg = gen_cfg("generate.num_rows=20000")
    pdf = generate_interactions(spark, cfg.generate, cfg.input.columns).toPandas()
    users = pdf["user_id"].str[1:].astype(int).to_numpy()
    items = pdf["item_id"].str[1:].astype(int).to_numpy()
    chosen = planted_affinity(cfg.generate, users, items)
    _, cdf = item_model(cfg.generate.seed, 300, cfg.generate.factors, cfg.generate.popularity_exponent)
    by_popularity = np.searchsorted(cdf, np.random.default_rng(0).random(len(users)))
    baseline = planted_affinity(cfg.generate, users, by_popularity)
    assert chosen.mean() > baseline.mean() + 0.5
    assert np.corrcoef(chosen, pdf["rating"].to_numpy())[0, 1] > 0.6


def test_dirt_is_injected_and_counted_exactly(spark, tmp_path):
    cfg = gen_cfg("generate.dirt_rate=0.12", "input.format=csv")
    df = generate_interactions(spark, cfg.generate, cfg.input.columns)
    truth = write_synthetic(df, str(tmp_path / "raw"), "csv")
    assert truth == json.loads((tmp_path / "raw" / "_truth.json").read_text())
    back = spark.read.option("header", True).csv(str(tmp_path / "raw")).toPandas()
    assert len(back) == truth["rows"] == 4000 + truth["duplicate_events"]
    q = truth["quarantined_by_reason"]
    # Every reason a log with these columns can carry; a given split column is never generated.
    assert set(q) == set(quality.REASONS) and q.pop(quality.BAD_SPLIT) == 0 and all(n > 20 for n in q.values())
    assert truth["duplicate_events"] > 20
    assert back["user_id"].isna().sum() == q[quality.NULL_USER]
    assert (back["rating"] == "n/a").sum() == q[quality.BAD_RATING]
    assert (back["rating"] == "7").sum() == q[quality.RATING_OUT_OF_RANGE]
    assert (back["timestamp"] == "not-a-time").sum() == q[quality.BAD_TIMESTAMP]
    assert len(back) - len(back.drop_duplicates()) == truth["duplicate_events"]
    assert DUPLICATE not in back.columns
