"""Prepare throughput against its own floor: one hand-written Spark job of only the work it cannot avoid.

Generates a dirty synthetic log once (kept under bench/out/, reused while its size matches), then
alternates, in one Spark session (after an untimed warm-up round; every round prepares into an
empty lake):

(a) a plain read -> write of the log as Parquet (the I/O bound);
(b) the floor (issue 16): read and cast with prepare's validity rules, drop exact duplicates, one
    repartition by user with ``sortWithinPartitions`` by user and time, the leave-last-out split,
    write Parquet;
(c) the full prepare job.

Prints medians of rows/s for each, prepare / floor (target >= 0.6) and prepare / read -> write,
and peak memory of the driver: the Python process, and the JVM (which in local mode also runs
the executors, so its peak is an upper bound of the driver's). Run it at 1M and 10M rows for the
scaling target (rows/s at 10M >= 0.8x rows/s at 1M).

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/prepare_bench.py                 # 10M rows, 1M users
    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/prepare_bench.py --rows 1000000 --users 100000
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from pyspark.sql import functions as F  # noqa: E402

from sparkrec import lake  # noqa: E402
from sparkrec.columns import ITEM_ID, SPLIT, TIMESTAMP, USER_ID  # noqa: E402
from sparkrec.config import load_config  # noqa: E402
from sparkrec.data.prepare import run_prepare  # noqa: E402
from sparkrec.data.read_log import read_log  # noqa: E402
from sparkrec.data.split import split_leave_last_out  # noqa: E402
from sparkrec.data.validate import check_rows, valid_rows  # noqa: E402
from sparkrec.data.synthetic import generate_interactions, write_synthetic  # noqa: E402
from sparkrec.session import get_spark  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "prepare"


class PeakMemory:
    """Samples resident memory of this process and of its child JVM, and the JVM's used heap."""

    def __init__(self, spark, every_s: float = 0.2):
        self.runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        self.every_s = every_s
        self.peak = {"python_rss": 0, "jvm_rss": 0, "jvm_heap_used": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            jvm = sum(c.memory_info().rss for c in me.children(recursive=True) if "java" in c.name())
            heap = self.runtime.totalMemory() - self.runtime.freeMemory()
            for key, value in (("python_rss", me.memory_info().rss), ("jvm_rss", jvm), ("jvm_heap_used", heap)):
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def floor_job(spark, cfg, out: str, partitions: int) -> None:
    """Only the work prepare cannot avoid, as one Spark job: the floor its speed is measured against.

    The one shuffle is the repartition by user: the exact-duplicate drop and the per-user window
    need rows clustered by user, which it already provides, so Spark adds no exchange for them.
    """
    p = cfg.prepare
    rows = valid_rows(check_rows(read_log(spark, cfg.input), p.rating_min, p.rating_max))
    # Sorted as prepare's leave-last-out window orders each user's rows, so it adds no sort either.
    by_user = (rows.repartition(partitions, USER_ID).dropDuplicates()
               .sortWithinPartitions(USER_ID, F.col(TIMESTAMP).desc(), F.col(ITEM_ID).asc()))
    split_leave_last_out(by_user, validation=True).write.mode("overwrite").partitionBy(SPLIT).parquet(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dirt", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (JIT, caches)")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT, help="work folder (a smaller log needs its own)")
    args = parser.parse_args(argv)

    raw, lake_dir, io_out, floor_out = args.out / "raw", args.out / "lake", args.out / "io", args.out / "floor"
    cfg = load_config(None, [
        f"lake={lake_dir}", f"input.path={raw}", "input.format=parquet",
        f"generate.num_rows={args.rows}", f"generate.num_users={args.users}", f"generate.num_items={args.items}",
        f"generate.dirt_rate={args.dirt}", "generate.partitions=16",
        f"spark.driver_memory={args.driver_memory}", f"spark.shuffle_partitions={args.shuffle_partitions}",
        "spark.log_level=ERROR", "prepare.split.kind=leave_last_out", "prepare.num_files=8",
    ])
    spark = get_spark(cfg.spark)

    truth_file = raw / "_truth.json"
    wanted = {"rows": args.rows, "users": args.users, "items": args.items, "dirt": args.dirt}
    if not truth_file.exists() or json.loads(truth_file.read_text()).get("bench") != wanted:
        t0 = time.perf_counter()
        truth = write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), str(raw), "parquet")
        lake.write_json_atomic(lake.normalize_uri(str(truth_file)), {**truth, "bench": wanted})
        print(f"generated {truth['rows']:,} rows in {time.perf_counter() - t0:.0f}s")
    truth = json.loads(truth_file.read_text())
    rows = truth["rows"]

    io_s, floor_s, prepare_s, steps = [], [], [], []
    with PeakMemory(spark) as memory:
        for i in range(-args.warmup, args.repeats):
            # Every round prepares into an empty lake: a first run, the same work each time (a
            # rerun over a published version would extend its vocabularies instead).
            shutil.rmtree(lake_dir, ignore_errors=True)
            t0 = time.perf_counter()
            spark.read.parquet(str(raw)).write.mode("overwrite").parquet(str(io_out))
            t1 = time.perf_counter()
            floor_job(spark, cfg, str(floor_out), args.shuffle_partitions)
            t2 = time.perf_counter()
            manifest = run_prepare(spark, cfg)
            t3 = time.perf_counter()
            print(f"{'warm-up' if i < 0 else 'repeat'} {i}: read->write {t1 - t0:.1f}s, floor {t2 - t1:.1f}s, "
                  f"prepare {t3 - t2:.1f}s {manifest['step_seconds']}", flush=True)
            if i >= 0:
                io_s.append(t1 - t0)
                floor_s.append(t2 - t1)
                prepare_s.append(t3 - t2)
                steps.append(manifest["step_seconds"])

    c = manifest["counts"]
    io_rate, floor_rate = rows / statistics.median(io_s), rows / statistics.median(floor_s)
    prepare_rate = rows / statistics.median(prepare_s)
    gib = 1024 ** 3
    print(json.dumps({
        "rows": rows, "users": manifest["num_users"], "items": manifest["num_items"],
        "kept": c["kept"], "quarantined": sum(c["quarantined_by_reason"].values()), "duplicates": c["duplicates"],
        "cores": os.cpu_count(), "driver_memory": args.driver_memory, "repeats": args.repeats,
        "warmup": args.warmup,
        "read_write_s": [round(s, 1) for s in io_s], "floor_s": [round(s, 1) for s in floor_s],
        "prepare_s": [round(s, 1) for s in prepare_s],
        "prepare_step_s_median": {k: statistics.median(s[k] for s in steps) for k in steps[0]},
        "prepare_rows_per_s": round(prepare_rate),
    }, indent=2))
    print(f"read -> write:             {io_rate:,.0f} rows/s (median)")
    print(f"floor (issue 16):          {floor_rate:,.0f} rows/s (median)")
    print(f"prepare:                   {prepare_rate:,.0f} rows/s (median)")
    print(f"ratio prepare / floor:     {prepare_rate / floor_rate:.2f} (target >= 0.6)")
    print(f"ratio prepare / read->write: {prepare_rate / io_rate:.2f}")
    print(f"peak driver python RSS:    {memory.peak['python_rss'] / gib:.2f} GiB")
    print(f"peak JVM heap used:        {memory.peak['jvm_heap_used'] / gib:.2f} GiB "
          f"(JVM RSS {memory.peak['jvm_rss'] / gib:.2f} GiB; driver + local executors)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
