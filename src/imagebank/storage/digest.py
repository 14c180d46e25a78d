"""The content digest of an instance's stored bytes: the last part of its blob key (content addressing), and
what tells an identical re-send (a no-op) from a conflicting one (refused or replaced, PS3.4 has no rule here:
it is the archive's duplicate policy).

One archive keeps one algorithm for its whole life, recorded in its index (``archive_settings``): its digests
are compared with one another, never across algorithms. Archives created before BLAKE3 became the default
keep SHA-256; new archives use BLAKE3.

Why BLAKE3 for new archives: every received byte is hashed once on the ingest path of C-STORE and STOW-RS.
Measured on the 2-CPU benchmark machine (SHA-NI and AVX-512 present), one cache-cold 525 KB CT slice took
0.31 ms of CPU with OpenSSL's SHA-256 and 0.12 ms with BLAKE3, both 256-bit digests (64 hex characters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import blake3


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


#: ``name -> constructor`` of the algorithms an archive may use; the name is what the index records.
ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "sha256": hashlib.sha256,
    "blake3": blake3.blake3,
}
#: The algorithm of a new archive.
DEFAULT = "blake3"
#: The algorithm of an archive whose index predates the record (schema revisions before 0006).
LEGACY = "sha256"


def hasher(algorithm: str) -> Hasher:
    try:
        return ALGORITHMS[algorithm]()
    except KeyError:
        raise ValueError(f"unknown content digest algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})") from None


def digest(data: bytes | memoryview, algorithm: str) -> str:
    """The hex digest of ``data``."""
    h = hasher(algorithm)
    h.update(data)
    return h.hexdigest()
