"""Start the training loop with the configured launcher (`train.backend`).

- ``local``: the loop runs in this process (one worker).
- ``horovod``: ``horovod.spark.run`` starts ``train.num_workers`` processes, one per Spark task,
  joined by Gloo.
- ``torch``: ``pyspark.ml.torch.distributor.TorchDistributor`` runs the loop under torchrun in a
  barrier stage of ``train.num_workers`` tasks (DDP; gloo on CPU, nccl on GPU).

Autoencoders (``train.model=autorec|multvae``) train on sparse vectors, which are built here in
Spark from the prepared train split, before any worker starts, and published under
``<lake>/vectors/`` (reused while the prepared data is the same; ``sparkrec.data.sparse_vectors``).

Workers receive plain values (the resolved config as a dict, the manifest and the vectors'
manifest), never the session.
Every settings check runs here on the driver before any worker starts (``check_settings``), so a
configuration error costs no launch. A failed or killed worker fails the run with the worker's
reason, naming every dead worker process and the signal that ended it. Spark does not retry either
launcher's stage (a barrier ResultStage cannot be recovered; Horovod's job is cancelled as a
whole), so ``train.max_restarts`` relaunches all workers here, but only after a crash (a worker
killed by a signal, a lost executor, a broken connection between workers): an error a worker
raised itself (bad data, a checkpoint of another run, a bug) fails the run at once, as a restart
would fail the same way. Relaunched workers resume from this run's last checkpoint (older runs'
checkpoints were cleared before the first attempt unless resuming).
"""
from __future__ import annotations

import os
import re
import signal
import sys
from collections import deque
from contextlib import redirect_stderr

from pyspark.sql import SparkSession

from sparkrec.config import Config, dump_config
from sparkrec.data.prepare import files_per_split, load_manifest
from sparkrec.data.sparse_vectors import current_vectors, publish_vectors
from sparkrec.errors import SparkrecError
from sparkrec.preflight import check_training_cluster
from sparkrec.session import get_spark
from sparkrec.train import distributed as dist
from sparkrec.train.checkpoint import checkpoint_dir, clear_checkpoints
from sparkrec.train.inputs import training_inputs
from sparkrec.train.loop import is_implicit, model_config, pretrained_parts, train, warm_start_version
from sparkrec.train.objectives import AUTOENCODERS, resolve_loss
from sparkrec.train.validation import metric_name

HOROVOD_START_TIMEOUT_S = 120


def worker_main(config: dict, manifest: dict, inputs: dict, vectors: dict | None = None, on_epoch=None) -> dict:
    """Entry point of every worker process: rebuild the config, run the loop."""
    cfg = Config.model_validate(config)
    summary = train(cfg, manifest, inputs, vectors, on_epoch)
    if cfg.train.backend == "torch" and os.environ.get("TORCHELASTIC_RUN_ID"):  # a torchrun child
        dist.exit_without_teardown()
    return summary


class WorkerCrash(SparkrecError):
    """Training workers died (a signal, a lost executor, a broken connection between them) without
    an error of their own: a relaunch can succeed (``train.max_restarts``)."""


def check_settings(spark: SparkSession | None, cfg: Config, manifest: dict) -> None:
    """Refuse settings that cannot work before any worker starts: the workers then fail only on
    what no check can foresee (a crash, data changed meanwhile).

    Raises
    ------
    SparkrecError
        With the offending keys, the values seen and the fix.
    """
    t = cfg.train
    if bool(t.pretrained_gmf) != bool(t.pretrained_mlp):
        raise SparkrecError(f"train.pretrained_gmf={t.pretrained_gmf!r} and train.pretrained_mlp="
                            f"{t.pretrained_mlp!r}: set both (NeuMF pretraining needs a GMF and an MLP model) or neither")
    if t.pretrained_gmf and t.model != "neumf":
        raise SparkrecError(f"train.pretrained_gmf/mlp initialise a neumf model, but train.model={t.model}")
    if t.model in AUTOENCODERS:
        unsupported = [k for k in ("warm_start", "pretrained_gmf") if getattr(t, k)]
        if unsupported:
            raise SparkrecError(f"train.{unsupported[0]} is not supported for train.model={t.model}; train from scratch")
        if t.model == "autorec" and is_implicit(cfg, manifest):
            raise SparkrecError("train.model=autorec reconstructs explicit ratings, but training is implicit "
                                f"(train.objective={t.objective}, prepared data implicit={manifest['implicit']}); "
                                "use train.model=multvae, or prepare a log with ratings")
        if t.model == "multvae" and not is_implicit(cfg, manifest):
            raise SparkrecError("train.model=multvae models implicit feedback, but the prepared data has ratings; "
                                "set train.objective=implicit (ratings become bag weights) or prepare with "
                                "prepare.implicit_threshold")
    _check_loss(cfg, manifest)
    if t.objective == "explicit" and manifest["implicit"]:
        raise SparkrecError("train.objective=explicit, but the prepared data is implicit (every label is 1.0); "
                            "prepare a log with ratings or use train.objective=implicit")
    try:
        metric_name(t.validation_metric, is_implicit(cfg, manifest))
    except ValueError as e:
        raise SparkrecError(str(e)) from None
    if t.model == "hybrid" and t.warm_start:
        raise SparkrecError("train.warm_start is not supported for train.model=hybrid yet; train from scratch")
    try:  # the model's own checks (widths, dropout, rating range); a hybrid's needs published content
        model_config(cfg, manifest)
    except ValueError as e:
        raise SparkrecError(f"train.model={t.model} cannot be built from these settings: {e}") from None
    if t.pretrained_gmf:
        pretrained_parts(cfg, manifest)
    if t.warm_start:
        warm_start_version(cfg, manifest)
    if t.backend == "local" and t.num_workers != 1:
        raise SparkrecError(f"train.backend=local runs one process, but train.num_workers={t.num_workers}; "
                            f"use train.backend=horovod or torch for more workers")
    check_training_cluster(spark, t)  # GPUs, dynamic allocation, task slots (sparkrec.preflight)


