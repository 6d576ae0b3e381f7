"""The process object store (`cscl.io.storage.Store`) against real S3 servers on loopback (moto)."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cscl.cli import main
from cscl.errors import StorageError
from cscl.io import storage


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CSCL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_one_client_per_endpoint_and_thread(s3_server, monkeypatch):
    a, b = s3_server(), s3_server()
    sa = storage.Store(a.endpoint)
    assert sa.client() is sa.client() is storage.Store(a.endpoint).client()
    assert storage.Store(b.endpoint).client() is not sa.client()
    other: list = []
    t = threading.Thread(target=lambda: other.append(sa.client()))
    t.start()
    t.join()
    assert other[0] is not sa.client()  # boto3 sessions are not shared between threads
    storage.configure_store(a.endpoint)
    assert storage.s3_client() is sa.client()
    first = sa.client()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated")  # new credentials: a new client
    assert sa.client() is not first


def test_fetch_downloads_once_and_refetches_a_replaced_object(s3_server, cache):
    srv = s3_server(buckets=["cohort"])
    storage.configure_store(srv.endpoint)
    uri = "s3://cohort/slides/a.svs"
    storage.write_bytes(uri, b"A" * 1000)
    p1 = storage.fetch(uri)
    assert p1.read_bytes() == b"A" * 1000 and p1.is_relative_to(cache)
    stamp = p1.stat().st_mtime_ns, p1.stat().st_ino
    assert storage.fetch(uri) == p1  # cached: the same file, not downloaded again
    assert (p1.stat().st_mtime_ns, p1.stat().st_ino) == stamp
    storage.write_bytes(uri, b"B" * 1000)  # replaced by an object of the same size
    p2 = storage.fetch(uri)
    assert p2 != p1 and p2.read_bytes() == b"B" * 1000
    assert p2.name == "a.svs"  # readers that look at the extension still work
    assert not list(p2.parent.glob("*.part"))


def test_same_bucket_and_key_on_two_endpoints_are_two_cache_entries(s3_server, cache):
    a, b = s3_server(buckets=["data"]), s3_server(buckets=["data"], own_process=True)
    uri = "s3://data/x.bin"
    storage.Store(a.endpoint).write_bytes(uri, b"from a")
    storage.Store(b.endpoint).write_bytes(uri, b"from b")
    pa = storage.Store(a.endpoint).fetch(uri)
    pb = storage.Store(b.endpoint).fetch(uri)
    assert pa != pb
    assert (pa.read_bytes(), pb.read_bytes()) == (b"from a", b"from b")


def test_concurrent_fetches_share_one_complete_copy(s3_server, cache):
    srv = s3_server(buckets=["big"])
    store = storage.Store(srv.endpoint)
    data = bytes(range(256)) * 8192  # 2 MiB
    store.write_bytes("s3://big/w.bin", data)
    with ThreadPoolExecutor(4) as ex:
        paths = list(ex.map(lambda _: store.fetch("s3://big/w.bin"), range(4)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == data
    assert sorted(p.name for p in paths[0].parent.iterdir()) == [".lock", "w.bin"]


def test_fetch_into_dest_and_sha256(s3_server, cache, tmp_path):
    srv = s3_server(buckets=["feat"])
    storage.configure_store(srv.endpoint)
    storage.write_bytes("s3://feat/h/s1.h5", b"features")
    out = storage.fetch("s3://feat/h/s1.h5", tmp_path / "train" / "s1.h5")
    assert out == tmp_path / "train" / "s1.h5" and out.read_bytes() == b"features"
    assert storage.fetch("s3://feat/h/s1.h5", out) == out  # again: nothing to do
    assert storage.sha256("s3://feat/h/s1.h5") == hashlib.sha256(b"features").hexdigest()
    local = tmp_path / "w.bin"
    local.write_bytes(b"local")
    assert storage.fetch(str(local)) == local  # local files are used where they are
    assert storage.sha256(str(local)) == hashlib.sha256(b"local").hexdigest()
    with pytest.raises(StorageError, match="not found"):
        storage.fetch("s3://feat/h/missing.h5")


def test_delete(s3_server, tmp_path):
    srv = s3_server(buckets=["del"])
    storage.configure_store(srv.endpoint)
    storage.write_bytes("s3://del/k", b"x")
    storage.delete("s3://del/k")
    assert not storage.exists("s3://del/k")
    storage.delete("s3://del/k")  # already gone: not an error
    f = tmp_path / "f.txt"
    f.write_text("x")
    storage.delete(str(f))
    assert not f.exists()
    storage.delete(str(f))


def test_cli_s3_endpoint_configures_the_store(s3_server, tmp_path, capsys):
    srv = s3_server()
    out = str(tmp_path / "reg")
    for argv in (
        ["--s3-endpoint", srv.endpoint, "register", "--manifest", "s3://nobucket/m.csv"],
        ["register", "--s3-endpoint", srv.endpoint, "--manifest", "s3://nobucket/m.csv"],
    ):
        storage.configure_store(None)
        assert main([*argv, "--out", out]) == 2
        assert storage.current_store().endpoint == srv.endpoint
        err = capsys.readouterr().err
        assert f"does not exist at {srv.endpoint}" in err  # the request went to that endpoint


def test_a_stopped_server_is_named_and_comes_back_on_its_port(s3_server):
    srv = s3_server(buckets=["upbkt"])
    store = storage.Store(srv.endpoint)
    store.write_bytes("s3://upbkt/a", b"1")
    srv.stop()
    with pytest.raises(StorageError, match=f"cannot reach S3 endpoint {srv.endpoint}"):
        store.read_bytes("s3://upbkt/a")
    srv.start()  # back on the same port
    assert store.read_bytes("s3://upbkt/a") == b"1"  # (in-process servers share moto's backend)
