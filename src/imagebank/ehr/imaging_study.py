"""FHIR R4 ImagingStudy generated from the DICOM archive index (imagingstudy.html).

The archive is the source of truth for what images exist, so ImagingStudy is built on request from the
index, never stored twice: id = Study Instance UID (a valid FHIR id: digits and dots, at most 64),
identifiers ``urn:dicom:uid`` + the accession number (type ACSN), the series and instances, the
modalities, and an Endpoint (contained) of type ``dicom-wado-rs`` pointing at our ``/dicom-web`` so a
FHIR client can fetch the pixels. ``subject`` is the linked FHIR Patient (or the DICOM identifier when
the EHR does not know the patient); ``basedOn`` the imaging orders that share the accession number.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from imagebank.ehr import identity
from imagebank.ehr.facts import ACCESSION_TYPE, DICOM_UID_SYSTEM, V2_0203
from imagebank.ehr.search import (
    SearchResult,
    date_condition,
    identifier_records,
    patient_records,
    read_params,
    split_token,
)
from imagebank.storage.schema import (
    ehr_resource_codes,
    ehr_resources,
    fhir_patient_ids,
    instances,
    patients,
    series,
    studies,
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
PARAMS = {"_id", "patient", "subject", "patient.identifier", "identifier", "accession", "date", "started",
          "modality", "_count", "_offset", "_sort", "_total", "_format"}


def _fhir_date(da: str | None, tm: str | None, tz: str | None = None) -> str | None:
    """A FHIR dateTime from DICOM DA/TM. FHIR requires a zone once a time is given: the study's
    Timezone Offset From UTC (0008,0201) when present, else the server's zone on that day (DICOM times
    are the institution's local time, PS3.3 C.12.1.1.8)."""
    if not da or len(da) != 8 or not da.isdigit():
        return None
    day = f"{da[:4]}-{da[4:6]}-{da[6:]}"
    if not (tm and len(tm) >= 6 and tm[:6].isdigit()):
        return day
    try:
        local = dt.datetime(int(da[:4]), int(da[4:6]), int(da[6:]), int(tm[:2]), int(tm[2:4]), int(tm[4:6]))
    except ValueError:
        return day
    if tz and len(tz) == 5 and tz[0] in "+-" and tz[1:].isdigit():
        offset = f"{tz[:3]}:{tz[3:]}"
    else:
        offset = local.astimezone().strftime("%z")
        offset = f"{offset[:3]}:{offset[3:]}"
    return local.isoformat() + offset


def _subject(conn: Connection, patient_id: str, issuer: str) -> dict[str, Any]:
    system = identity.system_for_issuer(conn, issuer)
    record = identity.record_for_dicom_patient(conn, patient_id, issuer)
    if record is not None:
        # The record's Patient that carries this MRN, else any Patient of the record that arrived.
        carrier = conn.execute(
            select(ehr_resources.c.resource_id)
            .join(ehr_resource_codes, ehr_resource_codes.c.resource_pk == ehr_resources.c.id)
            .where(ehr_resources.c.resource_type == "Patient", ehr_resources.c.record_id == record,
                   ehr_resource_codes.c.role == "identifier", ehr_resource_codes.c.system == system,
                   ehr_resource_codes.c.code == patient_id)).first()
        if carrier is None:
            carrier = conn.execute(select(fhir_patient_ids.c.patient_id.label("resource_id")).where(
                fhir_patient_ids.c.record_id == record, fhir_patient_ids.c.received == 1)
                .order_by(fhir_patient_ids.c.patient_id)).first()
        if carrier is not None:
            return {"reference": f"Patient/{carrier.resource_id}"}
    return {"identifier": {"system": system, "value": patient_id}}


