"""The EHR store: FHIR resources in the index database, versioned, with their facts and codes.

Writes go in batches, one transaction each, so a bulk load of millions of resources costs a handful of
statements per few hundred resources (existing versions looked up with one ``IN``, new rows inserted
with one multi-row ``INSERT ... RETURNING``). Re-sending identical content is a no-op; changed
content becomes the next version and the previous one moves to ``ehr_resource_history``
(FHIR R4 http.html#update, #vread). A batch either lands whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, literal, select, text, update
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from imagebank.ehr import identity
from imagebank.ehr.facts import ResourceFacts, extract
from imagebank.storage.database import read_only
from imagebank.storage.schema import ehr_resource_codes, ehr_resource_history, ehr_resources


@dataclass(frozen=True)
class Written:
    resource_type: str
    resource_id: str
    version_id: int
    action: str  # created | updated | unchanged
    last_updated: dt.datetime


@dataclass(frozen=True)
class Stored:
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: dt.datetime
    record_id: int | None
    resource: dict[str, Any]


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


#: Advisory lock key for patient-identity work on PostgreSQL (any constant shared by all processes).
IDENTITY_LOCK = 0x1B_E4_12


class CopyRaced(Exception):
    """COPY hit a unique or deadlock conflict with a concurrent writer: the batch is retried."""


class CopyRefused(Exception):
    """COPY refused a value (too long, NUL...). The message carries the SQLSTATE only: PostgreSQL's own
    message quotes the offending value, which may be patient data and must not reach a log."""


def _copy(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``COPY table FROM STDIN`` inside the connection's current transaction (PostgreSQL, psycopg 3)."""
    import psycopg

    columns = list(rows[0])
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
    except psycopg.Error as exc:
        state = getattr(exc, "sqlstate", None) or ""
        if state.startswith("23") or state in ("40P01", "40001"):
            raise CopyRaced(f"COPY into {table.name}: SQLSTATE {state}") from None
        raise CopyRefused(f"COPY into {table.name} refused a value: SQLSTATE {state}") from None


def with_meta(resource: dict[str, Any], version: int, at: dt.datetime) -> dict[str, Any]:
    out = dict(resource)
    meta = dict(out.get("meta") or {})
    meta["versionId"], meta["lastUpdated"] = str(version), _iso(at)
    out["meta"] = meta
    return out


def _row_values(facts: ResourceFacts) -> dict[str, Any]:
    return {
        "status": facts.status, "effective_date": facts.effective_date, "effective_at": facts.effective_at,
        "effective_end": facts.effective_end, "code_system": facts.code_system, "code": facts.code,
        "label": facts.label, "value_num": facts.value_num, "value_unit": facts.value_unit,
        "value_text": facts.value_text, "accession_number": facts.accession_number,
        "study_instance_uid": facts.study_instance_uid, "encounter_id": facts.encounter_id,
        "content_hash": facts.content_hash,
    }


