"""The cached DICOM JSON header of an instance (PS3.18 Annex F).

Values larger than the bulk-data threshold are replaced by a ``BulkDataURI`` relative to the
instance (``bulkdata/<tag>``); the DICOMweb layer prefixes the instance URL when it answers a
metadata request, so the cached form stays valid if the server's address changes.
Pixel Data is never parsed on ingest; instances with an Image Pixel Module (Rows and Columns present)
get a Pixel Data BulkDataURI pointing to the frames.

Speed: every stored instance gets this header, so building it is on the ingest path of C-STORE and
STOW-RS. pydicom's ``Dataset.to_json_dict`` first turns every raw element into a ``DataElement`` (value
conversion, validation objects, multi-value wrappers), which made it the costliest step of ingest. Here the
common elements of a data set read from a file -- text (ASCII, Latin-1, UTF-8), binary numbers and binary
values in little endian -- go straight from their raw bytes to their JSON form, with the same strict
validation pydicom applies (a value pydicom would refuse sends the element to pydicom, which drops it).
Everything else (other character sets, AT, UN, ambiguous VRs, already decoded elements) goes through
pydicom's own ``to_json_dict``. Tested to give exactly what ``to_json_dict(suppress_invalid_tags=True)``
gives, on pydicom's test files and on edge values.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.valuerep import validate_value

from imagebank.dicom import rawvalues

BULKDATA_PREFIX = "bulkdata/"
PIXEL_DATA_TAG = "7FE00010"

#: PS3.5 Table 6.2-1 binary numbers: struct code of one value (little endian).
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
#: Binary VRs whose JSON form is InlineBinary or BulkDataURI (PS3.18 F.2.7); UN goes through pydicom,
#: which may read it as the dictionary's VR.
_BYTES = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_TEXT = rawvalues.ASCII_VRS | rawvalues.CHARSET_VRS


def _bulk_uri_of(tag: int) -> str:
    return f"{BULKDATA_PREFIX}{tag:08X}"


def _bulk_uri(elem: DataElement) -> str:
    return _bulk_uri_of(elem.tag)


class _Unsupported(Exception):
    """This element needs pydicom's conversion."""


def dicom_json_header(ds: Dataset, *, bulk_data_threshold: int = 1024) -> str:
    """Serialize ``ds`` (without File Meta) as DICOM JSON text with bulk data left out.

    The same text as ``json.dumps`` of :func:`dicom_json_dict` (plus the Pixel Data BulkDataURI), built
    from one JSON fragment per top-level element. The fragment of a short raw element is a pure function of
    its tag, VR, bytes and character set, and the instances of a series repeat most of them (patient, study,
    series, equipment, geometry): those come from :data:`_FRAGMENTS` instead of being decoded, validated and
    encoded again for every instance.
    """
    with config.strict_reading():
        codec = rawvalues.text_codec(ds, "latin-1")
        raw_ok = ds.original_encoding[1] is True
        fragments: list[str] = []
        present: set[int] = set()
        for tag, elem in ds._dict.items():
            fragment = None
            if raw_ok and isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) \
                    and len(elem.value) <= _FRAGMENT_VALUE_LIMIT:
                # Only what the raw path converts is a function of the key alone (pydicom's conversion may
                # depend on other elements, e.g. an ambiguous VR on Pixel Representation).
                # int(tag): a plain int compares in C; pydicom's BaseTag runs a Python __eq__ on every hit.
                key = (int(tag), elem.VR, codec, bulk_data_threshold, elem.value)
                fragment = _FRAGMENTS.get(key)
                if fragment is None:
                    try:
                        fragment = _fragment(tag, _raw_element(tag, elem, codec, bulk_data_threshold))
                    except _Unsupported:
                        pass
                    else:
                        if len(_FRAGMENTS) >= _FRAGMENT_CACHE_SIZE:
                            _FRAGMENTS.clear()  # bounded: the next series refills it at once
                        _FRAGMENTS[key] = fragment
            if fragment is None:
                try:
                    fragment = _fragment(tag, _element(ds, tag, elem, codec, raw_ok, bulk_data_threshold))
                except Exception:  # noqa: BLE001,S112  # nosec B112 - as suppress_invalid_tags (see dicom_json_dict)
                    continue
            fragments.append(fragment)
            present.add(tag)
    if 0x00280010 in present and 0x00280011 in present and 0x7FE00010 not in present:
        fragments.append(_PIXEL_DATA_FRAGMENT)
    return "{" + ",".join(fragments) + "}"


def _fragment(tag: int, element: dict[str, Any]) -> str:
    return f'"{tag:08X}":{json.dumps(element, separators=(",", ":"), ensure_ascii=False)}'


