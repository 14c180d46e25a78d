"""The metadata index adapter: every SQL statement that writes or summarises the archive index.

Write path (:meth:`MetadataIndex.commit`): one transaction per batch, so a batch commits all its
accepted instances at once (fast, and atomic: after a crash either the whole batch is indexed or none
of it). Every check happens before an instance's rows are written, so a refused instance leaves
nothing behind without savepoints; a value the database still refuses makes the batch replay one
instance per transaction, so one bad instance never spoils its neighbours. The computed attributes
(``NumberOfStudyRelated*``, ``ModalitiesInStudy``...) are maintained in the same transaction as the
instance rows, under a row lock on the study, so concurrent writers to one study (several
associations, PostgreSQL) serialise on it and never lose an update or delete each other's rows.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from imagebank.dicom.attributes import IndexRecord
from imagebank.storage import digest
from imagebank.storage.database import read_only
from imagebank.storage.schema import (
    archive_settings,
    ingest_log,
    ingest_sources,
    instance_headers,
    instances,
    patients,
    series,
    studies,
)


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes already stored: a no-op
    REPLACED = "replaced"
    REJECTED = "rejected"


@dataclass(frozen=True)
class StagedInstance:
    """An instance whose bytes are already durable in the blob store under ``blob_key``."""

    record: IndexRecord
    #: Hex digest of the bytes, by the archive's algorithm (:meth:`MetadataIndex.content_digest`).
    content_digest: str
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
    #: A duplicate's bytes, written under another key than the stored copy's (one of the first key layout,
    #: see :func:`~imagebank.storage.blobs.blob_key_for`): not needed.
    unused_blob_key: str | None = None


@dataclass(frozen=True)
class Located:
    """Where a stored instance is and what a retrieve needs to know before reading it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    number_of_frames: int | None
    rows: int | None
    header_json: str | None


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


class _Retry(Exception):
    """A concurrent writer changed the hierarchy under us: replay the batch."""


_PATIENT_MISMATCH = _Conflict(
    "patient-mismatch", "StudyInstanceUID is already filed under a different patient (PatientID or "
    "IssuerOfPatientID differ)", "PatientID")
_HIERARCHY_MISMATCH = _Conflict(
    "hierarchy-mismatch", "SeriesInstanceUID is already filed under a different StudyInstanceUID",
    "StudyInstanceUID")


# The statements every ingested instance runs, built once: SQLAlchemy caches their compiled form either way,
# but building and cache-keying a fresh statement object per call cost more than executing it on SQLite.
_INSTANCE_BY_UID = select(instances.c.id, instances.c.content_digest, instances.c.blob_key).where(
    instances.c.sop_instance_uid == bindparam("uid"))
_BLOB_OF_UID = select(instances.c.blob_key, instances.c.content_digest).where(instances.c.sop_instance_uid == bindparam("uid"))
_PATIENT_BY_KEY = select(patients.c.id).where(
    patients.c.patient_id == bindparam("pid"), patients.c.issuer_of_patient_id == bindparam("issuer"))
_STUDY_BY_UID = select(studies.c.id, studies.c.patient_pk).where(studies.c.study_instance_uid == bindparam("uid"))
_SERIES_BY_UID = select(series.c.id, series.c.study_pk).where(series.c.series_instance_uid == bindparam("uid"))
_LOCK_STUDY = select(studies.c.sop_classes_in_study).where(studies.c.id == bindparam("pk")).with_for_update()
#: The common case of one lookup: an instance of a series already filed. Its series, study (locked on
#: PostgreSQL: FOR UPDATE OF studies) and patient in one statement (for one series, or a batch's).
_FILED_SERIES_ROWS = (
    select(series.c.series_instance_uid, series.c.id, series.c.study_pk, studies.c.study_instance_uid,
           studies.c.patient_pk, studies.c.sop_classes_in_study, patients.c.patient_id, patients.c.issuer_of_patient_id)
    .join(studies, studies.c.id == series.c.study_pk).join(patients, patients.c.id == studies.c.patient_pk)
    .with_for_update(of=studies))
_FILED_SERIES = _FILED_SERIES_ROWS.where(series.c.series_instance_uid == bindparam("uid"))
#: The same lookups for a whole batch at once (``uids``: an expanding IN list).
_INSTANCES_BY_UIDS = select(
    instances.c.sop_instance_uid, instances.c.id, instances.c.content_digest, instances.c.blob_key,
).where(instances.c.sop_instance_uid.in_(bindparam("uids", expanding=True)))
_FILED_SERIES_BY_UIDS = _FILED_SERIES_ROWS.where(series.c.series_instance_uid.in_(bindparam("uids", expanding=True)))
_STUDIES_BY_UIDS = select(studies.c.study_instance_uid, studies.c.id, studies.c.patient_pk).where(
    studies.c.study_instance_uid.in_(bindparam("uids", expanding=True)))
_PATIENTS_BY_IDS = select(patients.c.patient_id, patients.c.issuer_of_patient_id, patients.c.id).where(
    patients.c.patient_id.in_(bindparam("pids", expanding=True)))
#: At most this many values in one IN list (SQLite allows 32766 bound parameters per statement).
_LOOKUP_CHUNK = 500
_INSERT_INSTANCES = insert(instances).returning(instances.c.id, sort_by_parameter_order=True)
_INSERT_HEADERS = insert(instance_headers)
_MODALITIES_OF_STUDY = select(series.c.modality).where(
    series.c.study_pk == bindparam("pk"), series.c.modality.is_not(None)).distinct()
_COUNT_SERIES = update(series).where(series.c.id == bindparam("pk")).values(
    number_of_series_related_instances=series.c.number_of_series_related_instances + bindparam("n"))

def _study_update(modalities: bool, sop_classes: bool) -> Any:
    values: dict[str, Any] = {
        "number_of_study_related_series": studies.c.number_of_study_related_series + bindparam("n_series"),
        "number_of_study_related_instances": studies.c.number_of_study_related_instances + bindparam("n_instances"),
        "updated_at": bindparam("now"),
    }
    if modalities:
        values["modalities_in_study"] = bindparam("modalities")
    if sop_classes:
        values["sop_classes_in_study"] = bindparam("sop_classes")
    return update(studies).where(studies.c.id == bindparam("pk")).values(**values)


_COUNT_STUDY = {(m, c): _study_update(m, c) for m in (False, True) for c in (False, True)}
_COUNT_PATIENT = update(patients).where(patients.c.id == bindparam("pk")).values(
    number_of_patient_related_studies=patients.c.number_of_patient_related_studies + bindparam("n_studies"),
    number_of_patient_related_series=patients.c.number_of_patient_related_series + bindparam("n_series"),
    number_of_patient_related_instances=patients.c.number_of_patient_related_instances + bindparam("n_instances"))


def _locate_statement(series_given: bool, instance_given: bool, with_headers: bool) -> Any:
    """What :meth:`MetadataIndex.locate` runs: the stored instances of a study (``study``), of one of its
    series (``series``) or one instance (``instance``), in reading order, with their cached headers or not."""
    stmt = (select(studies.c.study_instance_uid, series.c.series_instance_uid, instances.c.sop_instance_uid,
                   instances.c.sop_class_uid, instances.c.transfer_syntax_uid, instances.c.blob_key,
                   instances.c.size, instances.c.number_of_frames, instances.c.rows)
            .join(series, series.c.id == instances.c.series_pk)
            .join(studies, studies.c.id == series.c.study_pk)
            .where(studies.c.study_instance_uid == bindparam("study")))
    if with_headers:
        stmt = stmt.add_columns(instance_headers.c.dicom_json).join(
            instance_headers, instance_headers.c.instance_pk == instances.c.id)
    if series_given:
        stmt = stmt.where(series.c.series_instance_uid == bindparam("series"))
    if instance_given:
        stmt = stmt.where(instances.c.sop_instance_uid == bindparam("instance"))
    return stmt.order_by(series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)


#: Every retrieve and rendered image locates first; built once, like the ingest statements above (building
#: one per request cost about 0.4 ms of every retrieve).
_LOCATE = {(s, i, h): _locate_statement(s, i, h) for s in (False, True) for i in (False, True) for h in (False, True)}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MetadataIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._create_stmts: dict[tuple[str, tuple[str, ...]], Any] = {}

    # ------------------------------------------------------------------ writes

    def commit(
        self,
        items: Sequence[StagedInstance],
        *,
        policy: str,
        origin: str,
        journal: Iterable[JournalEntry] = (),
    ) -> list[CommitOutcome]:
        """Index ``items`` (and record ``journal``) in one transaction; returns one outcome per item.

        A concurrent writer that creates the same UID between our check and our insert makes the
        insert fail; the whole batch is then rolled back and replayed, and the replay sees that row.
        """
        journal = list(journal)
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    batch = _BatchWriter(self, conn, policy, origin)
                    batch.look_up(items)
                    outcomes = [batch.add(item) for item in items]
                    batch.flush()
                    self._write_journal(conn, journal)
                return outcomes
            except DataError:
                if len(items) <= 1:
                    return [CommitOutcome(Outcome.REJECTED, "invalid-value",
                                          "an attribute value cannot be stored in the index")] * len(items)
                outcomes = [self.commit([item], policy=policy, origin=origin)[0] for item in items]
                with self.engine.begin() as conn:
                    self._write_journal(conn, journal)
                return outcomes
            except (IntegrityError, OperationalError, _Retry):
                # IntegrityError: lost a race on a unique UID. OperationalError: e.g. a PostgreSQL
                # deadlock between parallel writers. Both are safe to replay from scratch.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _modalities(self, conn: Connection, study_pk: int) -> str | None:
        rows = conn.execute(_MODALITIES_OF_STUDY, {"pk": study_pk}).scalars()
        values = sorted({m for m in rows if m})
        return "\\".join(values) or None

    def _insert_stmt(self, table: Table) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"index dialect {self._dialect!r} is not supported")

    def _create_stmt(self, table: Table, unique: tuple[str, ...]) -> Any:
        """``INSERT .. ON CONFLICT (its unique key) DO NOTHING RETURNING id`` for a hierarchy table, built
        once: the row goes in as execution parameters, so SQLAlchemy reuses the compiled statement instead
        of building, and computing the cache key of, a bound literal for every value of every new row
        (measured: 0.76 of the 1.26 ms that indexing one new single-instance study took under cProfile)."""
        stmt = self._create_stmts.get((table.name, unique))
        if stmt is None:
            stmt = self._create_stmts[table.name, unique] = self._insert_stmt(table).on_conflict_do_nothing(
                index_elements=list(unique)).returning(table.c.id)
        return stmt

    def _remove_instance(self, conn: Connection, instance_pk: int) -> None:
        """Delete one instance row and keep every computed count and list consistent."""
        row = conn.execute(
            select(instances.c.series_pk, series.c.study_pk, studies.c.patient_pk)
            .join(series, series.c.id == instances.c.series_pk)
            .join(studies, studies.c.id == series.c.study_pk)
            .where(instances.c.id == instance_pk)
        ).one()
        # Counting what remains is only exact once concurrent writers to this study are done.
        conn.execute(select(studies.c.id).where(studies.c.id == row.study_pk).with_for_update())
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

    def record_journal(self, journal: Iterable[JournalEntry]) -> None:
        with self.engine.begin() as conn:
            self._write_journal(conn, journal)

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

    def content_digest(self) -> str:
        """The algorithm of this archive's content digests (:mod:`imagebank.storage.digest`), fixed when the
        archive was created."""
        with read_only(self.engine) as conn:
            value = conn.execute(select(archive_settings.c.value).where(
                archive_settings.c.name == "content_digest")).scalar()
        return str(value) if value is not None else digest.LEGACY

    def blob_key_for(self, sop_instance_uid: str) -> tuple[str, str] | None:
        """``(blob_key, content_digest)`` of a stored instance, or ``None``."""
        with read_only(self.engine) as conn:
            row = conn.execute(_BLOB_OF_UID, {"uid": sop_instance_uid}).first()
        return (row.blob_key, row.content_digest) if row else None

    def blob_keys_for(self, sop_instance_uids: Sequence[str]) -> dict[str, str]:
        """``SOPInstanceUID -> blob key`` for the stored ones among ``sop_instance_uids``."""
        found: dict[str, str] = {}
        with read_only(self.engine) as conn:
            for start in range(0, len(sop_instance_uids), 500):
                chunk = list(sop_instance_uids[start:start + 500])
                found.update(conn.execute(select(instances.c.sop_instance_uid, instances.c.blob_key).where(
                    instances.c.sop_instance_uid.in_(chunk))).all())
        return found

    def locate(self, study_instance_uid: str, series_instance_uid: str | None = None,
               sop_instance_uid: str | None = None, *, with_headers: bool = False) -> list[Located]:
        """The stored instances of a study, series or single instance, in reading order
        (series number, instance number): what a retrieve (WADO-RS, C-GET) sends."""
        stmt = _LOCATE[series_instance_uid is not None, sop_instance_uid is not None, with_headers]
        params = {"study": study_instance_uid, "series": series_instance_uid, "instance": sop_instance_uid}
        with read_only(self.engine) as conn:
            return [Located(*row) if with_headers else Located(*row, None)  # type: ignore[call-arg]
                    for row in conn.execute(stmt, {k: v for k, v in params.items() if v is not None})]

    def is_blob_referenced(self, blob_key: str) -> bool:
        with read_only(self.engine) as conn:
            return conn.execute(select(instances.c.id).where(instances.c.blob_key == blob_key).limit(1)).first() is not None

    def journal(self, job_key: str, source_keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``source_key -> (size, mtime_ns)`` for those of ``source_keys`` a bulk-ingest job committed.

        Asked chunk by chunk, so resuming a job over millions of files never loads its whole journal.
        """
        with read_only(self.engine) as conn:
            rows = conn.execute(select(ingest_sources.c.source_key, ingest_sources.c.size, ingest_sources.c.mtime_ns)
                                .where(ingest_sources.c.job_key == job_key,
                                       ingest_sources.c.source_key.in_(source_keys)))
            return {r.source_key: (r.size, r.mtime_ns) for r in rows}

    def stats(self) -> dict[str, Any]:
        """Counts and sizes for ``imagebank stats`` and the home page."""
        with read_only(self.engine) as conn:
            counts: dict[str, int] = {
                "patients": conn.execute(select(func.count()).select_from(patients)).scalar_one(),
                "studies": conn.execute(select(func.count()).select_from(studies)).scalar_one(),
                "series": conn.execute(select(func.count()).select_from(series)).scalar_one(),
                "instances": conn.execute(select(func.count()).select_from(instances)).scalar_one(),
                "bytes": int(conn.execute(select(func.coalesce(func.sum(instances.c.size), 0))).scalar_one()),
            }
            modality_rows = conn.execute(
                select(series.c.modality, func.count(), func.sum(series.c.number_of_series_related_instances))
                .group_by(series.c.modality).order_by(series.c.modality))
            by_modality = {(m or "?"): {"series": int(n), "instances": int(i or 0)} for m, n, i in modality_rows}
            conflicts = {a: int(n) for a, n in conn.execute(
                select(ingest_log.c.action, func.count()).group_by(ingest_log.c.action))}
        return {**counts, "by_modality": by_modality, "conflicts": conflicts}

    def recent_studies(self, limit: int = 50) -> list[dict[str, Any]]:
        """Most recently updated studies with their patient, for the home page."""
        with read_only(self.engine) as conn:
            rows = conn.execute(
                select(studies.c.study_instance_uid, studies.c.study_date, studies.c.study_description,
                       studies.c.modalities_in_study, studies.c.accession_number,
                       studies.c.number_of_study_related_series, studies.c.number_of_study_related_instances,
                       patients.c.patient_name, patients.c.patient_id)
                .join(patients, patients.c.id == studies.c.patient_pk)
                .order_by(studies.c.updated_at.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]


def _fit(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """Clip text to its column's size and drop NUL characters, which PostgreSQL refuses in text.

    Index columns are search copies: the full value stays in the stored bytes and the cached header.
    """
    lengths = _LENGTHS.get(table.name)
    if lengths is None:
        lengths = _LENGTHS[table.name] = {c.key: getattr(c.type, "length", None) for c in table.c}
    fitted = {}
    for key, value in values.items():
        if isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "")
            length = lengths.get(key)
            if length and len(value) > length:
                value = value[:length]
        fitted[key] = value
    return fitted


#: table name -> column -> its text length limit (None: unlimited or not text), for :func:`_fit`.
_LENGTHS: dict[str, dict[str, int | None]] = {}


class _BatchWriter:
    """Writes one batch inside one transaction with as few statements as possible.

    Every check (duplicate, patient and hierarchy consistency) happens before anything of the
    instance is written, so a refused instance needs no savepoint. Hierarchy rows are looked up once
    per batch and cached; instance and header rows go in one multi-row INSERT; computed counts are
    accumulated and applied once per touched row when the batch is flushed.
    """

    def __init__(self, index: MetadataIndex, conn: Connection, policy: str, origin: str) -> None:
        self.index, self.conn, self.policy, self.origin = index, conn, policy, origin
        self.now = _now()
        self.patients: dict[tuple[str, str], int | None] = {}
        self.studies: dict[str, tuple[int, int] | None] = {}
        self.series: dict[str, tuple[int, int] | None] = {}
        self.known: dict[str, tuple[int | None, str, str]] = {}  # sop uid -> (pk, content digest, blob key)
        self.absent: set[str] = set()  # sop uids looked up and not stored
        self.pending: list[tuple[dict[str, Any], str]] = []  # instance row, header json
        self.series_delta: dict[int, int] = defaultdict(int)
        self.study_delta: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # series, instances
        self.patient_delta: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # studies, series, instances
        self.new_series_in: set[int] = set()
        #: study pk -> the Modalities of its series, for a study this transaction created (so all its series)
        self.new_study_modalities: dict[int, set[str]] = {}
        self.sop_classes: dict[int, set[str]] = defaultdict(set)
        #: study pk -> its SOP Classes in Study as read under this transaction's lock (None: not read yet)
        self.known_sop_classes: dict[int, set[str]] = {}
        self.sqlite = index._dialect == "sqlite"

    def _lock_study(self, pk: int) -> None:
        """``SELECT .. FOR UPDATE`` on the study (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises),
        reading the value that only the lock holder may extend."""
        if pk not in self.known_sop_classes:
            current = self.conn.execute(_LOCK_STUDY, {"pk": pk}).scalar()
            self.known_sop_classes[pk] = set(current.split("\\")) if current else set()

    def look_up(self, items: Sequence[StagedInstance]) -> None:
        """Ask, in a few statements for the whole batch, what :meth:`add` would otherwise ask instance by
        instance: which SOP Instances are stored, which series are filed (with study and patient), then
        which of the other studies and patients exist. What is not found is remembered as absent.

        Why: the transaction holds the index's write lock, so every writer of every process waits for its
        statements. A batch of new single-instance studies took 6 SELECTs per instance (instance, series,
        study, series again, patient, Modalities in Study); now 4 for the whole batch. Measured with STOW-RS
        of header-only single-instance studies (requests of 50, 4 clients, 2 processes), A/B in alternating
        rounds: 729 -> 797 instances/s.
        """
        sop_uids = list(dict.fromkeys(item.record.instance["sop_instance_uid"] for item in items))
        for stored in self._rows_in(_INSTANCES_BY_UIDS, "uids", sop_uids):
            self.known[stored.sop_instance_uid] = (stored.id, stored.content_digest, stored.blob_key)
        self.absent.update(uid for uid in sop_uids if uid not in self.known)

        series_uids = [uid for uid in dict.fromkeys(item.record.series["series_instance_uid"] for item in items)
                       if uid not in self.series]
        for filed in self._rows_in(_FILED_SERIES_BY_UIDS, "uids", series_uids):
            self._filed(filed)
        unfiled = {uid for uid in series_uids if uid not in self.series}
        for uid in unfiled:
            self.series[uid] = None

        study_uids = [uid for uid in dict.fromkeys(item.record.study["study_instance_uid"] for item in items
                                                   if item.record.series["series_instance_uid"] in unfiled)
                      if uid not in self.studies]
        for study in self._rows_in(_STUDIES_BY_UIDS, "uids", study_uids):
            self.studies[study.study_instance_uid] = (study.id, study.patient_pk)
        new_studies = {uid for uid in study_uids if uid not in self.studies}
        for uid in new_studies:
            self.studies[uid] = None

        keys = [key for key in dict.fromkeys((item.record.patient["patient_id"] or "",
                                              item.record.patient["issuer_of_patient_id"]) for item in items
                                             if item.record.study["study_instance_uid"] in new_studies)
                if key not in self.patients]
        wanted = set(keys)
        for patient in self._rows_in(_PATIENTS_BY_IDS, "pids", list(dict.fromkeys(pid for pid, _ in keys))):
            if (patient.patient_id, patient.issuer_of_patient_id) in wanted:
                self.patients[patient.patient_id, patient.issuer_of_patient_id] = patient.id
        for key in keys:
            self.patients.setdefault(key, None)

    def _rows_in(self, stmt: Any, name: str, values: list[Any]) -> Iterator[Any]:
        """The rows of ``stmt`` for ``values`` as its expanding IN parameter ``name``, a chunk at a time."""
        for start in range(0, len(values), _LOOKUP_CHUNK):
            yield from self.conn.execute(stmt, {name: values[start:start + _LOOKUP_CHUNK]})

    def _filed(self, row: Any) -> None:
        """Cache a filed series row (of _FILED_SERIES or _FILED_SERIES_BY_UIDS) with its study and patient."""
        self.series[row.series_instance_uid] = (row.id, row.study_pk)
        self.studies.setdefault(row.study_instance_uid, (row.study_pk, row.patient_pk))
        self.patients.setdefault((row.patient_id, row.issuer_of_patient_id), row.patient_pk)
        if row.study_pk not in self.known_sop_classes:
            current = row.sop_classes_in_study
            self.known_sop_classes[row.study_pk] = set(current.split("\\")) if current else set()

    def _prefetch(self, series_uid: str) -> None:
        """Look up a filed series with its study and patient in one statement (and lock the study)."""
        if series_uid in self.series:
            return
        row = self.conn.execute(_FILED_SERIES, {"uid": series_uid}).first()
        if row is None:
            return  # a new series: the lookups one by one decide where it goes
        self._filed(row)

    # -- lookups (cached for the batch) --

    def _patient_pk(self, key: tuple[str, str]) -> int | None:
        if key not in self.patients:
            self.patients[key] = self.conn.execute(_PATIENT_BY_KEY, {"pid": key[0], "issuer": key[1]}).scalar()
        return self.patients[key]

    def _study(self, uid: str) -> tuple[int, int] | None:
        if uid not in self.studies:
            row = self.conn.execute(_STUDY_BY_UID, {"uid": uid}).first()
            self.studies[uid] = (row[0], row[1]) if row else None
        return self.studies[uid]

    def _series(self, uid: str) -> tuple[int, int] | None:
        if uid not in self.series:
            row = self.conn.execute(_SERIES_BY_UID, {"uid": uid}).first()
            self.series[uid] = (row[0], row[1]) if row else None
        return self.series[uid]

    def _existing(self, sop_uid: str) -> tuple[int | None, str, str] | None:
        if sop_uid not in self.known:
            if sop_uid in self.absent:
                return None
            row = self.conn.execute(_INSTANCE_BY_UID, {"uid": sop_uid}).first()
            if row is None:
                return None
            self.known[sop_uid] = (row[0], row[1], row[2])
        return self.known[sop_uid]

    def _create(self, table: Table, key: dict[str, Any], values: dict[str, Any]) -> int:
        """Insert a hierarchy row; if a concurrent writer just created it, replay the batch."""
        pk = self.conn.execute(self.index._create_stmt(table, tuple(key)), _fit(table, values)).scalar()
        if pk is None:
            raise _Retry()
        return int(pk)

    # -- per instance --

    def add(self, item: StagedInstance) -> CommitOutcome:
        rec = item.record
        sop_uid = rec.instance["sop_instance_uid"]
        existing = self._existing(sop_uid)
        superseded: str | None = None
        if existing is not None:
            if existing[1] == item.content_digest:
                return CommitOutcome(Outcome.DUPLICATE,
                                     unused_blob_key=item.blob_key if existing[2] != item.blob_key else None)
            if self.policy != "replace":
                self._log(sop_uid, "rejected-conflict", existing[1], item.content_digest)
                return CommitOutcome(
                    Outcome.REJECTED, "duplicate-conflict",
                    "an instance with this SOPInstanceUID is already stored with different content "
                    "(duplicate policy: reject)", "SOPInstanceUID")

        patient_key = (rec.patient["patient_id"] or "", rec.patient["issuer_of_patient_id"])
        self._prefetch(rec.series["series_instance_uid"])
        try:
            self._check_hierarchy(rec, patient_key)
        except _Conflict as exc:
            return CommitOutcome(Outcome.REJECTED, exc.reason, exc.message, exc.attribute)
        if existing is not None:
            self._log(sop_uid, "replaced", existing[1], item.content_digest)

        if existing is not None:  # replace: the new bytes are durable, the old row goes now
            self.flush()
            self.index._remove_instance(self.conn, self.known[sop_uid][0])  # type: ignore[arg-type]
            superseded = existing[2] if existing[2] != item.blob_key else None
            self.patients.clear()  # rows may have gone with the removed instance
            self.studies.clear()
            self.series.clear()
            self.known_sop_classes.clear()
            self.new_study_modalities.clear()

        patient_pk = self._patient_pk(patient_key)
        new_study = new_series = False
        if patient_pk is None:
            patient_pk = self.patients[patient_key] = self._create(
                patients, {"patient_id": 0, "issuer_of_patient_id": 0},
                {**rec.patient, "patient_id": patient_key[0], "created_at": self.now})
        study_uid = rec.study["study_instance_uid"]
        study = self._study(study_uid)
        if study is not None:
            self._lock_study(study[0])
        else:
            study = self.studies[study_uid] = (self._create(
                studies, {"study_instance_uid": 0},
                {**rec.study, "patient_pk": patient_pk, "created_at": self.now, "updated_at": self.now}), patient_pk)
            self.known_sop_classes[study[0]] = set()
            self.new_study_modalities[study[0]] = set()
            new_study = True
        series_uid = rec.series["series_instance_uid"]
        found = self._series(series_uid)
        if found is None:
            found = self.series[series_uid] = (self._create(
                series, {"series_instance_uid": 0},
                {**rec.series, "study_pk": study[0], "created_at": self.now}), study[0])
            new_series = True
            self.new_series_in.add(study[0])
            if study[0] in self.new_study_modalities:  # as the series row holds it (clipped), like the query
                modality = _fit(series, {"modality": rec.series.get("modality")})["modality"]
                self.new_study_modalities[study[0]].add(modality)

        self.pending.append((_fit(instances, {
            **rec.instance, "series_pk": found[0], "transfer_syntax_uid": item.transfer_syntax_uid,
            "blob_key": item.blob_key, "size": item.size, "content_digest": item.content_digest, "stored_at": self.now,
            "origin": self.origin}), item.header_json))
        self.known[sop_uid] = (None, item.content_digest, item.blob_key)
        self.series_delta[found[0]] += 1
        self.study_delta[study[0]][0] += int(new_series)
        self.study_delta[study[0]][1] += 1
        pdelta = self.patient_delta[patient_pk]
        pdelta[0] += int(new_study)
        pdelta[1] += int(new_series)
        pdelta[2] += 1
        self.sop_classes[study[0]].add(rec.instance["sop_class_uid"])
        return CommitOutcome(Outcome.REPLACED if existing is not None else Outcome.STORED,
                             superseded_blob_key=superseded)

    def _log(self, sop_uid: str, action: str, previous: str, new: str) -> None:
        self.conn.execute(insert(ingest_log).values(at=self.now, sop_instance_uid=sop_uid, action=action,
                                                    previous_digest=previous, new_digest=new, origin=self.origin))

    def _check_hierarchy(self, rec: IndexRecord, patient_key: tuple[str, str]) -> None:
        study = self._study(rec.study["study_instance_uid"])
        found = self._series(rec.series["series_instance_uid"])
        if found is not None and (study is None or found[1] != study[0]):
            raise _HIERARCHY_MISMATCH
        if study is not None and study[1] != self._patient_pk(patient_key):
            raise _PATIENT_MISMATCH

    # -- once per batch --

    def flush(self) -> None:
        if self.pending:
            ids = self.conn.execute(_INSERT_INSTANCES, [row for row, _ in self.pending]).scalars().all()
            self.conn.execute(_INSERT_HEADERS, [
                {"instance_pk": pk, "dicom_json": header} for pk, (_, header) in zip(ids, self.pending, strict=True)])
            for pk, (row, _) in zip(ids, self.pending, strict=True):
                self.known[row["sop_instance_uid"]] = (pk, row["content_digest"], row["blob_key"])
            self.pending = []
        if self.series_delta:
            self.conn.execute(_COUNT_SERIES, [{"pk": pk, "n": n} for pk, n in self.series_delta.items()])
        for pk, (n_series, n_inst) in self.study_delta.items():
            values: dict[str, Any] = {"pk": pk, "n_series": n_series, "n_instances": n_inst, "now": self.now}
            if pk in self.new_series_in:
                created = self.new_study_modalities.get(pk)
                values["modalities"] = (self.index._modalities(self.conn, pk) if created is None
                                        else "\\".join(sorted(m for m in created if m)) or None)
            self._lock_study(pk)  # a no-op when already locked (and read) earlier in this transaction
            known = self.known_sop_classes[pk]
            if not self.sop_classes[pk] <= known:
                known |= self.sop_classes[pk]
                values["sop_classes"] = "\\".join(sorted(known))
            self.conn.execute(_COUNT_STUDY["modalities" in values, "sop_classes" in values], values)
        if self.patient_delta:
            self.conn.execute(_COUNT_PATIENT, [
                {"pk": pk, "n_studies": n_studies, "n_series": n_series, "n_instances": n_inst}
                for pk, (n_studies, n_series, n_inst) in self.patient_delta.items()])
        for accumulated in (self.series_delta, self.study_delta, self.patient_delta, self.sop_classes):
            accumulated.clear()
        self.new_series_in.clear()
