"""Items a model scores from their content, without training interactions (cold-start items): for
the score job's candidates and the evaluate job's cold-item protocol. (Users without training
interactions are served by ``sparkrec.score.popularity``.)"""
from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from sparkrec.columns import ITEM_IDX
from sparkrec.models.registry import COLD_ITEM_KINDS
from sparkrec.score import model_ref


def scores_cold_items(meta: dict) -> bool:
    """Whether the model in ``meta`` (its model.json) scores items it never trained on, from
    their content; the others' untrained item embeddings are still random."""
    return meta["model"]["kind"] in COLD_ITEM_KINDS


def servable_items(spark: SparkSession, model: str) -> DataFrame:
    """Items the model ``model`` (a version URI) can rank: with training interactions, or with
    content (at least one token).

    Returns
    -------
    DataFrame
        ``item_idx`` long, unique (built from the model's own content buffers, so it matches
        what the model scores).
    """
    net, _ = model_ref.cached_model(model)
    idx = net.servable_items().nonzero().flatten().numpy()
    return spark.createDataFrame(pd.DataFrame({ITEM_IDX: idx.astype("int64")}))
