"""The blob store port.

Blobs are immutable and content-addressed: the key of an instance's bytes derives from their SHA-256.
That makes every ``put`` idempotent (a retried or resumed ingest rewrites nothing), lets two identical
uploads share one object, and means a replaced instance gets a *new* key, so the old bytes are only
deleted after the index has durably switched to the new ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable


def blob_key_for_digest(sha256_hex: str) -> str:
    """``ab/cd/abcd…``: two levels of 256-way fan-out keep directories small at 10^8 objects."""
    return f"{sha256_hex[0:2]}/{sha256_hex[2:4]}/{sha256_hex}"


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
