"""Content negotiation for WADO-RS (PS3.18 8.7: Accept, media types and transfer syntaxes).

The rules, in one place:
- ``transfer-syntax=*`` means "as stored" (8.7.3.5.2); no transfer-syntax parameter means the default,
  Explicit VR Little Endian for DICOM and uncompressed frames (8.7.3.5.3, Table 8.7.3-2).
- The archive decompresses for a client that asks for an uncompressed syntax; it never compresses
  (lossy re-encoding is a clinical decision), so asking for another compressed syntax gets 406.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID

from imagebank.dicom.transcode import DEFLATED, UNCOMPRESSED
from imagebank.dicomweb.multipart import MediaType

EXPLICIT_LE = "1.2.840.10008.1.2.1"
ANY = "*"

#: PS3.18 Table 8.7.3-5 (single frame media types per transfer syntax).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class NotAcceptable(ValueError):
    """No representation the client accepts can be produced (HTTP 406); the text says why."""


@dataclass(frozen=True)
class Wanted:
    """What a client asked for: the part media type and transfer syntax (``*`` = as stored)."""

    part_type: str
    transfer_syntax: str
    multipart: bool = True


def _ranges(accept: str | None) -> list[MediaType]:
    if not accept or not accept.strip():
        return [MediaType("*/*")]
    ranges = [MediaType.parse(item) for item in _split(accept)]
    ranges.sort(key=lambda m: -float(m.params.get("q", "1") or 1))
    return [m for m in ranges if float(m.params.get("q", "1") or 1) > 0]


def _split(accept: str) -> list[str]:
    """Split an Accept header on commas that are not inside quoted parameter values."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in accept:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def negotiate_dicom(accept: str | None) -> Wanted:
    """For instance/series/study retrieval (PS3.18 8.7.3.3.2)."""
    for media in _ranges(accept):
        part = media.params.get("type", "application/dicom").strip('"').lower()
        syntax = media.params.get("transfer-syntax", EXPLICIT_LE)
        if media.essence in ("multipart/related", "multipart/*", "*/*") and part in ("application/dicom", "*/*"):
            return Wanted("application/dicom", syntax)
        if media.essence == "application/dicom":
            return Wanted("application/dicom", syntax, multipart=False)
    raise NotAcceptable('this resource is available as multipart/related; type="application/dicom"')


def negotiate_frames(accept: str | None, stored: str) -> Wanted:
    """For ``/frames`` and pixel ``/bulkdata`` (PS3.18 8.7.3.3.3 and Table 8.7.3-5)."""
    compressed_type = FRAME_MEDIA_TYPES.get(stored)
    for media in _ranges(accept):
        multipart = media.essence.startswith("multipart/") or media.essence == "*/*"
        part = (media.params.get("type", "application/octet-stream").strip('"').lower()
                if multipart else media.essence)
        syntax = media.params.get("transfer-syntax")
        if part in ("application/octet-stream", "*/*"):
            if syntax == ANY:
                return Wanted(compressed_type or "application/octet-stream", stored if compressed_type else
                              EXPLICIT_LE, multipart)
            if syntax in (None, EXPLICIT_LE):
                return Wanted("application/octet-stream", EXPLICIT_LE, multipart)
            if syntax == stored and compressed_type:
                return Wanted(compressed_type, stored, multipart)
            continue
        if compressed_type and part == compressed_type and syntax in (None, ANY, stored):
            return Wanted(compressed_type, stored, multipart)
    stored_name = UID(stored).name
    raise NotAcceptable(f"frames are stored as {stored_name}; ask for application/octet-stream "
                        f"(uncompressed) or transfer-syntax=*" + (f" or {compressed_type}" if compressed_type else ""))


def check_transcodable(stored: str, wanted: str) -> None:
    """Raise :class:`NotAcceptable` unless an instance stored as ``stored`` can be sent as ``wanted``."""
    if wanted in (ANY, stored):
        return
    if wanted in UNCOMPRESSED or wanted in DEFLATED:
        if stored in UNCOMPRESSED or stored in DEFLATED or _decoder_available(stored):
            return
        raise NotAcceptable(f"no decoder is installed for {UID(stored).name}; ask for transfer-syntax=*")
    raise NotAcceptable(f"the archive does not re-compress: stored as {UID(stored).name}, asked for "
                        f"{UID(wanted).name}; ask for transfer-syntax=* or an uncompressed syntax")


def _decoder_available(syntax: str) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(UID(syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def frame_content_type(wanted: Wanted) -> str:
    return f"{wanted.part_type}; transfer-syntax={wanted.transfer_syntax}"
