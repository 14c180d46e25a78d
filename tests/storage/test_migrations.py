"""The Alembic history builds exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from imagebank.storage import database
from imagebank.storage.schema import metadata


def _alembic_current(engine) -> str | None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_migrations_match_the_declared_schema(database_url: str) -> None:
    engine = database.create_index_engine(database_url)
    assert database.is_empty(engine)
    assert database.current_revision(engine) is None
    database.upgrade(engine, "0004")
    assert database.current_revision(engine) == _alembic_current(engine) == "0004"
    database.upgrade(engine)
    database.upgrade(engine)  # idempotent
    # The constant the start-up check compares with (no Alembic import) is Alembic's own head.
    assert database.current_revision(engine) == _alembic_current(engine) == database.head_revision() \
        == database.HEAD_REVISION
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = database.create_index_engine(f"sqlite:///{tmp_path / 'i.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_new_archive_digests_with_blake3_and_one_with_instances_keeps_sha256_across_the_upgrade(
        database_url: str, make_settings, make_instance) -> None:  # type: ignore[no-untyped-def]
    """Revision 0006 records the content digest algorithm: BLAKE3 for an archive without instances, SHA-256 for
    one that holds instances already, so an identical re-send after the upgrade is still a duplicate; and it
    renames the digest columns without losing a value, both ways."""
    import hashlib

    import blake3
    from sqlalchemy import select, update

    from imagebank.archive import Outcome
    from imagebank.context import open_archive
    from imagebank.storage.schema import archive_settings, instances

    settings = make_settings(database__url=database_url)
    archive = open_archive(settings)
    assert archive.index.content_digest() == "blake3"
    first = make_instance(1)
    stored = archive.ingest(first)
    assert stored.outcome is Outcome.STORED
    assert archive.index.blob_key_for(str(stored.sop_instance_uid))[1] == \
        blake3.blake3(first).hexdigest()  # type: ignore[index]
    engine = archive.index.engine
    with engine.begin() as conn:  # what revision 0005 held: SHA-256 digests
        conn.execute(update(instances).values(content_digest=hashlib.sha256(first).hexdigest()))
        conn.execute(update(archive_settings).values(value="sha256"))
    _downgrade(engine, "0005")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT sha256 FROM instances").scalar() == hashlib.sha256(first).hexdigest()
    database.upgrade(engine)

    archive = open_archive(settings, engine=engine)
    assert archive.index.content_digest() == "sha256"
    assert archive.ingest(first).outcome is Outcome.DUPLICATE
    second = make_instance(2)
    assert archive.ingest(second).outcome is Outcome.STORED
    with engine.connect() as conn:
        digests = set(conn.execute(select(instances.c.content_digest)).scalars())
    assert digests == {hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()}
    engine.dispose()


def test_downgrading_an_archive_with_blake3_digests_below_0006_is_refused(database_url: str) -> None:
    import pytest

    engine = database.create_index_engine(database_url)
    database.upgrade(engine)
    with pytest.raises(RuntimeError, match="blake3, not SHA-256"):
        _downgrade(engine, "0005")
    assert database.current_revision(engine) == database.HEAD_REVISION
    engine.dispose()


def _downgrade(engine, revision: str) -> None:  # type: ignore[no-untyped-def]
    from alembic import command

    command.downgrade(database._alembic_config(engine), revision)
