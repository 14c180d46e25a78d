"""PS3.10 files from a pydicom dataset whose elements are mostly still raw (as read), without pydicom's
per-element overhead.

Why: an object that went through the de-identifier keeps most of its elements as they were read
(:class:`~pydicom.dataelem.RawDataElement`, pixel data included); pydicom's writer still copies each value
through two buffers and runs its generic checks per element, which makes encoding the slowest step of a
de-identification job. Here a raw element is written as its header plus its original value bytes (handed to
the file as they are, no copy); every element that was decoded or created is encoded by pydicom's own
``write_data_element``, and sequences are walked the way pydicom's ``write_sequence`` walks them. The result
is byte for byte what ``dcmwrite(..., enforce_file_format=True)`` writes (tested on pydicom's own test files).

Whenever the raw bytes would not be valid as they are -- another transfer syntax than the one read
(PS3.5 7.1: explicit and implicit VR differ in the header; big endian values differ in their bytes),
deflate (PS3.5 A.5), a changed character set, an ambiguous VR, a value too long for a 16-bit length --
the whole object goes to pydicom's ``dcmwrite`` instead.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

_PREAMBLE = b"\x00" * 128 + b"DICM"
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_ITEM_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
#: VRs pydicom writes with write_string/write_UI/write_DA/DT/TM (default encoding) or write_text (the data
#: set's character set) -- PN aside.
_STRING_VRS = frozenset({"AE", "AS", "CS", "UR", "DA", "DT", "TM", "UI"})
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})  # write_OBvalue/OWvalue pad with NUL, UN not
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
_BIG_ENDIAN_OR_DEFLATED = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})


class _NeedsPydicom(Exception):
    """Raised inside the fast path when the raw bytes cannot be reused as they are."""


def part10_chunks(ds: Dataset) -> list[bytes | memoryview]:
    """The PS3.10 file for ``ds`` (preamble, file meta, data set) as a list of byte chunks to write in order.

    ``ds.file_meta`` must hold the Transfer Syntax UID; Media Storage SOP Class/Instance UIDs follow the
    data set, and the other required file meta elements are added, as ``enforce_file_format=True`` does.
    The preamble is always 128 zero bytes (PS3.10 7.1, no application profile in use): a source's
    application-specific preamble (a TIFF header, anything) is not carried over.
    """
    meta: FileMetaDataset = ds.file_meta
    syntax = UID(str(meta.get("TransferSyntaxUID", "") or ""))
    implicit = syntax == ImplicitVRLittleEndian
    known = syntax.is_transfer_syntax and not syntax.is_private
    if (not known or syntax in _BIG_ENDIAN_OR_DEFLATED
            or ds.original_encoding != (implicit, True)):
        return [_with_pydicom(ds)]
    meta_bytes = _file_meta(ds, meta)  # first: reading the SOP UIDs decodes them, as in dcmwrite
    chunks: list[bytes | memoryview] = []
    try:
        _dataset(ds, chunks, implicit=implicit, parent_encoding="iso8859", compressed=bool(syntax.is_compressed))
    except _NeedsPydicom:
        return [_with_pydicom(ds)]
    return [_PREAMBLE, meta_bytes, *chunks]


def part10_bytes(ds: Dataset) -> bytes:
    return b"".join(part10_chunks(ds))


# ------------------------------------------------------------------------------------------------ internals
def _with_pydicom(ds: Dataset) -> bytes:
    ds.preamble = None  # see part10_chunks: never the source's preamble
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
    if syntax.is_transfer_syntax and not syntax.is_implicit_VR:
        _decode_implicit_raw(ds)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _decode_implicit_raw(ds: Dataset) -> None:
    """Decode the raw elements read as implicit VR (no VR of their own) in a data set to be written with
    explicit VR: a file whose transfer syntax says explicit while its data set is implicit (pydicom reads it,
    warning) would otherwise make dcmwrite fail on the missing VR. Decoding takes the VR from the data
    dictionary, as reading such a file for display does."""
    for key, elem in list(ds._dict.items()):
        if isinstance(elem, RawDataElement) and elem.VR is None:
            elem = ds[key]
        if isinstance(elem, DataElement) and elem.VR == "SQ":
            for item in elem.value or []:
                _decode_implicit_raw(item)


def _file_meta(ds: Dataset, meta: FileMetaDataset) -> bytes:
    """What dcmwrite writes for the file meta under enforce_file_format (PS3.10 7.1)."""
    sop_class = ds.get("SOPClassUID", None)
    if meta.get("MediaStorageSOPClassUID", None) is None or (sop_class and sop_class != meta.MediaStorageSOPClassUID):
        meta.MediaStorageSOPClassUID = sop_class
    sop_instance = ds.get("SOPInstanceUID", None)
    if (meta.get("MediaStorageSOPInstanceUID", None) is None
            or (sop_instance and sop_instance != meta.MediaStorageSOPInstanceUID)):
        meta.MediaStorageSOPInstanceUID = sop_instance
    validate_file_meta(meta, enforce_standard=True)  # adds the version and implementation elements
    chunks: list[bytes | memoryview] = []
    try:
        length = _dataset(meta, chunks, implicit=False, parent_encoding="iso8859", skip=0x00020000)
    except _NeedsPydicom:  # raw elements read with another encoding: pydicom's writer converts them
        buffer = DicomBytesIO()
        buffer.is_little_endian = True
        buffer.is_implicit_VR = False
        write_file_meta_info(buffer, meta, enforce_standard=True)
        return buffer.getvalue()
    # (0002,0000) File Meta Information Group Length: the bytes that follow it (PS3.10 7.1).
    meta.FileMetaInformationGroupLength = length
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, length) + b"".join(chunks)


def _dataset(ds: Dataset, out: list[bytes | memoryview], *, implicit: bool, parent_encoding: str | list[str],
             compressed: bool | None = None, skip: int | None = None) -> int:
    """Append the encoded elements of ``ds`` (PS3.5 7.1, ascending tag order) to ``out``; returns their length.

    ``compressed`` is given for the top-level data set only, whose Pixel Data the transfer syntax governs."""
    same_charset = ds.original_character_set == ds._character_set
    same_encoding = ds.original_encoding == (implicit, True)
    encodings = ds.get("SpecificCharacterSet", parent_encoding)
    elements = ds._dict  # pydicom's tag -> element mapping (no deferred reads in these data sets)
    ascii_text: bool | None = None  # whether ASCII text encodes as ASCII in this data set (computed once)
    length = 0
    for key in sorted(elements, key=int):
        tag = int(key)  # a plain int: BaseTag compares in Python
        if ((tag & 0xFFFF) == 0 and (tag >> 16) > 6) or tag == skip:
            continue  # retired group lengths are not written (PS3.5 7.2)
        elem = elements[key]
        if isinstance(elem, RawDataElement) and elem.value is None:
            elem = ds[key]  # what get_item does for an empty raw element (as dcmwrite reads it)
        if isinstance(elem, RawDataElement):
            if not (same_encoding and same_charset):
                raise _NeedsPydicom
            if tag == _PIXEL_DATA and compressed is not None:
                length += _raw_pixel_data(elem, out, implicit, compressed)
            else:
                length += _raw(elem, out, implicit)
        elif elem.VR == "SQ":
            length += _sequence(elem, out, implicit=implicit, encodings=encodings)
        else:
            if not implicit and (elem.VR is None or len(elem.VR) != 2):
                raise _NeedsPydicom  # ambiguous VR: pydicom resolves it from the data set
            if tag == _PIXEL_DATA and compressed is not None:
                elem.is_undefined_length = compressed  # PS3.5 A.4, as dcmwrite sets it
            if ascii_text is None:
                ascii_text = _ascii_compatible(encodings)
            value = None if elem.is_undefined_length else _simple_value(elem, ascii_text)
            if value is not None:
                header = _header(tag, elem.VR, len(value), implicit)
                if header is not None:
                    out.append(header)
                    out.append(value)
                    length += len(header) + len(value)
                    continue
            scratch = DicomBytesIO()
            scratch.is_little_endian = True
            scratch.is_implicit_VR = implicit
            write_data_element(scratch, elem, encodings)
            value = scratch.getvalue()
            out.append(value)
            length += len(value)
    return length


def _raw(elem: RawDataElement, out: list[bytes | memoryview], implicit: bool) -> int:
    tag = elem.tag
    value = elem.value or b""
    undefined = elem.length == _UNDEFINED
    size = _UNDEFINED if undefined else len(value)
    vr = elem.VR
    if not implicit and (not vr or len(vr) != 2 or (undefined and vr not in _LONG_VRS)):
        raise _NeedsPydicom
    header = _header(tag, vr or "", size, implicit)
    if header is None:
        raise _NeedsPydicom  # pydicom rewrites such an element as UN
    out.append(header)
    if value:
        out.append(memoryview(value) if len(value) > 4096 else value)
    if undefined:
        out.append(_SEQUENCE_DELIMITER)
        return len(header) + len(value) + 8
    return len(header) + len(value)


def _header(tag: int, vr: str, size: int, implicit: bool) -> bytes | None:
    """PS3.5 7.1.1/7.1.2 element header; None where pydicom would rewrite the element (too long for its VR)."""
    if implicit:
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size)
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), size)
    if size > 0xFFFF:
        return None
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), size)


def _ascii_compatible(encodings: str | list[str] | None) -> bool:
    """Whether ASCII text is written as the same ASCII bytes: one character set, not ISO 2022 code extensions
    and not JIS X 0201 (where backslash and tilde are other characters)."""
    try:
        codecs = convert_encodings(encodings or ["iso8859"])
    except LookupError:
        return False
    return len(codecs) == 1 and codecs[0] != "shift_jis" and not codecs[0].startswith("iso2022")


def _simple_value(elem: DataElement, ascii_text: bool) -> bytes | None:
    """The encoded value of the common decoded elements (strings, ASCII text, person names, integers and
    floats), as pydicom's writers encode them (PS3.5 6.2: padded to even length with a space, UIDs with
    NUL); None for anything else, which pydicom then encodes."""
    vr = elem.VR
    value = elem.value
    if value is None or (isinstance(value, (str, list, MultiValue)) and len(value) == 0):
        return b""
    if vr in _STRING_VRS or vr in _TEXT_VRS or vr == "PN":
        if isinstance(value, (list, MultiValue)):
            if not all(isinstance(v, (str, PersonName)) for v in value):
                return None
            text = "\\".join(str(v) for v in value)
        elif isinstance(value, (str, PersonName)):
            text = str(value)
        else:
            return None
        if vr not in _STRING_VRS and not (ascii_text and text.isascii()):
            return None
        try:
            data = text.encode("latin-1" if vr in _STRING_VRS else "ascii")
        except UnicodeEncodeError:
            return None
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        return data
    if vr in _BINARY_VRS and isinstance(value, bytes):
        return value + b"\x00" if len(value) % 2 and vr != "UN" else value
    fmt = _NUMBER_FORMATS.get(vr)
    if fmt is not None:
        values = list(value) if isinstance(value, (list, MultiValue)) else [value]
        if not all(type(v) is (float if fmt in "fd" else int) for v in values):
            return None
        try:
            return struct.pack(f"<{len(values)}{fmt}", *values)
        except struct.error:
            return None
    return None


def _raw_pixel_data(elem: RawDataElement, out: list[bytes | memoryview], implicit: bool, compressed: bool) -> int:
    """PS3.5 A.4: encapsulated pixel data has an undefined length and starts with an item; native pixel data
    has its actual length, padded to even (what dcmwrite makes of a Pixel Data element, raw or not)."""
    value = elem.value or b""
    if elem.VR not in (None, "OB", "OW") or (compressed and not bytes(value[:4]) == b"\xfe\xff\x00\xe0"):
        raise _NeedsPydicom
    size = _UNDEFINED if compressed else len(value) + len(value) % 2
    if implicit:
        header = struct.pack("<HHL", 0x7FE0, 0x0010, size)
    else:
        header = struct.pack("<HH2s2xL", 0x7FE0, 0x0010, str(elem.VR).encode("ascii"), size)
    out.append(header)
    out.append(memoryview(value))
    if len(value) % 2:
        out.append(b"\x00")
    if compressed:
        out.append(_SEQUENCE_DELIMITER)
    return len(header) + len(value) + len(value) % 2 + (8 if compressed else 0)


def _sequence(elem: DataElement, out: list[bytes | memoryview], *, implicit: bool,
              encodings: str | list[str]) -> int:
    """PS3.5 7.5: a sequence of items, each with an explicit length unless it was read with an undefined one."""
    tag = int(elem.tag)
    undefined = elem.is_undefined_length
    encodings = convert_encodings(encodings or ["iso8859"])  # as pydicom's write_data_element does for SQ
    body: list[bytes | memoryview] = []
    body_length = 0
    items: Iterable[Dataset] = elem.value or []
    for item in items:
        item_chunks: list[bytes | memoryview] = []
        item_length = _dataset(item, item_chunks, implicit=implicit, parent_encoding=encodings)
        if getattr(item, "is_undefined_length_sequence_item", False):
            body.append(struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED))
            body.extend(item_chunks)
            body.append(_ITEM_DELIMITER)
            body_length += 8 + item_length + 8
        else:
            body.append(struct.pack("<HHL", 0xFFFE, 0xE000, item_length))
            body.extend(item_chunks)
            body_length += 8 + item_length
    size = _UNDEFINED if undefined else body_length
    if implicit:
        header = struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size)
    else:
        header = struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, b"SQ", size)
    out.append(header)
    out.extend(body)
    if undefined:
        out.append(_SEQUENCE_DELIMITER)
        return len(header) + body_length + 8
    return len(header) + body_length


__all__ = ["part10_bytes", "part10_chunks"]


def _short_element(tag: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def file_meta_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                     implementation_class_uid: str, implementation_version_name: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of a received data set (PS3.10 7.1), encoded as
    pydicom's ``write_file_meta_info`` encodes pynetdicom's ``create_file_meta`` (tested byte for byte).

    Why not pydicom: this runs once per C-STORE, and pydicom builds and validates a data set to write seven
    short elements. The values are UIDs and a short name (ASCII); anything else raises ``ValueError``.
    """
    values = (sop_class_uid, sop_instance_uid, transfer_syntax_uid, implementation_class_uid,
              implementation_version_name)
    if not all(isinstance(v, str) and v.isascii() for v in values):
        raise ValueError("File Meta Information values must be ASCII")
    body = b"".join((
        struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",  # File Meta Information Version
        _short_element(0x00020002, b"UI", sop_class_uid.encode(), b"\x00"),
        _short_element(0x00020003, b"UI", sop_instance_uid.encode(), b"\x00"),
        _short_element(0x00020010, b"UI", transfer_syntax_uid.encode(), b"\x00"),
        _short_element(0x00020012, b"UI", implementation_class_uid.encode(), b"\x00"),
        _short_element(0x00020013, b"SH", implementation_version_name.encode(), b" "),
    ))
    return _PREAMBLE + struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body
