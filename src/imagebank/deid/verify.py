"""The leak verifier: no output leaves the clinical zone while it still holds a source identifier.

It does not trust the profile engine: after de-identification every output is scanned as data -- every
string value at any depth, private elements, the file meta, SR content, FHIR JSON, report text -- for every
identifier and date of the source patient (:class:`~imagebank.deid.identifiers.KnownIdentifiers`). Any hit
blocks the release of that object. Hits are reported by *where* (element path, JSON path) and *what kind*
(name, id, date...), never by value, so the report itself is free of PHI.

Dates: an original date found in an output is a leak, unless it is also the shifted image of some original
date (a patient with visits 30 days apart and a 30-day shift): then its presence is explained by shifting and
proves nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from imagebank.deid.identifiers import KnownIdentifiers, normalize, parse_dicom_date, raw_vr

#: Binary values scanned as text up to this size (a private blob can carry a name; pixel data cannot be
#: read this way and is the pixel cleaner's job).
MAX_BINARY_SCAN = 1 << 16
_SKIP_BINARY = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x00420011})  # pixel data, float pixel data, PDF
#: Character sets whose raw bytes can be searched directly (PS3.5 6.1; ASCII is a subset of both).
_RAW_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_BINARY_OR_NUMERIC = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "US", "SS", "UL", "SL", "UV", "SV", "FL",
                                "FD", "AT"})
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT", "OF", "OD", "OL", "OV"})
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)"),  # 20240305, 2024-03-05
    re.compile(r"(?<!\d)(\d{1,2})/(\d{1,2})/(\d{4})(?!\d)"),  # 03/05/2024 (month first)
    re.compile(r"(?<!\d)(\d{1,2})\.(\d{1,2})\.(\d{4})(?!\d)"),  # 05.03.2024 (day first)
)


@dataclass(frozen=True)
class Leak:
    where: str  # "(0010,1001) OtherPatientNames", "ContentSequence[2].TextValue", "Patient.name[0].family"
    kind: str  # "name", "id", "other", "uid", "date", "private"

    def __str__(self) -> str:
        return f"{self.kind} identifier in {self.where}"


class LeakScanner:
    """Compiled search for one patient's identifiers; reusable for all of that patient's outputs."""

    def __init__(self, known: KnownIdentifiers, *, shifted_dates: Iterable[dt.date] = (),
                 check_dates: bool = True, check_uids: bool = True, check_institutions: bool = True,
                 allowed: Iterable[str] = ()) -> None:
        allowed_norm = {normalize(a) for a in allowed}
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        kinds = [("name", _name_terms(known)), ("id", known.ids), ("other", known.other)]
        if check_institutions:
            kinds.append(("institution", _institution_terms(known)))
        for kind, values in kinds:
            terms = sorted({normalize(v) for v in values if v.strip()} - allowed_norm, key=len, reverse=True)
            if terms:
                # Word-ish boundaries: "DOE" must not hit "DOES", an ID "1234" must not hit "2.25.912345",
                # an institution "TOSHIBA" must not hit the manufacturer "TOSHIBA_MEC".
                alternation = "|".join(re.escape(t) for t in terms)
                self._patterns.append((kind, re.compile(rf"(?<![0-9a-z._])(?:{alternation})(?![0-9a-z_])")))
        self.uids = frozenset(known.uids) if check_uids else frozenset()
        shifted = set(shifted_dates)
        self.dates = frozenset(d for d in known.dates if d not in shifted) if check_dates else frozenset()

    # -- strings ---------------------------------------------------------------------------------------
    def scan_text(self, text: str, where: str) -> list[Leak]:
        if not text:
            return []
        leaks = []
        norm = normalize(text)
        for kind, pattern in self._patterns:
            if pattern.search(norm):
                leaks.append(Leak(where, kind))
        stripped = text.strip().rstrip("\x00")
        if stripped in self.uids:
            leaks.append(Leak(where, "uid"))
        elif self.uids and any(uid in text for uid in self.uids if len(uid) > 12):
            leaks.append(Leak(where, "uid"))
        if self.dates and (parse_dicom_date(stripped) in self.dates
                           or any(d in self.dates for d in _dates_in(text))):
            leaks.append(Leak(where, "date"))
        return leaks

    def any_hit(self, texts: list[str]) -> bool:
        """Whether any of ``texts`` holds an identifier: one pass over all of them joined (the common,
        clean case costs a few regex scans per object instead of a few per element)."""
        joined = "\n".join(texts)
        norm = normalize(joined)
        if any(pattern.search(norm) for _, pattern in self._patterns):
            return True
        if self.uids and (any(t.strip().rstrip("\x00") in self.uids for t in texts)
                          or any(uid in joined for uid in self.uids if len(uid) > 12)):
            return True
        if self.dates and (any(parse_dicom_date(t) in self.dates for t in texts if t[:1].isdigit())
                           or any(d in self.dates for d in _dates_in(joined))):
            return True
        return False

    # -- DICOM -----------------------------------------------------------------------------------------
    def scan_dataset(self, ds: Dataset, *, allowed_private: frozenset[int] = frozenset(),
                     constant: Iterable[RawDataElement] = ()) -> list[Leak]:
        """Every element of ``ds`` (file meta included) at any depth. ``allowed_private``: tags kept as safe.

        ``constant``: elements the engine itself encoded once for every object (the de-identification
        marking, ASCII codes and meanings): when one of these very objects is met, its bytes are scanned
        as text instead of being decoded again (they hold no element of the source)."""
        found: list[tuple[str, int, str]] = []  # (path of the parent, tag, text): paths are spelled on a hit only
        leaks: list[Leak] = []
        trusted = {id(elem) for elem in constant}
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._gather(meta, "", allowed_private, found, leaks)
        self._gather(ds, "", allowed_private, found, leaks, trusted=trusted)
        if found and self.any_hit([text for _, _, text in found]):
            for prefix, tag, text in found:
                leaks += self.scan_text(text, prefix + _element_name(tag))
        return leaks

    def _gather(self, ds: Dataset, prefix: str, allowed_private: frozenset[int], found: list[tuple[str, int, str]],
                leaks: list[Leak], charset: str | None = None, trusted: set[int] | None = None) -> None:
        """Collect every value of ``ds`` as text. Elements the engine left undecoded are read from their raw
        bytes (what will be written), decoded as the data set's character set says; a character set that is
        not plain ASCII, Latin-1 or UTF-8 makes the values go through pydicom's decoder instead."""
        if "SpecificCharacterSet" in ds:
            value = ds.SpecificCharacterSet
            charset = "\\".join(value) if isinstance(value, (list, MultiValue)) else str(value or "")
        raw_codec = _RAW_CODECS.get((charset or "").strip())
        for tag_int, elem in list(ds._dict.items()):  # pydicom's own tag -> element mapping, in one pass
            if (tag_int >> 16) & 1 and tag_int not in allowed_private and (tag_int & 0xFFFF) > 0x00FF:
                leaks.append(Leak(prefix + _element_name(tag_int), "private"))
            if isinstance(elem, RawDataElement):
                if trusted and id(elem) in trusted:
                    found.append((prefix, tag_int, bytes(elem.value or b"").decode("latin-1")))
                    continue
                vr = raw_vr(ds, tag_int)
                if vr in _NUMERIC_VRS:
                    continue  # binary numbers, as when decoded (below)
                if vr != "SQ" and raw_codec is not None:
                    value = elem.value
                    if value and tag_int not in _SKIP_BINARY and len(value) <= MAX_BINARY_SCAN:
                        text = bytes(value).decode(raw_codec if vr not in _BINARY_OR_NUMERIC else "latin-1",
                                                   errors="replace")
                        found.append((prefix, tag_int, text))
                    continue
                elem = ds[tag_int]
            if elem.VR == "SQ":
                where = prefix + _element_name(tag_int)
                for index, item in enumerate(elem.value or []):
                    self._gather(item, f"{where}[{index}].", allowed_private, found, leaks, charset, trusted)
                continue
            if elem.VR in _NUMERIC_VRS:
                continue  # decoded binary numbers: no text can hide there
            for text in _element_texts(elem, tag_int):
                if text:
                    found.append((prefix, tag_int, text))

    # -- JSON (FHIR) ------------------------------------------------------------------------------------
    def scan_json(self, value: Any, where: str = "") -> list[Leak]:
        leaks: list[Leak] = []
        if isinstance(value, dict):
            for key, item in value.items():
                leaks += self.scan_json(item, f"{where}.{key}" if where else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                leaks += self.scan_json(item, f"{where}[{index}]")
        elif isinstance(value, str):
            leaks += self.scan_text(value, where)
        return leaks


#: Words of the standard's own vocabulary that test data and careless senders put in name fields
#: ("Enter text", "Observer^Verifying"); searched only as part of a whole name, like common words.
_VOCABULARY = frozenset({"test", "text", "enter", "observer", "verifying", "report", "code", "sample", "physician",
                         "doctor", "operator", "reader", "study", "series", "image", "unknown"})


def _name_terms(known: KnownIdentifiers) -> set[str]:
    """Whole names in the forms text uses ("John Doe", "Doe, John", "DOE^JOHN"), and each part alone except
    parts that are ordinary words ("White", "May"): alone they would flag every "white matter" while the
    whole name still catches the person."""
    from imagebank.deid.text import COMMON_WORDS

    terms: set[str] = set()
    for name in known.names:
        parts = [p for p in re.split(r"[\^=,\s]+", name) if p]
        terms.add(name)
        if len(parts) >= 2:
            family, given = parts[0], parts[1]
            terms.update({f"{given} {family}", f"{family}, {given}", f"{family} {given}", f"{family}^{given}"})
    for part in known.name_parts:
        folded = part.casefold()
        if folded not in COMMON_WORDS and folded not in _VOCABULARY:
            terms.add(part)
    return terms


def _institution_terms(known: KnownIdentifiers) -> set[str]:
    """Institution names, except one-word names that are ordinary words (a test file's "Here")."""
    from imagebank.deid.text import COMMON_WORDS

    return {i for i in known.institutions if " " in i.strip() or i.casefold() not in COMMON_WORDS}


def _element_texts(elem: Any, tag: int) -> Iterator[str]:
    value = elem.value
    if value is None:
        return
    if isinstance(value, (bytes, bytearray)):
        if tag in _SKIP_BINARY or len(value) > MAX_BINARY_SCAN:
            return
        yield bytes(value).decode("latin-1")
        return
    if isinstance(value, (list, tuple, MultiValue)):
        for item in value:
            yield str(item)
        return
    yield str(value)


def _dates_in(text: str) -> Iterator[dt.date]:
    for index, pattern in enumerate(_DATE_PATTERNS):
        for match in pattern.finditer(text):
            a, b, c = (int(g) for g in match.groups())
            year, month, day = (a, b, c) if index == 0 else (c, a, b) if index == 1 else (c, b, a)
            try:
                yield dt.date(year, month, day)
            except ValueError:
                continue


def _element_name(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
