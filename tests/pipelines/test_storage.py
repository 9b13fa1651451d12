"""pipelines.storage against local paths and a real S3 server (SeaweedFS, see tests/s3_server.py)."""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
import uuid
from pathlib import Path

import pytest

from pipelines.local_s3 import free_ports, run_s3_server
from pipelines.settings import S3Settings
from pipelines.storage import FileEntry, NotFound, Storage, StorageError, is_s3

BUCKET = "s2s-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with run_s3_server(tmp_path_factory.mktemp("weed")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def where(request, tmp_path) -> tuple[Storage, str]:
    """A Storage and a fresh, empty base URI under which the test may write."""
    if request.param == "local":
        return Storage(), str(tmp_path / "base")
    server = request.getfixturevalue("s3")
    return Storage(server.settings()), f"s3://{BUCKET}/{uuid.uuid4().hex}"


def populate(storage: Storage, base: str) -> dict[str, bytes]:
    files = {"b.tsv": b"bb\n", "a.tsv": b"a\n", "c.txt": b"ccc", "sub/d.tsv": b"dddd",
             "sub/deeper/e.bin": bytes(range(256))}
    for name, data in files.items():
        storage.write_bytes(f"{base}/{name}", data)
    return files


def test_write_read_round_trip(where):
    storage, base = where
    data = bytes(range(256)) * 1000
    storage.write_bytes(f"{base}/x/data.bin", data)
    assert storage.read_bytes(f"{base}/x/data.bin") == data
    storage.write_bytes(f"{base}/x/data.bin", b"replaced")
    assert storage.read_bytes(f"{base}/x/data.bin") == b"replaced"
    storage.write_bytes(f"{base}/x/empty", b"")
    assert storage.read_bytes(f"{base}/x/empty") == b""
    assert storage.info(f"{base}/x/empty").size == 0
    with storage.open_read(f"{base}/x/data.bin") as handle:
        handle.seek(3)
        assert handle.read() == b"laced"


def test_byte_ranges(where):
    storage, base = where
    storage.write_bytes(f"{base}/r.bin", b"0123456789")
    assert storage.read_bytes(f"{base}/r.bin", offset=3, length=4) == b"3456"
    assert storage.read_bytes(f"{base}/r.bin", offset=7) == b"789"
    assert storage.read_bytes(f"{base}/r.bin", length=2) == b"01"
    assert storage.read_bytes(f"{base}/r.bin", offset=8, length=100) == b"89"


def test_list_prefix_is_sorted_recursive_and_sized(where):
    storage, base = where
    files = populate(storage, base)
    expected = [FileEntry(f"{base}/{name}", len(files[name])) for name in sorted(files)]
    assert storage.list(base) == expected
    assert storage.list(base + "/") == expected
    assert storage.list(f"{base}/sub") == [FileEntry(f"{base}/sub/d.tsv", 4),
                                           FileEntry(f"{base}/sub/deeper/e.bin", 256)]


def test_list_glob_and_single_file(where):
    storage, base = where
    populate(storage, base)
    assert [e.uri for e in storage.list(f"{base}/sub/*.tsv")] == [f"{base}/sub/d.tsv"]
    assert [e.uri for e in storage.list(f"{base}/sub/deeper/*")] == [f"{base}/sub/deeper/e.bin"]
    assert storage.list(f"{base}/?.txt") == [FileEntry(f"{base}/c.txt", 3)]
    assert storage.list(f"{base}/*.parquet") == []
    assert storage.list(f"{base}/c.txt") == [FileEntry(f"{base}/c.txt", 3)]


def test_glob_matches_only_direct_children(where):
    """Like a shell or pyarrow glob: `*` does not cross '/', so base/*.tsv is not base/sub/d.tsv."""
    storage, base = where
    populate(storage, base)
    assert [e.uri for e in storage.list(f"{base}/*.tsv")] == [f"{base}/a.tsv", f"{base}/b.tsv"]

def test_exists_and_info(where):
    storage, base = where
    populate(storage, base)
    assert storage.exists(f"{base}/c.txt")
    assert storage.exists(f"{base}/sub")
    assert not storage.exists(f"{base}/missing.txt")
    assert not storage.exists(f"{base}/nosuchdir")
    assert storage.info(f"{base}/sub/deeper/e.bin") == FileEntry(f"{base}/sub/deeper/e.bin", 256)
    with pytest.raises(NotFound, match="is a directory"):
        storage.info(f"{base}/sub")


