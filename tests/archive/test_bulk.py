"""Bulk ingest of folders, zip files and DICOMDIRs: parallel, resumable, with a truthful summary."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from imagebank.archive import Archive
from imagebank.archive.bulk import bulk_ingest
from imagebank.archive.consistency import check_archive
from imagebank.archive.sources import iter_source, job_key_for
from imagebank.config import Settings
from imagebank.synth.hospital import HospitalSpec, write_folder
from tests.conftest import PYDICOM_FILES


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, int]:
    root = tmp_path / "incoming"
    n = write_folder(HospitalSpec(seed=3, patients=3, metadata_only=True, max_instances_per_series=3), root)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: ignored
    (root / "notes.txt").write_text("not an image")  # visible non-DICOM: rejected with a reason
    return root, n


def _run(archive: Archive, settings: Settings, path: Path, workers: int, resume: bool = True):  # type: ignore[no-untyped-def]
    items = list(iter_source(path))
    return bulk_ingest(archive, settings, items, job_key=job_key_for(path), workers=workers,
                       resume=resume, total=len(items), progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_folder_ingest_then_rerun_resumes(archive: Archive, settings: Settings, corpus: tuple[Path, int],
                                          workers: int) -> None:
    root, n = corpus
    summary = _run(archive, settings, root, workers)
    assert summary.counts["stored"] == n
    assert summary.counts["rejected"] == 1
    assert any("not a DICOM file" in reason for reason in summary.reasons)
    assert "notes.txt" in summary.render()
    assert archive.index.stats()["instances"] == n

    again = _run(archive, settings, root, workers)
    assert again.counts["skipped"] == n + 1 and again.processed == 0

    forced = _run(archive, settings, root, workers, resume=False)
    assert forced.counts["duplicate"] == n and forced.counts["stored"] == 0
    assert check_archive(archive).ok


def test_changed_file_is_ingested_again_on_rerun(archive: Archive, settings: Settings,
                                                 corpus: tuple[Path, int]) -> None:
    root, n = corpus
    _run(archive, settings, root, 1)
    (root / "notes.txt").write_text("still not an image, but changed")
    again = _run(archive, settings, root, 1)
    assert again.counts["rejected"] == 1 and again.counts["skipped"] == n


def test_zip_ingest(archive: Archive, settings: Settings, corpus: tuple[Path, int], tmp_path: Path) -> None:
    root, n = corpus
    zpath = tmp_path / "export.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(root.rglob("*.dcm")):
            z.write(f, f.relative_to(root))
    summary = _run(archive, settings, zpath, 2)
    assert summary.counts["stored"] == n and summary.counts["rejected"] == 0


def test_dicomdir_ingest_reads_the_referenced_files(archive: Archive, settings: Settings, tmp_path: Path) -> None:
    media = tmp_path / "cd"
    shutil.copytree(PYDICOM_FILES / "dicomdirtests", media)
    referenced = list(iter_source(media / "DICOMDIR"))
    assert len(referenced) == 31
    summary = _run(archive, settings, media / "DICOMDIR", 2)
    assert summary.counts["stored"] == 31, summary.render()
    assert archive.index.stats()["patients"] >= 2


def test_missing_source_is_reported(tmp_path: Path) -> None:
    from imagebank.errors import ImagebankError

    with pytest.raises(ImagebankError, match="no such file"):
        iter_source(tmp_path / "nope")


def test_conflicts_refused_under_reject_are_retried_when_the_policy_changes(
        make_settings, database_url: str, corpus: tuple[Path, int], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from imagebank.context import open_archive

    root, n = corpus
    first = next(iter(sorted(root.rglob("*.dcm"))))
    original = first.read_bytes()
    strict = make_settings(database__url=database_url)
    archive = open_archive(strict)
    _run(archive, strict, root, 1)
    import pydicom

    ds = pydicom.dcmread(first)
    ds.SeriesDescription = "corrected"
    ds.save_as(first)
    assert first.read_bytes() != original
    refused = _run(archive, strict, root, 1)
    assert refused.counts["rejected"] == 1 and "already stored with different content" in refused.render()
    lenient = make_settings(database__url=database_url, ingest__duplicate_policy="replace")
    replaced = _run(open_archive(lenient), lenient, root, 1)
    assert replaced.counts["replaced"] == 1
