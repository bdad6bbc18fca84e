"""Rating-prediction metrics (explicit data): RMSE and MAE over test rows."""
from __future__ import annotations

from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import LABEL, PREDICTION


def rating_metrics(predictions: DataFrame, label_col: str = LABEL, prediction_col: str = PREDICTION) -> dict:
    """RMSE and MAE of ``prediction_col`` against ``label_col``, one row = one test rating.

    Spark's ``RegressionEvaluator`` fits exactly here (a plain mean over rows, no per-user
    grouping), so it is used as is. Rows with a null or NaN prediction are an error rather than
    dropped, because silently dropping the hard rows would flatter the model.

    Returns
    -------
    dict
        ``rmse``, ``mae`` (float; None when there are no rows) and ``rows`` (int).

    Raises
    ------
    ValueError
        Some prediction is null or NaN.
    """
    pred = F.col(prediction_col)
    data = predictions.select(F.col(label_col).cast("double").alias(label_col), pred.cast("double").alias(prediction_col))
    counts = data.agg(F.count(F.lit(1)).alias("rows"),
                      F.sum(F.when(pred.isNull() | F.isnan(pred), 1).otherwise(0)).alias("missing")).first()
    if counts["missing"]:
        raise ValueError(f"{counts['missing']} of {counts['rows']} predictions in column {prediction_col!r} are "
                         "null or NaN; fill cold-start predictions (e.g. with the global mean) before evaluating")
    if counts["rows"] == 0:
        return {"rmse": None, "mae": None, "rows": 0}
    evaluator = RegressionEvaluator(labelCol=label_col, predictionCol=prediction_col)
    return {
        "rmse": evaluator.evaluate(data, {evaluator.metricName: "rmse"}),
        "mae": evaluator.evaluate(data, {evaluator.metricName: "mae"}),
        "rows": int(counts["rows"]),
    }
