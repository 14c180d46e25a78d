"""Query levels and the attributes the index can match and return at each of them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from sqlalchemy import Column, Table

from imagebank.dicom.attributes import INSTANCE_COLUMNS, PATIENT_COLUMNS, SERIES_COLUMNS, STUDY_COLUMNS
from imagebank.storage.schema import instances, patients, series, studies


class Level(enum.IntEnum):
    """Query/Retrieve levels (PS3.4 C.3), ordered from the top of the hierarchy."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3


LEVEL_TABLES: dict[Level, Table] = {Level.PATIENT: patients, Level.STUDY: studies, Level.SERIES: series,
                                    Level.IMAGE: instances}

#: The unique key of each level (PS3.4 C.3.1-C.3.4).
UNIQUE_KEYS: dict[Level, str] = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
                                 Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level
    column: Column  # type: ignore[type-arg]
    vr: str
    #: Column holding the folded (upper-case, accent-free) form, for person names.
    search_column: Column | None = None  # type: ignore[type-arg]


def _build() -> dict[str, Attribute]:
    attrs: dict[str, Attribute] = {}
    for level, table, mapping in ((Level.PATIENT, patients, PATIENT_COLUMNS), (Level.STUDY, studies, STUDY_COLUMNS),
                                  (Level.SERIES, series, SERIES_COLUMNS), (Level.IMAGE, instances, INSTANCE_COLUMNS)):
        for column, keyword in mapping.items():
            if keyword in attrs:  # InstitutionName: study copy wins; the series copy stays in the header
                continue
            search = table.c.get(f"{column}_search")
            attrs[keyword] = Attribute(keyword, level, table.c[column], dictionary_VR(keyword), search)
    computed = {
        "NumberOfPatientRelatedStudies": (Level.PATIENT, patients.c.number_of_patient_related_studies),
        "NumberOfPatientRelatedSeries": (Level.PATIENT, patients.c.number_of_patient_related_series),
        "NumberOfPatientRelatedInstances": (Level.PATIENT, patients.c.number_of_patient_related_instances),
        "NumberOfStudyRelatedSeries": (Level.STUDY, studies.c.number_of_study_related_series),
        "NumberOfStudyRelatedInstances": (Level.STUDY, studies.c.number_of_study_related_instances),
        "ModalitiesInStudy": (Level.STUDY, studies.c.modalities_in_study),
        "SOPClassesInStudy": (Level.STUDY, studies.c.sop_classes_in_study),
        "NumberOfSeriesRelatedInstances": (Level.SERIES, series.c.number_of_series_related_instances),
        "AvailableTransferSyntaxUID": (Level.IMAGE, instances.c.transfer_syntax_uid),
    }
    for keyword, (level, computed_column) in computed.items():
        attrs[keyword] = Attribute(keyword, level, computed_column, dictionary_VR(keyword))
    return attrs


ATTRIBUTES: dict[str, Attribute] = _build()
