"""Apply a :class:`~imagebank.deid.profile.Profile` to one DICOM dataset, at any depth of sequences.

The walk looks up every element in Table E.1-1 (:func:`~imagebank.deid.profile.load_table`), resolves the
single action the profile gives it and applies it; elements the table does not list are kept (PS3.15 E.1.1:
the table lists what may identify), except inside sequences being cleaned, where free text is scrubbed.
Private elements are removed unless the profile retains them as safe (PS3.15 E.3.10).

Identity is replaced, not only removed, where research needs the link: Patient's Name and Patient ID become
the patient's pseudonym (a Z/D "dummy value consistent with the VR"), UIDs map through the keyed UID map
(U), dates shift by the patient's offset (C under Retain Longitudinal Temporal Information with Modified
Dates). Then the result is marked as PS3.15 E.1.1 asks: Patient Identity Removed, De-identification Method
and its Code Sequence (CID 7050), Longitudinal Temporal Information Modified.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers, raw_vr
from imagebank.deid.profile import METHOD_CODES, Option, Profile, load_table
from imagebank.deid.pseudonyms import Pseudonymizer
from imagebank.dicom import rawvalues

#: VRs holding free text that "clean" scrubs (PS3.15 E.3.5 Clean Descriptors, E.3.9 Clean Structured Content).
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
_KNOWN_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF",
                        "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
                        "UR", "US", "UT", "UV", "OB or OW", "US or SS", "US or OW", "US or SS or OW"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})
#: Dummy values (action D) per VR: obviously not real data, valid for the VR.
_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "IS": "0", "DS": "0",
          "CS": "ANONYMIZED", "AE": "ANONYMIZED", "SH": "ANONYMIZED", "LO": "ANONYMIZED", "PN": "ANONYMIZED",
          "ST": "ANONYMIZED", "LT": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "UR": "", "UI": ""}
_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020

Scrubber = Callable[..., Any]


@dataclass(frozen=True)
class Limits:
    """Guards against hostile or broken input (PS3.15 says nothing; an archive must not hang or explode)."""

    max_depth: int = 24
    max_elements: int = 2_000_000
    max_sequence_items: int = 100_000


@dataclass
class Deidentified:
    dataset: Dataset
    pseudonym: str
    study_uid: str  # the output Study Instance UID
    source_study_uid: str
    pixel_method: str = "none"
    scrubbed_values: int = 0  # text values the scrubber changed


class DicomDeidentifier:
    """One configured engine: profile + project key (+ text scrubber and pixel cleaner)."""

    def __init__(self, profile: Profile, pseudonyms: Pseudonymizer, *, scrubber: Scrubber | None = None,
                 pixel_rules: tuple[Any, ...] = (), ocr: Any = None, limits: Limits | None = None,
                 institutions: tuple[str, ...] = ()) -> None:
        self.profile = profile
        self.pseudonyms = pseudonyms
        self.table = load_table()
        if scrubber is None:
            from imagebank.deid.text import scrub_text
            scrubber = scrub_text
        self.scrubber = scrubber
        self.pixel_rules = pixel_rules
        self.ocr = ocr
        self.limits = limits or Limits()
        self.institutions = institutions
        self._safe = {(s.creator.strip().upper(), s.group, s.offset) for s in profile.safe_private}
        self._mark_cache: dict[bool, list[RawDataElement]] = {}
        self._actions: dict[int, str | None] = {}

    def action_for(self, tag: int) -> str | None:
        """The profile's action for an element (None: Table E.1-1 does not list it), resolved once per tag."""
        try:
            return self._actions[tag]
        except KeyError:
            row = self.table.row_for(tag)
            action = None if row is None else self.profile.action(row)
            if len(self._actions) < 100_000:
                self._actions[tag] = action
            return action

    # -------------------------------------------------------------------------------------------------
    def deidentify(self, ds: Dataset, *, subject: str, known: KnownIdentifiers | None = None) -> Deidentified:
        """De-identify ``ds`` in place and return it with what was done.

        ``subject`` is the stable key of the patient (see :func:`imagebank.deid.run.subject_key`): it picks
        the pseudonym and the date shift. ``known`` adds identifiers from the patient's EHR record to those
        found in the dataset itself, for the text scrubber. Raises :class:`Quarantined` when the dataset
        cannot be made safe.
        """
        try:
            if known is None:
                known = KnownIdentifiers.from_dataset(ds)
            source_study_uid = str(ds.get("StudyInstanceUID", "") or "")
            run = _Run(self, subject, known)
            run.walk(ds, depth=0, cleaning=False)
            if getattr(ds, "file_meta", None) is not None:
                run.meta(ds)
        except Quarantined:
            raise
        except RecursionError:
            raise Quarantined("too-deep", "sequences nested too deeply to process") from None
        except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError, OverflowError) as exc:
            # A value pydicom cannot decode (unknown VR, bad length, invalid character set...): the file
            # cannot be read completely, so it cannot be proven clean.
            raise Quarantined("unreadable", f"cannot decode an element ({type(exc).__name__})") from None
        pixel_method = self._pixels(ds, known)
        self._mark(ds, run)
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        return Deidentified(ds, run.pseudonym, study_uid, source_study_uid, pixel_method, run.scrubbed)

    def _pixels(self, ds: Dataset, known: KnownIdentifiers) -> str:
        from imagebank.deid.pixels import assess, clean_pixels

        risk = assess(ds)
        if not risk.at_risk:
            return "none"
        if not self.profile.has(Option.CLEAN_PIXEL_DATA):
            raise Quarantined("pixel-risk", "pixel data may hold burned-in identity and the profile does not "
                                            "clean pixel data (" + "; ".join(risk.reasons) + ")")
        outcome = clean_pixels(ds, rules=self.pixel_rules, ocr=self.ocr, known=known)
        return str(outcome.method)

    def _mark(self, ds: Dataset, run: _Run) -> None:
        """PS3.15 E.1.1 and PS3.3 C.7.1.1.1.1: say truthfully that and how identity was removed."""
        for tag, vr, keyword in ((_PATIENT_NAME, "PN", "PatientName"), (_PATIENT_ID, "LO", "PatientID")):
            if not rawvalues.replace(ds, tag, vr, [run.pseudonym], "latin-1"):
                setattr(ds, keyword, run.pseudonym)
        implicit, little = ds.original_encoding
        if little is True and implicit is not None:
            # The same four elements go into every object of a job: encoded once per transfer syntax and
            # added as raw elements (written as they are, decoded only if something reads them).
            for raw in self._encoded_marks(bool(implicit)):
                ds[raw.tag] = raw
        else:
            for elem in self._marks():
                ds[elem.tag] = elem

    def _marks(self) -> list[DataElement]:
        profile = self.profile
        codes = Sequence()
        for key in ["basic", *sorted(o for o in profile.options if o in METHOD_CODES)]:
            value, meaning = METHOD_CODES[key]
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        if profile.has(Option.RETAIN_FULL_DATES):
            temporal = "UNMODIFIED"
        elif profile.has(Option.RETAIN_MODIFIED_DATES):
            temporal = "MODIFIED"
        else:
            temporal = "REMOVED"
        return [DataElement(0x00120062, "CS", "YES"),  # Patient Identity Removed
                DataElement(0x00120063, "LO", profile.label),  # De-identification Method
                DataElement(0x00120064, "SQ", codes),  # De-identification Method Code Sequence
                DataElement(0x00280303, "CS", temporal)]  # Longitudinal Temporal Information Modified

    @property
    def constant_elements(self) -> list[RawDataElement]:
        """The raw elements this engine puts, as the very same objects, into every output (see
        :meth:`LeakScanner.scan_dataset`)."""
        return [elem for cached in self._mark_cache.values() for elem in cached]

    def _encoded_marks(self, implicit: bool) -> list[RawDataElement]:
        cached = self._mark_cache.get(implicit)
        if cached is None:
            cached = []
            for elem in self._marks():
                buffer = DicomBytesIO()
                buffer.is_little_endian = True
                buffer.is_implicit_VR = implicit
                write_data_element(buffer, elem)
                header = 8 if implicit or elem.VR not in ("SQ", "OB", "OW", "UN", "UT", "UC", "UR") else 12
                value = buffer.getvalue()[header:]
                cached.append(RawDataElement(elem.tag, None if implicit else elem.VR, len(value), value, 0,
                                             implicit, True))
            self._mark_cache[implicit] = cached
        return cached


