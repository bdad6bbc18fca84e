"""Spark session settings (`spark.*`)."""
from pydantic import Field

from sparkrec.config.base import Section


class SparkConfig(Section):
    app_name: str = "sparkrec"
    """Application name shown in the Spark UI and history server."""

    master: str = "local[2]"
    """Master for runs not started by spark-submit (pytest, `python jobs/x.py`). Under
    spark-submit its `--master` decides; `spark-submit.sh` defaults that to `local[2]`."""

    driver_memory: str = "2g"
    """Driver heap for runs not started by spark-submit (spark-submit.sh passes
    `--driver-memory`, default 4g, overridable with SPARKREC_DRIVER_MEMORY)."""

    shuffle_partitions: int = Field(8, ge=1)
    """`spark.sql.shuffle.partitions`: 8 suits a laptop; raise it on a cluster (2-3x total cores)."""

    ui: bool = False
    """Start the Spark web UI (off by default: tests and small jobs do not need the port)."""

    log_level: str = "WARN"
    """Spark's log level once the session is up."""

    conf: dict[str, str | int | float | bool] = {}
    """Extra Spark properties applied to the session, e.g. `{spark.executor.memory: 8g}`."""
