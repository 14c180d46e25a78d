"""Indexing a batch (a STOW-RS request, a bulk-import chunk) looks the batch up in a fixed number of
statements, not a few per instance, and decides every instance exactly as it would alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event, select

from imagebank.archive import Archive, Outcome
from imagebank.config import Settings
from imagebank.context import open_archive
from imagebank.storage.index import StagedInstance
from imagebank.storage.schema import patients, series, studies


def _staged(archive: Archive, data: bytes) -> StagedInstance:
    staged = archive.stage(data)
    assert isinstance(staged, StagedInstance), staged
    return staged


def _new_studies(make_instance: Callable[..., bytes], tag: str, n: int) -> list[bytes]:
    """``n`` single-instance studies, each of its own new patient."""
    return [make_instance(1, PatientID=f"BATCH-{tag}-{i}", StudyInstanceUID=f"1.2.826.0.1.3680043.10.7.{tag}.{i}",
                          SeriesInstanceUID=f"1.2.826.0.1.3680043.10.7.{tag}.{i}.1",
                          SOPInstanceUID=f"1.2.826.0.1.3680043.10.7.{tag}.{i}.1.1") for i in range(n)]


def test_the_lookups_of_a_batch_do_not_grow_with_its_size(settings: Settings,
                                                          make_instance: Callable[..., bytes]) -> None:
    archive = open_archive(settings)
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    try:
        per_size = {}
        for n in (4, 16):
            staged = [_staged(archive, data) for data in _new_studies(make_instance, str(n), n)]
            event.listen(archive.index.engine, "before_cursor_execute", count)
            try:
                results = archive.commit_staged(staged, origin="stow")
            finally:
                event.remove(archive.index.engine, "before_cursor_execute", count)
            assert [r.outcome for r in results] == [Outcome.STORED] * n
            per_size[n], selects[:] = len(selects), []
        assert per_size[16] == per_size[4], per_size
    finally:
        archive.index.engine.dispose()


def test_a_mixed_batch_gets_the_verdicts_and_counts_each_instance_would_get_alone(
        settings: Settings, make_instance: Callable[..., bytes]) -> None:
    archive = open_archive(settings)
    try:
        first = make_instance(1)
        assert archive.ingest(first).accepted  # a study already filed before the batch
        filed_study = "1.2.826.0.1.3680043.10.7.9"
        other = make_instance(1, StudyInstanceUID=filed_study, SeriesInstanceUID=f"{filed_study}.1",
                              SOPInstanceUID=f"{filed_study}.1.1")
        assert archive.ingest(other).accepted
        batch = [
            make_instance(2),  # another instance of the filed series
            make_instance(1, series_index=1),  # a new series of the filed study
            first,  # an identical re-send
            make_instance(1, StudyDescription="changed"),  # same SOP Instance UID, other content
            make_instance(3, StudyInstanceUID=filed_study),  # a filed series claimed by another study
            make_instance(4, series_index=1, PatientID="SOMEONE-ELSE"),  # a filed study, another patient
            *_new_studies(make_instance, "77", 2),  # new patients with new studies
            make_instance(1, PatientID="BATCH-77-0", StudyInstanceUID="1.2.826.0.1.3680043.10.7.77.9",
                          SeriesInstanceUID="1.2.826.0.1.3680043.10.7.77.9.1",
                          SOPInstanceUID="1.2.826.0.1.3680043.10.7.77.9.1.1"),  # a patient new in this batch
        ]
        staged = [archive.stage(data) for data in batch]
        assert all(isinstance(s, StagedInstance) for s in staged if s is not None)
        results = archive.commit_staged([s for s in staged if isinstance(s, StagedInstance)], origin="stow")
        assert [(r.outcome, r.reason) for r in results] == [
            (Outcome.STORED, None), (Outcome.STORED, None), (Outcome.DUPLICATE, None),
            (Outcome.REJECTED, "duplicate-conflict"), (Outcome.REJECTED, "hierarchy-mismatch"),
            (Outcome.REJECTED, "patient-mismatch"),
            (Outcome.STORED, None), (Outcome.STORED, None), (Outcome.STORED, None),
        ]
        with archive.index.engine.connect() as conn:
            study_rows = {r.study_instance_uid: r for r in conn.execute(select(studies))}
            patient_rows = {r.patient_id: r for r in conn.execute(select(patients))}
            series_count = conn.execute(select(series.c.id)).all()
        first_study = next(r for uid, r in study_rows.items() if uid not in (filed_study,) and ".77." not in uid)
        assert (first_study.number_of_study_related_series, first_study.number_of_study_related_instances) == (2, 3)
        assert first_study.modalities_in_study  # recomputed for the new series
        assert len(series_count) == 2 + 1 + 3
        assert patient_rows["BATCH-77-0"].number_of_patient_related_studies == 2
        assert patient_rows["BATCH-77-1"].number_of_patient_related_studies == 1
        new = study_rows["1.2.826.0.1.3680043.10.7.77.9"]
        assert (new.number_of_study_related_series, new.number_of_study_related_instances) == (1, 1)
        assert new.modalities_in_study == "CT" or new.modalities_in_study == "MR"
    finally:
        archive.index.engine.dispose()