def build(conn: Connection, study: Any, dicomweb_base: str, *, with_instances: bool = True) -> dict[str, Any]:
    """The ImagingStudy of one ``studies`` row joined with its patient. Search results leave the
    instance lists out (a page of CT studies would carry hundreds of thousands); a read has them."""
    uid = study.study_instance_uid
    identifiers: list[dict[str, Any]] = [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}]
    if study.accession_number:
        identifiers.append({"type": {"coding": [{"system": V2_0203, "code": ACCESSION_TYPE}]},
                            "value": study.accession_number})
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": uid,
        "contained": [{"resourceType": "Endpoint", "id": "wado", "status": "active",
                       "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                          "code": "dicom-wado-rs"},
                       "payloadType": [{"text": "DICOM WADO-RS"}], "payloadMimeType": ["application/dicom"],
                       "address": dicomweb_base}],
        "identifier": identifiers, "status": "available",
        "subject": _subject(conn, study.patient_id, study.issuer_of_patient_id),
        "endpoint": [{"reference": "#wado"}],
        "numberOfSeries": study.number_of_study_related_series,
        "numberOfInstances": study.number_of_study_related_instances,
    }
    if study.modalities_in_study:
        resource["modality"] = [{"system": DCM, "code": m} for m in study.modalities_in_study.split("\\") if m]
    if started := _fhir_date(study.study_date, study.study_time, study.timezone_offset_from_utc):
        resource["started"] = started
    if study.study_description:
        resource["description"] = study.study_description
    if study.referring_physician_name:
        resource["referrer"] = {"display": study.referring_physician_name.replace("^", " ").strip()}
    if study.accession_number:
        orders = conn.execute(select(ehr_resources.c.resource_id).where(
            ehr_resources.c.resource_type == "ServiceRequest",
            ehr_resources.c.accession_number == study.accession_number).order_by(ehr_resources.c.resource_id))
        if based_on := [{"reference": f"ServiceRequest/{r.resource_id}"} for r in orders]:
            resource["basedOn"] = based_on
    series_out = []
    series_rows = conn.execute(select(series).where(series.c.study_pk == study.id)
                               .order_by(series.c.series_number, series.c.id)).all()
    instance_rows = conn.execute(
        select(instances.c.series_pk, instances.c.sop_instance_uid, instances.c.sop_class_uid,
               instances.c.instance_number)
        .where(instances.c.series_pk.in_([s.id for s in series_rows]))
        .order_by(instances.c.series_pk, instances.c.instance_number, instances.c.id)).all() \
        if series_rows and with_instances else []
    by_series: dict[int, list[Any]] = {}
    for row in instance_rows:
        by_series.setdefault(row.series_pk, []).append(row)
    for s in series_rows:
        item: dict[str, Any] = {"uid": s.series_instance_uid,
                                "modality": {"system": DCM, "code": s.modality or "OT"},
                                "numberOfInstances": s.number_of_series_related_instances,
                                "endpoint": [{"reference": "#wado"}]}
        if s.series_number is not None:
            item["number"] = s.series_number
        if s.series_description:
            item["description"] = s.series_description
        if s.body_part_examined:
            item["bodySite"] = {"display": s.body_part_examined}
        if started := _fhir_date(s.series_date, s.series_time, study.timezone_offset_from_utc):
            item["started"] = started
        if with_instances:
            item["instance"] = [
                {"uid": i.sop_instance_uid,
                 "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{i.sop_class_uid}"},
                 **({"number": i.instance_number} if i.instance_number is not None else {})}
                for i in by_series.get(s.id, [])]
        series_out.append(item)
    if series_out:
        resource["series"] = series_out
    return resource


def _study_query() -> Any:
    return (select(studies, patients.c.patient_id, patients.c.issuer_of_patient_id)
            .join(patients, patients.c.id == studies.c.patient_pk))


def read(conn: Connection, uid: str, dicomweb_base: str) -> dict[str, Any] | None:
    row = conn.execute(_study_query().where(studies.c.study_instance_uid == uid)).first()
    return build(conn, row, dicomweb_base) if row is not None else None


def _patient_pks(conn: Connection, records: list[int]) -> list[int]:
    pks: set[int] = set()
    for record in records:
        pks.update(int(p.id) for p in identity.dicom_patients_of_record(conn, record))
    return sorted(pks)


def search(conn: Connection, params: list[tuple[str, str]], dicomweb_base: str, *, max_page: int = 1000,
           strict: bool = True) -> SearchResult:
    controls = read_params("ImagingStudy", params, PARAMS, {"date", "started"}, max_page=max_page, strict=strict)
    conditions: list[ColumnElement[bool]] = []
    for base, value in controls.filters:
        name = base
        if base == "_id":
            conditions.append(studies.c.study_instance_uid.in_(value.split(",")))
        elif base in ("patient", "subject"):
            conditions.append(studies.c.patient_pk.in_(_patient_pks(conn, patient_records(conn, name, value))))
        elif base == "patient.identifier":
            conditions.append(studies.c.patient_pk.in_(_patient_pks(conn, identifier_records(conn, name, value))))
        elif base == "accession":
            conditions.append(studies.c.accession_number.in_(value.split(",")))
        elif base == "identifier":
            options = []
            for part in value.split(","):
                system, code = split_token(part)
                if code and code.startswith("urn:oid:") and system in (None, DICOM_UID_SYSTEM):
                    options.append(studies.c.study_instance_uid == code[8:])
                elif code and system != DICOM_UID_SYSTEM:
                    options.append(studies.c.accession_number == code)
            conditions.append(or_(*options) if options else studies.c.id < 0)
        elif base in ("date", "started"):
            conditions.append(date_condition(name, value, studies.c.study_date, dicom_da=True))
        elif base == "modality":
            options = []
            for part in value.split(","):
                _system, code = split_token(part)
                if code:
                    options.append(studies.c.id.in_(select(series.c.study_pk).where(series.c.modality == code)))
            conditions.append(or_(*options) if options else studies.c.id < 0)
    where = and_(*conditions) if conditions else studies.c.id >= 0
    total = conn.execute(select(func.count()).select_from(studies).where(where)).scalar_one() \
        if controls.want_total else None
    order = studies.c.study_date.desc() if controls.descending else studies.c.study_date
    rows = conn.execute(_study_query().where(where).order_by(order, studies.c.id)
                        .offset(controls.offset).limit(controls.count)).all() if controls.count else []
    return SearchResult([build(conn, r, dicomweb_base, with_instances=False) for r in rows], total,
                        controls.offset, controls.count, controls.kept)