def _check_loss(cfg: Config, manifest: dict) -> None:
    """The loss, the refit and the history model's settings must fit the model and the data."""
    t, implicit = cfg.train, is_implicit(cfg, manifest)
    loss = resolve_loss(t.loss, t.model, implicit)
    if t.model in AUTOENCODERS:
        if t.loss != "auto" or t.refit:
            key = "train.loss" if t.loss != "auto" else "train.refit"
            raise SparkrecError(f"{key} does not apply to train.model={t.model} (it trains on its own "
                                f"reconstruction loss, from the train split); leave it at its default")
        return
    if (loss == "mse") == implicit:
        raise SparkrecError(f"train.loss={t.loss} does not fit {'implicit' if implicit else 'explicit'} data: use "
                            f"{'bce, bpr, softmax or sampled_softmax' if implicit else 'mse (or auto)'}")
    if loss in ("softmax", "sampled_softmax") and t.model not in ("gmf", "sequence"):
        raise SparkrecError(f"train.loss={loss} scores the whole catalogue by a dot product, which "
                            f"train.model={t.model} is not (its MLP tower scores one pair at a time); use "
                            f"train.loss=bce or bpr, or train.model=gmf or sequence")
    if t.refit and t.early_stopping_patience:
        raise SparkrecError("train.refit=true trains on train + validation, so there is nothing to stop early on; "
                            "set train.early_stopping_patience=0 and train.epochs to the epochs validation chose")
    if t.refit and not manifest["splits"].get("validation", {}).get("rows"):
        raise SparkrecError("train.refit=true adds the validation split to training, but the prepared data has "
                            "none; prepare with a validation split or set train.refit=false")
    if t.model == "sequence" and not implicit and cfg.sequence.encoder != "mean":
        raise SparkrecError("train.model=sequence on explicit ratings is the SVD++-style pooled history: set "
                            "sequence.encoder=mean (attention applies to implicit data)")
    if t.model == "sequence" and not implicit and cfg.sequence.members > 1:
        raise SparkrecError(f"sequence.members={cfg.sequence.members} sums its towers' scores, which ranks items "
                            f"but does not predict a rating (this data is explicit); set sequence.members=1")


def run_training(spark: SparkSession | None, cfg: Config, on_epoch=None) -> dict:
    """Train ``cfg.train.model`` on the published prepared data and publish ``models/<name>``.

    Returns
    -------
    dict
        The loop's summary (see ``sparkrec.train.loop.train``): history, best epoch, per-rank
        weight digests and the published model record.

    Raises
    ------
    SparkrecError
        Bad settings, missing prepared data, unusable checkpoint, or a failed worker (with the
        launcher's message).
    """
    manifest = load_manifest(cfg.lake)
    check_settings(spark, cfg, manifest)
    vectors = sparse_vectors(spark, cfg, manifest) if cfg.train.model in AUTOENCODERS else None
    inputs = training_inputs(spark or get_spark(cfg.spark), cfg, manifest, is_implicit(cfg, manifest))
    if on_epoch is not None and cfg.train.backend != "local":
        raise SparkrecError("per-epoch callbacks (tuning with pruning) need train.backend=local")
    if not cfg.train.resume:
        clear_checkpoints(checkpoint_dir(cfg.lake, cfg.name))
    failures = 0
    while True:
        try:
            return _launch(spark, cfg, manifest, inputs, vectors, on_epoch)
        except WorkerCrash as e:
            failures += 1
            if failures > cfg.train.max_restarts:
                raise
            print(f"[train] workers crashed ({e}); relaunching them (restart {failures} of "
                  f"{cfg.train.max_restarts}), they resume from the last checkpoint", file=sys.stderr, flush=True)


