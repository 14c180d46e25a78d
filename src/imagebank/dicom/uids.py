"""UID syntax (PS3.5 9.1) and deterministic UID generation."""

from __future__ import annotations

import hashlib
import re

# PS3.5 9.1: components of digits separated by '.', no leading zero in a multi-digit component,
# at most 64 characters in all.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
MAX_UID_LENGTH = 64


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid UID, or ``None`` when it is."""
    if not value:
        return "is empty"
    if len(value) > MAX_UID_LENGTH:
        return f"is {len(value)} characters long (PS3.5 9.1 allows 64)"
    if not _UID_RE.match(value):
        return "is not a valid UID (PS3.5 9.1: digits and dots, no leading zeros)"
    return None


def uid_from_name(*parts: object) -> str:
    """A ``2.25.`` UID (PS3.5 B.2, ITU-T X.667) derived from ``parts``: same inputs, same UID."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    # 2.25 UIDs carry a 128-bit integer; take the first 16 bytes of the digest.
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"