class EhrStore:
    def __init__(self, engine: Engine, issuer_systems: dict[str, str] | None = None) -> None:
        self.engine = engine
        if issuer_systems is not None:
            try:
                with engine.begin() as conn:
                    identity.sync_issuer_systems(conn, issuer_systems)
            except IntegrityError:
                pass  # another process synced the same mapping at the same moment

    # ------------------------------------------------------------------ writes

    def write(self, resources: Sequence[dict[str, Any]], *, also: Callable[[Connection], None] | None = None,
              facts: Sequence[ResourceFacts] | None = None, durable: bool = True) -> list[Written]:
        """Store validated resources in one transaction (retried if a concurrent writer raced us).

        ``also`` runs inside the same transaction (the ingest journal: progress and data commit together).
        ``facts``: :func:`~imagebank.ehr.facts.extract` of each resource, when a worker process already did it.
        ``durable=False`` (resumable bulk loads) lets PostgreSQL acknowledge the commit before its WAL
        reaches the disk: a crash may lose the last batches, together with their journal entries, so
        the next run loads them again; the database stays consistent either way.
        """
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        self._lock_identity(conn, any(r.get("resourceType") == "Patient" for r in resources))
                        if not durable:
                            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    written = self._write(conn, resources, facts)
                    if also is not None:
                        also(conn)
                    return written
            except (IntegrityError, OperationalError, CopyRaced):
                if attempt == 4:
                    raise
        raise RuntimeError("unreachable")

    @staticmethod
    def _lock_identity(conn: Connection, merging: bool) -> None:
        """PostgreSQL: batches with Patients (which may merge records) run alone; the others share.

        Without it, a batch could file an Observation under record R2 while a concurrent batch merges R2
        into R1 and re-points R2's rows: the Observation, not yet visible to that UPDATE, would stay on
        the merged-away record. (SQLite runs one writer at a time anyway.)
        """
        lock = "pg_advisory_xact_lock" if merging else "pg_advisory_xact_lock_shared"
        conn.exec_driver_sql(f"SELECT {lock}({IDENTITY_LOCK})")

    def write_each(self, resources: Sequence[dict[str, Any]], facts: Sequence[ResourceFacts] | None = None, *,
                   also: Callable[[Connection], None] | None = None,
                   durable: bool = True) -> list[Written | Exception]:
        """Like :meth:`write`, but a batch the database refuses (a value it cannot store) is retried one
        resource at a time, so only the offending resources fail; ``also`` commits with the last one."""
        try:
            return list(self.write(resources, also=also, facts=facts, durable=durable))
        except (DataError, CopyRefused) as exc:
            if len(resources) <= 1:
                if also is not None:
                    self.write([], also=also)
                return [exc] * len(resources)
        out: list[Written | Exception] = []
        for i, resource in enumerate(resources):
            try:
                out += self.write([resource], facts=[facts[i]] if facts is not None else None, durable=durable)
            except (DataError, CopyRefused) as exc:
                out.append(exc)
        if also is not None:
            self.write([], also=also)
        return out

    def _write(self, conn: Connection, resources: Sequence[dict[str, Any]],
               facts: Sequence[ResourceFacts] | None) -> list[Written]:
        all_facts = list(facts) if facts is not None else [extract(r) for r in resources]
        results: list[Written] = []
        start = 0
        keys: set[tuple[str, str]] = set()
        for i, resource in enumerate(resources):  # the same resource twice in one batch: the second is an update
            key = (resource["resourceType"], resource["id"])
            if key in keys:
                results += self._write_unique(conn, list(resources[start:i]), all_facts[start:i])
                start, keys = i, set()
            keys.add(key)
        return results + self._write_unique(conn, list(resources[start:]), all_facts[start:])

    def _write_unique(self, conn: Connection, resources: list[dict[str, Any]],
                      facts: list[ResourceFacts]) -> list[Written]:
        if not resources:
            return []
        now = dt.datetime.now(dt.UTC)
        existing = self._existing(conn, [(f.resource_type, f.resource_id) for f in facts])
        records = self._records(conn, resources, facts)

        results: list[Written] = []
        new_rows: list[dict[str, Any]] = []
        new_codes: list[list[tuple[str, str, str]]] = []
        changed: list[dict[str, Any]] = []
        for resource, fact, record in zip(resources, facts, records, strict=True):
            old = existing.get((fact.resource_type, fact.resource_id))
            if old is not None and old[2] == fact.content_hash:
                if record is not None and old[3] != record:  # same content, but identity moved on
                    conn.execute(update(ehr_resources).where(ehr_resources.c.id == old[0]).values(record_id=record))
                results.append(Written(fact.resource_type, fact.resource_id, old[1], "unchanged", _aware(old[4])))
                continue
            version = 1 if old is None else old[1] + 1
            row = {**_row_values(fact), "version_id": version, "last_updated": now, "record_id": record,
                   "resource_json": json.dumps(with_meta(resource, version, now), ensure_ascii=False,
                                               separators=(",", ":"))}
            if old is None:
                new_rows.append({**row, "resource_type": fact.resource_type, "resource_id": fact.resource_id})
                new_codes.append(fact.codes)
                results.append(Written(fact.resource_type, fact.resource_id, 1, "created", now))
            else:
                changed.append({**row, "pk": old[0], "codes": fact.codes})
                results.append(Written(fact.resource_type, fact.resource_id, version, "updated", now))

        code_rows: list[dict[str, Any]] = []
        if new_rows:
            inserted = self._insert_resources(conn, new_rows)
            for pk, codes in zip(inserted, new_codes, strict=True):
                code_rows += [{"resource_pk": pk, "role": r, "system": s, "code": c} for r, s, c in codes]
        if changed:
            pks = [c["pk"] for c in changed]
            conn.execute(insert(ehr_resource_history).from_select(
                ["resource_type", "resource_id", "version_id", "last_updated", "resource_json"],
                select(ehr_resources.c.resource_type, ehr_resources.c.resource_id, ehr_resources.c.version_id,
                       ehr_resources.c.last_updated, ehr_resources.c.resource_json)
                .where(ehr_resources.c.id.in_(pks))))
            conn.execute(delete(ehr_resource_codes).where(ehr_resource_codes.c.resource_pk.in_(pks)))
            columns = [k for k in changed[0] if k not in ("pk", "codes")]
            conn.execute(update(ehr_resources).where(ehr_resources.c.id == bindparam("b_pk"))
                         .values({k: bindparam(f"b_{k}") for k in columns}),
                         [{f"b_{k}": v for k, v in c.items() if k != "codes"} for c in changed])
            for c in changed:
                code_rows += [{"resource_pk": c["pk"], "role": r, "system": s, "code": v} for r, s, v in c["codes"]]
        if code_rows:
            if conn.dialect.name == "postgresql":
                _copy(conn, ehr_resource_codes, code_rows)
            else:
                conn.execute(insert(ehr_resource_codes), code_rows)
        return results

    @staticmethod
    def _insert_resources(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert rows, returning their ids in order. On PostgreSQL: ids drawn from the sequence, rows
        sent with COPY (several times faster than multi-row INSERT for bulk loads)."""
        if conn.dialect.name != "postgresql":
            return list(conn.execute(insert(ehr_resources).returning(ehr_resources.c.id, sort_by_parameter_order=True),
                                     rows).scalars().all())
        ids = list(conn.execute(text(
            "SELECT nextval(pg_get_serial_sequence('ehr_resources', 'id')) FROM generate_series(1, :n)"),
            {"n": len(rows)}).scalars().all())
        _copy(conn, ehr_resources, [{**row, "id": pk} for row, pk in zip(rows, ids, strict=True)])
        return ids

    @staticmethod
    def _existing(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[Any, ...]]:
        by_type: dict[str, list[str]] = {}
        for rtype, rid in keys:
            by_type.setdefault(rtype, []).append(rid)
        found: dict[tuple[str, str], tuple[Any, ...]] = {}
        for rtype, ids in by_type.items():
            for start in range(0, len(ids), 500):
                rows = conn.execute(select(
                    ehr_resources.c.id, ehr_resources.c.resource_id, ehr_resources.c.version_id,
                    ehr_resources.c.content_hash, ehr_resources.c.record_id, ehr_resources.c.last_updated,
                ).where(ehr_resources.c.resource_type == rtype, ehr_resources.c.resource_id.in_(ids[start:start + 500])))
                for r in rows:
                    found[(rtype, r.resource_id)] = (r.id, r.version_id, r.content_hash, r.record_id, r.last_updated)
        return found

    @staticmethod
    def _records(conn: Connection, resources: list[dict[str, Any]], facts: list[ResourceFacts]) -> list[int | None]:
        """The patient record of each resource (Patients first, so their merges are seen by the rest)."""
        out: list[int | None] = [None] * len(resources)
        for i, resource in enumerate(resources):
            if facts[i].resource_type == "Patient":
                out[i] = identity.register_patient(conn, resource)
        for i, record in enumerate(out):  # a later Patient of the batch may have merged an earlier one away
            if record is not None:
                out[i] = identity.current_record(conn, record)
        by_id = identity.records_for_patient_ids(
            conn, [f.patient_ref for f in facts if f.patient_ref and f.resource_type != "Patient"])
        by_identifier = identity.records_for_identifiers(
            conn, [f.patient_identifier for f in facts if f.patient_identifier])
        for i, fact in enumerate(facts):
            if fact.resource_type == "Patient":
                continue
            if fact.patient_ref:
                out[i] = by_id[fact.patient_ref]
            elif fact.patient_identifier:
                out[i] = by_identifier[fact.patient_identifier]
        return out

    # ------------------------------------------------------------------ reads

    def read(self, resource_type: str, resource_id: str, version: int | None = None) -> Stored | None:
        with read_only(self.engine) as conn:
            row = conn.execute(select(ehr_resources).where(ehr_resources.c.resource_type == resource_type,
                                                           ehr_resources.c.resource_id == resource_id)).first()
            if row is None:
                return None
            if version is None or version == row.version_id:
                return Stored(row.resource_type, row.resource_id, row.version_id, _aware(row.last_updated),
                              row.record_id, json.loads(row.resource_json))
            old = conn.execute(select(ehr_resource_history).where(
                ehr_resource_history.c.resource_type == resource_type,
                ehr_resource_history.c.resource_id == resource_id,
                ehr_resource_history.c.version_id == version)).first()
            if old is None:
                return None
            return Stored(resource_type, resource_id, version, _aware(old.last_updated), row.record_id,
                          json.loads(old.resource_json))

    def history(self, resource_type: str, resource_id: str) -> list[Stored]:
        """All versions, newest first."""
        current = self.read(resource_type, resource_id)
        if current is None:
            return []
        with read_only(self.engine) as conn:
            rows = conn.execute(select(ehr_resource_history).where(
                ehr_resource_history.c.resource_type == resource_type,
                ehr_resource_history.c.resource_id == resource_id).order_by(ehr_resource_history.c.version_id.desc()))
            older = [Stored(resource_type, resource_id, r.version_id, _aware(r.last_updated), current.record_id,
                            json.loads(r.resource_json)) for r in rows]
        return [current, *older]

    def counts(self) -> dict[str, int]:
        from sqlalchemy import func

        with read_only(self.engine) as conn:
            rows = conn.execute(select(ehr_resources.c.resource_type, func.count())
                                .group_by(ehr_resources.c.resource_type))
            return {r[0]: int(r[1]) for r in rows}

    def resources_of_record(self, record_id: int, types: Iterable[str] | None = None) -> list[Any]:
        """Index rows (not JSON) of a record's resources, in time order."""
        query = select(ehr_resources.c.id, ehr_resources.c.resource_type, ehr_resources.c.resource_id,
                       ehr_resources.c.status, ehr_resources.c.effective_date, ehr_resources.c.effective_at,
                       ehr_resources.c.effective_end, ehr_resources.c.code_system, ehr_resources.c.code,
                       ehr_resources.c.label, ehr_resources.c.value_num, ehr_resources.c.value_unit,
                       ehr_resources.c.value_text, ehr_resources.c.accession_number,
                       ehr_resources.c.study_instance_uid, ehr_resources.c.encounter_id,
                       literal(record_id).label("record")).where(ehr_resources.c.record_id == record_id)
        if types is not None:
            query = query.where(ehr_resources.c.resource_type.in_(list(types)))
        with read_only(self.engine) as conn:
            return list(conn.execute(query.order_by(ehr_resources.c.effective_date, ehr_resources.c.id)))
