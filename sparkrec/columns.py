"""Column names of the lake's tables, in one place; functions take them as keyword defaults."""

# Raw log after reading and renaming (prepare's input contract).
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"

# Prepared training tables.
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
LABEL = "label"
SPLIT = "split"

# Quarantine and vocabulary tables.
REASON = "reason"
ORIGINAL_ID = "original_id"
INDEX = "index"
COUNT = "count"
FIRST_SEEN = "first_seen"

# Scores and rankings: the score tables, the ranking protocols, explanations.
SCORE = "score"            # raw model score (ranking order); popularity count for cold-start rows
RANK = "rank"              # 1 = best
PREDICTION = "prediction"  # user-facing score (probability, or predicted rating)
COLD_START = "cold_start"  # the row comes from the popularity fallback, not the model
BUCKET = "bucket"          # user hash bucket a score table is partitioned by
