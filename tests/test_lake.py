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
