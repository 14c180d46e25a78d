"""EHR fixtures: the store over the test database (SQLite and PostgreSQL) and small FHIR builders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

MRN = "https://ibgh.example.org/fhir/sid/mrn"
RMC = "https://rmc.example.org/fhir/sid/mrn"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}


@pytest.fixture
def store(settings: Any) -> Iterator[Any]:
    from imagebank.context import open_ehr, open_engine

    engine = open_engine(settings)
    yield open_ehr(settings, engine)
    engine.dispose()


def patient(pid: str, mrn: str, system: str = MRN, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "identifier": [{"system": system, "value": mrn}],
            "name": [{"family": "Müller", "given": ["Hans"]}], "gender": "male", "birthDate": "1950-02-03", **extra}


def psa(oid: str, pid: str, value: float, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": "2857-1", "display": "PSA"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"}}


def condition(cid: str, pid: str, code: str, onset: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": ICD10, "code": code}, {"system": SNOMED, "code": "399068003"}]},
            "onsetDateTime": onset}


def order(sid: str, pid: str, accession: str, when: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": sid, "status": "completed", "intent": "order",
            "identifier": [{"type": ACSN, "value": accession}], "subject": {"reference": f"Patient/{pid}"},
            "code": {"text": "MRI PROSTATE"}, "occurrenceDateTime": when}


def report(rid: str, pid: str, accession: str, when: str, study_uid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": rid, "status": "final",
        "identifier": [{"type": ACSN, "value": accession}],
        "code": {"coding": [{"system": LOINC, "code": "18748-4"}]}, "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when, "conclusion": "PI-RADS 4 lesion"}
    if study_uid:
        body["imagingStudy"] = [{"reference": f"ImagingStudy/{study_uid}"}]
    return body
