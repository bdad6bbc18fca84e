"""The spark-submit options ``spark-submit.sh`` adds so driver and executors find the environment.

On a local master everything runs on this host, from the project's venv. On any other master
(YARN, Kubernetes, standalone, ...) executors run on hosts that have neither this checkout nor its
``.venv``, so the environment travels as an archive (``make package-env`` builds
``build/env.tar.gz``; ``SPARKREC_ENV_ARCHIVE`` names another, also a URI such as
``hdfs:///envs/sparkrec.tar.gz``) unpacked as ``./env`` in every container's working directory,
and ``spark.pyspark.python=./env/bin/python`` points Python workers at it on every cluster manager:

- client mode: the driver runs here, from the venv (``spark.pyspark.driver.python``);
- cluster mode: the driver runs in a cluster container, where YARN and Kubernetes unpack the same
  archive, so nothing names a path of this host (YARN's spark-submit would otherwise forward
  ``PYSPARK_DRIVER_PYTHON``/``PYSPARK_PYTHON`` to the application master: both are unset).

A caller who sets ``spark.pyspark.python`` (e.g. an environment baked into the executor image)
gets no archive. ``python -m sparkrec.submit <spark-submit options>`` prints the plan as shell code for
``spark-submit.sh`` to ``eval``; a refusal exits 2 with a one-line reason.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from sparkrec.preflight import is_local_master

ALIAS = "env"
EXECUTOR_PYTHON = f"./{ALIAS}/bin/python"
ARCHIVE_CONFS = ("spark.archives", "spark.yarn.dist.archives")


class SubmitRefused(ValueError):
    """The options cannot work on this cluster manager; the message says why and the fix."""


@dataclass
class SubmitPlan:
    options: list[str]
    """All spark-submit options (the caller's, with the environment's added)."""
    export: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)

    def shell(self) -> str:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.export.items()]
        lines += [f"unset {k}" for k in self.unset]
        lines.append("submit_opts=(" + " ".join(shlex.quote(o) for o in self.options) + ")")
        return "\n".join(lines) + "\n"


def _value(options: Sequence[str], flag: str) -> str | None:
    """The last value of ``--flag value`` or ``--flag=value`` in ``options``."""
    found = None
    for i, opt in enumerate(options):
        if opt == flag and i + 1 < len(options):
            found = options[i + 1]
        elif opt.startswith(flag + "="):
            found = opt.split("=", 1)[1]
    return found


def _confs(options: Sequence[str]) -> dict[str, str]:
    confs = {}
    for i, opt in enumerate(options):
        item = options[i + 1] if opt in ("--conf", "-c") and i + 1 < len(options) else (
            opt.split("=", 1)[1] if opt.startswith("--conf=") else None)
        if item and "=" in item:
            key, value = item.split("=", 1)
            confs[key] = value
    return confs


def _is_local_file(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file:")


def plan_submit(options: Sequence[str], env: Mapping[str, str], root: str) -> SubmitPlan:
    """The spark-submit options and environment for a job submitted with ``options``.

    Parameters
    ----------
    options : sequence of str
        spark-submit's own options as given (``--master`` included: spark-submit.sh adds the
        local default before calling this).
    env : mapping
        The environment (``SPARKREC_ENV_ARCHIVE``, ``SPARKREC_VENV``).
    root : str
        The project checkout (``build/env.tar.gz`` and ``.venv`` live there).

    Raises
    ------
    SubmitRefused
        The environment archive is missing or older than the environment, Python in standalone
        cluster mode, or Kubernetes cluster mode without an upload path for local files.
    """
    options = list(options)
    master = _value(options, "--master") or "local[2]"
    venv = env.get("SPARKREC_VENV") or os.path.join(root, ".venv")
    venv_python = os.path.join(venv, "bin", "python")
    if is_local_master(master):
        return SubmitPlan(options, export={"PYSPARK_PYTHON": env.get("PYSPARK_PYTHON") or venv_python,
                                           "PYSPARK_DRIVER_PYTHON": env.get("PYSPARK_DRIVER_PYTHON") or venv_python})
    cluster_mode = (_value(options, "--deploy-mode") or "client") == "cluster"
    confs = _confs(options)
    if cluster_mode and master.startswith("spark://"):
        raise SubmitRefused(f"--deploy-mode cluster: Spark standalone masters ({master}) do not run Python "
                            f"applications in cluster mode; use --deploy-mode client")
    if cluster_mode and master.startswith("k8s://") and not confs.get("spark.kubernetes.file.upload.path"):
        raise SubmitRefused("--master k8s:// --deploy-mode cluster uploads local files (the environment archive, "
                            "build/sparkrec.zip) through spark.kubernetes.file.upload.path, which is not set; add "
                            "--conf spark.kubernetes.file.upload.path=s3a://<bucket>/<folder> (or hdfs://...)")

    archives = [a for a in (_value(options, "--archives") or "").split(",") if a]
    for key in ARCHIVE_CONFS:
        archives += [a for a in confs.get(key, "").split(",") if a]
    # A caller who names the executors' Python (an environment baked into the image) or ships
    # their own ./env manages the environment; otherwise ship ours.
    if "spark.pyspark.python" not in confs:
        if not any(a.endswith("#" + ALIAS) for a in archives):
            options = _add_archive(options, _archive(env, root, venv, master) + "#" + ALIAS)
        options += ["--conf", f"spark.pyspark.python={EXECUTOR_PYTHON}"]
    if cluster_mode:  # the driver's container unpacks the archive too; nothing of this host's paths
        return SubmitPlan(options, unset=["PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"])
    driver_python = env.get("PYSPARK_DRIVER_PYTHON") or venv_python
    if "spark.pyspark.driver.python" not in confs:
        options += ["--conf", f"spark.pyspark.driver.python={driver_python}"]
    return SubmitPlan(options, export={"PYSPARK_PYTHON": confs.get("spark.pyspark.python", EXECUTOR_PYTHON),
                                       "PYSPARK_DRIVER_PYTHON": driver_python})


def _archive(env: Mapping[str, str], root: str, venv: str, master: str) -> str:
    named = env.get("SPARKREC_ENV_ARCHIVE")
    archive = named or os.path.join(root, "build", "env.tar.gz")
    if not _is_local_file(archive):
        return archive
    path = archive.removeprefix("file://")
    fix = "run 'make package-env'" + ("" if named else " (or name another archive with SPARKREC_ENV_ARCHIVE)")
    if not os.path.isfile(path):
        raise SubmitRefused(f"--master {master} runs executors on hosts without this checkout, which need the "
                            f"environment archive {path}, and it does not exist; {fix}")
    stamp = os.path.join(venv, ".sparkrec-setup")
    if not named and os.path.isfile(stamp):
        built_from = open(path + ".inputs").read() if os.path.isfile(path + ".inputs") else ""
        if built_from != open(stamp).read():
            raise SubmitRefused(f"the environment archive {path} was built from an older environment than {venv}; "
                                f"run 'make package-env'")
    return os.path.abspath(path)


def _add_archive(options: list[str], archive: str) -> list[str]:
    """``options`` with ``archive`` appended to an existing ``--archives`` list, or a new one."""
    out = list(options)
    for i, opt in enumerate(out):
        if opt == "--archives" and i + 1 < len(out):
            out[i + 1] = f"{out[i + 1]},{archive}"
            return out
        if opt.startswith("--archives="):
            out[i] = f"{opt},{archive}"
            return out
    return out + ["--archives", archive]


def main(argv: Sequence[str]) -> int:
    try:
        plan = plan_submit(argv, os.environ, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except SubmitRefused as e:
        print(f"spark-submit.sh: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(plan.shell())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
