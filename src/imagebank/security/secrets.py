"""Random secrets and their stored forms.

Tokens carry 256 random bits (more than the 128 DESIGN.md asks), so a plain SHA-256 is enough to
store them: unlike passwords they cannot be guessed from a dictionary, and a fast hash keeps every
authenticated request cheap. Passwords are stored with argon2id (RFC 9106), memory-hard.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# RFC 9106 "second recommended option" (low memory): t=3, m=64 MiB, p=4 -- argon2-cffi's default profile.
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Hashed on first use, not at import: an argon2 hash costs ~0.1 s, which every CLI start would pay."""
    return _HASHER.hash("imagebank-dummy-password")


TOKEN_BYTES = 32


def new_token(prefix: str) -> str:
    """A fresh secret like ``ibt_<43 url-safe characters>``; the prefix says what it is for."""
    return f"{prefix}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists (no user enumeration by timing)."""
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def hmac_sha256(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()