def sparse_vectors(spark: SparkSession | None, cfg: Config, manifest: dict) -> dict:
    """The published sparse vectors the autoencoder ``cfg.train.model`` trains on, built in Spark
    when missing or stale (a local run without a session starts one from ``cfg.spark``)."""
    t = cfg.train
    kind = AUTOENCODERS[t.model]
    found = current_vectors(cfg.lake, manifest, kind, t.num_workers)
    if found:
        return found
    return publish_vectors(spark or get_spark(cfg.spark), cfg.lake, manifest, kind,
                           num_files=files_per_split(cfg.prepare.num_files, t.num_workers),
                           num_workers=t.num_workers, row_group_bytes=cfg.prepare.row_group_bytes)


def _launch(spark: SparkSession | None, cfg: Config, manifest: dict, inputs: dict, vectors: dict | None,
            on_epoch=None) -> dict:
    """Run the loop on the configured launcher once; a failed worker becomes a SparkrecError."""
    args = (dump_config(cfg), manifest, inputs, vectors)
    t = cfg.train
    if t.backend == "local":
        return worker_main(*args, on_epoch=on_epoch)
    if spark is None:
        raise SparkrecError(f"train.backend={t.backend} launches workers through Spark; pass a SparkSession")
    # Keep the tail of the workers' output to name a failure: Horovod reports only exit codes and
    # TorchDistributor only "View stdout logs"; both stream the workers' stderr to ours.
    output = OutputTail(sys.stderr)
    entry = with_package_paths(spark.conf.get("spark.submit.pyFiles", "").split(","))
    if t.backend == "horovod":
        import horovod.spark

        try:
            results = horovod.spark.run(entry, args=args, num_proc=t.num_workers, use_gloo=True,
                                        start_timeout=HOROVOD_START_TIMEOUT_S, verbose=0, stderr=output,
                                        executable=executor_python())
        except Exception as e:
            raise worker_failure("horovod training failed", output.text(), e) from e
        return results[0]
    from pyspark.ml.torch.distributor import TorchDistributor

    use_gpu = spark.conf.get("spark.task.resource.gpu.amount", None) is not None
    try:
        with redirect_stderr(output):
            return TorchDistributor(num_processes=t.num_workers, local_mode=False,
                                    use_gpu=use_gpu).run(entry, *args)
    except Exception as e:
        raise worker_failure("torch (DDP) training failed", output.text(), e) from e


def with_package_paths(py_files: list[str]):
    """``worker_main`` for the processes the launchers start, which do not see ``--py-files``.

    Spark puts the ``--py-files`` zips on ``sys.path`` of its own Python workers only; Horovod's
    and torchrun's child processes on a cluster get the worker's environment, without them, and
    fail to unpickle ``worker_main`` ("No module named 'sparkrec'"). This returns a closure, which
    cloudpickle ships by value: it puts each zip (fetched into the executor's working directory;
    on the driver's host, its own path) on ``sys.path`` before importing sparkrec.
    """
    names = [p.split("://", 1)[-1] for p in py_files if p]

    def run(*args):
        import os
        import sys

        base = os.environ.get("HOROVOD_SPARK_WORK_DIR") or os.getcwd()
        for name in names:
            path = name if os.path.exists(name) else os.path.join(base, os.path.basename(name))
            if os.path.exists(path) and path not in sys.path:
                sys.path.insert(0, path)
        from sparkrec.train.launch import worker_main

        return worker_main(*args)

    return run


def executor_python() -> str:
    """The Python that executors run: ``spark.pyspark.python`` (PySpark hands it to the driver as
    ``PYSPARK_PYTHON``; ``./env/bin/python`` of the shipped archive on a cluster). Horovod starts
    its workers with it, not with the driver's own ``sys.executable``, a path only this host has."""
    return os.environ.get("PYSPARK_PYTHON") or sys.executable


class OutputTail:
    """A text stream that forwards to ``target`` and keeps the last lines, to name a failed
    worker's own error (Horovod itself reports only an exit code)."""

    def __init__(self, target, lines: int = 200):
        self.target, self.lines = target, deque(maxlen=lines)

    def write(self, s: str) -> int:
        self.lines.extend(s.splitlines())
        return self.target.write(s)

    def flush(self) -> None:
        self.target.flush()

    def text(self) -> str:
        return "\n".join(self.lines)


