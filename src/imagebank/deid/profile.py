"""DICOM PS3.15 Annex E: Table E.1-1 as data, the profile options as switches, one action per attribute.

The table lives in ``data/confidentiality-profile-2025.json`` (the standard's facts: tag, name, whether the
attribute is in a standard composite IOD, the Basic Profile action and the action of each option), so a new
edition of the standard is a data change, compared with the reference copy by the test suite.

Actions (PS3.15 E.1.1, Table E.1-1 legend):

- ``D`` replace with a non-zero length dummy value consistent with the VR;
- ``Z`` replace with a zero length value, or a non-zero length dummy value consistent with the VR;
- ``X`` remove;
- ``K`` keep (unchanged for non-sequence attributes, cleaned for sequences);
- ``C`` clean: replace values of similar meaning known not to contain identifying information;
- ``U`` replace with a non-zero length UID that is internally consistent within a set of instances;
- ``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``: the first unless a later one is needed to keep the
  IOD conformant (Type 3 vs Type 2 vs Type 1).

Without the IOD's module tables at hand, a combined action resolves by the table's own "in a standard
composite IOD" column: an attribute that no standard IOD uses cannot be Type 1 or 2 anywhere, so it is
removed (``X``); otherwise the most conformance-preserving replacement is used (``Z`` for ``X/Z``, ``D``
for ``X/D``, ``Z/D`` and ``X/Z/D``, ``U`` inside ``X/Z/U*`` sequences). Both choices remove the information.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

TABLE_FILE = "confidentiality-profile-2025.json"
#: Bumped whenever what the engine does for a given profile changes (recorded with every output).
ENGINE_VERSION = "1"


class Option(enum.StrEnum):
    """The options of PS3.15 E.3, named as in Table E.1-1's columns (and CID 7050)."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_FULL_DATES = "retain_full_dates"
    RETAIN_MODIFIED_DATES = "retain_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_PIXEL_DATA = "clean_pixel_data"


