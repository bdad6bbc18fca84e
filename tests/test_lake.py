import os

import pytest

from sparkrec import lake
from sparkrec.errors import SparkrecError


def _version(root, text):
    v = lake.new_version(root)
    lake.write_bytes_atomic(lake.join(v, "data.txt"), text.encode())
    return v


def test_publish_switches_pointer_and_keeps_previous(tmp_path):
    root = lake.normalize_uri(str(tmp_path / "t"))
    with pytest.raises(SparkrecError, match="nothing published"):
        lake.resolve(root)
    v1 = _version(root, "one")
    lake.publish(root, v1, {"rows": 1})
    v2 = _version(root, "two")
    assert lake.resolve(root)["version"] == v1  # an unpublished version is invisible
    lake.publish(root, v2, {"rows": 2})
    m = lake.resolve(root)
    assert (m["version"], m["rows"], m["published"]) == (v2, 2, [v2, v1])
    assert lake.read_bytes(lake.join(v1, "data.txt")) == b"one"  # a reader of v1 can finish


def test_orphans_of_killed_runs_never_displace_published_versions(tmp_path):
    root = lake.normalize_uri(str(tmp_path / "t"))
    v1 = _version(root, "one")
    lake.publish(root, v1, {})
    orphan = _version(root, "killed before publish")
    v3 = _version(root, "three")
    lake.publish(root, v3, {})
    left = sorted(p for p in os.listdir(tmp_path / "t") if p.startswith("v-"))
    assert left == sorted(os.path.basename(v) for v in (v1, v3))
    assert not lake.exists(orphan)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    uri = lake.normalize_uri(str(tmp_path / "a" / "x.json"))
    lake.write_json_atomic(uri, {"a": 1})
    lake.write_json_atomic(uri, {"a": 2})
    assert lake.read_json(uri) == {"a": 2}
    assert os.listdir(tmp_path / "a") == ["x.json"]


def _folders(tmp_path):
    return sorted(p for p in os.listdir(tmp_path / "t") if p.startswith("v-"))


def test_publishing_commits_on_success_and_removes_the_version_on_any_failure(tmp_path):
    root = lake.normalize_uri(str(tmp_path / "t"))
    with lake.publishing(root, pointer="_p.json") as first:
        lake.write_bytes_atomic(first.path("data.txt"), b"one")
        first.manifest = {"rows": 1}
    assert lake.resolve(root, "_p.json") == first.published
    assert (first.published["version"], first.published["rows"]) == (first.version, 1)

    # A failed check, an unexpected error and an interrupt all leave the published version alone.
    for error in (SparkrecError("counts do not reconcile"), ValueError("bug"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with lake.publishing(root, pointer="_p.json") as failed:
                lake.write_bytes_atomic(failed.path("data.txt"), b"half written")
                failed.manifest = {"rows": 2}
                raise error
        assert not lake.exists(failed.version)
        assert lake.resolve(root, "_p.json")["version"] == first.version
        assert _folders(tmp_path) == [os.path.basename(first.version)]
    assert lake.read_bytes(first.path("data.txt")) == b"one"

    # A block that forgets its manifest publishes nothing either.
    with pytest.raises(RuntimeError, match="did not set staged.manifest"):
        with lake.publishing(root, pointer="_p.json") as empty:
            lake.write_bytes_atomic(empty.path("data.txt"), b"no manifest")
    assert not lake.exists(empty.version) and lake.resolve(root, "_p.json")["version"] == first.version


def test_publishing_without_commit_stages_for_a_later_publish(tmp_path):
    root = lake.normalize_uri(str(tmp_path / "t"))
    with lake.publishing(root) as live:
        live.manifest = {"n": 1}
    with lake.publishing(root, commit=False) as candidate:
        lake.write_bytes_atomic(candidate.path("data.txt"), b"candidate")
        candidate.manifest = {"n": 2}
    assert candidate.published is None and lake.exists(candidate.path("data.txt"))
    assert lake.resolve(root)["version"] == live.version  # staged, not published
    lake.publish(root, candidate.version, candidate.manifest)  # e.g. after a quality gate
    assert lake.resolve(root)["version"] == candidate.version and lake.is_published(root, candidate.version)
