"""The fused NCF tower kernel (``ncf_tower.cpp``), compiled on first use on the host that runs it.

It is compiled with ``-march=native`` on each host (driver and every executor) rather than shipped
built, so it uses the host's vector width and never meets an instruction the CPU lacks. The
library is cached under ``$SPARKREC_NATIVE_DIR`` (default ``~/.cache/sparkrec/native``), keyed by
the source, the host, its CPU's features and the compiler, and compiled into a temporary name and renamed, so
concurrent workers never load a half-written file.

When the host has no C++ compiler (``$CXX``, else ``g++`` or ``c++``), the compile fails, or
``SPARKREC_NATIVE=0`` is set, :func:`ncf_tower` returns None and the scorer uses its torch path,
which computes the same scores (tests hold them equal): only speed differs. A C++ kernel, not a
library: no maintained library fuses an MLP tower with a per-item floor per layer, and torch runs
each layer as a separate pass over memory.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pkgutil
import platform
import shutil
import signal
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = "ncf_tower.cpp"
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-pthread", "-std=c++17"]
COMPILE_TIMEOUT_S = 120


def _cpu() -> bytes:
    """The CPU model and feature flags (-march=native builds for exactly these)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor().encode()
    return "\n".join(next((l for l in lines if l.startswith(k)), "") for k in ("model name", "flags")).encode()


def _compile(compiler: str, source: Path, target: Path) -> None:
    """Compile ``source`` into ``target``; a compiler that outlives the timeout is killed with its
    children (g++ runs cc1plus and as)."""
    proc = subprocess.Popen([compiler, *FLAGS, "-o", str(target), str(source)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise OSError(f"{compiler} took over {COMPILE_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise OSError(f"{compiler} exited {proc.returncode}: {err.strip()[-300:]}")


def _compiler() -> str | None:
    for name in filter(None, [os.environ.get("CXX"), "g++", "c++"]):
        found = shutil.which(name)
        if found:
            return found
    return None


@lru_cache(maxsize=None)
def ncf_tower():
    """The kernel's entry point (ctypes function), or None where it cannot be built (see module doc).
    Built and loaded once per process."""
    if os.environ.get("SPARKREC_NATIVE", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.warning("no C++ compiler on %s: NCF scoring uses its torch path (slower, same scores)", platform.node())
        return None
    try:
        source = pkgutil.get_data(__package__, SOURCE)  # works from the --py-files zip too
        if source is None:
            raise OSError(f"{SOURCE} is not readable from the installed package")
        key = hashlib.sha256(b"\0".join([source, " ".join([compiler, *FLAGS]).encode(), platform.node().encode(),
                                         platform.machine().encode(), _cpu()])).hexdigest()[:16]
        folder = Path(os.environ.get("SPARKREC_NATIVE_DIR") or Path.home() / ".cache" / "sparkrec" / "native")
        library = folder / f"ncf_tower-{key}.so"
        if not library.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as work:
                src = Path(work) / SOURCE
                src.write_bytes(source)
                built = Path(work) / library.name
                _compile(compiler, src, built)
                os.replace(built, library)
        fn = ctypes.CDLL(str(library)).sparkrec_ncf_tower
    except (OSError, RuntimeError) as e:  # RuntimeError: no home folder
        log.warning("fused NCF kernel unavailable (%s): NCF scoring uses its torch path (slower, same scores)", e)
        return None
    ptr, size = ctypes.c_void_p, ctypes.c_long
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ptr, ptr, ptr, size, size, ptr, ptr, ptr, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn
