"""The metadata index adapter: every SQL statement that writes or summarises the archive index.

Write path (:meth:`MetadataIndex.commit`): one transaction per batch, one SAVEPOINT per instance, so a
batch commits all its accepted instances at once (fast, and atomic: after a crash either the whole
batch is indexed or none of it), while one bad instance never spoils its neighbours. The computed
attributes (``NumberOfStudyRelated*``, ``ModalitiesInStudy``...) are maintained in the same
transaction as the instance row, so they are never out of step with it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError

from imagebank.dicom.attributes import IndexRecord
from imagebank.storage.schema import (
    ingest_log,
    ingest_sources,
    instance_headers,
    instances,
    patients,
    series,
    studies,
)


class Outcome(str, enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes already stored: a no-op
    REPLACED = "replaced"
    REJECTED = "rejected"


@dataclass(frozen=True)
class StagedInstance:
    """An instance whose bytes are already durable in the blob store under ``blob_key``."""

    record: IndexRecord
    sha256: str
    size: int
    blob_key: str
    transfer_syntax_uid: str
    header_json: str


@dataclass(frozen=True)
class CommitOutcome:
    outcome: Outcome
    reason: str | None = None
    message: str | None = None
    attribute: str | None = None
    #: Blob that nothing refers to any more once the transaction is committed.
    superseded_blob_key: str | None = None


@dataclass(frozen=True)
class JournalEntry:
    job_key: str
    source_key: str
    size: int
    mtime_ns: int
    outcome: str


class _Conflict(Exception):
    def __init__(self, reason: str, message: str, attribute: str) -> None:
        super().__init__(message)
        self.reason, self.message, self.attribute = reason, message, attribute


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class MetadataIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    # ------------------------------------------------------------------ writes

    def commit(
        self,
        items: Sequence[StagedInstance],
        *,
        policy: str,
        origin: str,
        journal: Iterable[JournalEntry] = (),
    ) -> list[CommitOutcome]:
        """Index ``items`` (and record ``journal``) in one transaction; returns one outcome per item."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    outcomes = [self._commit_one(conn, item, policy, origin) for item in items]
                    self._write_journal(conn, journal)
                return outcomes
            except OperationalError:  # e.g. a PostgreSQL deadlock between parallel writers: retry
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _commit_one(self, conn: Connection, item: StagedInstance, policy: str, origin: str) -> CommitOutcome:
        for attempt in range(3):
            try:
                with conn.begin_nested():
                    return self._index_instance(conn, item, policy, origin)
            except _Conflict as exc:
                return CommitOutcome(Outcome.REJECTED, exc.reason, exc.message, exc.attribute)
            except IntegrityError:
                # A concurrent writer inserted the same UID between our read and our write; the
                # savepoint is rolled back and the next attempt sees its row.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _index_instance(self, conn: Connection, item: StagedInstance, policy: str, origin: str) -> CommitOutcome:
        rec = item.record
        sop_uid = rec.instance["sop_instance_uid"]
        now = _now()
        superseded: str | None = None
        existing = conn.execute(
            select(instances.c.id, instances.c.sha256, instances.c.blob_key).where(
                instances.c.sop_instance_uid == sop_uid)
        ).first()
        if existing is not None:
            if existing.sha256 == item.sha256:
                return CommitOutcome(Outcome.DUPLICATE)
            action = "replaced" if policy == "replace" else "rejected-conflict"
            conn.execute(insert(ingest_log).values(
                at=now, sop_instance_uid=sop_uid, action=action, previous_sha256=existing.sha256,
                new_sha256=item.sha256, origin=origin))
            if policy != "replace":
                # Logged even though refused, so the conflict stays visible to the operator. The
                # log insert must survive the refusal, hence a return, not an exception.
                return CommitOutcome(
                    Outcome.REJECTED, "duplicate-conflict",
                    "an instance with this SOPInstanceUID is already stored with different content "
                    "(duplicate policy: reject)", "SOPInstanceUID")
            self._remove_instance(conn, existing.id)
            superseded = existing.blob_key if existing.blob_key != item.blob_key else None

        patient_pk, _ = self._get_or_insert(
            conn, patients, {"patient_id": rec.patient["patient_id"] or "",
                             "issuer_of_patient_id": rec.patient["issuer_of_patient_id"]},
            {**rec.patient, "patient_id": rec.patient["patient_id"] or "", "created_at": now})
        study_pk, new_study = self._get_or_insert(
            conn, studies, {"study_instance_uid": rec.study["study_instance_uid"]},
            {**rec.study, "patient_pk": patient_pk, "created_at": now, "updated_at": now},
            parent=("patient_pk", patient_pk, "patient-mismatch",
                    "StudyInstanceUID is already filed under a different patient (PatientID or "
                    "IssuerOfPatientID differ)", "PatientID"))
        series_pk, new_series = self._get_or_insert(
            conn, series, {"series_instance_uid": rec.series["series_instance_uid"]},
            {**rec.series, "study_pk": study_pk, "created_at": now},
            parent=("study_pk", study_pk, "hierarchy-mismatch",
                    "SeriesInstanceUID is already filed under a different StudyInstanceUID", "StudyInstanceUID"))

        result = conn.execute(insert(instances).values(
            **rec.instance, series_pk=series_pk, transfer_syntax_uid=item.transfer_syntax_uid,
            blob_key=item.blob_key, size=item.size, sha256=item.sha256, stored_at=now, origin=origin,
        ).returning(instances.c.id))
        instance_pk = result.scalar_one()
        conn.execute(insert(instance_headers).values(instance_pk=instance_pk, dicom_json=item.header_json))

        conn.execute(update(series).where(series.c.id == series_pk).values(
            number_of_series_related_instances=series.c.number_of_series_related_instances + 1))
        study_values: dict[str, Any] = {
            "number_of_study_related_instances": studies.c.number_of_study_related_instances + 1,
            "number_of_study_related_series": studies.c.number_of_study_related_series + int(new_series),
            "updated_at": now,
        }
        if new_series:
            study_values["modalities_in_study"] = self._modalities(conn, study_pk)
        sop_class = rec.instance["sop_class_uid"]
        current = conn.execute(select(studies.c.sop_classes_in_study).where(studies.c.id == study_pk)).scalar()
        classes = set(current.split("\\")) if current else set()
        if sop_class not in classes:
            study_values["sop_classes_in_study"] = "\\".join(sorted(classes | {sop_class}))
        conn.execute(update(studies).where(studies.c.id == study_pk).values(**study_values))
        conn.execute(update(patients).where(patients.c.id == patient_pk).values(
            number_of_patient_related_instances=patients.c.number_of_patient_related_instances + 1,
            number_of_patient_related_series=patients.c.number_of_patient_related_series + int(new_series),
            number_of_patient_related_studies=patients.c.number_of_patient_related_studies + int(new_study),
        ))
        return CommitOutcome(Outcome.REPLACED if existing is not None else Outcome.STORED,
                             superseded_blob_key=superseded)

    def _modalities(self, conn: Connection, study_pk: int) -> str | None:
        rows = conn.execute(
            select(series.c.modality).where(series.c.study_pk == study_pk, series.c.modality.is_not(None))
            .distinct()
        ).scalars()
        values = sorted({m for m in rows if m})
        return "\\".join(values) or None

    def _insert_stmt(self, table: Table) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"index dialect {self._dialect!r} is not supported")

    def _get_or_insert(
        self,
        conn: Connection,
        table: Table,
        key: dict[str, Any],
        values: dict[str, Any],
        parent: tuple[str, int, str, str, str] | None = None,
    ) -> tuple[int, bool]:
        """Primary key of the row with ``key`` (inserting ``values`` if absent), and whether it was new.

        ``INSERT .. ON CONFLICT DO NOTHING`` makes concurrent creators of the same patient/study/series
        converge on one row on both SQLite and PostgreSQL.
        """
        columns = [table.c.id] + ([table.c[parent[0]]] if parent else [])
        where = and_(*(table.c[k] == v for k, v in key.items()))
        row = conn.execute(select(*columns).where(where)).first()
        if row is None:
            pk = conn.execute(
                self._insert_stmt(table).values(**values).on_conflict_do_nothing(index_elements=list(key))
                .returning(table.c.id)
            ).scalar()
            if pk is not None:
                return int(pk), True
            row = conn.execute(select(*columns).where(where)).one()
        if parent is not None and row[1] != parent[1]:
            raise _Conflict(parent[2], parent[3], parent[4])
        return int(row[0]), False

    def _remove_instance(self, conn: Connection, instance_pk: int) -> None:
        """Delete one instance row and keep every computed count and list consistent."""
        row = conn.execute(
            select(instances.c.series_pk, series.c.study_pk, studies.c.patient_pk)
            .join(series, series.c.id == instances.c.series_pk)
            .join(studies, studies.c.id == series.c.study_pk)
            .where(instances.c.id == instance_pk)
        ).one()
        conn.execute(delete(instance_headers).where(instance_headers.c.instance_pk == instance_pk))
        conn.execute(delete(instances).where(instances.c.id == instance_pk))
        remaining_in_series = conn.execute(
            select(func.count()).select_from(instances).where(instances.c.series_pk == row.series_pk)).scalar_one()
        series_gone = remaining_in_series == 0
        if series_gone:
            conn.execute(delete(series).where(series.c.id == row.series_pk))
        else:
            conn.execute(update(series).where(series.c.id == row.series_pk).values(
                number_of_series_related_instances=remaining_in_series))
        study_gone = series_gone and conn.execute(
            select(func.count()).select_from(series).where(series.c.study_pk == row.study_pk)).scalar_one() == 0
        if study_gone:
            conn.execute(delete(studies).where(studies.c.id == row.study_pk))
        else:
            values: dict[str, Any] = {
                "number_of_study_related_instances": studies.c.number_of_study_related_instances - 1,
                "number_of_study_related_series": studies.c.number_of_study_related_series - int(series_gone),
                "updated_at": _now(),
            }
            if series_gone:
                values["modalities_in_study"] = self._modalities(conn, row.study_pk)
            conn.execute(update(studies).where(studies.c.id == row.study_pk).values(**values))
        conn.execute(update(patients).where(patients.c.id == row.patient_pk).values(
            number_of_patient_related_instances=patients.c.number_of_patient_related_instances - 1,
            number_of_patient_related_series=patients.c.number_of_patient_related_series - int(series_gone),
            number_of_patient_related_studies=patients.c.number_of_patient_related_studies - int(study_gone),
        ))

    def _write_journal(self, conn: Connection, journal: Iterable[JournalEntry]) -> None:
        rows = [vars(entry) for entry in journal]
        if not rows:
            return
        stmt = self._insert_stmt(ingest_sources)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_key", "source_key"],
            set_={"size": stmt.excluded.size, "mtime_ns": stmt.excluded.mtime_ns, "outcome": stmt.excluded.outcome},
        )
        conn.execute(stmt, rows)

    # ------------------------------------------------------------------- reads

    def blob_key_for(self, sop_instance_uid: str) -> tuple[str, str] | None:
        """``(blob_key, sha256)`` of a stored instance, or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(select(instances.c.blob_key, instances.c.sha256).where(
                instances.c.sop_instance_uid == sop_instance_uid)).first()
        return (row.blob_key, row.sha256) if row else None

    def is_blob_referenced(self, blob_key: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(instances.c.id).where(instances.c.blob_key == blob_key).limit(1)).first() is not None

    def journal(self, job_key: str) -> dict[str, tuple[int, int]]:
        """``source_key -> (size, mtime_ns)`` already committed by a bulk-ingest job."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(ingest_sources.c.source_key, ingest_sources.c.size, ingest_sources.c.mtime_ns)
                                .where(ingest_sources.c.job_key == job_key))
            return {r.source_key: (r.size, r.mtime_ns) for r in rows}

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for ``imagebank stats`` and the home page."""
        with self.engine.connect() as conn:
            counts = {
                "patients": conn.execute(select(func.count()).select_from(patients)).scalar_one(),
                "studies": conn.execute(select(func.count()).select_from(studies)).scalar_one(),
                "series": conn.execute(select(func.count()).select_from(series)).scalar_one(),
                "instances": conn.execute(select(func.count()).select_from(instances)).scalar_one(),
                "bytes": int(conn.execute(select(func.coalesce(func.sum(instances.c.size), 0))).scalar_one()),
            }
            modality_rows = conn.execute(
                select(series.c.modality, func.count(), func.sum(series.c.number_of_series_related_instances))
                .group_by(series.c.modality).order_by(series.c.modality))
            counts["by_modality"] = {
                (m or "?"): {"series": int(n), "instances": int(i or 0)} for m, n, i in modality_rows}
            counts["conflicts"] = conn.execute(
                select(ingest_log.c.action, func.count()).group_by(ingest_log.c.action)).all()
            counts["conflicts"] = {a: int(n) for a, n in counts["conflicts"]}
        return counts

    def recent_studies(self, limit: int = 50) -> list[dict[str, Any]]:
        """Most recently updated studies with their patient, for the home page."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(studies.c.study_instance_uid, studies.c.study_date, studies.c.study_description,
                       studies.c.modalities_in_study, studies.c.accession_number,
                       studies.c.number_of_study_related_series, studies.c.number_of_study_related_instances,
                       patients.c.patient_name, patients.c.patient_id)
                .join(patients, patients.c.id == studies.c.patient_pk)
                .order_by(studies.c.updated_at.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]
