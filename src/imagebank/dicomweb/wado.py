"""WADO-RS representations (PS3.18 10.4): instances in a transfer syntax, frames, bulk data, metadata.

The stored bytes are sent untouched whenever the client takes the stored transfer syntax (a file read,
no parsing); otherwise the instance is re-encoded with pydicom (:mod:`imagebank.dicom.transcode`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import pydicom
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from imagebank.dicom.transcode import decompressed, is_encapsulated
from imagebank.dicomweb.negotiation import ANY, EXPLICIT_LE
from imagebank.storage.blobs import BlobStore
from imagebank.storage.index import Located

_NATIVE_LE = (EXPLICIT_LE, "1.2.840.10008.1.2")


class NotFound(LookupError):
    """The requested frame, attribute or instance does not exist; the text says which."""


def instance_bytes(blobs: BlobStore, located: Located, transfer_syntax: str) -> bytes:
    """The PS3.10 file of ``located`` in ``transfer_syntax`` (``*``: as stored)."""
    data = blobs.get(located.blob_key)
    if transfer_syntax in (ANY, located.transfer_syntax_uid):
        return data
    ds: pydicom.Dataset = pydicom.dcmread(io.BytesIO(data))
    if transfer_syntax != EXPLICIT_LE or is_encapsulated(located.transfer_syntax_uid):
        ds = decompressed(ds)
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _frame_length(ds: pydicom.Dataset) -> int:
    bits = int(ds.BitsAllocated)
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    if bits == 1:
        raise NotFound("frames of 1-bit pixel data are not byte-aligned; retrieve the instance instead")
    return pixels * bits // 8


def _check_frames(wanted: Sequence[int], count: int) -> None:
    for number in wanted:
        if number < 1 or number > count:
            raise NotFound(f"frame {number} does not exist: the instance has {count} frame(s)")


def frames(blobs: BlobStore, located: Located, numbers: Sequence[int], transfer_syntax: str) -> list[bytes]:
    """Frames ``numbers`` (1-based) as stored (compressed bitstreams) or as native little-endian pixels."""
    stored = located.transfer_syntax_uid
    with blobs.open(located.blob_key) as fh:
        ds = pydicom.dcmread(fh, defer_size=4096)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise NotFound("the instance has no pixel data")
        count = int(ds.get("NumberOfFrames", 1) or 1)
        _check_frames(numbers, count)
        if stored in _NATIVE_LE and "PixelData" in ds:  # native frames are the same in any syntax asked
            length = _frame_length(ds)
            start = getattr(ds.get_item("PixelData"), "value_tell", None)
            if start is None:
                value = ds.PixelData
                return [value[(n - 1) * length:n * length] for n in numbers]
            out = []
            for number in numbers:  # deferred value: read only the frames asked for
                fh.seek(start + (number - 1) * length)
                out.append(fh.read(length))
            return out
        if is_encapsulated(stored) and transfer_syntax in (ANY, stored):
            fragments = list(generate_frames(ds.PixelData, number_of_frames=count))
            return [fragments[n - 1] for n in numbers]
        # Decode (compressed or big-endian stored, uncompressed asked for): native little-endian bytes,
        # from the blob already open (no second fetch from the store).
        fh.seek(0)
        full = decompressed(pydicom.dcmread(fh))
    length = _frame_length(full)
    value = full.PixelData
    return [value[(n - 1) * length:n * length] for n in numbers]


def bulk_value(blobs: BlobStore, located: Located, tag: int) -> bytes:
    """The raw value of top-level attribute ``tag`` (little endian, as stored)."""
    with blobs.open(located.blob_key) as fh:
        ds = pydicom.dcmread(fh, defer_size=4096)
        if tag not in ds:
            raise NotFound(f"attribute ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the instance")
        value = ds[tag].value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise NotFound(f"attribute ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not bulk data")


def metadata_json(located: Sequence[Located], base_url: str) -> Iterator[bytes]:
    """A JSON array of the instances' cached DICOM JSON headers, BulkDataURIs made absolute.

    Built by text substitution on the cached JSON: no parsing, so a 1,000-instance study costs
    little more than reading its headers.
    """
    yield b"["
    for i, item in enumerate(located):
        instance_url = (f"{base_url}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}"
                        f"/instances/{item.sop_instance_uid}/")
        text = (item.header_json or "{}").replace('"BulkDataURI":"bulkdata/', f'"BulkDataURI":"{instance_url}bulkdata/')
        yield (b"," if i else b"") + text.encode("utf-8")
    yield b"]"
