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
