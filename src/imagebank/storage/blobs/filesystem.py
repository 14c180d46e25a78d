"""Filesystem blob store: the embedded default.

Atomicity (a crash at any moment leaves either the whole blob or nothing under its name): bytes go to
a uniquely named temporary file in the destination directory, are flushed and fsync'ed, then renamed
over the final name, and the directory is fsync'ed so the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imagebank.errors import NotFound, StorageError

_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class FilesystemBlobStore:
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.url = self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        final = self._path(key)
        tmp = final.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with self._create(tmp) as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, _CHUNK)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, final)
            if self.fsync:
                self._fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write blob {key}: {exc.strerror or exc}") from exc

    @staticmethod
    def _create(tmp: Path) -> BinaryIO:
        """Open ``tmp`` for writing, creating its directory only when missing (the common case, an
        existing ``ab/cd`` directory, costs no mkdir system calls)."""
        try:
            return open(tmp, "wb")
        except FileNotFoundError:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            return open(tmp, "wb")

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    def get(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    def modified_at(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                yield Path(dirpath, name).relative_to(self.root).as_posix()

    def remove_stale_temporaries(self) -> int:
        """Delete temp files left by a crash mid-write; returns how many were removed."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    Path(dirpath, name).unlink(missing_ok=True)
                    removed += 1
        return removed
