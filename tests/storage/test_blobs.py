"""Both blob adapters behave the same through the BlobStore port (S3 against a real S3 API)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebank.errors import ConfigError, NotFound
from imagebank.storage.blobs import BlobStore, FilesystemBlobStore, blob_key_for, filesystem, open_blob_store
from imagebank.storage.blobs.s3 import S3BlobStore


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemBlobStore(tmp_path / "blobs")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        yield S3BlobStore(f"bucket-{uuid.uuid4().hex[:8]}", "archive", endpoint_url=endpoint)


def test_put_get_exists_size_delete(store: BlobStore) -> None:
    key = blob_key_for("ab" * 32, "1.2.3")
    assert not store.exists(key)
    store.put(key, b"DICM-bytes")
    assert store.exists(key)
    assert store.get(key) == b"DICM-bytes"
    assert store.size(key) == 10
    assert store.modified_at(key) > 0
    with store.open(key) as fh:
        assert fh.read() == b"DICM-bytes"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting twice is fine


def test_streamed_put_of_a_large_object(store: BlobStore) -> None:
    payload = os.urandom(9 * 1024 * 1024)  # larger than S3 multipart threshold (8 MiB)
    store.put("aa/bb/large", io.BytesIO(payload))
    assert store.size("aa/bb/large") == len(payload)
    assert store.get("aa/bb/large") == payload


def test_missing_key_raises_not_found(store: BlobStore) -> None:
    for op in (store.get, store.size, store.modified_at, store.open):
        with pytest.raises(NotFound):
            op("00/00/missing")


def test_keys_lists_every_blob(store: BlobStore) -> None:
    keys = {blob_key_for(f"{i:02x}" * 32, "1.2.3") for i in range(5)}
    for k in keys:
        store.put(k, b"x")
    assert set(store.keys()) == keys


def test_filesystem_layout_groups_a_series_under_a_fan_out(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    digests = ["0123456789abcdef" * 4, "fedcba9876543210" * 4]
    series_dir = hashlib.sha256(b"1.2.840.99.1").hexdigest()
    for digest in digests:
        store.put(blob_key_for(digest, "1.2.840.99.1"), b"x")
        assert (tmp_path / series_dir[:2] / series_dir[2:12] / digest).is_file()
    assert len(list(tmp_path.iterdir())) == 1  # one directory per series, not per blob
    other = blob_key_for(digests[0], "1.2.840.99.2")
    assert other.rsplit("/", 1)[0] != blob_key_for(digests[0], "1.2.840.99.1").rsplit("/", 1)[0]
    assert len(other) <= 80  # the index's blob_key column


def test_filesystem_write_is_atomic_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("aa/bb/k", b"old")

    class Exploding(io.RawIOBase):
        def readinto(self, b: bytearray) -> int:
            raise OSError(28, "No space left on device")

    from imagebank.errors import StorageError

    with pytest.raises(StorageError, match="No space left"):
        store.put("aa/bb/k", Exploding())  # type: ignore[arg-type]
    assert store.get("aa/bb/k") == b"old"  # the previous content is intact
    assert list(store.keys()) == ["aa/bb/k"]
    assert not [p for p in (tmp_path / "aa" / "bb").iterdir() if p.name.startswith(".tmp-")]


def test_filesystem_refuses_keys_escaping_the_root(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.put("../evil", b"x")


def test_factory_picks_adapter_by_url(tmp_path: Path, s3_endpoint: str) -> None:
    assert isinstance(open_blob_store(tmp_path.as_uri()), FilesystemBlobStore)
    s3 = open_blob_store("s3://factory-bucket/pre", s3_endpoint_url=s3_endpoint)
    assert isinstance(s3, S3BlobStore) and s3.url == "s3://factory-bucket/pre/"
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_blob_store("ftp://host/x")


class _ShortReads(io.RawIOBase):
    """A stream that hands out at most 1000 bytes per read (a pipe, a socket)."""

    def __init__(self, payload: bytes) -> None:
        self._data = io.BytesIO(payload)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(b), 1000))
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 525_862, 8 * 1024 * 1024, 8 * 1024 * 1024 + 3])
def test_direct_io_writes_exactly_the_bytes_of_any_length(tmp_path: Path, size: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def no_truncate(*_: object) -> None:
        raise AssertionError("the short last block is written buffered, not padded and cut back (ext4 reads it)")

    monkeypatch.setattr(filesystem.os, "ftruncate", no_truncate)
    store = FilesystemBlobStore(tmp_path, direct_io=True)
    assert store.direct_io, "this filesystem takes O_DIRECT (ext4 under CI)"
    payload = os.urandom(size)
    store.put("aa/bb/bytes", payload)
    store.put("aa/bb/stream", io.BytesIO(payload))
    store.put("aa/bb/short-reads", _ShortReads(payload))  # type: ignore[arg-type]
    for key in ("bytes", "stream", "short-reads"):
        assert store.get(f"aa/bb/{key}") == payload, key
    assert store.direct_io  # nothing fell back
    assert not [p for p in (tmp_path / "aa" / "bb").iterdir() if p.name.startswith(".tmp-")]


def test_direct_io_falls_back_where_the_filesystem_refuses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno


    real_open = os.open

    def no_direct(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if flags & filesystem._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs answers
        return real_open(path, flags, *args)

    monkeypatch.setattr(filesystem.os, "open", no_direct)
    store = FilesystemBlobStore(tmp_path, direct_io=True)
    store.put("aa/bb/k", io.BytesIO(b"x" * 10_000))
    store.put("aa/bb/j", b"y" * 10)
    assert not store.direct_io
    assert store.get("aa/bb/k") == b"x" * 10_000 and store.get("aa/bb/j") == b"y" * 10


def test_direct_io_only_with_fsync(tmp_path: Path) -> None:
    # Without fsync the page cache is the fast path (nothing waits for the disk).
    assert not FilesystemBlobStore(tmp_path, fsync=False, direct_io=True).direct_io


# ------------------------------------------------------------------ batches (one request's blobs)

def test_a_batch_publishes_every_blob_at_once(store: BlobStore) -> None:
    batch = store.batch()
    keys = [blob_key_for(f"{i:02x}" * 32, "1.2.3") for i in range(3)]
    for i, key in enumerate(keys):
        batch.put(key, io.BytesIO(b"slice %d" % i) if i else b"slice 0")
    batch.publish()
    assert [store.get(k) for k in keys] == [b"slice 0", b"slice 1", b"slice 2"]
    assert batch.discard() == []  # nothing left to forget once published


def test_a_filesystem_batch_shows_nothing_before_publish_and_leaves_nothing_when_discarded(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    kept, dropped = store.batch(), store.batch()
    kept.put("aa/bb/kept", b"kept")
    dropped.put("aa/cc/dropped", b"dropped")
    # Until published, no name points at the bytes: an identical re-send cannot take them for stored.
    assert not store.exists("aa/bb/kept") and list(store.keys()) == []
    assert dropped.discard() == []
    kept.publish()
    assert list(store.keys()) == ["aa/bb/kept"] and store.get("aa/bb/kept") == b"kept"
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_a_batch_without_syncfs_fsyncs_each_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(filesystem, "_syncfs", None)
    monkeypatch.setattr(filesystem.os, "fsync", fsync)
    store = FilesystemBlobStore(tmp_path, direct_io=False)
    batch = store.batch()
    batch.put("aa/bb/one", b"1")
    batch.put("aa/cc/two", b"2")
    batch.publish()
    assert store.get("aa/bb/one") == b"1" and store.get("aa/cc/two") == b"2"
    assert sum(".tmp-" in p for p in synced) == 2  # each file's bytes before its rename
    # ... then every directory that gained a name, up to the store's root.
    assert {str(tmp_path / "aa" / "bb"), str(tmp_path / "aa" / "cc"), str(tmp_path / "aa"), str(tmp_path)} <= set(synced)


def test_a_batch_that_cannot_be_published_names_the_problem_and_shows_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imagebank.errors import StorageError

    store = FilesystemBlobStore(tmp_path)
    batch = store.batch()
    batch.put("aa/bb/one", b"1")
    batch.put("aa/bb/two", b"2")

    def full(_fd: int) -> int:
        filesystem.ctypes.set_errno(28)
        return -1

    monkeypatch.setattr(filesystem, "_syncfs", full)
    with pytest.raises(StorageError, match="No space left"):
        batch.publish()
    assert list(store.keys()) == [] and not [p for p in tmp_path.rglob(".tmp-*")]
