"""Run history: ``<lake>/runs/<run_id>/summary.json`` for every pipeline run, and
``<lake>/runs/latest.json`` naming the last successful one.

The pointer moves only after a run succeeded (one atomic object write, see ``sparkrec.lake``), so
``latest.json`` always names a run whose outputs are all published. The next run reads it to
decide which stages can be skipped.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sparkrec import lake

RUNS = "runs"
LATEST = "latest.json"


def runs_root(lake_uri: str) -> str:
    return lake.join(lake.normalize_uri(lake_uri), RUNS)


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent starts."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def summary_uri(lake_uri: str, run_id: str) -> str:
    return lake.join(runs_root(lake_uri), run_id, "summary.json")


def write_summary(lake_uri: str, summary: dict) -> None:
    lake.write_json_atomic(summary_uri(lake_uri, summary["run_id"]), summary)


def mark_latest(lake_uri: str, summary: dict) -> None:
    """Point ``runs/latest.json`` at a successful run (call after ``write_summary``)."""
    lake.write_json_atomic(lake.join(runs_root(lake_uri), LATEST),
                           {"run_id": summary["run_id"], "finished_at": summary["finished_at"]})


def latest_summary(lake_uri: str) -> dict | None:
    """Summary of the last successful run, or None before the first one."""
    pointer = lake.join(runs_root(lake_uri), LATEST)
    if not lake.exists(pointer):
        return None
    return lake.read_json(summary_uri(lake_uri, lake.read_json(pointer)["run_id"]))