class _Run:
    """The state of one dataset's walk: subject, element budget, counters."""

    def __init__(self, engine: DicomDeidentifier, subject: str, known: KnownIdentifiers) -> None:
        self.engine = engine
        self.profile = engine.profile
        self.subject = subject
        self.known = known
        self.pseudonym = engine.pseudonyms.patient(subject)
        self.elements = 0
        self.scrubbed = 0
        self.keep_uids = engine.profile.has(Option.RETAIN_UIDS)
        # Where the patient was seen identifies them in free text too, unless kept on purpose (PS3.15 E.3.8).
        self.institutions = engine.institutions if engine.profile.has(Option.RETAIN_INSTITUTION_IDENTITY) else (
            *engine.institutions, *sorted(known.institutions))

    # -- the walk -----------------------------------------------------------------------------------------
    def walk(self, ds: Dataset, *, depth: int, cleaning: bool, codec: str | None = "latin-1") -> None:
        limits = self.engine.limits
        if depth > limits.max_depth:
            raise Quarantined("too-deep", f"sequences nested deeper than {limits.max_depth} levels")
        # Elements are looked at by tag first: what the table does not list and no option cleans stays a raw
        # element, never decoded and written back byte for byte (pixel data included) -- the expensive part
        # of pydicom is decoding and re-encoding values, and most of a dataset needs neither. String values
        # are read and replaced as bytes where that is exact (imagebank.dicom.rawvalues).
        codec = rawvalues.text_codec(ds, codec)
        elements = ds._dict  # pydicom's tag -> element mapping: raw elements stay raw when read from it
        action_for = self.engine.action_for
        for key, elem in list(elements.items()):
            tag_int = int(key)  # a plain int: BaseTag compares in Python
            self.elements += 1
            if self.elements > limits.max_elements:
                raise Quarantined("too-large", f"more than {limits.max_elements} elements")
            vr = elem.VR
            if vr is not None and vr not in _KNOWN_VRS:
                # PS3.5 6.2: a VR outside the standard's list cannot be interpreted, so cannot be cleaned.
                raise Quarantined("unreadable", f"unknown VR in element ({tag_int >> 16:04X},{tag_int & 0xFFFF:04X})")
            if (tag_int >> 16) & 1:
                self._private(ds, tag_int)
                continue
            action = action_for(tag_int)
            if action is None:
                vr = raw_vr(ds, tag_int)
                if vr == "SQ":
                    self._items(ds, tag_int, depth=depth, cleaning=cleaning, codec=codec)
                elif cleaning and vr in TEXT_VRS:
                    self._clean_text(ds, tag_int, vr, codec, elem)
                elif cleaning and vr in ("DA", "DT"):
                    self._clean_date(ds, tag_int, vr, codec, elem)
                continue
            if action == "X" and tag_int not in (_PATIENT_NAME, _PATIENT_ID):
                del ds[tag_int]
                continue
            self._apply(ds, tag_int, elem, action, depth=depth, cleaning=cleaning, codec=codec)

    def _items(self, ds: Dataset, tag: int, *, depth: int, cleaning: bool, codec: str | None) -> None:
        items = ds[tag].value or []
        if len(items) > self.engine.limits.max_sequence_items:
            raise Quarantined("too-large", f"a sequence with more than {self.engine.limits.max_sequence_items} items")
        for item in items:
            self.walk(item, depth=depth + 1, cleaning=cleaning, codec=codec)

    # -- values: raw bytes where exact, pydicom otherwise ---------------------------------------------------
    def _read(self, ds: Dataset, tag: int, vr: str, codec: str | None, elem: object = None) -> list[str]:
        values = rawvalues.read(elem if elem is not None else ds.get_item(tag), vr, codec)
        if values is None:
            values = _text_values(ds[tag].value)
        return values

    def _write(self, ds: Dataset, tag: int, vr: str, values: list[str], codec: str | None) -> None:
        if not rawvalues.replace(ds, tag, vr, values, codec):
            ds[tag].value = values if len(values) > 1 else (values[0] if values else "")

    def _write_empty(self, ds: Dataset, tag: int, vr: str) -> None:
        if not rawvalues.empty(ds, tag, vr):
            elem = ds[tag]
            elem.value = _empty(elem.VR)

    def _apply(self, ds: Dataset, tag: int, elem: object, action: str, *, depth: int, cleaning: bool,
               codec: str | None) -> None:
        """One element's action; ``elem`` is the element as it is in ``ds`` now (raw or decoded)."""
        vr = raw_vr(ds, tag)
        if tag in (_PATIENT_NAME, _PATIENT_ID):
            self._write(ds, tag, vr, [self.pseudonym], codec)  # Z/D with a value consistent with the VR
            return
        if action == "X":
            del ds[tag]
        elif action == "K":
            if vr == "SQ":
                self._items(ds, tag, depth=depth, cleaning=cleaning, codec=codec)
            elif not _valid_for_vr(vr, self._read(ds, tag, vr, codec, elem) if vr in _VR_FORMATS else []):
                # A kept value must be what its VR says (an age, a number, a code): free text in a
                # Patient's Age can be anything, including a name.
                self._write_empty(ds, tag, vr)
        elif action == "Z":
            self._write_empty(ds, tag, vr)
        elif action == "D":
            if vr == "SQ":
                # A dummy sequence cannot carry meaning; an empty one keeps Type 2 conformance.
                self._write_empty(ds, tag, vr)
            elif vr == "UI":
                self._map_uids(ds, tag, vr, codec, elem)
            elif vr in ("DA", "DT") and self.profile.has(Option.RETAIN_MODIFIED_DATES):
                self._clean_date(ds, tag, vr, codec, elem)
            elif vr in rawvalues.ASCII_VRS or vr in TEXT_VRS:
                self._write(ds, tag, vr, [_DUMMY.get(vr, "")] if _DUMMY.get(vr) else [], codec)
            else:
                elem = ds[tag]
                elem.value = _dummy(elem.VR)
        elif action == "U":
            if vr == "SQ":
                self._items(ds, tag, depth=depth, cleaning=cleaning, codec=codec)
            elif not self.keep_uids:
                self._map_uids(ds, tag, vr, codec, elem)
        elif action == "C":
            self._clean(ds, tag, vr, elem, depth=depth, codec=codec)
        else:  # pragma: no cover - the table test proves every action is known
            raise ValueError(f"unknown action {action!r}")

    def _clean(self, ds: Dataset, tag: int, vr: str, elem: object, *, depth: int, codec: str | None) -> None:
        """C: keep what is known to be free of identity; everything else is replaced."""
        group, element = tag >> 16, tag & 0xFFFF
        if vr == "SQ":
            self._items(ds, tag, depth=depth, cleaning=True, codec=codec)
        elif vr in ("DA", "DT"):
            self._clean_date(ds, tag, vr, codec, elem)
        elif vr == "TM":
            return  # time of day is kept: the shift is whole days (PS3.15 E.3.6)
        elif vr in TEXT_VRS:
            self._clean_text(ds, tag, vr, codec, elem)
        elif group & 0xFF00 == 0x5000 or (group & 0xFF00 == 0x6000 and element == 0x3000):
            # Overlay and curve data are bitmaps/graphs that may draw text; without a way to read them they
            # are removed (PS3.15 E.3.4 Clean Graphics allows keeping only what is known to be safe).
            del ds[tag]
        elif vr in _BINARY_VRS or ds[tag].VR in _BINARY_VRS:
            self._write_empty(ds, tag, ds[tag].VR)

    def _clean_text(self, ds: Dataset, tag: int, vr: str, codec: str | None, elem: object = None) -> None:
        values = self._read(ds, tag, vr, codec, elem)
        if not any(values):
            return
        shift = self._shift_function()
        cleaned = []
        changed = False
        for value in values:
            result = self.engine.scrubber(value, self.known, shift=shift, institutions=self.institutions)
            if result.findings:
                self.scrubbed += 1
            changed = changed or result.text != value
            cleaned.append(result.text)
        if vr == "PN":
            # A person name is identity by definition; a scrubbed remainder could still be a name.
            self._write(ds, tag, vr, ["ANONYMIZED"] if any(cleaned) else [], codec)
        elif changed:
            self._write(ds, tag, vr, cleaned, codec)

    def _shift_function(self) -> Callable[[dt.date], dt.date] | None:
        if self.profile.has(Option.RETAIN_FULL_DATES):
            return lambda date: date
        if self.profile.has(Option.RETAIN_MODIFIED_DATES):
            return lambda date: self.engine.pseudonyms.shift_date(date, self.subject)
        return None

    def _clean_date(self, ds: Dataset, tag: int, vr: str, codec: str | None, elem: object = None) -> None:
        if self.profile.has(Option.RETAIN_FULL_DATES):
            return
        if not self.profile.has(Option.RETAIN_MODIFIED_DATES):
            self._write_empty(ds, tag, vr)
            return
        shift = self.engine.pseudonyms.shift_da if vr == "DA" else self.engine.pseudonyms.shift_dt
        self._write(ds, tag, vr, [shift(v, self.subject) for v in self._read(ds, tag, vr, codec, elem)], codec)

    def _map_uids(self, ds: Dataset, tag: int, vr: str, codec: str | None, elem: object = None) -> None:
        uid = self.engine.pseudonyms.uid
        self._write(ds, tag, vr, [uid(v) for v in self._read(ds, tag, vr, codec, elem) if v], codec)

    def _private(self, ds: Dataset, tag: int) -> None:
        """PS3.15 E.3.10: private attributes are removed unless on the safe list (with their creator)."""
        if self.profile.has(Option.RETAIN_SAFE_PRIVATE) and self.engine._safe:
            group, element = tag >> 16, tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF:  # a private creator: kept if a safe element of it exists
                creator = str(ds[tag].value or "").strip().upper()
                if any(c == creator and g == group for c, g, _ in self.engine._safe):
                    return
            elif element >= 0x1000:
                creator_elem = ds.get((group << 16) | (element >> 8))
                creator = str(creator_elem.value if creator_elem is not None else "").strip().upper()
                if (creator, group, element & 0xFF) in self.engine._safe:
                    return
        del ds[tag]

    # -- file meta --------------------------------------------------------------------------------------
    def meta(self, ds: Dataset) -> None:
        """PS3.10 file meta: the SOP Instance UID follows the dataset; sender/receiver names are dropped."""
        old: FileMetaDataset = ds.file_meta
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", old.get("MediaStorageSOPClassUID", ""))
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
        meta.TransferSyntaxUID = old.get("TransferSyntaxUID", ExplicitVRLittleEndian)
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta


_VR_FORMATS = {
    "AS": re.compile(r"\d{3}[DWMY]"),
    "IS": re.compile(r" *[+-]?\d{1,12} *"),
    "DS": re.compile(r" *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *"),
    "CS": re.compile(r"[A-Z0-9_ ]{0,16}"),
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)? *"),
    "DT": re.compile(r"\d{4,14}(\.\d{1,6})?([+-]\d{4})? *"),
}


def _valid_for_vr(vr: str, values: list[str]) -> bool:
    pattern = _VR_FORMATS.get(vr)
    if pattern is None:
        return True
    return all(pattern.fullmatch(v) for v in values if v)


def _empty(vr: str) -> Any:
    if vr == "SQ":
        return Sequence()
    if vr in _BINARY_VRS:
        return b""
    if vr in _NUMERIC_VRS:
        return None
    return ""


def _dummy(vr: str) -> Any:
    if vr in _BINARY_VRS:
        return b""
    if vr in _NUMERIC_VRS:
        return 0
    return _DUMMY.get(vr, "")


def _text_values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]
