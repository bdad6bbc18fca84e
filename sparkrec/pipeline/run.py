"""The scheduled pipeline: prepare -> [item content] -> train -> quality gate -> evaluate -> score,
in one Spark app (the content stage runs when ``content.source`` is set).

Each stage records in the run summary what it consumed (``inputs``: manifest and config hashes)
and what it published (``outputs``). A stage is skipped when its inputs equal those of the last
successful run and that run's output is still the published one; ``pipeline.force`` or
``pipeline.force_stages`` run it anyway. A newly trained model is written as an unpublished
version; only when the quality gate passes does ``models/<name>`` switch to it, followed by the
report and the top-K table. A blocked or failed run publishes nothing further, records its
summary, and leaves ``runs/latest.json`` on the last successful run.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from pyspark.sql import SparkSession

from sparkrec import lake
from sparkrec.config import Config, dump_config
from sparkrec.data.content import content_root, run_prepare_content
from sparkrec.data.prepare import config_hash, input_fingerprint, load_manifest, run_prepare
from sparkrec.errors import QualityGateBlocked, SparkrecError
from sparkrec.hashing import digest
from sparkrec.evaluate.run import METRICS_FILE, run_evaluate
from sparkrec.pipeline import gate
from sparkrec.pipeline.history import latest_summary, mark_latest, new_run_id, write_summary
from sparkrec.score.job import run_score
from sparkrec.models.store import model_root, publish_model, read_meta
from sparkrec.score.publish import POINTER as SCORES_POINTER, scores_root
from sparkrec.train.launch import run_training


def _published(root: str, pointer: str = "manifest.json") -> str | None:
    """Version folder currently published under ``root``, or None."""
    return lake.resolve(root, pointer)["version"] if lake.exists(lake.join(root, pointer)) else None


class Run:
    """One pipeline run: its summary and the stage bookkeeping around it."""

    def __init__(self, cfg: Config):
        self.cfg, self.lake = cfg, lake.normalize_uri(cfg.lake)
        self.previous = latest_summary(self.lake)
        self.summary = {"run_id": new_run_id(), "status": "running", "started_at": _now(),
                        "previous_run": self.previous and self.previous["run_id"],
                        "config": dump_config(cfg), "stages": {}}

    def stage(self, name: str, inputs: dict, published: Callable[[], str | None],
              run: Callable[[], dict]) -> dict:
        """Run ``run`` (returning the stage's outputs, with the published ``version``) unless
        the stage is unchanged since the last successful run; return the outputs either way."""
        record = {"inputs": inputs, "inputs_hash": digest(inputs)}
        self.summary["stages"][name] = record
        before = (self.previous or {}).get("stages", {}).get(name, {})
        forced = self.cfg.pipeline.force or name in self.cfg.pipeline.force_stages
        if (not forced and before.get("inputs_hash") == record["inputs_hash"]
                and before.get("outputs", {}).get("version") == published()):
            record.update(status="skipped", outputs=before["outputs"], seconds=0.0,
                          note=f"inputs unchanged since run {self.previous['run_id']}")
            print(f"[pipeline] {name}: skipped, inputs unchanged since run {self.previous['run_id']}", flush=True)
            return record["outputs"]
        print(f"[pipeline] {name}: running", flush=True)
        started = time.perf_counter()
        record["status"] = "running"
        record["outputs"] = run()
        record.update(status="ran", seconds=round(time.perf_counter() - started, 2))
        return record["outputs"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_pipeline(spark: SparkSession, cfg: Config) -> dict:
    """Run every stage for ``cfg`` and return the run summary (also written to
    ``<lake>/runs/<run_id>/summary.json``).

    Raises
    ------
    SparkrecError
        A stage failed (the message names it); ``QualityGateBlocked`` when the new model regressed.
    """
    r = Run(cfg)
    current = None
    try:
        current = "prepare"
        prepared_root = lake.join(r.lake, "prepared")
        prep = r.stage(
            "prepare",
            {"config_hash": config_hash(cfg), "input": input_fingerprint(lake.normalize_uri(cfg.input.path))},
            lambda: _published(prepared_root),
            lambda: _prepare_outputs(run_prepare(spark, cfg)))
        prepared = load_manifest(r.lake)

        content = None
        if cfg.content.source != "none":
            current = "content"
            content = r.stage(
                "content",
                {"data_hash": prepared["data_hash"], "content": cfg.content.model_dump(mode="json"),
                 "input": input_fingerprint(lake.normalize_uri(cfg.content.path))},
                lambda: _published(content_root(r.lake)),
                lambda: _content_outputs(run_prepare_content(spark, cfg)))

        current = "train"
        models = model_root(r.lake, cfg.name)
        trained = r.stage(
            "train",
            {"data_hash": prepared["data_hash"], "train": cfg.train.model_dump(mode="json"), "seed": cfg.seed,
             **({"content": content["version"]} if content else {})},
            lambda: _published(models),
            lambda: _train_and_gate(spark, cfg, r, prepared))

        current = "evaluate"
        reports = lake.join(r.lake, "reports", cfg.name)
        evaluated = r.stage(
            "evaluate",
            {"model": trained["version"], "data_hash": prepared["data_hash"],
             "evaluate": cfg.evaluate.model_dump(mode="json")},
            lambda: _published(reports, METRICS_FILE),
            lambda: _evaluate_outputs(run_evaluate(spark, cfg)))

        current = "score"
        scores = scores_root(r.lake, cfg.name)
        scored = r.stage(
            "score",
            {"model": trained["version"], "data_hash": prepared["data_hash"], "score": cfg.score.model_dump(mode="json")},
            lambda: _published(scores, SCORES_POINTER),
            lambda: _score_outputs(run_score(spark, cfg)))
        current = None
    except SparkrecError as e:
        _finish(r, "blocked" if isinstance(e, QualityGateBlocked) else "failed", current, e)
        raise type(e)(f"stage {current}: {e}") from None
    except Exception as e:
        _finish(r, "failed", current, e)
        raise SparkrecError(f"stage {current}: {e.__class__.__name__}: {e}") from e

    ran = [name for name, s in r.summary["stages"].items() if s["status"] == "ran"]
    r.summary["lineage"] = {"prepared": prep.get("data_hash"), "model": trained["version"],
                            "parent_model": trained.get("parent"), "report": evaluated["version"],
                            "scores": scored["version"]}
    _finish(r, "succeeded" if ran else "noop", None, None)
    mark_latest(r.lake, r.summary)
    return r.summary


def headline(summary: dict, k: int = 10) -> str:
    """One line comparing the model with the best baseline on the primary metric, from a
    successful run's summary: RMSE on explicit data, else full-ranking NDCG@K (K = ``k`` if it was
    evaluated, else the largest K), with the paired 95% interval of the difference."""
    outputs = summary["stages"]["evaluate"]["outputs"]
    model, baselines = outputs["model"], outputs["baselines"]
    if model.get("rating"):
        protocol, metric, lower = "rating", "rmse", True
    else:
        full = model.get("full") or {}
        ks = sorted(int(name.split("@")[1]) for name in full if name.startswith("ndcg@"))
        if not ks:
            return "no metric to compare"
        protocol, metric, lower = "full", f"ndcg@{k if k in ks else ks[-1]}", False
    ours = model[protocol][metric]
    rivals = [(b[protocol][metric], n) for n, b in baselines.items() if (b.get(protocol) or {}).get(metric) is not None]
    if not rivals:
        return f"{protocol} {metric} {ours:.4f}, no baseline to compare"
    value, name = min(rivals) if lower else max(rivals)
    gap = ((baselines[name].get("model_minus_baseline") or {}).get(protocol) or {}).get(metric) or {}
    line = f"{'' if protocol == 'rating' else 'full-ranking '}{metric} {ours:.4f} vs best baseline {name} {value:.4f}"
    if gap.get("low") is not None:
        better = gap["high"] < 0 if lower else gap["low"] > 0
        worse = gap["low"] > 0 if lower else gap["high"] < 0
        verdict = "better beyond the noise" if better else "worse beyond the noise" if worse else "within the noise"
        line += (f": difference {gap['difference']:+.4f}, 95% interval [{gap['low']:+.4f}, {gap['high']:+.4f}], "
                 f"{verdict}")
    return line


def _finish(r: Run, status: str, stage: str | None, error: BaseException | None) -> None:
    r.summary.update(status=status, finished_at=_now())
    if error is not None:
        r.summary["failed_stage"] = stage
        r.summary["reason"] = " ".join(str(error).split())
    write_summary(r.lake, r.summary)


def _prepare_outputs(manifest: dict) -> dict:
    return {"version": manifest["version"], "data_hash": manifest["data_hash"], "counts": manifest["counts"],
            "num_users": manifest["num_users"], "num_items": manifest["num_items"],
            "split_rows": {k: v["rows"] for k, v in manifest["splits"].items()}}


def _content_outputs(manifest: dict) -> dict:
    return {"version": manifest["version"], "data_hash": manifest["data_hash"], "counts": manifest["counts"],
            "vocab_size": manifest["vocab_size"]}


def _train_and_gate(spark: SparkSession, cfg: Config, r: Run, prepared: dict) -> dict:
    """Train an unpublished model version, judge it against the published one, publish it."""
    root = model_root(r.lake, cfg.name)
    published = _published(root)
    if published is not None and cfg.pipeline.gate and cfg.train.refit:
        raise SparkrecError("train.refit=true trains on the validation split the quality gate judges by, so the gate "
                            "would favour the new model; set pipeline.gate=false for refit runs, or train.refit=false")
    summary = run_training(spark, cfg.model_copy(update={"train": cfg.train.model_copy(update={"publish": False})}))
    candidate = summary["model"]["version"]
    meta = read_meta(candidate)
    outputs = {"version": candidate, "parent": meta.get("parent"), "best_epoch": summary["best_epoch"],
               "metric": summary["metric"], "history": meta.get("history")}
    if published is not None and cfg.pipeline.gate:
        verdict = gate.compare(spark, cfg, prepared, candidate, published)
        r.summary["gate"] = {"metric": verdict.metric, "candidate": verdict.candidate, "published": verdict.published,
                             "published_version": published, "candidate_version": candidate,
                             "tolerance": verdict.tolerance, "rows": verdict.rows, "passed": verdict.passed}
        print(f"[pipeline] quality gate: {verdict.describe()}: {'passed' if verdict.passed else 'BLOCKED'}", flush=True)
        if not verdict.passed:
            lake.remove(candidate)  # never published; the previous model stays live
            raise QualityGateBlocked(f"quality gate blocked the new model: {verdict.describe()}; "
                                     f"the published model and top-K table are unchanged")
    publish_model(root, candidate, meta)
    return outputs


def _evaluate_outputs(metrics: dict) -> dict:
    model = next((v for v in metrics["results"].values() if v["role"] == "model"), {})
    return {"version": metrics["version"], "report": metrics["report"],
            "model": {k: model.get(k) for k in ("rating", "sampled", "full")},
            "baselines": {n: {k: v.get(k) for k in ("rating", "sampled", "full", "model_minus_baseline")}
                          for n, v in metrics["results"].items() if v["role"] == "baseline"}}


def _score_outputs(manifest: dict) -> dict:
    return {k: manifest.get(k) for k in ("version", "rows", "users", "cold_start_users", "k", "model_version")}
