"""What could not be linked between the archive and the EHR (``imagebank ehr unlinked``).

Each finding is a count plus the first few examples, so a data steward can see at once whether an
interface is misconfigured (an issuer not mapped to its MRN system: every DICOM patient unlinked) or a
few records need attention. Counted in SQL, so the report stays cheap on a large archive.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, exists, func, literal, not_, or_, select

from imagebank.ehr.identity import UNMAPPED_ISSUER_PREFIX
from imagebank.storage.schema import (
    ehr_resources,
    fhir_patient_ids,
    identifier_systems,
    patient_identifiers,
    patients,
    studies,
)

CLINICAL = ("Encounter", "Condition", "Observation", "Procedure", "DiagnosticReport", "ServiceRequest",
            "ImagingStudy", "MedicationRequest")


def _linked_patient() -> Any:
    mapped = exists().where(and_(
        identifier_systems.c.issuer == patients.c.issuer_of_patient_id,
        patient_identifiers.c.system == identifier_systems.c.system,
        patient_identifiers.c.value == patients.c.patient_id))
    unmapped = exists().where(and_(
        patient_identifiers.c.system == literal(UNMAPPED_ISSUER_PREFIX) + patients.c.issuer_of_patient_id,
        patient_identifiers.c.value == patients.c.patient_id))
    return or_(mapped, unmapped)


def _as_da(conn: Connection, column: Any) -> Any:
    """A date column as a DICOM DA string: compared with StudyDate as text, so a malformed StudyDate
    (archives keep what modalities send, e.g. 20240230) matches nothing instead of failing the query."""
    if conn.dialect.name == "postgresql":
        return func.to_char(column, "YYYYMMDD")
    return func.strftime("%Y%m%d", column)


def _finding(conn: Connection, query: Any, describe: Any, limit: int) -> dict[str, Any]:
    count = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    examples = [describe(r) for r in conn.execute(query.limit(limit))] if count else []
    return {"count": int(count), "examples": examples}


def report(conn: Connection, *, limit: int = 10) -> dict[str, Any]:
    order_exists = exists().where(and_(ehr_resources.c.resource_type == "ServiceRequest",
                                       ehr_resources.c.accession_number == studies.c.accession_number))
    report_exists = exists().where(and_(ehr_resources.c.resource_type == "DiagnosticReport", or_(
        ehr_resources.c.accession_number == studies.c.accession_number,
        ehr_resources.c.study_instance_uid == studies.c.study_instance_uid)))
    study_by_accession = exists().where(studies.c.accession_number == ehr_resources.c.accession_number)
    study_by_uid = exists().where(studies.c.study_instance_uid == ehr_resources.c.study_instance_uid)
    encounters = ehr_resources.alias("enc")
    patient_identifiers_of_record = select(patient_identifiers.c.record_id).join(
        identifier_systems, identifier_systems.c.system == patient_identifiers.c.system).where(
        identifier_systems.c.issuer == patients.c.issuer_of_patient_id,
        patient_identifiers.c.value == patients.c.patient_id).correlate(patients).scalar_subquery()
    encounter_on_day = exists().where(and_(
        encounters.c.resource_type == "Encounter", encounters.c.record_id == patient_identifiers_of_record,
        _as_da(conn, encounters.c.effective_date) <= studies.c.study_date,
        _as_da(conn, func.coalesce(encounters.c.effective_end, encounters.c.effective_date)) >= studies.c.study_date))

    def study(r: Any) -> dict[str, Any]:
        return {"study": r.study_instance_uid, "accession": r.accession_number, "date": r.study_date}

    def resource(r: Any) -> dict[str, Any]:
        return {"resource": f"{r.resource_type}/{r.resource_id}", "accession": r.accession_number,
                "study": r.study_instance_uid}

    study_cols = select(studies.c.study_instance_uid, studies.c.accession_number, studies.c.study_date)
    res_cols = select(ehr_resources.c.resource_type, ehr_resources.c.resource_id, ehr_resources.c.accession_number,
                      ehr_resources.c.study_instance_uid)
    placeholder = fhir_patient_ids.alias("other")
    return {
        "dicom_patients_without_ehr_record": _finding(
            conn, select(patients.c.patient_id, patients.c.issuer_of_patient_id,
                         patients.c.number_of_patient_related_studies).where(not_(_linked_patient()))
            .order_by(patients.c.id),
            lambda r: {"patientId": r.patient_id, "issuer": r.issuer_of_patient_id,
                       "studies": r.number_of_patient_related_studies}, limit),
        "studies_without_order": _finding(conn, study_cols.where(not_(order_exists)).order_by(studies.c.id),
                                          study, limit),
        "studies_without_report": _finding(conn, study_cols.where(not_(report_exists)).order_by(studies.c.id),
                                           study, limit),
        "studies_without_encounter": _finding(
            conn, study_cols.join(patients, patients.c.id == studies.c.patient_pk)
            .where(_linked_patient(), not_(encounter_on_day)).order_by(studies.c.id), study, limit),
        "orders_without_study": _finding(
            conn, res_cols.where(ehr_resources.c.resource_type == "ServiceRequest",
                                 ehr_resources.c.accession_number.is_not(None), not_(study_by_accession))
            .order_by(ehr_resources.c.id), resource, limit),
        "reports_without_study": _finding(
            conn, res_cols.where(ehr_resources.c.resource_type == "DiagnosticReport",
                                 or_(ehr_resources.c.accession_number.is_not(None),
                                     ehr_resources.c.study_instance_uid.is_not(None)),
                                 not_(study_by_accession), not_(study_by_uid)).order_by(ehr_resources.c.id),
            resource, limit),
        "referenced_patients_never_received": _finding(
            conn, select(fhir_patient_ids.c.patient_id).where(
                fhir_patient_ids.c.received == 0,
                not_(exists().where(and_(placeholder.c.record_id == fhir_patient_ids.c.record_id,
                                         placeholder.c.received == 1)))).order_by(fhir_patient_ids.c.patient_id),
            lambda r: {"resource": f"Patient/{r.patient_id}"}, limit),
        "resources_without_patient": _finding(
            conn, res_cols.where(ehr_resources.c.resource_type.in_(CLINICAL), ehr_resources.c.record_id.is_(None))
            .order_by(ehr_resources.c.id), resource, limit),
    }


def render(findings: dict[str, Any]) -> str:
    lines = []
    for name, finding in findings.items():
        lines.append(f"{name.replace('_', ' ')}: {finding['count']}")
        for example in finding["examples"]:
            lines.append("    " + ", ".join(f"{k}={v}" for k, v in example.items() if v not in (None, "")))
    return "\n".join(lines)