_ERROR_LINE = re.compile(r"^(?:\[\w+\](?:<std(?:err|out)>)?:)?\s*((?:[\w.]+\.)?(\w+(?:Error|Exception)): .*)$")
_WRAPPERS = ("PythonException", "Py4JJavaError", "SparkException", "ChildFailedError", "HorovodInternalError")
# How the launchers report a dead worker process: horovod.spark.run names the first one; torchrun
# lists each failed rank (its "Root Cause" is the earliest by a timestamp in whole seconds, so
# not reliably the first to die: a rank SIGKILLed and the peer that crashed on the broken
# connection look alike there).
_HOROVOD_EXIT = re.compile(r"Process name: (?P<who>\S+)\s+Exit code: (?P<code>-?\d+)")
_TORCHRUN_EXIT_SHORT = re.compile(r"exitcode\s*:\s*(?P<code>-?\d+) \(pid: (?P<pid>\d+)\)")
# Horovod runs each rank under a shell, which reports a rank killed by a signal on the rank's
# stderr. Horovod itself names only the process whose exit it saw first: when the survivor's exit
# (code 1, "Horovod has been shut down") is seen first, this line is the only trace of the kill.
_SHELL_SIGNALLED = re.compile(r"(?:^|\r)\[(?P<who>\w+)\]<stderr>:(?P<how>Killed|Terminated)[ \t]*$", re.M)
_SHELL_SIGNALS = {"Killed": signal.SIGKILL, "Terminated": signal.SIGTERM}
# What a surviving rank prints when a peer died: a symptom, not a cause.
_LOST_PEER = re.compile(r"gloo|[Cc]onnection (?:closed|reset|refused)|by peer|[Ss]ocket|[Bb]roken pipe|"
                        r"HorovodInternalError|Horovod has been shut down|DistBackendError|NCCL|[Tt]imed? ?out")
_EXECUTOR_LOST = re.compile(r"ExecutorLostFailure|[Ll]ost executor|executor \S+ (?:was )?lost")


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _dead_workers(text: str) -> list[tuple[str, int]]:
    """(who, exit code) of every dead worker process the launchers reported, each once."""
    found: dict[str, int] = {}
    # TorchDistributor starts one torchrun per Spark task, so torchrun's "rank" is 0 in every
    # report: the pid is what tells the processes apart.
    for m in _TORCHRUN_EXIT_SHORT.finditer(text):
        found.setdefault(f"pid {m.group('pid')}", int(m.group("code")))
    for m in _SHELL_SIGNALLED.finditer(text):
        found.setdefault(m.group("who"), -_SHELL_SIGNALS[m.group("how")])
    for m in _HOROVOD_EXIT.finditer(text):
        found.setdefault(f"{m.group('who')}", int(m.group("code")))
    return list(found.items())


def worker_failure(what: str, output: str, launcher_error: BaseException) -> SparkrecError:
    """The error a failed launch raises: a ``WorkerCrash`` (worth a relaunch) when the workers died
    without an error of their own, else a ``SparkrecError``; its message is ``what``, then
    :func:`worker_error`."""
    text = f"{output}\n{launcher_error}"
    lines = _exception_lines(text)
    dead = _dead_workers(text)
    own = [line for line in lines if not _LOST_PEER.search(line)]
    crashed = (not any("SparkrecError: " in line for line in lines)
               and (any(code < 0 or code > 128 for _, code in dead) or bool(_EXECUTOR_LOST.search(text)) or not own))
    return (WorkerCrash if crashed else SparkrecError)(f"{what}: {worker_error(output, launcher_error)}")


def _exception_lines(text: str) -> list[str]:
    return [m.group(1) for m in map(_ERROR_LINE.match, text.splitlines())
            if m and m.group(2) not in _WRAPPERS and "TorchDistributor failed" not in m.group(1)]


def worker_error(output: str, launcher_error: BaseException) -> str:
    """One line on why the workers failed, from their output and the launcher's error.

    A ``SparkrecError`` raised by a worker is the reason as it stands. Otherwise: every worker
    process that died and how (exit code, or the signal that killed it), killed ones first, then
    the first exception the workers printed that is not a rank losing its peer.
    """
    text = f"{output}\n{launcher_error}"
    lines = _exception_lines(text)
    ours = [line for line in lines if "SparkrecError: " in line]
    if ours:
        return ours[-1].split("SparkrecError: ", 1)[1]
    # A process killed from outside (SIGKILL: the OOM killer, a lost node; SIGTERM) is the usual
    # first cause; a rank that crashed on the broken connection afterwards is listed after it.
    dead = sorted(_dead_workers(text), key=lambda d: (d[1] not in (-signal.SIGKILL, -signal.SIGTERM), d[0]))
    parts = [f"worker process {who} {_ended(code)}" for who, code in dead]
    if _EXECUTOR_LOST.search(text):
        parts.append("a Spark executor was lost")
    if lines:
        own = [line for line in lines if not _LOST_PEER.search(line)]
        parts.append(f"first worker error: {(own or lines)[0][:300]}")
    return "; ".join(parts) or f"{launcher_error.__class__.__name__}: {str(launcher_error)[:300]}"
