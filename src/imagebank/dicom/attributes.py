"""Extraction of the index attributes of one instance (pure: Dataset in, plain dicts out).

The column <- keyword tables below are the single place that says which DICOM attribute feeds which
index column; :mod:`imagebank.storage.schema` defines the columns with the same names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue

from imagebank.dicom import rawvalues
from imagebank.dicom.names import fold_person_name

# PS3.4 C.6.1.1.2 (patient level) / PS3.18 Table 10.6.1-5.
PATIENT_COLUMNS: dict[str, str] = {
    "patient_id": "PatientID",
    "issuer_of_patient_id": "IssuerOfPatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_birth_time": "PatientBirthTime",
    "patient_sex": "PatientSex",
    "other_patient_ids": "OtherPatientIDs",
    "ethnic_group": "EthnicGroup",
    "patient_comments": "PatientComments",
}

# PS3.4 C.6.1.1.3 / C.6.2.1.2 (study level).
STUDY_COLUMNS: dict[str, str] = {
    "study_instance_uid": "StudyInstanceUID",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "study_description": "StudyDescription",
    "referring_physician_name": "ReferringPhysicianName",
    "name_of_physicians_reading_study": "NameOfPhysiciansReadingStudy",
    "institution_name": "InstitutionName",
    "patient_age": "PatientAge",
    "patient_size": "PatientSize",
    "patient_weight": "PatientWeight",
    "timezone_offset_from_utc": "TimezoneOffsetFromUTC",
    "specific_character_set": "SpecificCharacterSet",
}

# PS3.4 C.6.1.1.4 (series level).
SERIES_COLUMNS: dict[str, str] = {
    "series_instance_uid": "SeriesInstanceUID",
    "modality": "Modality",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "series_date": "SeriesDate",
    "series_time": "SeriesTime",
    "body_part_examined": "BodyPartExamined",
    "laterality": "Laterality",
    "protocol_name": "ProtocolName",
    "manufacturer": "Manufacturer",
    "manufacturer_model_name": "ManufacturerModelName",
    "station_name": "StationName",
    "institution_name": "InstitutionName",
    "performed_procedure_step_start_date": "PerformedProcedureStepStartDate",
    "performed_procedure_step_start_time": "PerformedProcedureStepStartTime",
}

# PS3.4 C.6.1.1.5 (composite object instance level).
INSTANCE_COLUMNS: dict[str, str] = {
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "instance_number": "InstanceNumber",
    "rows": "Rows",
    "columns": "Columns",
    "bits_allocated": "BitsAllocated",
    "number_of_frames": "NumberOfFrames",
    "content_date": "ContentDate",
    "content_time": "ContentTime",
    "acquisition_datetime": "AcquisitionDateTime",
    "image_type": "ImageType",
    "completion_flag": "CompletionFlag",
    "verification_flag": "VerificationFlag",
}

_INTEGER_COLUMNS = {"series_number", "instance_number", "rows", "columns", "bits_allocated", "number_of_frames"}


#: Read index values straight from raw elements where that gives what pydicom gives (tests switch it off
#: to compare): ingest reads ~50 values per instance, and pydicom's conversion of each was a large part of it.
READ_RAW = True
_BINARY_INTEGERS = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l"}
_SLOW = object()


#: ``keyword -> tag`` (a plain int) of every attribute read here, looked up once.
_TAGS: dict[str, int] = {}
#: ``(tag, VR in the file, integer column, codec, raw bytes) -> value``: the instances of a series repeat most
#: index values (patient, study, series), so those are converted once. Bounded; cleared when full.
_VALUES: dict[tuple[Any, ...], Any] = {}
_VALUES_LIMIT = 20_000


class _RawView:
    """The raw elements of one data set keyed by plain ints, read once per record.

    Why not ``ds._dict`` itself: its keys are pydicom ``BaseTag`` objects, whose ``__eq__`` is Python code, so
    every hit of a lookup there (about 50 per instance, and again in the value cache) ran a Python call.
    """

    __slots__ = ("elements", "raw_ok")

    def __init__(self, ds: Dataset) -> None:
        self.elements = {int(tag): elem for tag, elem in ds._dict.items()}
        self.raw_ok = ds.original_encoding[1] is True  # little endian, read from bytes


def _raw_value(view: _RawView, keyword: str, column: str, codec: str | None) -> Any:
    """``_value`` read from the raw bytes, or ``_SLOW`` when only pydicom can say."""
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = _TAGS[keyword] = tag_for_keyword(keyword) or 0
    elem = view.elements.get(tag)
    if elem is None:
        return None
    if not view.raw_ok or not isinstance(elem, RawDataElement):
        return _SLOW
    data = elem.value
    if not isinstance(data, bytes) or len(data) > 256:
        return _convert_raw(tag, elem, column, codec)
    key = (tag, elem.VR, column in _INTEGER_COLUMNS, codec, data)
    found = _VALUES.get(key, _SLOW)
    if found is _SLOW:
        found = _convert_raw(tag, elem, column, codec)
        if found is not _SLOW:
            if len(_VALUES) >= _VALUES_LIMIT:
                _VALUES.clear()
            _VALUES[key] = found
    return found


def _convert_raw(tag: int, elem: RawDataElement, column: str, codec: str | None) -> Any:
    vr = elem.VR
    if vr is None:
        vr = dictionary_VR(tag)
    if vr in _BINARY_INTEGERS and column in _INTEGER_COLUMNS:
        data = elem.value or b""
        if not data:
            return None
        size = struct.calcsize(_BINARY_INTEGERS[vr])
        return struct.unpack(_BINARY_INTEGERS[vr], data[:size])[0] if len(data) >= size else _SLOW
    values = rawvalues.read(elem, vr, codec)
    if values is None:
        return _SLOW
    if not values or values == [""]:
        return None
    if column in _INTEGER_COLUMNS:
        try:
            return int(values[0])
        except ValueError:
            return _SLOW  # pydicom also reads e.g. "12.0" as an IS
    if len(values) > 1:
        return "\\".join(values)
    return values[0].strip() or None


def _value(ds: Dataset, keyword: str, column: str, codec: str | None = None, view: _RawView | None = None) -> Any:
    if READ_RAW and codec is not None:
        fast = _raw_value(view or _RawView(ds), keyword, column, codec)
        if fast is not _SLOW:
            return fast
    elem = ds.get(keyword)
    if elem is None or elem == "" or (isinstance(elem, MultiValue) and len(elem) == 0):
        return None
    if column in _INTEGER_COLUMNS:
        try:
            return int(elem[0] if isinstance(elem, MultiValue) else elem)
        except (TypeError, ValueError):
            return None  # a malformed IS in a real-world file must not block its ingest
    if isinstance(elem, MultiValue):
        return "\\".join(str(v) for v in elem)
    text = str(elem).strip()
    return text or None


def _columns(ds: Dataset, table: dict[str, str], codec: str | None, view: _RawView) -> dict[str, Any]:
    return {column: _value(ds, keyword, column, codec, view) for column, keyword in table.items()}


@dataclass
class IndexRecord:
    """Everything the index stores about one instance, grouped by level."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def extract_index_record(ds: Dataset) -> IndexRecord:
    """Read the index attributes of ``ds`` (a header parsed without pixel data)."""
    codec = rawvalues.text_codec(ds, "latin-1")
    view = _RawView(ds)
    patient = _columns(ds, PATIENT_COLUMNS, codec, view)
    patient["issuer_of_patient_id"] = patient["issuer_of_patient_id"] or ""
    patient["patient_name_search"] = fold_person_name(patient["patient_name"])

    study = _columns(ds, STUDY_COLUMNS, codec, view)
    study["referring_physician_name_search"] = fold_person_name(study["referring_physician_name"])
    issuer = ds.get("IssuerOfAccessionNumberSequence")
    if issuer:
        study["issuer_of_accession_number"] = str(issuer[0].get("LocalNamespaceEntityID", "")) or None
    else:
        study["issuer_of_accession_number"] = None

    series = _columns(ds, SERIES_COLUMNS, codec, view)
    request = ds.get("RequestAttributesSequence")
    first = request[0] if request else Dataset()
    series["requested_procedure_id"] = _value(first, "RequestedProcedureID", "requested_procedure_id")
    series["scheduled_procedure_step_id"] = _value(first, "ScheduledProcedureStepID", "scheduled_procedure_step_id")

    instance = _columns(ds, INSTANCE_COLUMNS, codec, view)
    return IndexRecord(patient=patient, study=study, series=series, instance=instance)
