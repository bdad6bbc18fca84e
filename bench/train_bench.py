"""Training throughput: the real training step measured against a baseline in the same run.

1. feed: the Petastorm feed (ShardReader: row-group shuffling, shuffle buffer, BatchedDataLoader)
   against the same NeuMF step on in-memory tensors of the same prepared rows (target ratio >= 0.85);
2. workers: the full job through TorchDistributor with 2 workers against 1 worker on local[2];
3. vocabulary: in-memory NeuMF steps at 1M users x 100k items against 6k x 4k (sparse embedding
   gradients; target ratio >= 0.5);
4. losses: in-memory GMF-64 steps (1M users x 100k items) with each loss; target:
   ``sampled_softmax`` with 1,000 shared negatives (plus the batch's positives) >= 0.5x the
   samples/s of ``bce`` with 4 negatives per positive;
5. time_to_quality (ml-latest-small, implicit, from ``../shared``): wall time from published
   prepared data to a model of the shipped ``conf/movielens-implicit.yaml`` (no refit) whose
   validation full NDCG@10 reaches tuned Spark ALS's (the evaluate job's ALS at the conf's
   ``evaluate.als_*``, judged by the same validation protocol as tuning), over ALS's fit time at
   those settings, in the same run (target <= 1.0). The split is ``bench/movielens_quality.py``'s:
   validation carved from the train file, test never read.

    flock /tmp/sparkrec-tests.lock .venv/bin/python bench/train_bench.py [--rows 2000000] [--reps 3] \
        [--parts feed workers vocabulary losses time_to_quality]

Samples are positives (each implicit step also scores num_negatives negatives per positive).
Medians over ``--reps`` alternating repetitions; the prepared data is cached under bench/out/.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch

from sparkrec.columns import ITEM_IDX, LABEL, USER_IDX
from sparkrec.config import load_config
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.data.synthetic import generate_interactions, write_synthetic
from sparkrec.models.ncf import NCF, NCFConfig
from sparkrec.session import get_spark
from sparkrec.train.feed import ShardReader, plan_shards
from sparkrec.train.launch import run_training
from sparkrec.train.optim import make_optimizers
from sparkrec.train.loop import train_step
from sparkrec.train.objectives import Negatives, NCFObjective

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
OUT = Path(__file__).resolve().parent / "out" / "train_bench"
TOWER = (64, 32, 16, 8)


def prepared(rows: int, spark_cfg: list[str]) -> tuple[str, list[str]]:
    """A prepared implicit dataset of about ``rows`` training rows (6k users x 4k items), cached."""
    lake = OUT / f"lake-{rows}"
    overrides = [f"lake={lake}", f"input.path={OUT}/raw-{rows}", f"generate.num_rows={rows}",
                 "generate.num_users=6000", "generate.num_items=4000", "generate.kind=implicit",
                 "generate.popularity_exponent=0.5", "input.columns.rating=null", "prepare.split.kind=random",
                 "prepare.split.fractions=[0.98,0.01,0.01]", "prepare.num_files=4", "train.num_workers=2",
                 *spark_cfg]
    if not (lake / "prepared" / "manifest.json").exists():
        cfg = load_config(None, overrides)
        spark = get_spark(cfg.spark)
        write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
        run_prepare(spark, cfg)
    return str(lake), overrides


def new_model(num_users: int, num_items: int, kind: str = "neumf", factors: int = 8,
              dense_items: bool = False) -> tuple[NCF, list]:
    torch.manual_seed(0)
    model = NCF(NCFConfig(kind=kind, num_users=num_users, num_items=num_items, factors=factors, mlp_layers=TOWER,
                          dropout=0.0, implicit=True, rating_min=1.0, rating_max=5.0, use_bias=False,
                          dense_items=dense_items))
    cfg = load_config(None, []).train
    return model, make_optimizers(model, cfg, cfg.lr)


def ncf_objective(lake: str, *overrides: str, num_items: int | None = None) -> NCFObjective:
    """The training job's implicit NCF objective (default train config: bce, 4 negatives per
    positive), negatives drawn uniformly over ``num_items`` (default: the prepared items)."""
    manifest = load_manifest(lake)
    objective = NCFObjective(load_config(None, list(overrides)), manifest, inputs={}, world=1, implicit=True)
    counts = torch.ones(num_items or manifest["num_items"], dtype=torch.float64)
    objective.loss_settings.negatives = Negatives(objective.loss_settings.sampler, counts, None)
    return objective


def run_steps(objective: NCFObjective, model, optimizers, batches, rows_per_step: int) -> float:
    """Positives per second through the real training step."""
    gen = torch.Generator().manual_seed(1)
    model.train()
    trainee = objective.trainee(model)
    rows, start = 0, time.perf_counter()
    for step, batch in enumerate(batches):
        n = len(batch[USER_IDX])
        train_step(objective, model, trainee, optimizers, None, batch,
                   loss_scale=1.0 / (rows_per_step * objective.examples_per_row), generator=gen, step=step,
                   autocast=nullcontext())
        rows += n
    return rows / (time.perf_counter() - start)


def in_memory_batches(columns: dict[str, torch.Tensor], batch_size: int, seed: int):
    order = torch.randperm(len(columns[USER_IDX]), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield {k: v[idx] for k, v in columns.items()}


def bench_feed(lake: str, reps: int, batch_size: int) -> tuple[float, float]:
    manifest = load_manifest(lake)
    plan = plan_shards(manifest, "train", world=1, batch_size=batch_size)
    frame = pd.read_parquet(manifest["splits"]["train"]["path"].removeprefix("file://"), columns=list(
        (USER_IDX, ITEM_IDX, LABEL)))
    columns = {c: torch.as_tensor(frame[c].to_numpy()) for c in (USER_IDX, ITEM_IDX, LABEL)}
    objective = ncf_objective(lake)
    feed, memory = [], []
    for rep in range(reps):
        model, opts = new_model(manifest["num_users"], manifest["num_items"])
        torch.manual_seed(rep)
        feed.append(run_steps(objective, model, opts, ShardReader(plan, 0, seed=rep + 1, shuffle_buffer=100_000), batch_size))
        model, opts = new_model(manifest["num_users"], manifest["num_items"])
        memory.append(run_steps(objective, model, opts, in_memory_batches(columns, batch_size, rep), batch_size))
        print(f"  rep {rep}: feed {feed[-1]:,.0f}/s, in-memory {memory[-1]:,.0f}/s", flush=True)
    return statistics.median(feed), statistics.median(memory)


def bench_workers(overrides: list[str], reps: int) -> tuple[float, float]:
    by_workers = {1: [], 2: []}
    for rep in range(reps):
        for workers in (1, 2):
            cfg = load_config(None, [*overrides, f"name=bench-{workers}w", "train.backend=torch",
                                     f"train.num_workers={workers}", "train.epochs=2", "train.model=neumf",
                                     "train.log_every_steps=1000000"])
            summary = run_training(get_spark(cfg.spark), cfg)
            by_workers[workers].append(summary["history"][-1]["samples_per_s"])  # epoch 2: warm
            print(f"  rep {rep}: {workers} worker(s) {by_workers[workers][-1]:,.0f}/s", flush=True)
    return statistics.median(by_workers[1]), statistics.median(by_workers[2])


def bench_vocabulary(objective: NCFObjective, reps: int, batch_size: int, steps: int) -> dict[str, float]:
    sizes = {"6k x 4k": (6_000, 4_000), "1M x 100k": (1_000_000, 100_000)}
    rates = {name: [] for name in sizes}
    for rep in range(reps):
        for name, (users, items) in sizes.items():
            g = torch.Generator().manual_seed(rep)
            batches = [{USER_IDX: torch.randint(users, (batch_size,), generator=g),
                        ITEM_IDX: torch.randint(items, (batch_size,), generator=g),
                        LABEL: torch.ones(batch_size)} for _ in range(steps)]
            model, opts = new_model(users, items)
            run_steps(objective, model, opts, batches[:5], batch_size)  # warm-up
            rates[name].append(run_steps(objective, model, opts, batches[5:], batch_size))
            print(f"  rep {rep}: {name} {rates[name][-1]:,.0f}/s", flush=True)
    return {name: statistics.median(v) for name, v in rates.items()}


LOSSES = {"bce, 4 negatives": ("bce", 4), "bpr, 4 negatives": ("bpr", 4),
          "sampled_softmax, 1,000 shared negatives": ("sampled_softmax", 1000), "softmax, 100k items": ("softmax", 0)}


def bench_losses(lake: str, reps: int, batch_size: int, steps: int) -> dict[str, float]:
    users, items = 1_000_000, 100_000
    rates = {name: [] for name in LOSSES}
    for rep in range(reps):
        g = torch.Generator().manual_seed(rep)
        batches = [{USER_IDX: torch.randint(users, (batch_size,), generator=g),
                    ITEM_IDX: torch.randint(items, (batch_size,), generator=g),
                    LABEL: torch.ones(batch_size)} for _ in range(steps)]
        for name, (loss, negatives) in LOSSES.items():
            objective = ncf_objective(lake, "train.model=gmf", f"train.loss={loss}",
                                      f"train.num_negatives={max(1, negatives)}", num_items=items)
            model, opts = new_model(users, items, kind="gmf", factors=64, dense_items=loss == "softmax")
            run_steps(objective, model, opts, batches[:3], batch_size)  # warm-up
            rates[name].append(run_steps(objective, model, opts, batches[3:], batch_size))
            print(f"  rep {rep}: {name} {rates[name][-1]:,.0f}/s", flush=True)
    return {name: statistics.median(v) for name, v in rates.items()}


class QualityReached(Exception):
    """Ends a timed training run at the first epoch that reaches the target."""


def bench_time_to_quality(reps: int, spark_cfg: list[str], model_overrides: list[str] = ()) -> dict:
    from types import SimpleNamespace

    from movielens_quality import base_config  # bench/ is this script's folder

    from sparkrec.config import with_overrides
    from sparkrec.evaluate.run import fit_baselines
    from sparkrec.tune.search import ValidationJudge

    conf = str(Path(__file__).resolve().parent.parent / "conf" / "movielens-implicit.yaml")
    cfg = base_config(SimpleNamespace(lake=str(OUT / "movielens")), "implicit", conf,
                      ["train.refit=false", "train.publish=false", "train.early_stopping_patience=0", *spark_cfg])
    spark = get_spark(cfg.spark)
    run_prepare(spark, cfg)  # not timed: the clock starts from published prepared data
    prepared = load_manifest(cfg.lake)
    judge = ValidationJudge(spark, cfg, prepared)
    als_cfg = with_overrides(judge.cfg, ["evaluate.baselines=[als_implicit]"])
    als_s, targets = [], []
    for rep in range(reps):
        started = time.perf_counter()
        als = fit_baselines(judge.splits["train"], als_cfg, prepared)[0][0]
        als_s.append(time.perf_counter() - started)
        targets.append(judge(als))
        print(f"  rep {rep}: ALS fit {als_s[-1]:.1f}s, validation full ndcg@10 {targets[-1]:.4f}", flush=True)
    target = statistics.median(targets)
    model_s, epochs = [], []
    for rep in range(reps):
        started = time.perf_counter()

        def stop_when_reached(epoch: int, record: dict) -> None:
            if record["val_ndcg@10"] >= target:
                epochs.append(epoch)
                raise QualityReached

        try:
            run_training(None, with_overrides(cfg, [f"name=ttq-{rep}", *model_overrides]), on_epoch=stop_when_reached)
            model_s.append(float("inf"))  # never reached it
        except QualityReached:
            model_s.append(time.perf_counter() - started)
        print(f"  rep {rep}: model reached {target:.4f} after {model_s[-1]:.1f}s "
              f"(epoch {epochs[-1] if len(epochs) > rep else '-'})", flush=True)
    return {"target": target, "als_s": statistics.median(als_s), "model_s": statistics.median(model_s),
            "epochs": epochs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="generated events (before dedupe)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--parts", nargs="+", default=["feed", "workers", "vocabulary", "losses", "time_to_quality"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="time_to_quality: overrides on top of the shipped config (e.g. train.amp=bf16)")
    args = parser.parse_args()
    spark_cfg = ["spark.log_level=ERROR", f"spark.conf={{spark.local.dir: {OUT}/spark-local}}"]
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}")
    if set(args.parts) - {"time_to_quality"}:
        lake, overrides = prepared(args.rows, spark_cfg)  # the vocabulary part reuses only its objective
        print(f"prepared: {load_manifest(lake)['splits']['train']['rows']:,} training rows")
    if "feed" in args.parts:
        print("1. Petastorm feed vs in-memory tensors (NeuMF 8 / 64-32-16-8, 4 negatives, batch "
              f"{args.batch_size})")
        feed, memory = bench_feed(lake, args.reps, args.batch_size)
        print(f"   median feed {feed:,.0f}/s, in-memory {memory:,.0f}/s: ratio {feed / memory:.2f} (target >= 0.85)")
    if "workers" in args.parts:
        print("2. TorchDistributor 2 workers vs 1 worker (local[2], samples/s of a warm epoch, whole job)")
        one, two = bench_workers(overrides, args.reps)
        print(f"   median 1 worker {one:,.0f}/s, 2 workers {two:,.0f}/s: ratio {two / one:.2f}")
    if "vocabulary" in args.parts:
        print("3. vocabulary size, in-memory steps, sparse embedding gradients")
        rates = bench_vocabulary(ncf_objective(lake), args.reps, args.batch_size, steps=200)
        small, large = rates["6k x 4k"], rates["1M x 100k"]
        print(f"   median 6k x 4k {small:,.0f}/s, 1M x 100k {large:,.0f}/s: ratio {large / small:.2f} (target >= 0.5)")
    if "losses" in args.parts:
        print(f"4. losses, in-memory GMF-64 steps, 1M users x 100k items, batch {args.batch_size}")
        rates = bench_losses(lake, args.reps, args.batch_size, steps=40)
        for name, rate in rates.items():
            print(f"   median {name}: {rate:,.0f} samples/s")
        ratio = rates["sampled_softmax, 1,000 shared negatives"] / rates["bce, 4 negatives"]
        print(f"   sampled_softmax (1,000) / bce (4): {ratio:.2f} (target >= 0.5)")
    if "time_to_quality" in args.parts:
        print("5. time to quality, ml-latest-small implicit: conf/movielens-implicit.yaml vs tuned ALS's validation "
              "full NDCG@10")
        t = bench_time_to_quality(args.reps, spark_cfg, args.set)
        print(f"   ALS validation full ndcg@10 {t['target']:.4f}, ALS fit {t['als_s']:.1f}s; model reached it in "
              f"{t['model_s']:.1f}s (epochs {t['epochs']}): ratio {t['model_s'] / t['als_s']:.2f} (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
