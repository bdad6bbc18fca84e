"""``<lake>/explanations/<name>/``: the attribution table and its summary, published atomically.

Each run writes a fresh version folder holding ``attributions/`` (Parquet) and ``summary.json``,
checks the table's row count, then switches ``manifest.json`` (``sparkrec.lake.publishing``): readers
see the previous complete explanations or the new ones, never a half-written run.
"""
from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from sparkrec import lake
from sparkrec.columns import ITEM_ID, RANK, SCORE, USER_ID
from sparkrec.errors import SparkrecError

TABLE = "attributions"
SUMMARY = "summary.json"
# Attribution table columns (user_id, item_id, score and rank as in sparkrec.columns).
KIND, FEATURE, ATTRIBUTION = "kind", "feature", "attribution"
HISTORY_ITEM, TOKEN = "history_item", "token"
SCHEMA = StructType([
    StructField(USER_ID, StringType(), False), StructField(ITEM_ID, StringType(), False),
    StructField(SCORE, DoubleType(), False), StructField(KIND, StringType(), False),
    StructField(FEATURE, StringType(), False), StructField(ATTRIBUTION, DoubleType(), False),
    StructField(RANK, IntegerType(), False),
])


def explanations_root(lake_uri: str, name: str) -> str:
    return lake.join(lake_uri, "explanations", name)


def publish_explanations(spark: SparkSession, root: str, rows: list[tuple], summary: dict, keep: int) -> dict:
    """Write ``rows`` (tuples in ``SCHEMA`` order) and ``summary`` as a new version of ``root`` and
    publish it.

    Returns
    -------
    dict
        The published manifest: ``summary`` without its ``pairs`` list, plus ``table`` and
        ``summary`` (URIs), ``rows`` and ``version``.

    Raises
    ------
    SparkrecError
        The written table does not hold ``len(rows)`` rows; nothing is published.
    """
    with lake.publishing(root, keep=keep) as staged:
        table = staged.path(TABLE)
        spark.createDataFrame(rows, SCHEMA).coalesce(1).write.mode("errorifexists").parquet(table)
        written = spark.read.parquet(table).count()
        if written != len(rows):
            raise SparkrecError(f"wrote {written} attribution rows to {table} but expected {len(rows)}; the "
                                f"previous explanations at {root} stay published")
        lake.write_json_atomic(staged.path(SUMMARY), summary)
        staged.manifest = {**{k: v for k, v in summary.items() if k != "pairs"}, "rows": written,
                           "table": table, "summary": staged.path(SUMMARY)}
    return {**staged.manifest, "version": staged.version}


def explanation_digest(spark: SparkSession, lake_uri: str, name: str, users: int = 3, per_side: int = 3) -> dict | None:
    """A few users' strongest attributions, for the evaluate report; None when nothing is published.

    Returns
    -------
    dict or None
        ``model_version``, ``method``, ``created_at``, ``max_abs_delta`` and ``rows``: one per
        (user, item, kind) of the first ``users`` users (by user_id) with ``user_id``, ``item_id``,
        ``score``, ``kind``, ``positive`` and ``negative`` (up to ``per_side`` [feature,
        attribution] pairs each, strongest first).
    """
    root = explanations_root(lake_uri, name)
    if not lake.exists(lake.join(root, "manifest.json")):
        return None
    manifest = lake.resolve(root)
    table = spark.read.parquet(manifest["table"])
    first = table.select(USER_ID).distinct().orderBy(USER_ID).limit(users)
    df = table.join(first, USER_ID).orderBy(USER_ID, ITEM_ID, KIND, RANK).toPandas()
    rows = []
    for (user, item, kind), g in df.groupby([USER_ID, ITEM_ID, KIND], sort=True):
        pos = g[g[ATTRIBUTION] > 0].sort_values(ATTRIBUTION, ascending=False).head(per_side)
        neg = g[g[ATTRIBUTION] < 0].sort_values(ATTRIBUTION).head(per_side)
        rows.append({USER_ID: user, ITEM_ID: item, SCORE: float(g[SCORE].iloc[0]), KIND: kind,
                     "positive": [[f, float(a)] for f, a in zip(pos[FEATURE], pos[ATTRIBUTION])],
                     "negative": [[f, float(a)] for f, a in zip(neg[FEATURE], neg[ATTRIBUTION])]})
    return {"model_version": manifest["model_version"], "method": manifest["method"],
            "created_at": manifest["created_at"], "max_abs_delta": manifest["max_abs_delta"], "rows": rows}