#: Raw values up to this many bytes have their JSON fragment cached (UIDs, names, codes, numbers).
_FRAGMENT_VALUE_LIMIT = 256
_FRAGMENT_CACHE_SIZE = 20_000
#: ``(tag, VR, codec, bulk data threshold, raw bytes) -> '"GGGGEEEE":{...}'``; shared by the threads of a
#: process (dict reads and writes are atomic), cleared when full.
_FRAGMENTS: dict[tuple[Any, ...], str] = {}
_PIXEL_DATA_FRAGMENT = f'"{PIXEL_DATA_TAG}":' + json.dumps({"vr": "OW", "BulkDataURI": _bulk_uri_of(0x7FE00010)},
                                                          separators=(",", ":"))


def dicom_json_dict(ds: Dataset, *, bulk_data_threshold: int = 1024) -> dict[str, Any]:
    """What ``ds.to_json_dict(bulk_data_threshold, _bulk_uri, suppress_invalid_tags=True)`` returns: an
    element whose value pydicom refuses in strict reading is left out (a sequence with such an element
    in any item too)."""
    # pydicom's strict mode is a process-wide switch; it matters only where pydicom converts an element.
    with config.strict_reading():
        return _dataset(ds, "latin-1", bulk_data_threshold, top=True)


def _dataset(ds: Dataset, inherited_codec: str | None, threshold: int, *, top: bool = False) -> dict[str, Any]:
    codec = rawvalues.text_codec(ds, inherited_codec)
    raw_ok = ds.original_encoding[1] is True  # little endian, read from bytes
    out: dict[str, Any] = {}
    for tag, elem in ds._dict.items():
        try:
            out[f"{tag:08X}"] = _element(ds, tag, elem, codec, raw_ok, threshold)
        except Exception:  # noqa: BLE001 - as suppress_invalid_tags: the element is left out ...
            if not top:
                raise  # ... and inside a sequence item, the whole sequence (pydicom's to_json of the item)
    return out


def _element(ds: Dataset, tag: int, elem: Any, codec: str | None, raw_ok: bool, threshold: int) -> dict[str, Any]:
    if raw_ok and isinstance(elem, RawDataElement):
        try:
            return _raw_element(tag, elem, codec, threshold)
        except _Unsupported:
            pass
    converted = ds[tag]
    if converted.VR == "SQ":
        return {"vr": "SQ", "Value": [_dataset(item, codec, threshold) for item in converted.value]}
    return converted.to_json_dict(_bulk_uri, threshold)  # type: ignore[no-any-return]


def _raw_element(tag: int, elem: RawDataElement, codec: str | None, threshold: int) -> dict[str, Any]:
    vr = elem.VR
    if vr is None:  # implicit VR: the dictionary's, when it has exactly one
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise _Unsupported from None
        if vr not in _TEXT and vr not in _NUMBERS and vr not in _BYTES:
            raise _Unsupported
    if vr in _TEXT:
        return _text(vr, elem, codec)
    data = elem.value or b""
    if vr in _NUMBERS:
        code = _NUMBERS[vr]
        count, rest = divmod(len(data), struct.calcsize("<" + code))
        if rest:
            raise _Unsupported
        if not count:
            return {"vr": vr}
        return {"vr": vr, "Value": list(struct.unpack(f"<{count}{code}", data))}
    if vr in _BYTES:
        if not data:
            return {"vr": vr}
        # PS3.18 F.2.7: base64 makes the value a third longer; above the threshold it becomes a URI.
        if len(data) > (threshold // 4) * 3:
            return {"vr": vr, "BulkDataURI": _bulk_uri_of(tag)}
        return {"vr": vr, "InlineBinary": base64.b64encode(bytes(data)).decode("ascii")}
    raise _Unsupported


def _text(vr: str, elem: RawDataElement, codec: str | None) -> dict[str, Any]:
    values = rawvalues.read(elem, vr, codec)
    if values is None:
        raise _Unsupported
    if not values or values == [""]:
        return {"vr": vr}
    try:
        for value in values:
            validate_value(vr, value, config.RAISE)  # what strict reading checks
    except ValueError:
        raise _Unsupported from None  # pydicom decides (and leaves the element out)
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(v) for v in values]}
    if vr == "IS":
        return {"vr": vr, "Value": [_number(int, v) for v in values]}
    if vr == "DS":
        return {"vr": vr, "Value": [_number(float, v) for v in values]}
    return {"vr": vr, "Value": values}


def _number(kind: type, text: str) -> Any:
    if not text.strip():
        raise _Unsupported  # an empty value among several: pydicom's business
    return kind(text)


def _person_name(value: str) -> dict[str, str]:
    """PS3.18 F.2.2: the component groups of a person name (PS3.5 6.2.1, separated by "=")."""
    groups = value.split("=")
    name = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        name["Ideographic"] = groups[1]
    if len(groups) > 2:
        name["Phonetic"] = groups[2]
    return name
