"""The patient index: which FHIR Patients, identifiers and DICOM patients are one person.

A *patient record* is the unit of identity. Three kinds of keys point at a record:

- FHIR Patient logical ids (``fhir_patient_ids``), created as soon as anything references them;
- business identifiers ``(system, value)`` (``patient_identifiers``): the MRNs of every system;
- DICOM PatientID + IssuerOfPatientID, which are an identifier too once the issuer is mapped to its
  FHIR system (``identifier_systems``, from the ``[ehr] issuer_systems`` setting). They are resolved
  at read time with a join, so DICOM ingest never waits for the EHR and vice versa.

Two records merge when a Patient carries an identifier another record already has, or names another
Patient in ``Patient.link`` (FHIR R4 patient.html#links: every link type asserts the same individual).
The lower record id survives; rows pointing at the others are re-pointed and the others keep
``merged_into`` so a record id handed out earlier still resolves.

All functions take an open connection inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, insert, select, tuple_, update

from imagebank.ehr.facts import patient_identifiers, patient_links
from imagebank.storage.schema import (
    ehr_resources,
    fhir_patient_ids,
    identifier_systems,
    patient_records,
    patients,
)
from imagebank.storage.schema import (
    patient_identifiers as identifiers_table,
)

#: The FHIR system standing for a DICOM issuer that has no mapping: still unique per issuer.
UNMAPPED_ISSUER_PREFIX = "urn:imagebank:dicom-issuer:"


def new_record(conn: Connection) -> int:
    result = conn.execute(insert(patient_records).values(created_at=dt.datetime.now(dt.UTC)))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def current_record(conn: Connection, record_id: int) -> int | None:
    """``record_id`` after following merges; None if it never existed."""
    seen = 0
    while seen < 64:
        row = conn.execute(select(patient_records.c.merged_into).where(patient_records.c.id == record_id)).first()
        if row is None:
            return None
        if row.merged_into is None:
            return record_id
        record_id, seen = int(row.merged_into), seen + 1
    return record_id


def records_for_patient_ids(conn: Connection, ids: Iterable[str], *, create: bool = True) -> dict[str, int]:
    """Record of each FHIR Patient logical id; unknown ids get a placeholder record when ``create``."""
    wanted = sorted(set(ids))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        rows = conn.execute(select(fhir_patient_ids.c.patient_id, fhir_patient_ids.c.record_id)
                            .where(fhir_patient_ids.c.patient_id.in_(part)))
        found.update((r.patient_id, int(r.record_id)) for r in rows)
    if create:
        for pid in wanted:
            if pid not in found:
                found[pid] = new_record(conn)
                conn.execute(insert(fhir_patient_ids).values(patient_id=pid, record_id=found[pid], received=0))
    return found


def records_for_identifiers(conn: Connection, keys: Iterable[tuple[str, str]], *,
                            create: bool = True) -> dict[tuple[str, str], int]:
    wanted = sorted(set(keys))
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(wanted), 300):
        part = wanted[start:start + 300]
        rows = conn.execute(select(identifiers_table.c.system, identifiers_table.c.value, identifiers_table.c.record_id)
                            .where(tuple_(identifiers_table.c.system, identifiers_table.c.value).in_(part)))
        found.update(((r.system, r.value), int(r.record_id)) for r in rows)
    if create:
        for key in wanted:
            if key not in found:
                found[key] = new_record(conn)
                conn.execute(insert(identifiers_table).values(system=key[0], value=key[1], record_id=found[key]))
    return found


def merge(conn: Connection, records: Iterable[int]) -> int:
    """Merge ``records`` into the lowest id; returns the survivor."""
    distinct = sorted(set(records))
    keep, others = distinct[0], distinct[1:]
    if others:
        for table in (identifiers_table, fhir_patient_ids, ehr_resources):
            conn.execute(update(table).where(table.c.record_id.in_(others)).values(record_id=keep))
        conn.execute(update(patient_records).where(patient_records.c.merged_into.in_(others)).values(merged_into=keep))
        conn.execute(update(patient_records).where(patient_records.c.id.in_(others)).values(merged_into=keep))
    return keep


def register_patient(conn: Connection, patient: dict[str, Any]) -> int:
    """File a Patient resource in the index (merging records as its identifiers and links say); its record."""
    pid = patient["id"]
    idents = list({(s, v): (s, v, use) for s, v, use in patient_identifiers(patient)}.values())
    own = records_for_patient_ids(conn, [pid, *patient_links(patient)])
    known = records_for_identifiers(conn, [(s, v) for s, v, _use in idents], create=False)
    record = merge(conn, [*own.values(), *known.values()])
    for system, value, use in idents:
        if (system, value) not in known:
            conn.execute(insert(identifiers_table).values(system=system, value=value, record_id=record, use=use))
    conn.execute(update(fhir_patient_ids).where(fhir_patient_ids.c.patient_id == pid).values(received=1))
    return record


def sync_issuer_systems(conn: Connection, mapping: dict[str, str]) -> None:
    """Make ``identifier_systems`` equal to the configured issuer -> system mapping."""
    current = {r.issuer: r.system for r in conn.execute(select(identifier_systems))}
    if current == mapping:
        return
    conn.execute(identifier_systems.delete())
    if mapping:
        conn.execute(insert(identifier_systems), [{"issuer": k, "system": v} for k, v in mapping.items()])


def system_for_issuer(conn: Connection, issuer: str) -> str:
    row = conn.execute(select(identifier_systems.c.system).where(identifier_systems.c.issuer == issuer)).first()
    return str(row.system) if row else UNMAPPED_ISSUER_PREFIX + issuer


def record_for_dicom_patient(conn: Connection, patient_id: str, issuer: str) -> int | None:
    """The record a DICOM patient (PatientID, IssuerOfPatientID) belongs to, if the EHR knows it."""
    found = records_for_identifiers(conn, [(system_for_issuer(conn, issuer), patient_id)], create=False)
    return next(iter(found.values()), None)


def dicom_patients_of_record(conn: Connection, record_id: int) -> list[Any]:
    """Rows of ``patients`` (the DICOM index) whose PatientID + issuer is an identifier of the record."""
    mapped = (select(patients)
              .join(identifier_systems, identifier_systems.c.issuer == patients.c.issuer_of_patient_id)
              .join(identifiers_table, and_(identifiers_table.c.system == identifier_systems.c.system,
                                            identifiers_table.c.value == patients.c.patient_id))
              .where(identifiers_table.c.record_id == record_id))
    rows = list(conn.execute(mapped))
    for ident in conn.execute(select(identifiers_table).where(
            identifiers_table.c.record_id == record_id,
            identifiers_table.c.system.startswith(UNMAPPED_ISSUER_PREFIX, autoescape=True))):
        issuer = ident.system[len(UNMAPPED_ISSUER_PREFIX):]
        rows.extend(conn.execute(select(patients).where(patients.c.patient_id == ident.value,
                                                        patients.c.issuer_of_patient_id == issuer)))
    return rows
