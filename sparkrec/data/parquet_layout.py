"""What a written Parquet folder holds, read from the file footers only (no data is scanned)."""
from __future__ import annotations

from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from sparkrec import lake


@dataclass(frozen=True)
class Layout:
    files: list[str]
    """Data file URIs in Petastorm's order (sorted by path)."""
    row_groups: list[int]
    """Rows of each row group: files in the order above, then row-group index within a file."""
    schema: dict[str, str]
    """Column name -> numpy-style type name (``int64``, ``float32``, ...)."""
    stats: dict[str, tuple]
    """Column name -> (min, max) over all row groups, for columns whose footers carry both."""

    @property
    def rows(self) -> int:
        return sum(self.row_groups)


def _data_files(uri: str) -> tuple[fsspec.AbstractFileSystem, list[str], str]:
    fs, root = lake.filesystem(uri)
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    names = [p for p in fs.find(root) if p.endswith(".parquet")
             and not any(part.startswith(("_", ".")) for part in p[len(root):].split("/") if part)]
    return fs, sorted(names), protocol


def read_layout(uri: str) -> Layout:
    """Footers of every data file under ``uri``.

    Files are ordered as Petastorm 0.13.1 orders row groups: ``pq.ParquetDataset`` (legacy, which
    Petastorm uses with its pyarrow filesystem) sorts the files of a folder
    (``ParquetManifest._visit_level``), ``dataset_metadata.load_row_groups`` /
    ``_split_row_groups_from_footers`` expands each file into its row groups 0..k-1, and
    ``Reader._partition_row_groups`` gives shard s the row groups whose position i has
    ``i % shard_count == s``. Hidden (``.``/``_``-prefixed) files are skipped as there.
    """
    fs, names, protocol = _data_files(uri)
    row_groups: list[int] = []
    schema: dict[str, str] = {}
    lows: dict[str, object] = {}
    highs: dict[str, object] = {}
    for name in names:
        with fs.open(name, "rb") as f:
            meta = pq.ParquetFile(f).metadata
        if not schema:
            arrow = meta.schema.to_arrow_schema()
            schema = {field.name: field.type.to_pandas_dtype().__name__ for field in arrow}
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            row_groups.append(group.num_rows)
            for c in range(group.num_columns):
                column = group.column(c)
                st = column.statistics
                if st is None or not st.has_min_max:
                    continue
                key = column.path_in_schema
                lows[key] = st.min if key not in lows else min(lows[key], st.min)
                highs[key] = st.max if key not in highs else max(highs[key], st.max)
    stats = {k: (lows[k], highs[k]) for k in lows if k in highs}
    return Layout([f"{protocol}://{n}" for n in names], row_groups, schema, stats)
