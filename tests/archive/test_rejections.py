"""Every rejection reason of the ingest pipeline, and that a rejection leaves nothing behind."""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest

from imagebank.archive import Archive, Outcome
from tests.conftest import pydicom_file


def _assert_nothing_stored(archive: Archive) -> None:
    assert archive.index.stats()["instances"] == 0
    assert list(archive.blobs.keys()) == []


@pytest.mark.parametrize("keyword", ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_rejects_instance_missing_a_hierarchy_uid(archive: Archive, make_instance: Callable[..., bytes],
                                                  keyword: str) -> None:
    result = archive.ingest(make_instance(**{keyword: None}))
    assert (result.outcome, result.reason, result.attribute) == (Outcome.REJECTED, "missing-attribute", keyword)
    assert keyword in str(result.message)
    _assert_nothing_stored(archive)


@pytest.mark.parametrize("bad", ["1.2.03.4", "1.2.abc", "1." + "2" * 70, "1..2"])
def test_rejects_malformed_study_uid(archive: Archive, make_instance: Callable[..., bytes], bad: str) -> None:
    result = archive.ingest(make_instance(StudyInstanceUID=bad))
    assert (result.reason, result.attribute) == ("invalid-uid", "StudyInstanceUID")
    assert "PS3.5" in str(result.message)
    _assert_nothing_stored(archive)


def test_rejects_instance_without_patient_id(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    for value in (None, ""):
        result = archive.ingest(make_instance(PatientID=value))
        assert (result.reason, result.attribute) == ("missing-attribute", "PatientID")
    _assert_nothing_stored(archive)


def test_rejects_patient_id_longer_than_lo(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    result = archive.ingest(make_instance(PatientID="X" * 65))
    assert (result.reason, result.attribute) == ("invalid-value", "PatientID")


def test_rejects_file_without_preamble_and_meta(archive: Archive) -> None:
    result = archive.ingest(pydicom_file("no_meta.dcm"))
    assert result.reason == "not-dicom" and "PS3.10" in str(result.message)
    result = archive.ingest(b"%PDF-1.4 definitely not DICOM" * 10)
    assert result.reason == "not-dicom"
    _assert_nothing_stored(archive)


def test_rejects_truncated_file(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    data = make_instance()
    result = archive.ingest(data[: len(data) // 2])
    assert result.outcome is Outcome.REJECTED and result.reason in ("unreadable", "missing-attribute")
    _assert_nothing_stored(archive)


def test_rejects_meta_without_transfer_syntax(archive: Archive) -> None:
    result = archive.ingest(pydicom_file("meta_missing_tsyntax.dcm"))
    assert (result.reason, result.attribute) == ("file-meta", "TransferSyntaxUID")


def test_rejects_meta_that_contradicts_the_data_set(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = io.BytesIO()
    ds.save_as(buffer)  # written as is: enforce_file_format would "fix" the meta
    result = archive.ingest(buffer.getvalue())
    assert (result.reason, result.attribute) == ("file-meta", "MediaStorageSOPInstanceUID")
    _assert_nothing_stored(archive)


def test_rejects_dicomdir_as_an_instance(archive: Archive) -> None:
    result = archive.ingest(pydicom_file("dicomdirtests/DICOMDIR"))
    assert result.reason in ("not-an-instance", "missing-attribute")
    _assert_nothing_stored(archive)


def test_rejects_study_uid_filed_under_another_patient(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    assert archive.ingest(make_instance(1)).outcome is Outcome.STORED
    result = archive.ingest(make_instance(2, PatientID="SOMEONE-ELSE"))
    assert (result.reason, result.attribute) == ("patient-mismatch", "PatientID")
    stats = archive.index.stats()
    assert (stats["patients"], stats["instances"]) == (1, 1)  # no stray patient row was left either


def test_rejects_series_uid_filed_under_another_study(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    assert archive.ingest(make_instance(1)).outcome is Outcome.STORED
    result = archive.ingest(make_instance(2, StudyInstanceUID="1.2.826.0.1.3680043.2.1125.99"))
    assert (result.reason, result.attribute) == ("hierarchy-mismatch", "StudyInstanceUID")
    assert archive.index.stats()["studies"] == 1
    assert len(list(archive.blobs.keys())) == 1  # the refused instance's blob was removed


def test_rejection_messages_never_quote_patient_values(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    archive.ingest(make_instance(1))
    result = archive.ingest(make_instance(2, PatientID="SECRET-MRN-123"))
    assert "SECRET-MRN-123" not in str(result.message)
