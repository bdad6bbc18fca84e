"""Where the interaction log lives and how to read it (`input.*`)."""
from typing import Literal, Optional

from sparkrec.config.base import Section


class ColumnsConfig(Section):
    user: str = "user_id"
    """Column holding the user ID (any type; indexed as a string)."""

    item: str = "item_id"
    """Column holding the item ID (any type; indexed as a string)."""

    rating: Optional[str] = "rating"
    """Rating or event-value column; null for implicit logs with no value (every row is a positive)."""

    timestamp: Optional[str] = "timestamp"
    """Event time column (epoch seconds, or a timestamp string); null when the log has none
    (temporal and leave-last-out splits are then refused)."""

    split: Optional[str] = None
    """Column holding a split you assigned yourself (`train`, `validation` or `test`, any case),
    read with `prepare.split.kind=given`; rows holding anything else are quarantined as
    `bad_split`."""


class InputConfig(Section):
    path: str = "lake/raw/interactions"
    """File or folder (local path or URI) of the raw interaction log."""

    format: Literal["parquet", "csv", "json", "movielens"] = "parquet"
    """`movielens` detects ratings.csv (latest), u.data (100k) or ratings.dat (1M/10M) in `path`."""

    columns: ColumnsConfig = ColumnsConfig()
    """Column names in the raw log (ignored for `movielens`, whose layout is known)."""

    csv_header: bool = True
    """CSV only: whether the first line holds column names."""

    csv_delimiter: str = ","
    """CSV only: field separator. Fields are read as RFC 4180 has them (what Python's csv, pandas
    and spreadsheets write): a field may be quoted with `"`, and a `"` inside a quoted field is
    written twice (`"quote""user"` is the ID `quote"user`); IDs keep every other character as
    written, spaces included."""

    csv_multiline: bool = False
    """CSV only: quoted fields may span lines (an ID or text holding a line break; a `\r\n` inside
    a quoted field is read as `\n`). Off, every line is one row, which lets Spark split a large file
    between tasks; on, each file is read whole by one task."""
