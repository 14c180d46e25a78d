"""Turn incoming bytes into a :class:`PreparedInstance`: parsed, validated, hashed, ready to store.

The header is parsed with ``stop_before_pixels`` so Pixel Data is never decoded or even read into a
Dataset; the bytes themselves are stored exactly as received (no re-encoding), whatever their
transfer syntax (compressed ones included).
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from imagebank.archive.validation import validate_dataset, validate_file_meta
from imagebank.dicom.attributes import IndexRecord, extract_index_record
from imagebank.dicom.json_header import dicom_json_header
from imagebank.errors import RejectedInstance
from imagebank.storage import digest
from imagebank.storage.blobs import blob_key_for

#: Files up to this size are read once into memory; larger ones are streamed (memory stays flat).
IN_MEMORY_LIMIT = 64 << 20
_CHUNK = 1 << 20


@dataclass
class PreparedInstance:
    #: Hex digest of the bytes, by the archive's algorithm (:mod:`imagebank.storage.digest`).
    content_digest: str
    size: int
    transfer_syntax_uid: str
    record: IndexRecord
    header_json: str

    @functools.cached_property
    def blob_key(self) -> str:
        return blob_key_for(self.content_digest, str(self.record.series["series_instance_uid"]))

    @property
    def sop_instance_uid(self) -> str:
        return str(self.record.instance["sop_instance_uid"])


def _parse(fp: BinaryIO) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        raise RejectedInstance(
            "not-dicom", "not a DICOM file: no 128-byte preamble, 'DICM' prefix and File Meta Information "
            "(PS3.10 7.1)",
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt input: pydicom raises many types
        raise RejectedInstance("unreadable", f"the DICOM data set cannot be parsed ({type(exc).__name__})") from None


def prepare_bytes(data: bytes, *, require_patient_id: bool = True, bulk_data_threshold: int = 1024,
                  digest_algorithm: str = digest.DEFAULT) -> PreparedInstance:
    """Parse, validate and hash an in-memory PS3.10 file."""
    ds = _parse(io.BytesIO(data))
    return _finish(ds, digest.digest(data, digest_algorithm), len(data), require_patient_id, bulk_data_threshold)


def prepare_file(path: str | os.PathLike[str], *, require_patient_id: bool = True, bulk_data_threshold: int = 1024,
                 digest_algorithm: str = digest.DEFAULT) -> tuple[PreparedInstance, bytes | None]:
    """Like :func:`prepare_bytes` for a file; also returns the bytes when they were small enough to keep.

    ``None`` as second item means the caller must stream the file to the blob store itself.
    """
    size = Path(path).stat().st_size
    if size <= IN_MEMORY_LIMIT:
        data = Path(path).read_bytes()
        return prepare_bytes(data, require_patient_id=require_patient_id, bulk_data_threshold=bulk_data_threshold,
                             digest_algorithm=digest_algorithm), data
    hasher = digest.hasher(digest_algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
        fh.seek(0)
        ds = _parse(fh)
    return _finish(ds, hasher.hexdigest(), size, require_patient_id, bulk_data_threshold), None


def _finish(ds: pydicom.Dataset, content_digest: str, size: int, require_patient_id: bool,
            bulk_data_threshold: int) -> PreparedInstance:
    validate_file_meta(ds)
    validate_dataset(ds, require_patient_id=require_patient_id)
    try:
        header = dicom_json_header(ds, bulk_data_threshold=bulk_data_threshold)
        record = extract_index_record(ds)
    except RejectedInstance:
        raise
    except Exception as exc:  # noqa: BLE001 - any undecodable value is the input's fault
        raise RejectedInstance(
            "unreadable", f"an attribute value cannot be decoded ({type(exc).__name__})",
        ) from None
    return PreparedInstance(
        content_digest=content_digest,
        size=size,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        record=record,
        header_json=header,
    )
