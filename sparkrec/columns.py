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

# Quarantine and vocabulary tables.
REASON = "reason"
ORIGINAL_ID = "original_id"
INDEX = "index"
COUNT = "count"
FIRST_SEEN = "first_seen"
