"""Imagebank as a DICOM client (SCU) of a remote archive: echo, find, store, and get into the archive.

Remote archives are the configured ``[[dicom.peers]]`` with a ``host`` and ``port``. Instances fetched
with C-GET go through the archive's ingest pipeline like any other (validated, de-duplicated,
indexed, audited), so importing a patient's priors twice stores them once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from imagebank.archive import Archive, Outcome
from imagebank.config import DicomPeerSettings, DicomSettings
from imagebank.errors import ImagebankError

log = logging.getLogger(__name__)

_FIND = {"STUDY": StudyRootQueryRetrieveInformationModelFind, "PATIENT": PatientRootQueryRetrieveInformationModelFind}
_GET = {"STUDY": StudyRootQueryRetrieveInformationModelGet, "PATIENT": PatientRootQueryRetrieveInformationModelGet}
_MOVE = {"STUDY": StudyRootQueryRetrieveInformationModelMove, "PATIENT": PatientRootQueryRetrieveInformationModelMove}

# Final statuses of a retrieve (PS3.4 C.4.2.1.5, C.4.3.1.5) that still delivered something.
_RETRIEVE_DONE = (0x0000, 0xB000)
_RETRIEVE_PENDING = (0xFF00, 0xFF01)


class RemoteError(ImagebankError):
    pass


def remote_peer(settings: DicomSettings, name: str) -> DicomPeerSettings:
    for peer in settings.peers:
        if peer.ae_title.strip() == name.strip():
            if not peer.host:
                raise RemoteError(f"peer {name} has no host: set dicom.peers[].host and port to call it")
            return peer
    known = ", ".join(p.ae_title for p in settings.peers if p.host) or "none"
    raise RemoteError(f"unknown remote AE {name!r} (configured peers with an address: {known})")


@contextmanager
def _associate(settings: DicomSettings, peer: DicomPeerSettings, contexts: Iterable[Any],
               roles: list[Any] | None = None, handlers: list[Any] | None = None) -> Iterator[Association]:
    ae = AE(ae_title=settings.ae_title)
    for context in contexts:  # SOP Class UIDs, or presentation contexts (pynetdicom's storage list)
        ae.add_requested_context(str(getattr(context, "abstract_syntax", context)))
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, ext_neg=roles or None,
                         evt_handlers=handlers or None)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise RemoteError(f"association with {peer.ae_title} at {peer.host}:{peer.port} {state}")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(settings: DicomSettings, peer: DicomPeerSettings) -> int:
    with _associate(settings, peer, [Verification]) as assoc:
        return int(assoc.send_c_echo().Status)


def _identifier(level: str, keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(settings: DicomSettings, peer: DicomPeerSettings, level: str, keys: dict[str, str],
         root: str = "STUDY") -> list[Dataset]:
    """C-FIND; raises :class:`RemoteError` with the status when the peer refuses."""
    model = _FIND[root]
    results = []
    with _associate(settings, peer, [model]) as assoc:
        for status, identifier in assoc.send_c_find(_identifier(level, keys), model):
            code = int(status.Status) if status else 0xC000
            if code in (0xFF00, 0xFF01) and identifier is not None:
                results.append(identifier)
            elif code != 0x0000:
                comment = str(status.get("ErrorComment", "")) if status else ""
                raise RemoteError(f"C-FIND refused by {peer.ae_title}: status 0x{code:04X} {comment}".strip())
    return results


@dataclass
class TransferSummary:
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "stored": 0, "duplicate": 0, "failed": 0})
    failures: list[str] = field(default_factory=list)


@dataclass
class MoveResult:
    """The sub-operation counts of a C-MOVE's last response (PS3.4 C.4.2.1.6)."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)


