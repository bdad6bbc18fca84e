"""Object-store lakes against a real S3-compatible server on 127.0.0.1 (moto in server mode, a
separate process started and stopped here): the lake's publish / resolve / prune protocol, atomic
pointer switches seen by a reader while another process publishes, a killed publish, checkpoints,
and the Petastorm feed reading a prepared split from s3://."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import torch

from processes import free_port
from sparkrec import lake
from sparkrec.columns import ITEM_IDX, USER_IDX
from sparkrec.data.prepare import load_manifest
from sparkrec.errors import SparkrecError
from sparkrec.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from sparkrec.train.feed import ShardReader, plan_shards

pytestmark = pytest.mark.objectstore
BUCKET = "lake"


@pytest.fixture(scope="module")
def s3_server():
    """``python -m moto.server`` on a free port; the AWS_* variables point s3fs (botocore) at it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem(use_listings_cache=False).mkdir(BUCKET)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def root(s3_server, request):
    return f"s3://{BUCKET}/{request.node.name}"


def version_with(root, text):
    v = lake.new_version(root)
    lake.write_bytes_atomic(lake.join(v, "data.txt"), text.encode())
    return v


def versions_on_store(root):
    fs, path = lake.filesystem(root)
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)
                  if p.rstrip("/").rsplit("/", 1)[-1].startswith("v-"))


def test_publish_resolve_and_prune_on_s3(root):
    with pytest.raises(SparkrecError, match="nothing published"):
        lake.resolve(root)
    v1 = version_with(root, "one")
    lake.publish(root, v1, {"rows": 1})
    orphan = version_with(root, "never published")
    v2 = version_with(root, "two")
    assert lake.resolve(root)["version"] == v1  # unpublished versions are invisible
    lake.publish(root, v2, {"rows": 2})
    m = lake.resolve(root)
    assert (m["version"], m["rows"], m["published"]) == (v2, 2, [v2, v1])
    assert lake.read_bytes(lake.join(v1, "data.txt")) == b"one"  # a reader of v1 can finish
    assert not lake.exists(orphan)
    v3 = version_with(root, "three")
    lake.publish(root, v3, {"rows": 3})
    assert versions_on_store(root) == sorted(v.rsplit("/", 1)[-1] for v in (v2, v3))


WRITER = textwrap.dedent("""
    import sys, time
    from sparkrec import lake
    root, count = sys.argv[1], int(sys.argv[2])
    for n in range(1, count + 1):
        v = lake.new_version(root)
        payload = (str(n) * 200_000).encode()  # 200 kB: a partial read would show
        lake.write_bytes_atomic(lake.join(v, "data.txt"), payload)
        lake.publish(root, v, {"n": n, "bytes": len(payload)})
        time.sleep(0.3)
""")

KILLED = textwrap.dedent("""
    import sys, time
    from sparkrec import lake
    root = sys.argv[1]
    v = lake.new_version(root)
    lake.write_bytes_atomic(lake.join(v, "part-0.txt"), b"half of a version")
    print(v, flush=True)
    time.sleep(300)  # killed here, before the rest of the folder and the pointer switch
    lake.write_bytes_atomic(lake.join(v, "part-1.txt"), b"the other half")
    lake.publish(root, v, {})
""")


@pytest.mark.timeout(180)
def test_a_reader_sees_whole_versions_while_another_process_publishes(root):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, root, "8"], stdout=subprocess.PIPE, text=True)
    seen = []
    try:
        while writer.poll() is None or not seen:
            try:
                m = lake.resolve(root)
            except SparkrecError:
                continue  # nothing published yet
            data = lake.read_bytes(lake.join(m["version"], "data.txt"))
            assert len(data) == m["bytes"] and data == str(m["n"]).encode() * 200_000  # never partial
            if not seen or seen[-1] != m["n"]:
                seen.append(m["n"])
    finally:
        writer.kill()
    assert writer.wait() in (0, -signal.SIGKILL)
    assert seen == sorted(seen) and len(seen) >= 3, seen  # fresh pointers, in publish order
    assert lake.resolve(root)["n"] == 8


@pytest.mark.timeout(120)
def test_a_killed_publish_leaves_the_old_version_readable(root):
    v1 = version_with(root, "old")
    lake.publish(root, v1, {"rows": 1})
    writer = subprocess.Popen([sys.executable, "-c", KILLED, root], stdout=subprocess.PIPE, text=True)
    half = writer.stdout.readline().strip()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert lake.exists(lake.join(half, "part-0.txt"))  # it was killed mid-version
    m = lake.resolve(root)
    assert m["version"] == v1 and lake.read_bytes(lake.join(v1, "data.txt")) == b"old"
    v2 = version_with(root, "new")
    lake.publish(root, v2, {"rows": 2})  # the next publish removes the killed run's folder
    assert not lake.exists(half)
    assert lake.resolve(root)["version"] == v2


def test_checkpoints_on_s3(root):
    directory = lake.join(root, "checkpoints")
    key = {"model": "m"}
    for epoch in (1, 2, 3):
        save_checkpoint(directory, {"epoch": epoch, "w": torch.full((3,), float(epoch)), "resume_key": key}, keep=2)
    latest = latest_checkpoint(directory)
    assert latest.endswith("epoch-0003.pt")
    assert torch.equal(load_checkpoint(latest, key)["w"], torch.full((3,), 3.0))
    assert not lake.exists(lake.join(directory, "epoch-0001.pt"))


@pytest.mark.spark
@pytest.mark.timeout(300)
def test_petastorm_feed_reads_a_prepared_split_from_s3(spark, explicit_lake, s3_server):
    import s3fs

    manifest = load_manifest(explicit_lake)
    local = manifest["splits"]["train"]["path"].removeprefix("file://")
    remote = f"s3://{BUCKET}/prepared/train"
    s3fs.S3FileSystem(use_listings_cache=False).put(local, f"{BUCKET}/prepared/train", recursive=True)
    on_s3 = {**manifest, "splits": {**manifest["splits"], "train": {**manifest["splits"]["train"], "path": remote}}}
    plan = plan_shards(on_s3, "train", world=2, batch_size=512)
    pairs = []
    for rank in (0, 1):
        torch.manual_seed(rank)
        reader = ShardReader(plan, rank, seed=5, shuffle_buffer=1000)
        batches = list(reader)
        assert len(batches) == plan.steps and reader.rows_read == plan.shard_rows[rank]
        pairs += [(u, i) for b in batches for u, i in zip(b[USER_IDX].tolist(), b[ITEM_IDX].tolist())]
    assert len(pairs) == len(set(pairs)) == manifest["splits"]["train"]["rows"]
