"""Blob stores: one small protocol, one adapter per backend, one factory that picks by URL.

Adding a backend means one new module and one entry in :data:`_SCHEMES`.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

from imagebank.storage.blobs.base import BlobBatch, BlobStore, blob_key_for
from imagebank.storage.blobs.filesystem import FilesystemBlobStore

__all__ = ["BlobBatch", "BlobStore", "FilesystemBlobStore", "blob_key_for", "open_blob_store"]


def _open_file(url: str, **options: object) -> BlobStore:
    from urllib.request import url2pathname

    return FilesystemBlobStore(url2pathname(urlparse(url).path), fsync=bool(options.get("fsync", True)),
                               direct_io=bool(options.get("direct_io", True)))


def _open_s3(url: str, **options: object) -> BlobStore:
    from imagebank.storage.blobs.s3 import S3BlobStore

    parsed = urlparse(url)
    return S3BlobStore(
        bucket=parsed.netloc,
        prefix=parsed.path.lstrip("/"),
        endpoint_url=str(options.get("s3_endpoint_url") or "") or None,
        region=str(options.get("s3_region") or "us-east-1"),
        access_key_id=str(options.get("s3_access_key_id") or "") or None,
        secret_access_key=str(options.get("s3_secret_access_key") or "") or None,
    )


_SCHEMES: dict[str, Callable[..., BlobStore]] = {"file": _open_file, "s3": _open_s3}


def open_blob_store(url: str, **options: object) -> BlobStore:
    """Open the blob store named by ``url`` (``file:///path`` or ``s3://bucket/prefix``)."""
    scheme = urlparse(url).scheme
    try:
        opener = _SCHEMES[scheme]
    except KeyError:
        from imagebank.errors import ConfigError

        raise ConfigError(
            f"storage.blob_url: unsupported scheme {scheme!r} (use one of {', '.join(sorted(_SCHEMES))})"
        ) from None
    return opener(url, **options)
