"""Day-2 warm start vs full retrain to the same validation metric (issue: scheduled runs).

Generates one grown log (day 2) and its day-1 part (the first 80% of users and items), trains day 1,
then on day 2 (a) warm-starts from the day-1 model for `--warm-epochs` epochs and (b) retrains
from scratch epoch by epoch. Prints the warm run's epoch time, the from-scratch epoch time until
its validation RMSE first reaches the warm run's, and their ratio. Same process, same session.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/warm_start_bench.py            # 1.2M rows
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from pyspark.sql import functions as F  # noqa: E402

from sparkrec.config import load_config  # noqa: E402
from sparkrec.data.prepare import run_prepare  # noqa: E402
from sparkrec.data.synthetic import generate_interactions  # noqa: E402
from sparkrec.models.store import resolve_model  # noqa: E402
from sparkrec.session import get_spark  # noqa: E402
from sparkrec.train.launch import run_training  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "warm_start"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_200_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--day1-epochs", type=int, default=3)
    ap.add_argument("--warm-epochs", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=8)
    a = ap.parse_args()
    lake = str(OUT / "lake")
    base = [f"lake={lake}", f"generate.num_rows={a.rows}", f"generate.num_users={a.users}",
            f"generate.num_items={a.items}", "generate.candidates=32", "train.batch_size=4096",
            "train.lr=0.003", "spark.driver_memory=6g", "spark.shuffle_partitions=8"]
    cfg = load_config(None, base)
    spark = get_spark(cfg.spark)
    log = generate_interactions(spark, cfg.generate, cfg.input.columns).drop("_dirt")
    num = lambda c: F.substring(c, 2, 12).cast("int")  # noqa: E731
    log.write.mode("overwrite").parquet(f"{lake}/raw/day2")
    log.where((num("user_id") < int(a.users * 0.8)) & (num("item_id") < int(a.items * 0.8))) \
       .write.mode("overwrite").parquet(f"{lake}/raw/day1")

    day1 = load_config(None, base + [f"input.path={lake}/raw/day1", f"train.epochs={a.day1_epochs}"])
    run_prepare(spark, day1)
    run_training(spark, day1)
    day2 = base + [f"input.path={lake}/raw/day2"]
    run_prepare(spark, load_config(None, day2))

    parent = resolve_model(lake, "default")
    started = time.perf_counter()
    warm = run_training(spark, load_config(None, day2 + [f"train.epochs={a.warm_epochs}", f"train.warm_start={parent}",
                                                         "name=warm"]))
    warm_wall = time.perf_counter() - started
    warm_s = sum(r["seconds"] for r in warm["history"])
    target = min(r["val_rmse"] for r in warm["history"])

    scratch = run_training(spark, load_config(None, day2 + [f"train.epochs={a.max_epochs}", "name=scratch"]))
    elapsed, reached = 0.0, None
    for r in scratch["history"]:
        elapsed += r["seconds"]
        if r["val_rmse"] <= target:
            reached = (r["epoch"], elapsed)
            break
    print(f"rows={a.rows} users={a.users} items={a.items}")
    print(f"warm start: {a.warm_epochs} epoch(s), val_rmse={target:.4f}, {warm_s:.1f}s of epochs "
          f"({warm_wall:.1f}s wall with set-up)")
    if reached:
        print(f"full retrain: reached val_rmse<={target:.4f} at epoch {reached[0]} after {reached[1]:.1f}s of epochs")
        print(f"ratio warm/full = {warm_s / reached[1]:.2f}")
    else:
        best = min(r['val_rmse'] for r in scratch['history'])
        print(f"full retrain: never reached {target:.4f} in {a.max_epochs} epochs (best {best:.4f}, "
              f"{elapsed:.1f}s): ratio warm/full < {warm_s / elapsed:.2f}")


if __name__ == "__main__":
    main()
