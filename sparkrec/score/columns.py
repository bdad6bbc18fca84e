"""Column names of the score tables (the prepared tables' names are in ``sparkrec.columns``)."""

SCORE = "score"            # raw model score (ranking order); popularity count for cold-start rows
RANK = "rank"              # 1 = best
PREDICTION = "prediction"  # pairs mode: user-facing score (probability, or predicted rating)
COLD_START = "cold_start"  # the row comes from the popularity fallback, not the model
BUCKET = "bucket"          # user hash bucket the table is partitioned by
