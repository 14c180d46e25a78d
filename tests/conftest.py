"""Shared fixtures: real SQLite and PostgreSQL indexes, real S3 API (moto server) on loopback,
and small DICOM instances built by the synthetic hospital.

PostgreSQL tests need the server on 127.0.0.1:5432 (trust auth, user postgres). Locally they are
skipped when it is unreachable; under ``CI=true`` they fail instead, so CI can never go green
without having run them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from imagebank.archive import Archive
from imagebank.config import Settings, load_settings
from imagebank.context import open_archive

PG_ADMIN_URL = os.environ.get("IMAGEBANK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_file(name: str) -> Path:
    return PYDICOM_FILES / name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ PostgreSQL

def _pg_unavailable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect
        return f"PostgreSQL at {PG_ADMIN_URL} unreachable: {exc}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _pg_unavailable()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI requires PostgreSQL: {problem}")
        pytest.skip(problem)
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"imagebank_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


# ------------------------------------------------------------------ archive

@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(data_dir: Path | None = None, **env: str) -> Settings:
        environ = {f"IMAGEBANK_{k.upper()}": v for k, v in env.items()}
        return load_settings(data_dir or tmp_path / "data", environ=environ)
    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database__url=database_url)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    arch = open_archive(settings)
    yield arch
    arch.index.engine.dispose()


@pytest.fixture
def archive_with_policy(make_settings: Callable[..., Settings], database_url: str) -> Callable[[str], Archive]:
    def factory(policy: str) -> Archive:
        return open_archive(make_settings(database__url=database_url, ingest__duplicate_policy=policy))
    return factory


# ------------------------------------------------------------------ S3 (moto)

@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API on loopback (moto's standalone server), for the S3 blob adapter."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


# ------------------------------------------------------------------ DICOM builders

@pytest.fixture
def make_instance() -> Callable[..., bytes]:
    """PS3.10 bytes of a small synthetic CT instance, with attributes overridden or deleted.

    ``make_instance(number=2, PatientID=None, StudyInstanceUID="1.2.3")``: ``None`` deletes the attribute.
    """
    from imagebank.synth.dicom_writer import build_dataset, encode
    from imagebank.synth.plan import plan_patient

    patient, study = next((p, s) for i in range(100) for p in [plan_patient(7, i)] for s in p.studies
                          if s.protocol.modality in ("CT", "MR") and len(s.series) >= 2)

    def factory(number: int = 1, series_index: int = 0, pixels: bool = False, **overrides: Any) -> bytes:
        ds = build_dataset(patient, study, study.series[series_index], number, metadata_only=not pixels)
        for keyword, value in overrides.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return encode(ds)
    return factory


# ------------------------------------------------------------------ live HTTP server

class LiveServer:
    """An ASGI app served by uvicorn in a thread on a loopback port (real HTTP, real sockets)."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def secured(settings: Settings) -> Iterator[Any]:
    """(archive, accounts, audit trail) over the test database."""
    from imagebank.context import open_security

    arch = open_archive(settings)
    accounts, audit = open_security(settings, arch.index.engine)
    yield arch, accounts, audit
    arch.index.engine.dispose()


@pytest.fixture
def live_app(settings: Settings, secured: Any) -> Iterator[tuple[LiveServer, Any]]:
    """The whole HTTP app on loopback; yields (server, accounts)."""
    from imagebank.web.app import create_app

    arch, accounts, audit = secured
    app = create_app(settings, arch, accounts, audit)
    with LiveServer(app) as server:
        yield server, accounts


def wait_until_serving(url: str, proc: Any = None, *, verify: Any = True, timeout: float = 90.0) -> Any:
    """GET ``url`` until something answers (a server in a subprocess starting up); returns the response.

    Fails at once if ``proc`` died, and after ``timeout`` seconds (generous: CI machines can be loaded).
    """
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, verify=verify)
        except httpx.TransportError:
            if proc is not None and proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"server exited with {proc.returncode}: {output!r}") from None
            assert time.monotonic() < deadline, f"nothing answered at {url}"
            time.sleep(0.2)