def move(settings: DicomSettings, peer: DicomPeerSettings, level: str, keys: dict[str, str], destination: str,
         root: str = "STUDY", progress: Callable[[int], None] = lambda _n: None) -> MoveResult:
    """C-MOVE from ``peer`` to the AE title ``destination`` (which the peer must know by address).

    ``progress`` gets the number of sub-operations finished since its last call, from the pending
    responses' counts. Raises :class:`RemoteError` when the peer refuses the whole request.
    """
    model = _MOVE[root]
    result = MoveResult(status=0xC000)
    done = 0
    with _associate(settings, peer, [model]) as assoc:
        for status, identifier in assoc.send_c_move(_identifier(level, keys), destination, model):
            if not status:
                raise RemoteError(f"C-MOVE to {destination} via {peer.ae_title}: no response (association lost)")
            code = int(status.Status)
            finished = sum(int(status.get(k, 0) or 0) for k in (
                "NumberOfCompletedSuboperations", "NumberOfFailedSuboperations", "NumberOfWarningSuboperations"))
            if finished > done:
                progress(finished - done)
                done = finished
            if code in _RETRIEVE_PENDING:
                continue
            result = MoveResult(code, int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                                int(status.get("NumberOfFailedSuboperations", 0) or 0),
                                int(status.get("NumberOfWarningSuboperations", 0) or 0))
            if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
                value = identifier.FailedSOPInstanceUIDList
                result.failed_uids = [str(v) for v in (value if isinstance(value, list | tuple) else [value]) if v]
            if code not in _RETRIEVE_DONE and code != 0xA702 and code != 0xFE00:
                comment = str(status.get("ErrorComment", ""))
                raise RemoteError(f"C-MOVE refused by {peer.ae_title}: status 0x{code:04X} {comment}".strip())
    return result


def store(settings: DicomSettings, peer: DicomPeerSettings, paths: list[Path],
          progress: Callable[[int], None] = lambda _n: None) -> TransferSummary:
    """C-STORE files to the peer (one association), in their stored transfer syntax."""
    summary = TransferSummary()
    with _associate(settings, peer, StoragePresentationContexts) as assoc:
        for path in paths:
            try:
                ds = pydicom.dcmread(path)
                status = int(assoc.send_c_store(ds).Status)
            except Exception as exc:  # noqa: BLE001 - one bad file must not end the transfer
                summary.counts["failed"] += 1
                summary.failures.append(f"{path.name}: {type(exc).__name__}")
            else:
                summary.counts["sent" if status == 0 else "failed"] += 1
                if status != 0:
                    summary.failures.append(f"{path.name}: status 0x{status:04X}")
            progress(1)
    return summary


def get_into_archive(settings: DicomSettings, peer: DicomPeerSettings, archive: Archive, level: str,
                     keys: dict[str, str], root: str = "STUDY",
                     progress: Callable[[int], None] = lambda _n: None) -> TransferSummary:
    """C-GET from the peer; every received instance goes through the archive's ingest pipeline.

    Re-running after an interruption is safe: what was already stored comes back as a duplicate.
    """
    summary = TransferSummary()

    def on_store(event: Any) -> int:
        result = archive.ingest(event.encoded_dataset(), origin="dimse-get")
        if result.outcome is Outcome.STORED or result.outcome is Outcome.REPLACED:
            summary.counts["stored"] += 1
        elif result.outcome is Outcome.DUPLICATE:
            summary.counts["duplicate"] += 1
        else:
            summary.counts["failed"] += 1
            summary.failures.append(f"{result.sop_instance_uid}: {result.reason}")
            progress(1)
            return 0xC000
        progress(1)
        return 0x0000

    storage = [str(cx.abstract_syntax) for cx in StoragePresentationContexts][:120]
    roles = [build_role(uid, scp_role=True) for uid in storage]
    model = _GET[root]
    with _associate(settings, peer, [model, *storage], roles, [(evt.EVT_C_STORE, on_store)]) as assoc:
        for status, _ in assoc.send_c_get(_identifier(level, keys), model):
            code = int(status.Status) if status else 0xC000
            if code not in (*_RETRIEVE_DONE, *_RETRIEVE_PENDING):
                comment = str(status.get("ErrorComment", "")) if status else ""
                raise RemoteError(f"C-GET refused by {peer.ae_title}: status 0x{code:04X} {comment}".strip())
    return summary
