"""Storing, de-duplication policies, byte fidelity for compressed syntaxes, cached headers, events."""

from __future__ import annotations

import json
from collections.abc import Callable

import blake3
import pytest
from sqlalchemy import select

from imagebank.archive import Archive, Outcome
from imagebank.events import INSTANCE_STORED, InstanceStored
from imagebank.storage.schema import ingest_log, instance_headers, instances, series, studies
from tests.conftest import pydicom_file

COMPRESSED = {
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",  # JPEG extended (lossy)
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "SC_rgb_jpeg_gdcm.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "693_J2KI.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",  # RLE lossless
}


def _patched(path_name: str, **changes: str) -> bytes:
    """A pydicom sample file with the attributes our validation needs filled in."""
    import io

    import pydicom

    ds = pydicom.dcmread(pydicom_file(path_name))
    for k, v in changes.items():
        setattr(ds, k, v)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_stores_instance_and_indexes_every_level(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    result = archive.ingest(make_instance(1))
    assert result.outcome is Outcome.STORED and result.accepted
    with archive.index.engine.connect() as conn:
        row = conn.execute(select(instances)).one()
        study = conn.execute(select(studies)).one()
    assert row.sop_instance_uid == result.sop_instance_uid
    assert study.study_instance_uid == result.study_instance_uid
    assert study.modalities_in_study in ("CT", "MR")
    assert (study.number_of_study_related_series, study.number_of_study_related_instances) == (1, 1)


def test_computed_counts_and_modalities_follow_new_series(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    for n in (1, 2, 3):
        archive.ingest(make_instance(n, series_index=0))
    archive.ingest(make_instance(1, series_index=1))
    archive.ingest(make_instance(2, series_index=1, Modality="SR", SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11"))
    with archive.index.engine.connect() as conn:
        study = conn.execute(select(studies)).one()
        per_series = sorted(conn.execute(select(series.c.number_of_series_related_instances)).scalars())
    assert (study.number_of_study_related_series, study.number_of_study_related_instances) == (2, 5)
    assert per_series == [2, 3]
    assert "\\" not in (study.modalities_in_study or "") or study.modalities_in_study.split("\\") == sorted(
        study.modalities_in_study.split("\\"))
    assert "1.2.840.10008.5.1.4.1.1.88.11" in study.sop_classes_in_study


def test_identical_resend_is_a_no_op(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    data = make_instance(1)
    assert archive.ingest(data).outcome is Outcome.STORED
    assert archive.ingest(data).outcome is Outcome.DUPLICATE
    stats = archive.index.stats()
    assert stats["instances"] == 1 and stats["conflicts"] == {}
    assert len(list(archive.blobs.keys())) == 1


def test_identical_resend_of_an_instance_stored_under_the_first_key_layout_leaves_no_orphan(
        archive: Archive, make_instance: Callable[..., bytes]) -> None:
    """Archives written before blob keys grouped a series keep their ``ab/cd/<digest>`` keys; re-sending
    such an instance is still a duplicate, and the copy written under the new key goes again."""
    data = make_instance(1)
    assert archive.ingest(data).outcome is Outcome.STORED
    digest = blake3.blake3(data).hexdigest()
    old_key = f"{digest[:2]}/{digest[2:4]}/{digest}"
    with archive.index.engine.begin() as conn:
        new_key = conn.execute(select(instances.c.blob_key)).scalar_one()
        conn.execute(instances.update().values(blob_key=old_key))
    archive.blobs.put(old_key, archive.blobs.get(new_key))
    archive.blobs.delete(new_key)

    for _ in range(2):  # once through the single-instance path, once through a request's batch
        assert archive.ingest(data).outcome is Outcome.DUPLICATE
        assert list(archive.blobs.keys()) == [old_key]
    staged = archive.stage(data, blobs=(batch := archive.blobs.batch()))
    assert archive.commit_staged([staged], origin="stow", blobs=batch)[0].outcome is Outcome.DUPLICATE  # type: ignore[list-item]
    assert list(archive.blobs.keys()) == [old_key]
    assert archive.blobs.get(old_key) == data


def test_conflicting_duplicate_rejected_by_default_and_recorded(
        archive: Archive, make_instance: Callable[..., bytes]) -> None:
    original = make_instance(1)
    archive.ingest(original)
    result = archive.ingest(make_instance(1, SeriesDescription="changed"))
    assert (result.outcome, result.reason) == (Outcome.REJECTED, "duplicate-conflict")
    key, _ = archive.index.blob_key_for(str(result.sop_instance_uid))  # type: ignore[misc]
    assert archive.blobs.get(key) == original  # the stored copy is untouched
    assert archive.index.stats()["conflicts"] == {"rejected-conflict": 1}
    assert len(list(archive.blobs.keys())) == 1


def test_conflicting_duplicate_replaces_under_replace_policy(
        archive_with_policy: Callable[[str], Archive], make_instance: Callable[..., bytes]) -> None:
    archive = archive_with_policy("replace")
    archive.ingest(make_instance(1))
    archive.ingest(make_instance(2))
    newer = make_instance(1, SeriesDescription="corrected")
    result = archive.ingest(newer)
    assert result.outcome is Outcome.REPLACED
    key, digest = archive.index.blob_key_for(str(result.sop_instance_uid))  # type: ignore[misc]
    assert archive.blobs.get(key) == newer and digest == blake3.blake3(newer).hexdigest()
    assert len(list(archive.blobs.keys())) == 2  # the old bytes were removed after the commit
    with archive.index.engine.connect() as conn:
        log = conn.execute(select(ingest_log)).one()
        study = conn.execute(select(studies)).one()
    assert log.action == "replaced" and log.new_digest == digest
    assert study.number_of_study_related_instances == 2


@pytest.mark.parametrize("name,transfer_syntax", sorted(COMPRESSED.items()))
def test_compressed_transfer_syntaxes_are_stored_byte_for_byte(
        archive: Archive, name: str, transfer_syntax: str) -> None:
    data = _patched(name, PatientID="P1", StudyInstanceUID="1.2.826.0.1.3680043.2.1125.1",
                    SeriesInstanceUID="1.2.826.0.1.3680043.2.1125.2")
    result = archive.ingest(data)
    assert result.outcome is Outcome.STORED, result.message
    key, _ = archive.index.blob_key_for(str(result.sop_instance_uid))  # type: ignore[misc]
    assert archive.blobs.get(key) == data
    with archive.index.engine.connect() as conn:
        assert conn.execute(select(instances.c.transfer_syntax_uid)).scalar_one() == transfer_syntax


def test_deflated_transfer_syntax_is_accepted(archive: Archive) -> None:
    result = archive.ingest(_deflated_with_patient_id())
    assert result.outcome is Outcome.STORED, result.message


def _deflated_with_patient_id() -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(pydicom_file("image_dfl.dcm"))
    ds.PatientID = "P2"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    return buffer.getvalue()


def test_header_is_cached_as_dicom_json_without_pixel_data(
        archive: Archive, make_instance: Callable[..., bytes]) -> None:
    archive.ingest(make_instance(1, pixels=True))
    with archive.index.engine.connect() as conn:
        header = json.loads(conn.execute(select(instance_headers.c.dicom_json)).scalar_one())
    assert header["00100020"]["vr"] == "LO"  # PatientID
    assert header["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    assert "00020010" not in header  # no File Meta in the data set header


def test_subscribers_hear_about_stored_instances_only(archive: Archive, make_instance: Callable[..., bytes]) -> None:
    heard: list[InstanceStored] = []
    archive.events.subscribe(INSTANCE_STORED, heard.append)
    archive.events.subscribe(INSTANCE_STORED, lambda e: 1 / 0)  # a broken subscriber breaks nothing
    data = make_instance(1)
    archive.ingest(data)
    archive.ingest(data)  # duplicate: no event
    archive.ingest(make_instance(2, PatientID=None))  # rejected: no event
    assert len(heard) == 1 and heard[0].origin == "api" and not heard[0].replaced


def test_group_commit_shares_transactions_and_reports_each_result() -> None:
    import threading

    from imagebank.archive.pipeline import GroupCommit

    batches: list[list[int]] = []
    entered = threading.Event()
    release = threading.Event()

    def commit(items: list[int], *, origin: str) -> list[str]:
        batches.append(list(items))
        if len(batches) == 1:
            entered.set()
            release.wait(10)  # the others arrive while this commit runs
        return [f"{origin}:{i}" for i in items]

    group = GroupCommit(commit)  # type: ignore[arg-type]
    results: dict[int, str] = {}
    first = threading.Thread(target=lambda: results.update({0: group.submit(0, "a")}))  # type: ignore[arg-type]
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=lambda n=n: results.update({n: group.submit(n, "a")}))  # type: ignore[arg-type, misc]
              for n in range(1, 6)]
    for t in others:
        t.start()
    import time

    time.sleep(0.3)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert results == {n: f"a:{n}" for n in range(6)}
    assert batches[0] == [0] and sorted(batches[1]) == [1, 2, 3, 4, 5]  # one shared commit for the rest


def test_group_commit_failure_reaches_every_waiter_of_the_batch() -> None:
    from imagebank.archive.pipeline import GroupCommit

    def commit(items: list[int], *, origin: str) -> list[str]:
        raise OSError("disk gone")

    group = GroupCommit(commit)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk gone"):
        group.submit(1, "a")  # type: ignore[arg-type]
    # The next caller leads a new commit: nothing is left stuck.
    with pytest.raises(OSError):
        group.submit(2, "a")  # type: ignore[arg-type]