def test_delete_file_and_recursive(where):
    storage, base = where
    populate(storage, base)
    storage.delete(f"{base}/c.txt")
    assert not storage.exists(f"{base}/c.txt")
    assert storage.exists(f"{base}/a.tsv")
    storage.delete(f"{base}/sub")  # not recursive: a directory stays
    assert storage.exists(f"{base}/sub/d.tsv")
    storage.delete(f"{base}/sub", recursive=True)
    assert not storage.exists(f"{base}/sub/d.tsv")
    assert not storage.exists(f"{base}/sub/deeper/e.bin")
    assert [e.uri for e in storage.list(base)] == [f"{base}/a.tsv", f"{base}/b.tsv"]
    storage.delete(f"{base}/missing.txt")  # missing is fine


def test_open_write_is_atomic(where):
    storage, base = where
    name = f"new-{uuid.uuid4().hex}.txt"
    uri = f"{base}/out/{name}"
    with pytest.raises(RuntimeError, match="boom"):
        with storage.open_write(uri) as handle:
            handle.write(b"half")
            raise RuntimeError("boom")
    assert not storage.exists(uri)
    # no temporary file left behind, next to the target (local) or in the temp dir (S3)
    tmp_dir = Path(base, "out") if not is_s3(base) else Path(tempfile.gettempdir())
    assert not [p for p in tmp_dir.glob("*") if name in p.name]
    if not is_s3(base):
        assert os.listdir(tmp_dir) == []

    storage.write_bytes(uri, b"version 1")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.open_write(uri) as handle:
            handle.write(b"version 2, half written")
            raise RuntimeError("boom")
    assert storage.read_bytes(uri) == b"version 1"
    assert storage.list(f"{base}/out") == [FileEntry(uri, 9)]
    assert not [p for p in tmp_dir.glob("*") if name in p.name and p.name != name]


def test_upload_download(where, tmp_path):
    storage, base = where
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload" * 10_000)
    storage.upload(source, f"{base}/up/loaded.bin")
    assert storage.info(f"{base}/up/loaded.bin").size == 70_000
    storage.download(f"{base}/up/loaded.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_storage_pickles(where):
    storage, base = where
    storage.write_bytes(f"{base}/p.txt", b"pickled")  # opens a client first
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.s3 == storage.s3
    assert clone.read_bytes(f"{base}/p.txt") == b"pickled"


def test_missing_key_is_not_found(where):
    storage, base = where
    storage.write_bytes(f"{base}/present.txt", b"x")
    for call in (storage.info, storage.read_bytes, storage.list):
        with pytest.raises(NotFound, match="missing.txt: not found$"):
            call(f"{base}/missing.txt")
    with pytest.raises(NotFound, match="not found"):
        with storage.open_read(f"{base}/missing.txt"):
            pass


@pytest.mark.slow
def test_missing_bucket(s3):
    storage = Storage(s3.settings())
    uri = "s3://nosuchbucket/some/key.txt"
    for call in (storage.info, storage.list, storage.read_bytes):
        with pytest.raises(NotFound, match="bucket 'nosuchbucket' does not exist") as err:
            call(uri)
        assert str(err.value).startswith(uri)
        assert "\n" not in str(err.value)
    assert not storage.exists(uri)


@pytest.mark.slow
def test_wrong_secret_key_is_access_denied(s3):
    wrong = "wrong" + uuid.uuid4().hex
    storage = Storage(dataclasses.replace(s3.settings(), secret_key=wrong))
    for call in (storage.read_bytes, storage.info, storage.list):
        with pytest.raises(StorageError, match="access denied") as err:
            call(f"s3://{BUCKET}/anything.txt")
        assert not isinstance(err.value, NotFound)
        assert wrong not in str(err.value)
        assert s3.secret_key not in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(StorageError, match="access denied"):
        storage.write_bytes(f"s3://{BUCKET}/anything.txt", b"x")


@pytest.mark.slow
def test_unreachable_endpoint():
    port = free_ports(1)[0]  # nothing listens there
    storage = Storage(S3Settings(endpoint_url=f"http://127.0.0.1:{port}",
                                 access_key="someone", secret_key="secret-xyz"))
    with pytest.raises(StorageError, match="cannot reach") as err:
        storage.read_bytes("s3://bucket/key.txt")
    assert "secret-xyz" not in str(err.value)
