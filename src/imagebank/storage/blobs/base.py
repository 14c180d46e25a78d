"""The blob store port.

Blobs are immutable and content-addressed: the key of an instance's bytes derives from their SHA-256 (and
the series they belong to, which groups a series' blobs: :func:`blob_key_for`).
That makes every ``put`` idempotent (a retried or resumed ingest rewrites nothing), lets two identical
uploads share one object, and means a replaced instance gets a *new* key, so the old bytes are only
deleted after the index has durably switched to the new ones.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable


def blob_key_for(content_digest: str, series_instance_uid: str) -> str:
    """``ab/cdef012345/<content digest>``: the bytes of the instances of one series share a directory, named by a
    hash of the Series Instance UID under a 256-way fan-out.

    The key still derives from the content: the same bytes are the same instance of the same series, so a
    re-sent instance finds its blob and writes nothing, and identical uploads share one object.

    Why by series and not by a fan-out of the content hash (``ab/cd/<sha256>``, the first layout, whose keys
    stored in the index stay valid): on a young archive almost every new blob then needed a new directory,
    and creating a directory cost 0.25-0.9 ms of kernel time on the benchmark machine (ext4), as much as
    writing the 512 KB slice itself; by series it is one directory per series. A series' files also lie
    together, which is how they are read back (dcm4chee's default storage path is per study and series
    too). At 10^8 instances in 10^6 series, a top-level directory holds about 4,000 series.
    """
    series = hashlib.sha256(series_instance_uid.encode()).hexdigest()
    return f"{series[:2]}/{series[2:12]}/{content_digest}"


@runtime_checkable
class BlobStore(Protocol):
    """Minimal interface every backend implements."""

    #: A URL naming this store, safe to print (no credentials).
    url: str

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Store ``data`` under ``key`` atomically: readers see all of it or nothing."""

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream; raises :class:`~imagebank.errors.NotFound`."""

    def get(self, key: str) -> bytes:
        """All bytes of ``key``; raises :class:`~imagebank.errors.NotFound`."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Size in bytes; raises :class:`~imagebank.errors.NotFound`."""

    def modified_at(self, key: str) -> float:
        """POSIX time of the last write; raises :class:`~imagebank.errors.NotFound`."""

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    def keys(self) -> Iterator[str]:
        """Every stored key (for consistency checks and garbage collection)."""

    def batch(self) -> BlobBatch:
        """A set of puts made durable and visible together (:class:`BlobBatch`)."""


@runtime_checkable
class BlobBatch(Protocol):
    """Blobs of one request (a STOW-RS body) that become visible together, just before the index commit.

    Why: making a blob durable costs a wait for the disk; a batch pays it once for all its blobs instead of
    once per blob. The pipeline's order stays: every blob of the batch is durable under its key before
    the index transaction that refers to it begins. ``put`` may be called from several threads at once.
    """

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Write ``data`` for ``key``; readers may not see it before :meth:`publish`."""

    def publish(self) -> None:
        """Make every blob put so far durable and visible under its key (each one atomically);
        raises :class:`~imagebank.errors.StorageError`, after which none of them is to be indexed."""

    def discard(self) -> list[str]:
        """Forget what was put and not published; returns the keys already visible (a store without
        deferred publishing), for the caller to delete unless the index refers to them."""


class ImmediateBatch:
    """The batch of a store whose single put is already atomic and durable (S3): nothing is deferred."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._keys: list[str] = []
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        self._store.put(key, data)
        with self._lock:
            self._keys.append(key)

    def publish(self) -> None:
        with self._lock:
            self._keys.clear()

    def discard(self) -> list[str]:
        with self._lock:
            keys, self._keys = self._keys, []
        return keys
