"""Open the archive a :class:`~imagebank.config.Settings` describes: the one factory of adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from imagebank.archive.pipeline import Archive
from imagebank.config import Settings
from imagebank.errors import ConfigError
from imagebank.security.accounts import Accounts, LockoutPolicy
from imagebank.security.audit import AuditTrail, load_or_create_key
from imagebank.storage import database
from imagebank.storage.blobs import BlobStore, open_blob_store
from imagebank.storage.index import MetadataIndex

if TYPE_CHECKING:
    from imagebank.ehr.store import EhrStore


def open_engine(settings: Settings, *, upgrade: bool | None = None) -> Engine:
    """The index engine, migrated to the current schema when allowed (see ``database.auto_upgrade``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = database.create_index_engine(settings.database_url, pool_size=settings.database.pool_size)
    should_upgrade = settings.database.auto_upgrade if upgrade is None else upgrade
    current = database.current_revision(engine)
    head = database.HEAD_REVISION
    if current != head:
        if not should_upgrade:
            raise ConfigError(
                f"the index schema is at revision {current or 'none'}, this version needs {head}: "
                "run 'imagebank db upgrade'")
        database.upgrade(engine)
    return engine


def open_blobs(settings: Settings) -> BlobStore:
    s = settings.storage
    return open_blob_store(
        settings.blob_url, fsync=s.fsync, direct_io=s.direct_io, s3_endpoint_url=s.s3_endpoint_url,
        s3_region=s.s3_region,
        s3_access_key_id=s.s3_access_key_id, s3_secret_access_key=s.s3_secret_access_key)


def open_archive(settings: Settings, *, engine: Engine | None = None) -> Archive:
    engine = engine or open_engine(settings)
    return Archive(MetadataIndex(engine), open_blobs(settings), settings.ingest)


def open_security(settings: Settings, engine: Engine) -> tuple[Accounts, AuditTrail]:
    """Accounts (users, sessions, tokens, lockout) and the audit trail over the index database."""
    import datetime as dt

    sec = settings.security
    accounts = Accounts(engine, LockoutPolicy(
        max_failures=sec.lockout_failures, window=dt.timedelta(minutes=sec.lockout_window_minutes),
        duration=dt.timedelta(minutes=sec.lockout_minutes)))
    accounts.SESSION_LIFETIME = dt.timedelta(hours=sec.session_hours)
    return accounts, AuditTrail(engine, load_or_create_key(settings.audit_key_path))


def open_ehr(settings: Settings, engine: Engine) -> EhrStore:
    """The EHR store over the index database, with the configured issuer -> identifier-system mapping."""
    from imagebank.ehr.store import EhrStore

    return EhrStore(engine, settings.ehr.issuer_systems)


def open_vault(settings: Settings) -> Any:
    """The linkage vault (its own database: project keys and pseudonym -> patient)."""
    from imagebank.deid.vault import LinkageVault

    return LinkageVault.open(settings.vault_url)


def deid_profile(settings: Settings, extra_options: tuple[str, ...] = (), *, basic: bool = False) -> Any:
    """The configured de-identification profile (``[deid] options``), or the Basic Profile + ``extra_options``."""
    from imagebank.deid.profile import profile_from_names

    options = list(extra_options) if basic else sorted(set(settings.deid.options) | set(extra_options))
    try:
        return profile_from_names("basic" if basic else "research", options, settings.deid.safe_private)
    except ValueError as exc:
        raise ConfigError(f"deid: {exc}") from None
