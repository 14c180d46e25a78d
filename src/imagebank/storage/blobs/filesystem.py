"""Filesystem blob store: the embedded default.

Atomicity (a crash at any moment leaves either the whole blob or nothing under its name): bytes go to
a uniquely named temporary file in the destination directory, are flushed and fsync'ed, then renamed
over the final name, and the directory is fsync'ed so the rename itself survives a power cut. The blobs
of one request can instead go through a :meth:`FilesystemBlobStore.batch`, which makes all of them
durable with two waits for the disk in all (see :class:`_FilesystemBatch`).

Direct I/O (``direct_io``, with ``fsync``; Linux ``O_DIRECT``): a blob that must be on the disk before the
sender hears "stored" is written from an aligned buffer straight to the device instead of being copied
into the page cache and flushed from there. Measured on the benchmark machine (512 KB CT slices): 0.6-1.2 ms
of kernel time per blob instead of 1.8-2.0 ms, and less wall time. An archive writes far more than it reads
back at once, so the images viewers are reading stay in the cache instead of being pushed out by arrivals;
reading a blob is unchanged (through the cache). A filesystem that refuses ``O_DIRECT`` (tmpfs) is written
the ordinary way.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from imagebank.errors import NotFound, StorageError
from imagebank.storage.blobs.base import BlobBatch

_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20
#: O_DIRECT transfers must start at aligned offsets and be whole blocks (the page size covers every
#: logical block size in use: 512 and 4096 bytes); a blob's last, short block is written buffered.
_ALIGN = mmap.PAGESIZE
#: Direct writes go through a per-thread aligned buffer of this size (larger blobs in several writes).
_DIRECT_BUFFER = 8 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)
if _O_DIRECT:  # Linux: fcntl is there
    import fcntl


class _DirectIoRefused(Exception):
    """The filesystem does not take O_DIRECT: write through the page cache instead."""


class _NoSyncfs(Exception):
    """No ``syncfs(2)`` here: make each file and directory durable by itself."""


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):  # not Linux / not glibc or musl
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int
    return call  # type: ignore[no-any-return]


_syncfs = _find_syncfs()


class FilesystemBlobStore:
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True, direct_io: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.direct_io = bool(direct_io and fsync and _O_DIRECT)
        self._buffers = threading.local()
        self.url = self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        final = self._path(key)
        tmp = self._write_temporary(key, final, data, sync=self.fsync)
        try:
            os.replace(tmp, final)
            if self.fsync:
                self._fsync_path(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write blob {key}: {exc.strerror or exc}") from exc

    def batch(self) -> BlobBatch:
        return _FilesystemBatch(self)

    def _write_temporary(self, key: str, final: Path, data: bytes | BinaryIO, *, sync: bool) -> Path:
        """Write ``data`` to a new temporary file beside ``final`` (fsync'ed when ``sync``); its path."""
        tmp = final.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            if self.direct_io:
                try:
                    self._put_direct(tmp, data, sync=sync)
                    return tmp
                except _DirectIoRefused:
                    self.direct_io = False
                    tmp.unlink(missing_ok=True)
                    if not isinstance(data, (bytes, bytearray, memoryview)):
                        data.seek(0)
            with self._create(tmp) as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, _CHUNK)
                if sync:
                    out.flush()
                    os.fsync(out.fileno())
            return tmp
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write blob {key}: {exc.strerror or exc}") from exc

    def _sync_filesystem(self) -> None:
        """Everything written on this store's filesystem reaches the disk: ``syncfs(2)`` where the C
        library has it (one wait for all the files of a batch), else :class:`_NoSyncfs`."""
        if _syncfs is None:
            raise _NoSyncfs
        fd = os.open(self.root, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _syncfs(fd) != 0:
                error = ctypes.get_errno()
                if error == errno.ENOSYS:
                    raise _NoSyncfs
                raise OSError(error, os.strerror(error))
        finally:
            os.close(fd)

    def _aligned_buffer(self) -> mmap.mmap:
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = self._buffers.buffer = mmap.mmap(-1, _DIRECT_BUFFER)  # page-aligned, reused per thread
        return buffer

    def _put_direct(self, tmp: Path, data: bytes | BinaryIO, *, sync: bool) -> None:
        """Write ``data`` to ``tmp`` with O_DIRECT and fsync it when ``sync``; raises :class:`_DirectIoRefused`
        when the filesystem refuses O_DIRECT.

        Only whole aligned blocks go direct; the short tail of the last one (the rest of the blob after its
        last 4096-byte boundary) is written through the page cache, on the same descriptor with O_DIRECT
        switched off. Why not pad the last block and cut the file back with ``ftruncate``: on ext4 that cut
        reads the block it zeroes back from the disk, since the direct write left it out of the cache.
        Measured on the benchmark machine (525 KB CT slices): 0.51 ms of wall time and 0.25 ms of kernel time
        per blob instead of 0.71 and 0.29. The batch's ``syncfs`` (or the fsync here) makes the tail durable
        with the rest.
        """
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _O_DIRECT, 0o644)
        except FileNotFoundError:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise _DirectIoRefused from None
            raise
        try:
            buffer = self._aligned_buffer()
            view = memoryview(buffer)
            total = 0
            source = memoryview(data).cast("B") if isinstance(data, (bytes, bytearray, memoryview)) else None
            while True:
                if source is not None:
                    chunk = source[total:total + _DIRECT_BUFFER]
                    count = len(chunk)
                    buffer[:count] = chunk
                else:  # fill the whole buffer: only the last block may be short
                    count = 0
                    while count < _DIRECT_BUFFER:
                        got = data.readinto(view[count:]) or 0  # type: ignore[union-attr]
                        if not got:
                            break
                        count += got
                if not count:
                    break
                whole = count // _ALIGN * _ALIGN
                if whole:
                    try:
                        written = os.write(fd, view[:whole])
                    except OSError as exc:
                        if exc.errno == errno.EINVAL and total == 0:
                            raise _DirectIoRefused from None
                        raise
                    if written != whole:
                        raise OSError(errno.EIO, "short direct write")
                if whole < count:  # the last, short block: through the page cache
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                    tail = view[whole:count]
                    while tail:
                        tail = tail[os.write(fd, tail):]
                total += count
                if count < _DIRECT_BUFFER or (source is not None and total >= len(source)):
                    break
            del view
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _create(tmp: Path) -> BinaryIO:
        """Open ``tmp`` for writing, creating its directory only when missing (the common case, an
        existing series directory, costs no mkdir system calls)."""
        try:
            return open(tmp, "wb")
        except FileNotFoundError:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            return open(tmp, "wb")

    @staticmethod
    def _fsync_path(path: Path) -> None:
        """fsync a file or a directory (a directory's fsync makes its renames and new entries durable)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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


class _FilesystemBatch:
    """Blobs written to temporary files as they arrive, then published together (:class:`BlobBatch`).

    Publishing: one ``syncfs`` makes every temporary file durable, the renames give each blob its
    name, and a second ``syncfs`` makes the renames (and any new directory) durable, before the caller
    commits the index. Measured on the benchmark machine (20 CT slices of 525 KB per batch): 0.5 ms of wall
    time and 0.2 ms of CPU per blob instead of 1.0 and 0.5 with an fsync of each file and directory. A
    name never points to bytes that are not yet on the disk, so a crash at any moment leaves each blob
    whole under its name or absent (its temporary file is what ``remove_stale_temporaries`` collects).
    ``syncfs`` writes back whatever else is pending on that filesystem too; on a data volume of the
    archive's own that is only the archive's writes.
    """

    def __init__(self, store: FilesystemBlobStore) -> None:
        self._store = store
        self._pending: list[tuple[Path, Path]] = []
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        final = self._store._path(key)
        tmp = self._store._write_temporary(key, final, data, sync=False)
        with self._lock:
            self._pending.append((tmp, final))

    def publish(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        store = self._store
        renamed = 0
        try:
            if store.fsync:
                self._make_durable(tmp for tmp, _ in pending)
            for tmp, final in pending:
                os.replace(tmp, final)
                renamed += 1
            if store.fsync:
                self._make_durable(dict.fromkeys(store.root / d for _, final in pending
                                                 for d in final.relative_to(store.root).parents))
        except OSError as exc:
            for tmp, _ in pending[renamed:]:
                tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot store {len(pending)} blob(s): {exc.strerror or exc}") from exc

    def _make_durable(self, paths: Iterable[Path]) -> None:
        """One ``syncfs``, else an fsync of each of ``paths`` (files, or every directory up to the root)."""
        try:
            self._store._sync_filesystem()
        except _NoSyncfs:
            for path in paths:
                self._store._fsync_path(path)

    def discard(self) -> list[str]:
        with self._lock:
            pending, self._pending = self._pending, []
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        return []

