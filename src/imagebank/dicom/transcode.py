"""Transcoding between transfer syntaxes, for receivers that cannot take what the archive stores.

The archive keeps every instance in the transfer syntax it was received in (no loss, no re-encoding).
A receiver that refuses that syntax (a C-MOVE destination or C-GET requestor that negotiated only
uncompressed syntaxes, a DICOMweb client asking for explicit VR little endian) gets the pixel data
decompressed with pydicom's codec plugins (pylibjpeg, pyjpegls). The other direction, compressing for a
receiver, is never done implicitly: lossy compression of an original is a clinical decision.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imagebank.errors import ImagebankError

#: Native (uncompressed) transfer syntaxes, PS3.5 A.1, A.2, A.3 and deflate (A.5: the data set is
#: compressed as a whole, pixel data stay native, so any uncompressed receiver can be sent it inflated).
UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99"})


class TranscodeError(ImagebankError):
    """The pixel data cannot be decoded (no codec for the syntax, or corrupt compressed data)."""


def is_encapsulated(transfer_syntax: str) -> bool:
    return transfer_syntax not in UNCOMPRESSED and transfer_syntax not in DEFLATED


def decompressed(ds: Dataset) -> Dataset:
    """``ds`` with native pixel data in explicit VR little endian (modified in place and returned).

    Raises :class:`TranscodeError` naming the transfer syntax when no installed codec can decode it.
    """
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if not is_encapsulated(syntax):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return ds
    if "PixelData" not in ds:
        raise TranscodeError(f"{syntax.name} data set without Pixel Data cannot be re-encoded")
    try:
        ds.decompress()
    except Exception as exc:  # noqa: BLE001 - codec errors come in many types; name the syntax
        raise TranscodeError(f"cannot decode {syntax.name} pixel data: {type(exc).__name__}") from exc
    return ds


def choose_syntax(stored: str, accepted: set[str]) -> str | None:
    """The syntax to send a ``stored`` instance in to a receiver that ``accepted`` these syntaxes:
    the stored one when accepted, else an uncompressed one (explicit first), else ``None``."""
    if stored in accepted:
        return stored
    for candidate in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"):
        if candidate in accepted:
            return candidate
    return None
