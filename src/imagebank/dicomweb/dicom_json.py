"""Index values to the DICOM JSON Model (PS3.18 Annex F) and query keys from their text form.

Pure functions: a query result (keyword -> value from the index) becomes ``{"0020000D": {"vr": "UI",
"Value": [...]}}``, with each VR's JSON type (F.2.3): PN as ``{"Alphabetic": ...}`` objects, IS/DS and
the binary numbers as JSON numbers, multiple values split on the backslash.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

_INT_VRS = {"IS", "SL", "SS", "UL", "US", "SV", "UV"}
_FLOAT_VRS = {"DS", "FL", "FD"}
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


class UnknownAttribute(ValueError):
    """A query key or includefield is neither a DICOM keyword nor a known tag."""


@lru_cache(maxsize=4096)
def keyword_of(key: str) -> str:
    """``PatientName``, ``00100010`` -> ``PatientName``; raises :class:`UnknownAttribute`."""
    if _TAG_RE.match(key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return keyword
        raise UnknownAttribute(f"{key} is not a tag of the DICOM data dictionary")
    if tag_for_keyword(key) is None:
        raise UnknownAttribute(f"{key!r} is not a DICOM attribute keyword or tag")
    return key


@lru_cache(maxsize=4096)
def tag_and_vr(keyword: str) -> tuple[str, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise UnknownAttribute(f"{keyword!r} is not a DICOM attribute keyword")
    vr = dictionary_VR(keyword)
    if " or " in vr:  # e.g. "US or SS": the JSON number is the same either way
        vr = vr.split(" or ")[0]
    return f"{tag:08X}", vr


def _number(vr: str, text: str) -> int | float | str:
    try:
        if vr in _INT_VRS:
            return int(float(text))
        number = float(text)
        return int(number) if number.is_integer() and vr == "DS" and "." not in text else number
    except ValueError:
        return text  # stored as received; a JSON string is better than dropping it


def values(vr: str, value: Any) -> list[Any]:
    """The ``Value`` array for ``value`` (a str possibly holding backslash-separated values, or a number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    parts = str(value).split("\\") if vr not in ("LT", "ST", "UT") else [str(value)]
    if vr == "PN":
        return [{"Alphabetic": p} if p else None for p in parts]
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return [_number(vr, p.strip()) if p.strip() else None for p in parts]
    return parts


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    tag, vr = tag_and_vr(keyword)
    item: dict[str, Any] = {"vr": vr}
    if value is not None and value != "":
        item["Value"] = values(vr, value)
    return tag, item


def dataset(result: dict[str, Any], extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A DICOM JSON object for one query result, tags in ascending order (F.2.1.1)."""
    out = dict(element(k, v) for k, v in result.items())
    if extra:
        out.update(extra)
    return dict(sorted(out.items()))