#: CID 7050 "De-identification Method" codes (PS3.16, scheme DCM) for the profile and each option.
METHOD_CODES: dict[str | Option, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    Option.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_FULL_DATES: ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_MODIFIED_DATES: ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

#: Options whose table action is "clean": when one of them and a "retain" option both name an attribute,
#: cleaning wins (it keeps the value only where it is known to be free of identity).
_CLEAN_OPTIONS = (Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS)


@dataclass(frozen=True)
class TableRow:
    tag: str  # "00100010", "50XXXXXX" (repeating group), "PRIVATE"
    keyword: str
    name: str
    in_standard_iod: bool
    basic: str
    options: dict[str, str]


@dataclass(frozen=True)
class ConfidentialityTable:
    edition: str
    rows: tuple[TableRow, ...]
    by_tag: dict[int, TableRow]
    #: (group mask, group value, element or None) for the repeating groups (50xx curves, 60xx overlays).
    repeating: tuple[tuple[int, int, int | None, TableRow], ...]
    private: TableRow

    def row_for(self, tag: int) -> TableRow | None:
        row = self.by_tag.get(tag)
        if row is not None:
            return row
        group, element = tag >> 16, tag & 0xFFFF
        for mask, value, elem, rep in self.repeating:
            if group & mask == value and (elem is None or elem == element):
                return rep
        return None


@cache
def load_table() -> ConfidentialityTable:
    raw: dict[str, Any] = json.loads(
        resources.files("imagebank.deid").joinpath("data", TABLE_FILE).read_text(encoding="utf-8"))
    rows = []
    by_tag: dict[int, TableRow] = {}
    repeating = []
    private = None
    for item in raw["attributes"]:
        options = {k: v for k, v in item.items()
                   if k not in ("tag", "keyword", "name", "in_standard_iod", "basic")}
        row = TableRow(item["tag"], item["keyword"], item["name"], item["in_standard_iod"], item["basic"], options)
        rows.append(row)
        tag = row.tag
        if tag == "PRIVATE":
            private = row
        elif "X" in tag:
            group, element = tag[:4], tag[4:]
            repeating.append((0xFF00, int(group.replace("X", "0"), 16),
                              None if "X" in element else int(element, 16), row))
        else:
            by_tag[int(tag, 16)] = row
    if private is None:
        raise ValueError(f"{TABLE_FILE} has no private-attributes row")
    return ConfidentialityTable(raw["edition"], tuple(rows), by_tag, tuple(repeating), private)


@dataclass(frozen=True)
class SafePrivate:
    """A private attribute known to be free of identity (PS3.15 E.3.10): creator + element offset."""

    creator: str
    group: int
    offset: int  # the low byte of the element (xx in (gggg,00xx)... or (gggg,10xx))

    @classmethod
    def parse(cls, text: str) -> SafePrivate:
        """``"GEMS_PARM_01:0043,xx27"`` -> creator, group 0x0043, offset 0x27."""
        try:
            creator, tag = text.rsplit(":", 1)
            group, element = tag.split(",")
            if not element.lower().startswith("xx"):
                raise ValueError
            return cls(creator.strip(), int(group, 16), int(element[2:], 16))
        except ValueError:
            raise ValueError(f"safe private attribute {text!r}: expected 'CREATOR:gggg,xxee'") from None


@dataclass(frozen=True)
class Profile:
    """Basic Profile + chosen options: what the engine does, recorded with every output."""

    name: str = "research"
    options: frozenset[Option] = field(default_factory=frozenset)
    safe_private: tuple[SafePrivate, ...] = ()

    def __post_init__(self) -> None:
        if {Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES} <= self.options:
            raise ValueError("Retain Full Dates and Retain Modified Dates are alternatives: choose one")

    def has(self, option: Option) -> bool:
        return option in self.options

    @property
    def label(self) -> str:
        """Recorded in DeidentificationMethod: the profile, engine version and table edition (<= 64 chars)."""
        return f"Imagebank {self.name} e{ENGINE_VERSION} PS3.15-{load_table().edition}"[:64]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "engine_version": ENGINE_VERSION, "table_edition": load_table().edition,
                "options": sorted(self.options),
                "safe_private": [f"{s.creator}:{s.group:04X},xx{s.offset:02X}" for s in self.safe_private]}

    def action(self, row: TableRow) -> str:
        """The single action for ``row`` under this profile (see the module docstring)."""
        chosen = None
        for option in self.options:
            act = row.options.get(option.value)
            if act is None:
                continue
            if chosen is None or (option in _CLEAN_OPTIONS and act == "C"):
                chosen = act
        if chosen is not None:
            return chosen
        return resolve_combined(row.basic, row.in_standard_iod)


def resolve_combined(basic: str, in_standard_iod: bool) -> str:
    if "/" not in basic:
        return basic
    parts = basic.split("/")
    if not in_standard_iod and parts[0] == "X":
        return "X"
    last = parts[-1].rstrip("*")
    return last


#: The research warehouse's default: dates shifted per patient (intervals kept), descriptors, structured
#: content and graphics cleaned, pixel data cleaned or quarantined, patient characteristics (age, sex, size,
#: weight) kept because research needs them and they are not direct identifiers.
RESEARCH = Profile("research", frozenset({
    Option.RETAIN_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS,
    Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS, Option.CLEAN_PIXEL_DATA,
}))
#: The Basic Profile alone.
BASIC = Profile("basic", frozenset())


def profile_from_names(name: str, options: list[str], safe_private: list[str]) -> Profile:
    """Build a profile from configuration/CLI names, naming any unknown option."""
    valid = {o.value for o in Option}
    unknown = [o for o in options if o not in valid]
    if unknown:
        raise ValueError(f"unknown de-identification option(s) {', '.join(unknown)}; known: {', '.join(sorted(valid))}")
    return Profile(name, frozenset(Option(o) for o in options), tuple(SafePrivate.parse(s) for s in safe_private))
