"""Reads never queue behind a writer on SQLite (a WAL snapshot instead of BEGIN IMMEDIATE)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import select, text

from imagebank.storage.database import create_index_engine, read_only


def test_a_read_proceeds_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with engine.begin() as conn:  # holds SQLite's write lock until released
            conn.execute(text("INSERT INTO t VALUES (2)"))
            writing.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        started = time.monotonic()
        with read_only(engine) as conn:
            values = conn.execute(select(text("x")).select_from(text("t"))).scalars().all()
        assert time.monotonic() - started < 2  # a locking read would wait for the writer (60 s timeout)
        assert values == [1]  # the committed snapshot, not the uncommitted row
    finally:
        release.set()
        thread.join()
