"""Where bulk ingest reads from: a folder, a zip file, a DICOMDIR, or a single file.

Every source becomes a stream of :class:`SourceItem`: small, picklable descriptions that a worker
process can open on its own, so the parent never holds file contents.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom

from imagebank.errors import ImagebankError


@dataclass(frozen=True)
class SourceItem:
    """One thing to ingest. ``load`` returns bytes or a path to the PS3.10 file."""

    kind: str  # "file" | "zip" | a registered generator kind (see ``register_loader``)
    container: str
    name: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """Stable journal key of this item (hash, so long paths fit and no path is stored)."""
        return hashlib.sha256(f"{self.kind}\0{self.container}\0{self.name}".encode()).hexdigest()

    @property
    def display(self) -> str:
        return self.name if self.kind == "file" else f"{self.container}!{self.name}"

    def load(self) -> bytes | Path:
        loader = _LOADERS[self.kind]
        if isinstance(loader, str):  # "module:function", imported on first use (also in workers)
            module, _, name = loader.partition(":")
            loader = _LOADERS[self.kind] = getattr(importlib.import_module(module), name)
        return loader(self)


_zip_cache: dict[str, zipfile.ZipFile] = {}


def _load_file(item: SourceItem) -> Path:
    return Path(item.name)


def _load_zip(item: SourceItem) -> bytes:
    archive = _zip_cache.get(item.container)
    if archive is None:
        archive = _zip_cache[item.container] = zipfile.ZipFile(item.container)
    return archive.read(item.name)


Loader = Callable[[SourceItem], "bytes | Path"]

#: Item kind -> loader, or the loader's "module:function" path so that worker processes (started with
#: ``spawn``) can find loaders of packages they never imported.
_LOADERS: dict[str, Loader | str] = {
    "file": _load_file,
    "zip": _load_zip,
    "synthetic": "imagebank.synth.hospital:load_synthetic",
}


def register_loader(kind: str, loader: Loader | str) -> None:
    """Let another package feed the bulk pipeline with its own kind of items."""
    _LOADERS[kind] = loader


def _file_item(path: Path) -> SourceItem:
    st = path.stat()
    return SourceItem("file", "", str(path), st.st_size, st.st_mtime_ns)


def _walk_folder(root: Path) -> Iterator[SourceItem]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            # Hidden files (.DS_Store...) and the DICOMDIR index itself are not instances; the files a
            # DICOMDIR references are in the folder and are read by the walk.
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            yield _file_item(Path(dirpath, name))


def _walk_zip(path: Path) -> Iterator[SourceItem]:
    st = path.stat()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or base.startswith(".") or base.upper() == "DICOMDIR":
                continue
            yield SourceItem("zip", str(path), info.filename, info.file_size, st.st_mtime_ns)


def _walk_dicomdir(path: Path) -> Iterator[SourceItem]:
    """PS3.10 8.5 / PS3.3 F.3: each Directory Record may name a file by Referenced File ID."""
    try:
        dicomdir = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - reported as the file's problem
        raise ImagebankError(f"{path}: not a readable DICOMDIR ({type(exc).__name__})") from None
    root = path.parent
    seen: set[str] = set()
    for record in dicomdir.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        target = root.joinpath(*parts)
        if str(target) in seen:
            continue
        seen.add(str(target))
        if target.is_file():
            yield _file_item(target)
        else:  # a DICOMDIR on case-insensitive media may use other case than the files
            match = next((p for p in target.parent.glob("*") if p.name.upper() == target.name.upper()), None)
            if match is None:
                raise ImagebankError(f"DICOMDIR references {'/'.join(parts)}, which does not exist")
            yield _file_item(match)


def iter_source(path: str | os.PathLike[str]) -> Iterator[SourceItem]:
    """Items of a folder, zip file, DICOMDIR or single file, in a deterministic order."""
    p = Path(path)
    if not p.exists():
        raise ImagebankError(f"{p}: no such file or folder")
    if p.is_dir():
        return _walk_folder(p)
    if zipfile.is_zipfile(p):
        return _walk_zip(p)
    if p.name.upper() == "DICOMDIR" or _is_dicomdir(p):
        return _walk_dicomdir(p)
    return iter([_file_item(p)])


def _is_dicomdir(p: Path) -> bool:
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10"
    except Exception:  # noqa: BLE001 - not a DICOMDIR, whatever the reason
        return False


def job_key_for(path: str | os.PathLike[str]) -> str:
    """Bulk jobs over the same source share a journal, so re-running one resumes it."""
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()
