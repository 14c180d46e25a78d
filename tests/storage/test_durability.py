"""A commit on the SQLite index is on disk when it returns (``synchronous=FULL``: the WAL is synced at
each commit), so a power cut never rolls back an instance whose C-STORE or STOW-RS success was answered.
The one exception is the audit record of each request, synced at the next checkpoint or durable commit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from imagebank.context import open_archive
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.storage.database import create_index_engine, upgrade

FULL, NORMAL = 2, 1  # what PRAGMA synchronous reads back


def _level(dbapi_conn: Any) -> int:
    return int(dbapi_conn.execute("PRAGMA synchronous").fetchone()[0])


def test_an_ingest_commit_syncs_the_log_before_it_returns(make_settings: Callable[..., Any],
                                                           make_instance: Callable[..., bytes]) -> None:
    archive = open_archive(make_settings())
    levels: list[int] = []
    event.listen(archive.index.engine, "commit",
                 lambda conn: levels.append(_level(conn.connection.dbapi_connection)))
    try:
        assert archive.ingest(make_instance(1)).accepted
        staged = [archive.stage(make_instance(n)) for n in (2, 3)]  # the STOW-RS path: one commit for a request
        assert all(r.accepted for r in archive.commit_staged(staged, origin="stow"))
    finally:
        archive.index.engine.dispose()
    assert levels and set(levels) == {FULL}


def test_the_audit_record_of_a_request_waits_for_the_checkpoint_and_the_next_writer_does_not(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    upgrade(engine)
    trail = AuditTrail(engine, b"k" * 32)
    trail.record(AuditEvent("110110", "R", user_name="reader", object_type="study", object_id="1.2.3"))
    connection = engine.raw_connection()  # the pool's only connection: the one the append used
    try:
        assert _level(connection.dbapi_connection) == NORMAL
    finally:
        connection.close()
    with engine.begin() as conn:  # drawn from the pool again, and put back at FULL before its BEGIN
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    engine.dispose()
