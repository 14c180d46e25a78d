"""A crash at any moment leaves a consistent archive: no half-indexed instance, no counted orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from imagebank.archive import Archive, Outcome
from imagebank.archive.consistency import check_archive
from imagebank.config import Settings
from imagebank.context import open_archive
from imagebank.storage.schema import instances
from imagebank.synth.hospital import HospitalSpec, write_folder


def test_failure_between_blob_write_and_commit_leaves_only_an_uncounted_orphan(
        archive: Archive, make_instance: Callable[..., bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_a: object, **_k: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(archive.index, "commit", crash)
    with pytest.raises(RuntimeError):
        archive.ingest(make_instance(1))
    monkeypatch.undo()
    report = check_archive(archive)
    assert report.ok and report.instances == 0 and len(report.orphan_blobs) == 1
    assert archive.index.stats()["instances"] == 0
    repaired = check_archive(archive, repair=True, grace_seconds=0)
    assert repaired.removed_orphans == 1 and list(archive.blobs.keys()) == []
    assert archive.ingest(make_instance(1)).outcome is Outcome.STORED  # and the retry just works


def test_a_batch_is_durable_before_its_commit_and_a_failed_commit_leaves_only_orphans(
        archive: Archive, make_instance: Callable[..., bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    batch = archive.blobs.batch()
    staged = [archive.stage(make_instance(n), origin="stow", blobs=batch) for n in (1, 2)]
    assert list(archive.blobs.keys()) == []  # written, not yet published
    published: list[str] = []

    def crash(*_a: object, **_k: object) -> None:
        published.extend(archive.blobs.keys())  # what the index would refer to is already in place
        raise RuntimeError("power cut")

    monkeypatch.setattr(archive.index, "commit", crash)
    with pytest.raises(RuntimeError):
        archive.commit_staged(staged, origin="stow", blobs=batch)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert len(published) == 2
    report = check_archive(archive)
    assert report.ok and report.instances == 0 and len(report.orphan_blobs) == 2


def _count(url: str) -> int:
    engine = create_engine(url.replace("postgresql+psycopg", "postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())
    except Exception:
        return 0
    finally:
        engine.dispose()


@pytest.mark.slow
def test_kill_9_mid_ingest_then_resume(settings: Settings, database_url: str, tmp_path: Path) -> None:
    source = tmp_path / "incoming"
    total = write_folder(HospitalSpec(seed=11, patients=20, metadata_only=True, max_instances_per_series=16), source)
    env = {**os.environ, "IMAGEBANK_DATABASE__URL": database_url}
    cmd = [sys.executable, "-m", "imagebank.cli", "--data", str(settings.data_dir), "ingest", str(source),
           "--workers", "2", "--no-progress"]
    open_archive(settings).index.engine.dispose()  # create the schema before racing against it
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while _count(database_url) < total // 4:
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes, mid-flight
    proc.wait()
    partial = _count(database_url)
    assert 0 < partial < total

    archive = open_archive(settings)
    report = check_archive(archive)
    assert report.ok, report.render()  # every indexed instance has its bytes; every count is right
    assert report.instances == partial

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert "skipped (already ingested)" in done.stdout, done.stdout + done.stderr
    assert _count(database_url) == total
    final = check_archive(archive, repair=True, grace_seconds=0)
    assert final.ok and final.instances == total
    assert check_archive(archive).orphan_blobs == []
    archive.index.engine.dispose()


def test_parallel_writers_on_one_study_lose_nothing(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    payloads = [make_instance(n, series_index=n % 2) for n in range(1, 41)]
    errors: list[BaseException] = []

    def worker(chunk: list[bytes]) -> None:
        try:
            for data in chunk:
                assert archive.ingest(data).outcome is Outcome.STORED
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(payloads[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = archive.index.stats()
    assert (stats["patients"], stats["studies"], stats["series"], stats["instances"]) == (1, 1, 2, 40)
    assert check_archive(archive).ok
    with archive.index.engine.connect() as conn:
        assert conn.execute(text("select number_of_study_related_instances from studies")).scalar_one() == 40


def test_concurrent_replace_and_store_in_one_series_lose_nothing(
        archive_with_policy: Callable[[str], Archive], make_instance: Callable[..., bytes]) -> None:
    archive = archive_with_policy("replace")
    archive.ingest(make_instance(1))
    versions = [make_instance(1, SeriesDescription=f"v{i}") for i in range(12)]
    newcomers = [make_instance(n) for n in range(2, 14)]
    errors: list[BaseException] = []

    def run(payloads: list[bytes]) -> None:
        try:
            for data in payloads:
                assert archive.ingest(data).accepted
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(versions,)), threading.Thread(target=run, args=(newcomers,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert archive.index.stats()["instances"] == 13
    assert check_archive(archive).ok


def test_concurrent_series_of_different_modalities_all_reach_modalities_in_study(
        archive: Archive, make_instance: Callable[..., bytes]) -> None:
    modalities = ["CT", "MR", "PT", "SR", "KO", "SEG"]
    payloads = [make_instance(n, SeriesInstanceUID=f"1.2.826.0.1.3680043.2.1125.7.{n}", Modality=m)
                for n, m in enumerate(modalities, start=1)]
    threads = [threading.Thread(target=archive.ingest, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with archive.index.engine.connect() as conn:
        stored = conn.execute(text("select modalities_in_study from studies")).scalar_one()
    assert stored.split("\\") == sorted(modalities)


def test_over_long_and_nul_values_are_fitted_not_fatal(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    first = make_instance(1, AccessionNumber="A" * 40, StudyDescription="head\x00scan")
    second = make_instance(2)
    results = [archive.ingest(first), archive.ingest(second)]
    assert all(r.outcome is Outcome.STORED for r in results), [r.message for r in results]
    with archive.index.engine.connect() as conn:
        accession, description = conn.execute(text("select accession_number, study_description from studies")).one()
    assert accession == "A" * 16 and "\x00" not in description


def test_a_refused_replacement_is_not_logged_as_replaced(
        archive_with_policy: Callable[[str], Archive], make_instance: Callable[..., bytes]) -> None:
    archive = archive_with_policy("replace")
    archive.ingest(make_instance(1))
    moved = archive.ingest(make_instance(1, StudyInstanceUID="1.2.826.0.1.3680043.2.1125.55"))
    assert moved.reason == "hierarchy-mismatch"
    assert archive.index.stats()["conflicts"] == {}


def test_one_repair_pass_fixes_counts_at_every_level(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    for n in (1, 2, 3):
        archive.ingest(make_instance(n))
    with archive.index.engine.begin() as conn:
        conn.execute(text("update series set number_of_series_related_instances = 7"))
        conn.execute(text("update studies set number_of_study_related_instances = 9"))
    assert len(check_archive(archive).count_mismatches) == 2
    check_archive(archive, repair=True)
    report = check_archive(archive)
    assert report.ok and report.count_mismatches == []
