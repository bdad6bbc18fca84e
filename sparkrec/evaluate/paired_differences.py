"""How sure a gap between two recommenders is: the model minus a baseline, paired on the same units.

Both recommenders are judged on the same users (ranking metrics are per-user means) and the same
test rows (RMSE/MAE), so the difference is measured unit by unit and its spread is that of the
per-unit differences, far tighter than comparing two independent intervals. The 95% interval is
the normal one, mean +/- 1.96 * sd / sqrt(n): units are independent and n is in the hundreds or
more, where the central limit theorem holds well for bounded per-user metrics.

RMSE is not a mean, so its difference uses the identity sqrt(a) - sqrt(b) = (a - b) / (sqrt(a) +
sqrt(b)): the paired interval of the mean squared error difference divided by the sum of the two
RMSEs (first order in the noise of that sum).
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

Z95 = 1.959963984540054
SQUARED_ERROR = "squared_error"
ABSOLUTE_ERROR = "absolute_error"


def paired_mean_differences(ours: DataFrame, theirs: DataFrame, keys: Sequence[str], columns: Sequence[str]) -> dict:
    """Mean of ``ours[c] - theirs[c]`` over the units both have (joined on ``keys``), per column.

    Returns
    -------
    dict
        column -> ``difference``, ``low``, ``high`` (95% interval) and ``units`` (n); the bounds
        are None with fewer than two units.
    """
    keys = list(keys)
    joined = ours.select(*keys, *[F.col(f"`{c}`").alias(f"_a{i}") for i, c in enumerate(columns)]).join(
        theirs.select(*keys, *[F.col(f"`{c}`").alias(f"_b{i}") for i, c in enumerate(columns)]), keys)
    aggs = [F.count(F.lit(1)).alias("_n")]
    for i in range(len(columns)):
        d = F.col(f"_a{i}") - F.col(f"_b{i}")
        aggs += [F.avg(d).alias(f"_m{i}"), F.stddev_samp(d).alias(f"_s{i}")]
    row = joined.agg(*aggs).first()
    n = int(row["_n"])
    out = {}
    for i, c in enumerate(columns):
        mean, sd = row[f"_m{i}"], row[f"_s{i}"]
        half = None if sd is None or n < 2 else Z95 * sd / n ** 0.5
        out[c] = {"difference": mean, "low": None if half is None else mean - half,
                  "high": None if half is None else mean + half, "units": n}
    return out


def rating_differences(ours: DataFrame, theirs: DataFrame, keys: Sequence[str], rmse_ours: float,
                       rmse_theirs: float) -> dict:
    """RMSE and MAE of ``ours`` minus ``theirs`` with 95% intervals, paired on the test rows.

    Both frames hold ``keys`` plus ``squared_error`` and ``absolute_error`` per test row.
    """
    diffs = paired_mean_differences(ours, theirs, keys, [SQUARED_ERROR, ABSOLUTE_ERROR])
    mse, scale = diffs[SQUARED_ERROR], rmse_ours + rmse_theirs
    rmse = {"difference": rmse_ours - rmse_theirs, "units": mse["units"],
            "low": None if mse["low"] is None or scale == 0 else mse["low"] / scale,
            "high": None if mse["high"] is None or scale == 0 else mse["high"] / scale}
    return {"rmse": rmse, "mae": diffs[ABSOLUTE_ERROR]}
