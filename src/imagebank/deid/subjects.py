"""Who a source object belongs to: the stable key that picks a patient's pseudonym and date shift.

A subject key is ``<identifier system>|<value>``. A DICOM patient's is its PatientID under the FHIR system
its Issuer of Patient ID maps to (``[ehr] issuer_systems``), so a DICOM study and the EHR rows of the same MRN
get the same key without any lookup. When the EHR patient index links several identifiers into one record
(the same person at two hospitals), every one of them resolves to the record's *canonical* key -- its
smallest identifier -- so all of that person's data shares one pseudonym. The key depends only on the data,
never on local row ids, so two machines with the same data and project key agree.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.ehr.identity import UNMAPPED_ISSUER_PREFIX, current_record
from imagebank.storage.database import read_only
from imagebank.storage.schema import ehr_resources, patient_identifiers


def direct_key(patient_id: str, issuer: str, issuer_systems: dict[str, str]) -> str:
    """The key without the EHR: the mapped system of the issuer (or the issuer's own URN) + PatientID."""
    system = issuer_systems.get(issuer) or UNMAPPED_ISSUER_PREFIX + issuer
    return f"{system}|{patient_id}"


class SubjectResolver:
    """Subject keys and known identifiers, using the EHR patient index when an index engine is given."""

    def __init__(self, issuer_systems: dict[str, str], engine: Engine | None = None) -> None:
        self.issuer_systems = issuer_systems
        self.engine = engine
        self._cache: dict[str, tuple[str, int | None]] = {}
        self._known: dict[int, KnownIdentifiers] = {}

    def for_dicom(self, patient_id: str, issuer: str) -> tuple[str, int | None]:
        """(subject key, EHR record id or None)."""
        key = direct_key(patient_id, issuer, self.issuer_systems)
        if key in self._cache:
            return self._cache[key]
        resolved: tuple[str, int | None] = (key, None)
        if self.engine is not None:
            system, _, value = key.partition("|")
            with read_only(self.engine) as conn:
                row = conn.execute(select(patient_identifiers.c.record_id).where(
                    patient_identifiers.c.system == system, patient_identifiers.c.value == value)).first()
                if row is not None:
                    record = current_record(conn, int(row.record_id))
                    if record is not None:
                        resolved = (self._canonical(conn, record) or key, record)
        if len(self._cache) < 100_000:
            self._cache[key] = resolved
        return resolved

    def for_record(self, record_id: int) -> str | None:
        if self.engine is None:
            return None
        with read_only(self.engine) as conn:
            record = current_record(conn, record_id)
            return self._canonical(conn, record) if record is not None else None

    @staticmethod
    def _canonical(conn: Any, record_id: int) -> str | None:
        rows = conn.execute(select(patient_identifiers.c.system, patient_identifiers.c.value).where(
            patient_identifiers.c.record_id == record_id))
        keys = sorted(f"{r.system}|{r.value}" for r in rows)
        return keys[0] if keys else None

    def known_for_record(self, record_id: int | None) -> KnownIdentifiers:
        """What the EHR knows about the person: every Patient resource of the record (names, MRNs, address...)."""
        known = KnownIdentifiers()
        if record_id is None or self.engine is None:
            return known
        cached = self._known.get(record_id)
        if cached is not None:
            return cached
        with read_only(self.engine) as conn:
            for ident in conn.execute(select(patient_identifiers.c.value).where(
                    patient_identifiers.c.record_id == record_id)):
                known.add_id(ident.value)
            for row in conn.execute(select(ehr_resources.c.resource_json).where(
                    ehr_resources.c.record_id == record_id, ehr_resources.c.resource_type == "Patient")):
                known.collect_fhir(json.loads(row.resource_json))
        if len(self._known) < 10_000:
            self._known[record_id] = known
        return known
