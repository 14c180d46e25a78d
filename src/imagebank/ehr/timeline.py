"""A patient's imaging and clinical record on one time axis (JSON for the clinician's view).

One record = every FHIR Patient merged into it and every DICOM patient whose PatientID + issuer is one
of its identifiers. Imaging studies are joined to their order and report by accession number (or the
report's ImagingStudy reference) and to the encounter whose period covers the study date.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select

from imagebank.ehr import identity
from imagebank.storage.schema import ehr_resources, fhir_patient_ids, patient_identifiers, patients, studies

KIND = {"Encounter": "encounter", "Condition": "condition", "Observation": "observation",
        "Procedure": "procedure", "DiagnosticReport": "report", "ServiceRequest": "order",
        "MedicationRequest": "medication", "ImagingStudy": "imaging-study-reference"}


class UnknownPatient(LookupError):
    pass


def _study_date(da: str | None, tm: str | None) -> tuple[dt.date | None, str | None]:
    if not da or len(da) != 8 or not da.isdigit():
        return None, None
    try:
        day = dt.date(int(da[:4]), int(da[4:6]), int(da[6:]))
    except ValueError:
        return None, None
    at = day.isoformat()
    if tm and len(tm) >= 4 and tm[:4].isdigit():
        at += f"T{tm[:2]}:{tm[2:4]}" + (f":{tm[4:6]}" if len(tm) >= 6 and tm[4:6].isdigit() else "")
    return day, at


def resolve(conn: Connection, *, record: int | None = None, patient: str | None = None,
            identifier: tuple[str, str] | None = None,
            dicom: tuple[str, str] | None = None) -> tuple[int | None, list[Any]]:
    """The record and DICOM patient rows named by one of: record id, FHIR Patient id, identifier, DICOM id."""
    if record is not None:
        record = identity.current_record(conn, record)
    elif patient is not None:
        row = conn.execute(select(fhir_patient_ids.c.record_id).where(fhir_patient_ids.c.patient_id == patient)).first()
        record = int(row.record_id) if row else None
    elif identifier is not None:
        record = next(iter(identity.records_for_identifiers(conn, [identifier], create=False).values()), None)
    elif dicom is not None:
        record = identity.record_for_dicom_patient(conn, *dicom)
        if record is None:
            rows = list(conn.execute(select(patients).where(patients.c.patient_id == dicom[0],
                                                            patients.c.issuer_of_patient_id == dicom[1])))
            if not rows:
                raise UnknownPatient(f"no patient {dicom[0]} (issuer {dicom[1] or 'none'}) in the archive or the EHR")
            return None, rows
    if record is None:
        raise UnknownPatient("no such patient in the EHR")
    return record, identity.dicom_patients_of_record(conn, record)


def timeline(conn: Connection, record: int | None, dicom_patients: list[Any], *,
             since: dt.date | None = None, until: dt.date | None = None) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    identifiers: list[dict[str, str]] = []
    rows: list[Any] = []
    if record is not None:
        rows = list(conn.execute(select(
            ehr_resources.c.resource_type, ehr_resources.c.resource_id, ehr_resources.c.status,
            ehr_resources.c.effective_date, ehr_resources.c.effective_at, ehr_resources.c.effective_end,
            ehr_resources.c.code_system, ehr_resources.c.code, ehr_resources.c.label, ehr_resources.c.value_num,
            ehr_resources.c.value_unit, ehr_resources.c.value_text, ehr_resources.c.accession_number,
            ehr_resources.c.study_instance_uid, ehr_resources.c.encounter_id,
        ).where(ehr_resources.c.record_id == record).order_by(ehr_resources.c.effective_date)))
        identifiers = [{"system": r.system, "value": r.value} for r in conn.execute(
            select(patient_identifiers.c.system, patient_identifiers.c.value)
            .where(patient_identifiers.c.record_id == record).order_by(patient_identifiers.c.system))]

    encounters = [r for r in rows if r.resource_type == "Encounter" and r.effective_date]
    orders = {r.accession_number: r.resource_id for r in rows
              if r.resource_type == "ServiceRequest" and r.accession_number}
    reports_by_acc = {r.accession_number: r.resource_id for r in rows
                      if r.resource_type == "DiagnosticReport" and r.accession_number}
    reports_by_uid = {r.study_instance_uid: r.resource_id for r in rows
                      if r.resource_type == "DiagnosticReport" and r.study_instance_uid}

    def in_window(day: dt.date | None) -> bool:
        return day is None or ((since is None or day >= since) and (until is None or day <= until))

    for r in rows:
        if r.resource_type == "Patient":
            people.append({"id": r.resource_id, "name": r.label, "birthDate": r.effective_at, "gender": r.value_text})
            continue
        if not in_window(r.effective_date):
            continue
        event: dict[str, Any] = {"date": r.effective_at, "kind": KIND.get(r.resource_type, r.resource_type.lower()),
                                 "resource": f"{r.resource_type}/{r.resource_id}", "title": r.label,
                                 "status": r.status}
        if r.code:
            event["code"] = {"system": r.code_system, "code": r.code}
        if r.value_num is not None:
            event["value"] = {"value": r.value_num, "unit": r.value_unit}
        elif r.value_text is not None:
            event["value"] = {"text": r.value_text}
        if r.effective_end:
            event["end"] = r.effective_end.isoformat()
        for key, value in (("accession", r.accession_number), ("study", r.study_instance_uid),
                           ("encounter", r.encounter_id)):
            if value:
                event[key] = value
        events.append(event)

    study_rows = list(conn.execute(select(studies).where(studies.c.patient_pk.in_([p.id for p in dicom_patients]))
                                   .order_by(studies.c.study_date))) if dicom_patients else []
    for s in study_rows:
        day, at = _study_date(s.study_date, s.study_time)
        if not in_window(day):
            continue
        event = {"date": at, "kind": "imaging-study", "study": s.study_instance_uid,
                 "title": s.study_description, "modalities": (s.modalities_in_study or "").split("\\"),
                 "accession": s.accession_number, "series": s.number_of_study_related_series,
                 "instances": s.number_of_study_related_instances,
                 "links": {"fhir": f"ImagingStudy/{s.study_instance_uid}",
                           "viewer": f"/viewer/viewer?StudyInstanceUIDs={s.study_instance_uid}",
                           "dicomweb": f"/dicom-web/studies/{s.study_instance_uid}"}}
        if s.accession_number and s.accession_number in orders:
            event["order"] = f"ServiceRequest/{orders[s.accession_number]}"
        report = reports_by_uid.get(s.study_instance_uid) or reports_by_acc.get(s.accession_number or "")
        if report:
            event["report"] = f"DiagnosticReport/{report}"
        if day is not None:
            covering = [e for e in encounters if e.effective_date <= day <= (e.effective_end or e.effective_date)]
            if covering:
                event["encounter"] = covering[0].resource_id
        events.append(event)

    events.sort(key=lambda e: (e.get("date") or "9999", e["kind"]))
    return {
        "record": record,
        "patients": people,
        "identifiers": identifiers,
        "dicomPatients": [{"patientId": p.patient_id, "issuer": p.issuer_of_patient_id, "name": p.patient_name,
                           "birthDate": p.patient_birth_date} for p in dicom_patients],
        "events": events,
    }
