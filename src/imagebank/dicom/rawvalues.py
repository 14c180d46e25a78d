"""Read and replace the string values of still-raw elements without pydicom's decode/encode round trip.

Why: a de-identification run reads a few dozen string values per object (names, IDs, UIDs, dates) and
replaces most of them (pseudonyms, mapped UIDs, shifted dates, empty values). Decoding each through
pydicom's DataElement and encoding it back costs more than the rest of the work. Here a value is read
straight from its bytes when that is exactly what pydicom would read, and a new value is stored as a raw
element holding its encoded bytes (what any pydicom code reading it later decodes as usual, and what
:mod:`imagebank.dicom.part10` writes as it is).

Everything outside the simple case returns None and the caller goes through pydicom: other character sets
than ASCII/Latin-1/UTF-8 for text (PS3.5 6.1; ISO 2022 escapes, multi-byte), non-ASCII new values,
big endian or freshly built data sets, elements whose VR in the file differs from the dictionary's
(UN, ambiguous VRs).
"""

from __future__ import annotations

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

#: VRs of the default character repertoire (PS3.5 6.1.2.2; pydicom reads them as ISO 8859-1).
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
#: VRs whose text follows (0008,0005) Specific Character Set (PS3.5 6.1.2.3).
CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Single-valued VRs: a backslash is part of the text (PS3.5 6.2).
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
#: Specific Character Set values whose bytes Python decodes as pydicom does.
_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


def text_codec(ds: Dataset, inherited: str | None) -> str | None:
    """The codec for text values of ``ds`` (its own Specific Character Set, else the enclosing data set's
    codec ``inherited``); None when only pydicom can decode them."""
    if 0x00080005 not in ds._dict:
        return inherited
    value = ds.SpecificCharacterSet
    if not isinstance(value, str):  # multi-valued: ISO 2022 code extensions
        return None
    return _CODECS.get(value.strip())


def read(elem: object, vr: str, codec: str | None) -> list[str] | None:
    """The values of a raw element as pydicom's decoder gives them, or None (not raw, or not simple)."""
    if not isinstance(elem, RawDataElement) or elem.VR == "UN":
        return None
    if vr in ASCII_VRS:
        codec = "latin-1"
    elif vr not in CHARSET_VRS or codec is None:
        return None
    data = elem.value
    if not data:
        return []
    try:
        text = bytes(data).decode(codec)
    except UnicodeDecodeError:
        return None
    text = text.rstrip(" \x00")  # trailing padding, as pydicom's converters strip it
    if vr in _SINGLE_VALUED:
        return [text]
    values = text.split("\\")
    return [v.rstrip(" \x00") for v in values] if vr in CHARSET_VRS else values


def replace(ds: Dataset, tag: int, vr: str, values: list[str], codec: str | None) -> bool:
    """Store ``values`` as the raw element ``tag`` of ``ds``; False (nothing changed) when the caller must
    set them through pydicom instead."""
    implicit, little = ds.original_encoding
    if little is not True or implicit is None or (vr not in ASCII_VRS and (vr not in CHARSET_VRS or codec is None)):
        return False
    text = "\\".join(values)
    if not text.isascii():
        return False
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "  # PS3.5 6.2: even length, UIDs padded with NUL
    if not implicit and vr not in _LONG_VRS and len(data) > 0xFFFF:
        return False
    ds._dict[BaseTag(tag)] = RawDataElement(BaseTag(tag), None if implicit else vr, len(data), data, 0,
                                            bool(implicit), True)
    return True


def empty(ds: Dataset, tag: int, vr: str) -> bool:
    """Make ``tag`` a zero-length raw element (any VR, sequences included: PS3.5 7.5 allows an empty
    sequence); False when the caller must do it through pydicom."""
    implicit, little = ds.original_encoding
    if little is not True or implicit is None or len(vr) != 2:
        return False
    ds._dict[BaseTag(tag)] = RawDataElement(BaseTag(tag), None if implicit else vr, 0, b"", 0, bool(implicit), True)
    return True


def text_of(ds: Dataset, tag: int, codec: str | None) -> str | None:
    """The value of element ``tag`` as ``str(ds[tag].value)`` gives it for a single value (multiple values
    joined with a backslash), read from its raw bytes without converting the element; ``""`` when absent;
    None when only pydicom can say (``codec`` as :func:`text_codec` returns it)."""
    elem = ds._dict.get(BaseTag(tag))
    if elem is None:
        return ""
    if ds.original_encoding[1] is not True or not isinstance(elem, RawDataElement):
        return None
    vr = elem.VR
    if vr is None:
        from pydicom.datadict import dictionary_VR

        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
    values = read(elem, vr, codec)
    return None if values is None else "\\".join(values)
