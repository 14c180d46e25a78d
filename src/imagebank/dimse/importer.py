"""Import studies (a patient's priors) from a remote archive: query, compare, retrieve what is missing.

The remote archive is asked what it holds (C-FIND at STUDY, then SERIES, then IMAGE level, each
hierarchical with the unique keys above it, PS3.4 C.4.1.3.1, so strict archives answer too); the
index says what is already here; only the missing instances are retrieved, per series (a whole series
when none of it is here, else a list of SOP Instance UIDs, PS3.4 C.4.2.2.1). An interrupted import
therefore resumes where it stopped when run again, and importing the same priors twice retrieves
nothing the second time.

Retrieval is by C-GET on the same association (no inbound connection needed) or by C-MOVE to our own
AE title (the peer must know our address, and our listener must be running: ``imagebank serve``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from imagebank.archive import Archive
from imagebank.config import DicomPeerSettings, DicomSettings
from imagebank.dimse.scu import RemoteError, find, get_into_archive, move

log = logging.getLogger(__name__)

Method = Literal["get", "move"]

#: Keys a caller may select studies by (PS3.4 C.6.2.1.2 study-level keys of the Study Root model).
SELECTION_KEYS = ("PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyInstanceUID", "StudyDate",
                  "ModalitiesInStudy", "StudyDescription", "PatientName")

#: SOP Instance UIDs per IMAGE-level retrieve: a UID list of 500 is about 32 KB, well inside one PDU.
UID_LIST_CHUNK = 500


@dataclass(frozen=True)
class RetrieveRequest:
    """One retrieve to send: a level, its unique keys, and how many instances it should bring."""

    level: str
    keys: dict[str, str]
    instances: int


@dataclass
class StudyPlan:
    study_uid: str
    remote_instances: int = 0
    present: int = 0
    requests: list[RetrieveRequest] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.remote_instances - self.present


@dataclass
class ImportReport:
    studies: list[StudyPlan] = field(default_factory=list)
    retrieved: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def already_present(self) -> int:
        return sum(s.present for s in self.studies)

    @property
    def still_missing(self) -> int:
        return sum(s.missing for s in self.studies) - self.retrieved


def plan_series(study_uid: str, series_uid: str, remote_uids: list[str], present: set[str]) -> list[RetrieveRequest]:
    """The retrieves that bring the ``remote_uids`` of one series that are not ``present`` (pure)."""
    missing = [uid for uid in remote_uids if uid not in present]
    if not missing:
        return []
    if len(missing) == len(remote_uids):
        return [RetrieveRequest("SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid},
                                len(missing))]
    return [RetrieveRequest("IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                                      "SOPInstanceUID": "\\".join(missing[i:i + UID_LIST_CHUNK])},
                            len(missing[i:i + UID_LIST_CHUNK]))
            for i in range(0, len(missing), UID_LIST_CHUNK)]


def _remote_series(settings: DicomSettings, peer: DicomPeerSettings, study_uid: str) -> Iterator[tuple[str, list[str]]]:
    for series in find(settings, peer, "SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""}):
        series_uid = str(series.get("SeriesInstanceUID", "")).strip()
        if not series_uid:
            continue
        images = find(settings, peer, "IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                                                "SOPInstanceUID": ""})
        yield series_uid, [str(i.SOPInstanceUID) for i in images if str(i.get("SOPInstanceUID", "")).strip()]


def plan_import(settings: DicomSettings, peer: DicomPeerSettings, archive: Archive,
                selection: dict[str, str]) -> list[StudyPlan]:
    """Query ``peer`` for the studies matching ``selection`` and plan the retrieve of what is missing."""
    unknown = sorted(set(selection) - set(SELECTION_KEYS))
    if unknown:
        raise RemoteError(f"cannot select studies by {', '.join(unknown)} (use {', '.join(SELECTION_KEYS)})")
    if not any(value.strip() for value in selection.values()):
        raise RemoteError("select the studies to import: give a PatientID, AccessionNumber, StudyInstanceUID "
                          "or StudyDate range (importing a whole archive by accident is refused)")
    studies = find(settings, peer, "STUDY", {**selection, "StudyInstanceUID": selection.get("StudyInstanceUID", "")})
    plans = []
    for study in studies:
        study_uid = str(study.get("StudyInstanceUID", "")).strip()
        if not study_uid:
            continue
        plan = StudyPlan(study_uid)
        for series_uid, uids in _remote_series(settings, peer, study_uid):
            present = set(archive.index.blob_keys_for(uids))
            plan.remote_instances += len(uids)
            plan.present += len(present)
            plan.requests.extend(plan_series(study_uid, series_uid, uids, present))
        plans.append(plan)
    return plans


def import_studies(settings: DicomSettings, peer: DicomPeerSettings, archive: Archive, selection: dict[str, str],
                   method: Method = "get", progress: Callable[[int], None] = lambda _n: None,
                   planned: Callable[[int], None] = lambda _n: None) -> ImportReport:
    """Retrieve from ``peer`` the instances of the selected studies that the archive lacks.

    ``planned`` is called once with the number of instances to retrieve, ``progress`` with each
    instance received (or sub-operation finished, for C-MOVE).
    """
    report = ImportReport(studies=plan_import(settings, peer, archive, selection))
    planned(sum(plan.missing for plan in report.studies))
    for plan in report.studies:
        for request in plan.requests:
            try:
                if method == "get":
                    summary = get_into_archive(settings, peer, archive, request.level, request.keys,
                                               progress=progress)
                    report.retrieved += summary.counts["stored"] + summary.counts["duplicate"]
                    report.failed += summary.counts["failed"]
                    report.failures.extend(summary.failures)
                else:
                    result = move(settings, peer, request.level, request.keys, settings.ae_title, progress=progress)
                    report.retrieved += result.completed + result.warning
                    report.failed += result.failed
                    report.failures.extend(f"{uid}: C-MOVE sub-operation failed" for uid in result.failed_uids)
            except RemoteError as exc:
                # One series failing (the peer refused, the association dropped) must not lose the rest;
                # running the import again retries exactly what is still missing.
                report.failed += request.instances
                report.failures.append(f"series {request.keys.get('SeriesInstanceUID', '?')}: {exc}")
                log.warning("retrieve of a series from %s failed (see the import report)", peer.ae_title)  # no PHI
    return report
