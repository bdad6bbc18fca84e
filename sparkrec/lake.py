"""Lake layout and atomic publishing that also holds on object stores.

S3 and GCS have no atomic folder rename, so a dataset is never written in place. Each run writes a
fresh version folder ``<root>/v-<utc>-<rand>/`` and, once it is complete, replaces one small
pointer file (``<root>/<pointer>``, e.g. ``manifest.json``) that names it. Replacing one object is
atomic on every store (a single PUT; ``rename`` on a local disk), so a reader that resolves the
pointer sees the old complete version or the new complete version, never a partial one. A run
killed before the switch leaves only an unreferenced folder, removed by the next publish.

Every job publishes through one protocol, :func:`publishing`: stage a version folder, write into
it, check it, and on success switch the pointer (commit); on any failure before the switch the
folder is removed.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from sparkrec.errors import SparkrecError


def normalize_uri(path: str) -> str:
    """A scheme-less path becomes an absolute ``file://`` URI, so Spark (whose default file system
    may be HDFS) and Python (fsspec) agree on where it is. URIs are returned unchanged."""
    if "://" in path:
        return path.rstrip("/")
    return "file://" + os.path.abspath(path)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


OBJECT_STORES = ("s3", "s3a", "gs", "gcs")


def filesystem(uri: str):
    """(fsspec file system, path) of ``uri``, as every sparkrec module should open the lake.

    Object stores get no listings cache: s3fs and gcsfs would otherwise answer ``exists``, ``ls``
    and sizes from a listing taken earlier (by another instance, or before Spark wrote), so a
    pointer another process replaced, or files Spark just wrote, could be missed.
    """
    if uri.split("://", 1)[0] in OBJECT_STORES:
        return fsspec.core.url_to_fs(uri, use_listings_cache=False)
    return fsspec.core.url_to_fs(uri)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Make ``uri`` hold ``data`` whole or not at all (readers never see a partial file)."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)  # one PUT: object stores expose it whole or not at all


def write_json_atomic(uri: str, obj: Any) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    # One GET: s3fs's open() reads by ETag, which fails if the pointer is replaced in between.
    return fs.cat_file(path)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def new_version(root: str) -> str:
    """URI of a fresh, not yet referenced version folder under ``root``; names sort by time."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return join(root, f"v-{stamp}-{uuid.uuid4().hex[:6]}")


def publish(root: str, version: str, manifest: dict, pointer: str = "manifest.json", keep: int = 2) -> dict:
    """Point ``<root>/<pointer>`` at the complete ``version`` folder, then prune old versions.

    ``manifest`` is written with ``version`` and ``published`` (the last ``keep`` versions ever
    published here, newest first) added. Those stay on disk so a reader that resolved the previous
    pointer a moment ago can still finish; every other ``v-*`` folder under ``root`` is removed,
    including folders of runs killed before they published. One writer per ``root`` at a time.
    Jobs call it through :func:`publishing`; call it directly only to publish a version staged
    earlier without a commit (the pipeline's model, after its quality gate).

    Returns
    -------
    dict
        The pointer's new content (what :func:`resolve` now returns).
    """
    pointer_uri = join(root, pointer)
    before = read_json(pointer_uri).get("published", []) if exists(pointer_uri) else []
    published = [version] + [v for v in before if v != version][: keep - 1]
    written = {**manifest, "version": version, "published": published}
    write_json_atomic(pointer_uri, written)
    fs, path = filesystem(root)
    kept = {filesystem(v)[1].rstrip("/") for v in published}
    for p in fs.ls(path, detail=False):
        p = p.rstrip("/")
        if os.path.basename(p).startswith("v-") and p not in kept:
            fs.rm(p, recursive=True)
    return written


def is_published(root: str, version: str, pointer: str = "manifest.json") -> bool:
    """Whether ``root``'s pointer names ``version`` (a writer that failed after its switch must
    not delete what readers now resolve)."""
    uri = join(root, pointer)
    return exists(uri) and read_json(uri).get("version") == version


def resolve(root: str, pointer: str = "manifest.json") -> dict:
    """The manifest of the published version of ``root``; its ``version`` key is the folder URI."""
    uri = join(root, pointer)
    if not exists(uri):
        raise SparkrecError(f"nothing published at {root} (no {pointer}); run the job that writes it first")
    return read_json(uri)


@dataclass
class Staged:
    """A version folder being written under ``root`` (see :func:`publishing`)."""

    root: str
    version: str
    """URI of the version folder; write everything of this version under it."""
    manifest: dict | None = None
    """Set by the block before it ends: what the pointer will hold (``version`` and ``published``
    are added). Required when the version is committed."""
    published: dict | None = None
    """After a commit: the pointer's content, as :func:`resolve` returns it."""

    def path(self, *parts: str) -> str:
        return join(self.version, *parts)


@contextmanager
def publishing(root: str, *, pointer: str = "manifest.json", keep: int = 2, commit: bool = True) -> Iterator[Staged]:
    """Stage a new version of ``root``; publish it if the block succeeds, remove it if not.

    The block writes under ``staged.version``, checks what it wrote (raising a ``SparkrecError``
    when counts do not reconcile) and sets ``staged.manifest``. On a normal exit the pointer
    switches to the version (:func:`publish`, with ``pointer`` and ``keep``) and
    ``staged.published`` holds the pointer's content. On any exception, interrupts included, the
    version folder is removed unless the pointer already names it (a failure while pruning old
    versions happens after the switch: readers may already resolve it), and the exception
    propagates; the previously published version stays live.

    With ``commit=False`` a successful block leaves the version written but unpublished, for a
    caller that publishes it later with :func:`publish` (or removes it).

    Examples
    --------
    >>> with lake.publishing(root) as staged:             # doctest: +SKIP
    ...     df.write.parquet(staged.path("table"))
    ...     staged.manifest = {"rows": check_rows(staged.path("table"))}
    """
    staged = Staged(root, new_version(root))
    try:
        yield staged
        if commit:
            if staged.manifest is None:
                raise RuntimeError(f"nothing to publish at {root}: the block did not set staged.manifest")
            staged.published = publish(root, staged.version, staged.manifest, pointer=pointer, keep=keep)
    except BaseException:
        if not is_published(root, staged.version, pointer):
            remove(staged.version)
        raise
