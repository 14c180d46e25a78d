"""What is known to identify one patient: the input of the text scrubber and the leak verifier.

Collected from the patient's own source objects (DICOM headers, FHIR Patient and related resources), so
both tools can look for *this* patient's names, IDs and dates in free text and in outputs, exactly and
approximately, instead of relying on patterns alone.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR as _dictionary_vr
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

#: Name parts shorter than this are not searched alone ("Li", "Al"): too many false hits in text.
MIN_NAME_PART = 3
#: Identifiers shorter than this are not searched alone (a PatientID "12" would match every number).
MIN_ID_LENGTH = 4

# Attributes whose values identify the patient directly (PS3.15 Table E.1-1 rows with D/Z/X for the
# patient, the visit and the order). Dates are collected from every DA/DT element instead.
_ID_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "AdmissionID", "MedicalRecordLocator",
    "PatientInsurancePlanCodeSequence", "MilitaryRank", "RequestedProcedureID", "PerformedProcedureStepID",
    "ScheduledProcedureStepID", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest", "IssuerOfPatientID",
)
_NAME_KEYWORDS = (
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "ResponsiblePerson",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "PhysiciansOfRecord", "RequestingPhysician", "PersonName",
)
_OTHER_KEYWORDS = (
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "CountryOfResidence",
    "RegionOfResidence",
)
#: Kept apart: the Retain Institution Identity option (PS3.15 E.3.8) lets them through on purpose.
_INSTITUTION_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName")


#: Values senders put where a name should be: not identity, and the engine's own dummies among them.
PLACEHOLDER_NAMES = frozenset({"anonymized", "anonymised", "anonymous", "anon", "unknown", "removed", "none",
                               "n/a", "na", "----", "patient", "deidentified", "de-identified"})


def normalize(text: str) -> str:
    """Lower case without accents: ``"Müller"`` and ``"MULLER"`` compare equal."""
    if text.isascii():
        return text.lower()
    if max(text) <= "\xff":
        # Latin-1 text (and binary values read as Latin-1, which the verifier scans a lot of): per
        # character, the same as the general path below, through a precomputed table.
        return text.translate(_LATIN1_FOLDED).casefold()
    return _strip_accents(text).casefold()


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


#: NFKD without combining marks, for every Latin-1 character (precomposed letters decompose on their own,
#: so character by character gives what the whole string gives).
_LATIN1_FOLDED = {code: _strip_accents(chr(code)) for code in range(0x80, 0x100)}


def name_parts(name: str) -> list[str]:
    """The searchable parts of a person name (DICOM ``^``/``=`` separated or free text)."""
    return [p for p in re.split(r"[\^=,\s.]+", name)
            if len(p) >= MIN_NAME_PART and p.casefold() not in PLACEHOLDER_NAMES]


@dataclass
class KnownIdentifiers:
    """Identifying strings and dates of one patient (and the people and places around their care)."""

    names: set[str] = field(default_factory=set)  # whole names as written ("DOE^JOHN", "John Doe")
    name_parts: set[str] = field(default_factory=set)  # "DOE", "JOHN" (>= MIN_NAME_PART characters)
    ids: set[str] = field(default_factory=set)  # MRN, other IDs, accession numbers, order numbers
    dates: set[dt.date] = field(default_factory=set)  # birth date, visit and study dates
    other: set[str] = field(default_factory=set)  # addresses, phone numbers, e-mails
    institutions: set[str] = field(default_factory=set)  # where the patient was seen (names, addresses)
    uids: set[str] = field(default_factory=set)  # original instance UIDs (never to appear in an output)

    def add_name(self, name: str | PersonName | None) -> None:
        text = str(name or "").strip()
        if not text or not name_parts(text):
            return
        self.names.add(text)
        self.name_parts.update(name_parts(text))

    def add_id(self, value: object) -> None:
        text = str(value or "").strip()
        if len(text) >= MIN_ID_LENGTH:
            self.ids.add(text)

    def add_other(self, value: object) -> None:
        text = str(value or "").strip()
        if len(text) >= MIN_ID_LENGTH:
            self.other.add(text)

    def add_date(self, value: object) -> None:
        date = parse_dicom_date(value)
        if date is not None:
            self.dates.add(date)

    def update(self, other: KnownIdentifiers) -> None:
        self.names |= other.names
        self.name_parts |= other.name_parts
        self.ids |= other.ids
        self.dates |= other.dates
        self.other |= other.other
        self.institutions |= other.institutions
        self.uids |= other.uids

    def strings(self) -> Iterator[str]:
        """Every identifying string, longest first (so a full name is reported before its parts)."""
        yield from sorted(self.names | self.ids | self.other | self.name_parts, key=len, reverse=True)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> KnownIdentifiers:
        known = cls()
        known.collect(ds)
        return known

    def collect(self, ds: Dataset) -> None:
        """Add the identifiers found anywhere in ``ds`` (all sequence depths)."""
        tags = _category_tags()
        for tag, vr, values in _walk(ds, "latin-1"):
            category = tags.get(tag)
            if vr == "PN" or category == "name":
                for v in values:
                    self.add_name(str(v))
            elif vr in ("DA", "DT"):
                for v in values:
                    self.add_date(v)
            elif vr == "UI":
                # Only instance UIDs (Table E.1-1 action U): class, transfer syntax, coding scheme and
                # context UIDs are registry values shared by everyone.
                # Values under the standard's own root (1.2.840.10008.) are never an instance's.
                if tag in _instance_uid_tags():
                    self.uids.update(str(v) for v in values
                                     if len(str(v)) > 8 and not str(v).startswith("1.2.840.10008."))
            elif category == "id":
                for v in values:
                    self.add_id(v)
            elif category == "other":
                for v in values:
                    self.add_other(v)
            elif category == "institution":
                self.institutions.update(str(v).strip() for v in values if len(str(v or "").strip()) >= MIN_ID_LENGTH)

    def collect_fhir(self, resource: dict) -> None:
        """Add what a FHIR resource says about its patient (Patient names, identifiers, telecom...)."""
        for name in resource.get("name", []) if resource.get("resourceType") in ("Patient", "Person",
                                                                                  "RelatedPerson") else []:
            family = name.get("family") or ""
            given = " ".join(name.get("given") or [])
            self.add_name(" ".join(p for p in (given, family) if p))
            for part in [family, *(name.get("given") or [])]:
                if len(part) >= MIN_NAME_PART:
                    self.name_parts.add(part)
        for ident in resource.get("identifier", []) or []:
            if isinstance(ident, dict):
                self.add_id(ident.get("value"))
        for tel in resource.get("telecom", []) or []:
            if isinstance(tel, dict):
                self.add_other(tel.get("value"))
        for address in resource.get("address", []) or []:
            if isinstance(address, dict):
                for line in address.get("line") or []:
                    self.add_other(line)
                for key in ("city", "postalCode", "text"):
                    self.add_other(address.get(key))
        if resource.get("birthDate"):
            self.add_date(resource["birthDate"])


@functools.cache
def _instance_uid_tags() -> frozenset[int]:
    from imagebank.deid.profile import load_table

    return frozenset(tag for tag, row in load_table().by_tag.items() if "U" in row.basic)


def raw_vr(ds: Dataset, tag: int) -> str:
    """The VR of an element without decoding it: the explicit VR, else the dictionary's (UN if unknown)."""
    elem = ds.get_item(tag)
    vr = getattr(elem, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        return str(_dictionary_vr(tag))
    except KeyError:
        return "UN"


def parse_dicom_date(value: object) -> dt.date | None:
    """The date in a DA (``YYYYMMDD``), DT (``YYYYMMDDhhmmss...``) or ISO (``YYYY-MM-DD``) value."""
    text = str(value or "").strip().replace("-", "")
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _values(value: object) -> list[object]:
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


@functools.cache
def _category_tags() -> dict[int, str]:
    from pydicom.datadict import tag_for_keyword

    categories: dict[int, str] = {}
    for category, keywords in (("id", _ID_KEYWORDS), ("name", _NAME_KEYWORDS), ("other", _OTHER_KEYWORDS),
                               ("institution", _INSTITUTION_KEYWORDS)):
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is not None:
                categories.setdefault(tag, category)
    return categories


def _walk(ds: Dataset, codec: str | None) -> Iterator[tuple[int, str, list[object]]]:
    """(tag, VR, values) of the elements that can name the patient: read from their raw bytes where that
    is safe (:mod:`imagebank.dicom.rawvalues`), else decoded by pydicom; sequences are looked inside."""
    from imagebank.dicom import rawvalues

    wanted = _category_tags()
    uid_tags = _instance_uid_tags()
    codec = rawvalues.text_codec(ds, codec)
    for key, elem in list(ds._dict.items()):
        tag_int = int(key)  # a plain int: BaseTag compares in Python
        if (tag_int >> 16) & 1:
            continue  # private: removed or kept as safe, never a source of known identifiers
        vr = raw_vr(ds, tag_int)
        if tag_int in wanted or tag_int in uid_tags or vr in ("PN", "DA", "DT", "SQ"):
            if vr != "SQ":
                values = rawvalues.read(elem, vr, codec)
                if values is not None:
                    yield tag_int, vr, list(values)
                    continue
            decoded = ds[tag_int]
            if decoded.VR == "SQ":
                for item in decoded.value or []:
                    yield from _walk(item, codec)
            else:
                yield tag_int, decoded.VR, _values(decoded.value)
