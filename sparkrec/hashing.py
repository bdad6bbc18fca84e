"""Hashes that name or place things, defined once.

- :func:`digest`: a short, stable fingerprint of plain data (configs, manifests, stage inputs).
- :func:`hash_bucket` and :func:`unit_hash`: Spark column expressions that are pure functions of
  their inputs (xxhash64), so a row lands in the same bucket or split on every run, whatever the
  partitioning, and a retried task recomputes exactly the same value.
"""
from __future__ import annotations

import hashlib
import json

from pyspark.sql import Column
from pyspark.sql import functions as F

DIGEST_CHARS = 16
_UNIT_BITS = 53  # a double holds 53 bits exactly: every value below 2**53 maps to a distinct number


def digest(obj) -> str:
    """First 16 hex characters of the SHA-256 of ``obj`` as canonical JSON (sorted keys; values
    JSON cannot hold are written with ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:DIGEST_CHARS]


def hash_bucket(col: str | Column, buckets: int) -> Column:
    """``pmod(xxhash64(col), buckets)`` as int: the bucket ``0..buckets-1`` of a value."""
    return F.pmod(F.xxhash64(col), F.lit(buckets)).cast("int")


def unit_hash(seed: int, *cols: str | Column) -> Column:
    """A uniform number in [0, 1) that is a pure function of (seed, cols)."""
    bits = F.pmod(F.xxhash64(F.lit(seed), *cols), F.lit(1 << _UNIT_BITS))
    return bits.cast("double") / float(1 << _UNIT_BITS)
