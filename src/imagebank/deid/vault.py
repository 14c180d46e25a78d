"""The linkage vault: project keys and the map from pseudonyms back to patients and studies.

DESIGN.md puts it apart from both zones: its own database (``[deid] vault_url``; by default
``DATA/vault/linkage.sqlite3``, a file that can live on another disk or server), written by the
de-identification job, read back only by the honest broker (``linkage:read``), every read audited --
refused reads too. The pseudonym functions are one-way HMACs (:mod:`.pseudonyms`), so without this
vault a research output cannot be traced back, even by someone holding the key.

The vault is a separate small database created with ``create_all`` rather than an Alembic history of the
index: it has three tables and its own lifecycle (an honest broker may keep it offline).
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, Text, create_engine, insert, select
from sqlalchemy.exc import IntegrityError

from imagebank.deid.pseudonyms import DEFAULT_MAX_SHIFT_DAYS, Pseudonymizer, new_key
from imagebank.errors import ConfigError, ImagebankError, NotFound
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.security.policy import Principal, decide
from imagebank.security.roles import Permission

metadata = MetaData()

projects = Table(
    "deid_projects", metadata,
    Column("name", String(64), primary_key=True),
    Column("key_b64", String(128), nullable=False),  # the HMAC key: whoever holds it can recompute pseudonyms
    Column("max_shift_days", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
)
subjects = Table(
    "vault_subjects", metadata,
    Column("project", String(64), primary_key=True),
    Column("pseudonym", String(32), primary_key=True),
    Column("subject_key", Text, nullable=False),  # "<issuer or system>|<patient id>"
    Column("date_shift_days", Integer, nullable=False),
    Column("first_seen", DateTime, nullable=False),
)
studies = Table(
    "vault_studies", metadata,
    Column("project", String(64), primary_key=True),
    Column("study_uid", String(64), primary_key=True),  # the research (output) Study Instance UID
    Column("source_study_uid", String(64), nullable=False),
    Column("pseudonym", String(32), nullable=False),
    Column("first_seen", DateTime, nullable=False),
)


class AccessDenied(ImagebankError):
    """The principal may not read the linkage vault (the refusal is audited)."""


@dataclass(frozen=True)
class Project:
    name: str
    key: bytes
    max_shift_days: int

    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.key, max_shift_days=self.max_shift_days)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class LinkageVault:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    @classmethod
    def open(cls, url: str) -> LinkageVault:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(create_engine(url))

    # -- projects (used by the de-identification job) ---------------------------------------------------
    def create_project(self, name: str, *, key: bytes | None = None,
                       max_shift_days: int = DEFAULT_MAX_SHIFT_DAYS) -> Project:
        """A new project with a fresh random key, or with ``key`` (to share pseudonyms with another site)."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"project name {name!r}: use 1-64 letters, digits, '-' or '_'")
        key = key or new_key()
        Pseudonymizer(key, max_shift_days=max_shift_days)  # validates both
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(projects).values(name=name, key_b64=base64.b64encode(key).decode(),
                                                     max_shift_days=max_shift_days, created_at=_now()))
        except IntegrityError:
            raise ConfigError(f"de-identification project {name!r} already exists") from None
        return Project(name, key, max_shift_days)

    def project(self, name: str) -> Project:
        with self.engine.connect() as conn:
            row = conn.execute(select(projects).where(projects.c.name == name)).first()
        if row is None:
            raise NotFound(f"no de-identification project {name!r}: create it with "
                           f"'imagebank deid project create {name}'")
        return Project(row.name, base64.b64decode(row.key_b64), row.max_shift_days)

    def list_projects(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r.name for r in conn.execute(select(projects.c.name).order_by(projects.c.name))]

    # -- writes (de-identification job) ----------------------------------------------------------------
    def record(self, project: str, *, pseudonym: str, subject_key: str, date_shift_days: int,
               study_uid: str | None = None, source_study_uid: str | None = None) -> None:
        """Remember who a pseudonym (and a research study) is; idempotent."""
        self.record_many(project, [(pseudonym, subject_key, date_shift_days, study_uid, source_study_uid)])

    def record_many(self, project: str,
                    entries: list[tuple[str, str, int, str | None, str | None]]) -> None:
        """Several (pseudonym, subject key, shift, research study UID, source study UID) in one transaction;
        what the vault already has is left alone."""
        now = _now()
        people = {e[0]: e for e in entries}
        study_rows = {e[3]: e for e in entries if e[3] and e[4]}
        with self.engine.begin() as conn:
            have = {r[0] for r in conn.execute(select(subjects.c.pseudonym).where(
                subjects.c.project == project, subjects.c.pseudonym.in_(list(people))))}
            new_people = [dict(project=project, pseudonym=p, subject_key=e[1], date_shift_days=e[2], first_seen=now)
                          for p, e in people.items() if p not in have]
            if new_people:
                conn.execute(insert(subjects), new_people)
            if study_rows:
                have = {r[0] for r in conn.execute(select(studies.c.study_uid).where(
                    studies.c.project == project, studies.c.study_uid.in_(list(study_rows))))}
                new_studies = [dict(project=project, study_uid=uid, source_study_uid=e[4], pseudonym=e[0],
                                    first_seen=now) for uid, e in study_rows.items() if uid not in have]
                if new_studies:
                    conn.execute(insert(studies), new_studies)

    # -- reads (honest broker only, audited) -------------------------------------------------------------
    def reidentify(self, project: str, pseudonym_or_study: str, *, principal: Principal, reason: str,
                   trail: AuditTrail) -> dict[str, Any]:
        """Who is behind a pseudonym or research Study UID. Requires ``linkage:read`` and a reason."""
        decision = decide(principal, Permission.LINKAGE_READ)
        detail = {"project": project, "reason": reason, "decision": decision.reason}
        event = dict(event_id="110110", event_action="R", user_name=principal.name,
                     user_roles=",".join(sorted(r.value for r in principal.roles)),
                     network_address=principal.address, object_type="linkage-vault",
                     object_id=pseudonym_or_study)
        if not decision.allowed or not reason.strip():
            trail.record(AuditEvent(outcome=8, detail=detail, **event))  # type: ignore[arg-type]
            raise AccessDenied("re-identification needs the honest-broker role (linkage:read) and a reason"
                               if decision.allowed is False else "re-identification needs a reason")
        with self.engine.connect() as conn:
            subject = conn.execute(select(subjects).where(
                subjects.c.project == project, subjects.c.pseudonym == pseudonym_or_study)).first()
            study = None
            if subject is None:
                study = conn.execute(select(studies).where(
                    studies.c.project == project, studies.c.study_uid == pseudonym_or_study)).first()
                if study is not None:
                    subject = conn.execute(select(subjects).where(
                        subjects.c.project == project, subjects.c.pseudonym == study.pseudonym)).first()
        if subject is None:
            trail.record(AuditEvent(outcome=4, detail={**detail, "found": False}, **event))  # type: ignore[arg-type]
            raise NotFound(f"{pseudonym_or_study!r} is not a pseudonym or research study of project {project!r}")
        issuer, _, patient_id = subject.subject_key.partition("|")
        result: dict[str, Any] = {"project": project, "pseudonym": subject.pseudonym, "patient_id": patient_id,
                                  "issuer": issuer, "date_shift_days": subject.date_shift_days}
        if study is not None:
            result["study_uid"] = study.study_uid
            result["source_study_uid"] = study.source_study_uid
        trail.record(AuditEvent(outcome=0, patient_id=subject.subject_key,
                                detail={**detail, "found": True}, **event))  # type: ignore[arg-type]
        return result

    def export_key(self, project: str, *, principal: Principal, trail: AuditTrail) -> str:
        """The project key (base64) for another site that must produce the same pseudonyms; audited."""
        decision = decide(principal, Permission.LINKAGE_READ)
        trail.record(AuditEvent("110106", "R", 0 if decision.allowed else 8, user_name=principal.name,
                                object_type="deid-project-key", object_id=project,
                                detail={"decision": decision.reason}))
        if not decision.allowed:
            raise AccessDenied("exporting a project key needs the honest-broker role (linkage:read)")
        return base64.b64encode(self.project(project).key).decode()

    def counts(self, project: str) -> dict[str, int]:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            n_subjects = conn.execute(select(func.count()).select_from(subjects).where(
                subjects.c.project == project)).scalar_one()
            n_studies = conn.execute(select(func.count()).select_from(studies).where(
                studies.c.project == project)).scalar_one()
        return {"subjects": n_subjects, "studies": n_studies}
