"""The ingest pipeline: validate -> de-duplicate -> store bytes -> index -> announce.

Ordering is what makes a crash harmless (a ``kill -9`` at any instant):

1. the bytes are written to the blob store first, atomically, under a content-derived key;
2. the index rows are committed in one database transaction;
3. only then are superseded blobs deleted and events emitted.

A crash before (2) leaves at most an unreferenced blob: it is not counted anywhere (all counts come
from the index) and ``imagebank check --repair`` removes it. A crash between (2) and (3) leaves the
index complete and, at worst, an old blob to collect. No instance is ever half-indexed and nothing
already stored is lost: a replacement's new bytes are durable before the old ones go.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagebank.archive.prepare import PreparedInstance, prepare_bytes, prepare_file
from imagebank.config import IngestSettings
from imagebank.errors import RejectedInstance, StorageError
from imagebank.events import INSTANCE_STORED, EventBus, InstanceStored
from imagebank.storage.blobs import BlobBatch, BlobStore
from imagebank.storage.index import CommitOutcome, JournalEntry, MetadataIndex, Outcome, StagedInstance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    reason: str | None = None
    message: str | None = None
    attribute: str | None = None
    sop_class_uid: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE, Outcome.REPLACED)

    @classmethod
    def rejected(cls, exc: RejectedInstance, sop_instance_uid: str | None = None,
                 sop_class_uid: str | None = None) -> IngestResult:
        return cls(Outcome.REJECTED, sop_instance_uid, reason=exc.reason, message=exc.message,
                   attribute=exc.attribute, sop_class_uid=sop_class_uid)


def _storage_failure(sop_instance_uid: str | None, sop_class_uid: str | None) -> IngestResult:
    return IngestResult(Outcome.REJECTED, sop_instance_uid, reason="out-of-resources",
                        message="the archive could not store the instance (storage failure)",
                        sop_class_uid=sop_class_uid)


def stage(prepared: PreparedInstance) -> StagedInstance:
    return StagedInstance(
        record=prepared.record, content_digest=prepared.content_digest, size=prepared.size, blob_key=prepared.blob_key,
        transfer_syntax_uid=prepared.transfer_syntax_uid, header_json=prepared.header_json,
    )


class Stager:
    """The blob-side half of the pipeline (parse, validate, hash, write bytes): needs no index.

    Bulk-ingest worker processes run only this half; the parent indexes what they staged.
    """

    def __init__(self, blobs: BlobStore, settings: IngestSettings, *, digest_algorithm: str) -> None:
        self.blobs = blobs
        self.settings = settings
        #: The archive's content digest (:meth:`MetadataIndex.content_digest`): bulk-ingest workers, which
        #: have no index, are given it by the parent.
        self.digest_algorithm = digest_algorithm

    def prepare(self, source: bytes | str | os.PathLike[str]) -> tuple[PreparedInstance, bytes | Path]:
        """Parse and validate; returns the prepared instance and what to store (bytes or a path)."""
        require, threshold = self.settings.require_patient_id, self.settings.bulk_data_threshold
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            return prepare_bytes(data, require_patient_id=require, bulk_data_threshold=threshold,
                                 digest_algorithm=self.digest_algorithm), data
        prepared, data_or_none = prepare_file(source, require_patient_id=require, bulk_data_threshold=threshold,
                                              digest_algorithm=self.digest_algorithm)
        return prepared, (data_or_none if data_or_none is not None else Path(source))

    def write_blob(self, prepared: PreparedInstance, payload: bytes | Path, into: BlobBatch | None = None) -> None:
        """Store the bytes under their content key, at once or as part of ``into`` (published later)."""
        key = prepared.blob_key
        if self.blobs.exists(key):  # content-addressed: the same key means the same bytes
            return
        target: BlobStore | BlobBatch = self.blobs if into is None else into
        if isinstance(payload, Path):
            with open(payload, "rb") as fh:
                target.put(key, fh)
        else:
            target.put(key, payload)

    def stage(self, source: bytes | str | os.PathLike[str]) -> StagedInstance:
        """Prepare and write the blob; raises :class:`RejectedInstance` or :class:`StorageError`."""
        prepared, payload = self.prepare(source)
        self.write_blob(prepared, payload)
        return stage(prepared)


class _Slot:
    __slots__ = ("item", "origin", "result", "error")

    def __init__(self, item: StagedInstance, origin: str) -> None:
        self.item, self.origin = item, origin
        self.result: IngestResult | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Index instances staged by concurrent callers (DICOM associations, STOW requests) in shared
    transactions: one commit, one WAL fsync and one lock acquisition for everything that arrived
    while the previous commit ran, instead of each thread queueing on the database's write lock.

    No thread of its own: the first caller to find no commit running leads one for everything pending;
    the others wait for their result. A caller returns only after its own instance is committed.
    """

    def __init__(self, commit: Callable[..., list[IngestResult]]) -> None:
        self._commit = commit
        self._changed = threading.Condition()
        self._pending: list[_Slot] = []
        self._leading = False

    def submit(self, item: StagedInstance, origin: str) -> IngestResult:
        slot = _Slot(item, origin)
        with self._changed:
            self._pending.append(slot)
            while slot.result is None and slot.error is None and self._leading:
                self._changed.wait()
            if slot.result is None and slot.error is None:
                self._leading = True
                batch, self._pending = self._pending, []
            else:
                batch = []
        if batch:
            try:
                for origin in dict.fromkeys(s.origin for s in batch):
                    group = [s for s in batch if s.origin == origin]
                    for member, result in zip(group, self._commit([s.item for s in group], origin=origin),
                                              strict=True):
                        member.result = result
            except BaseException as exc:  # noqa: BLE001 - every waiter of the batch must hear of it
                for member in batch:
                    if member.result is None:
                        member.error = exc
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if slot.error is not None:
            raise slot.error
        if slot.result is None:  # cannot happen: the leader of its batch set a result or an error
            raise RuntimeError("group commit returned no result")
        return slot.result


class Archive:
    """Index + blob store + events, with the ingest rules of :class:`IngestSettings`."""

    def __init__(self, index: MetadataIndex, blobs: BlobStore, settings: IngestSettings,
                 events: EventBus | None = None) -> None:
        self.index = index
        self.blobs = blobs
        self.settings = settings
        self.stager = Stager(blobs, settings, digest_algorithm=index.content_digest())
        self.events = events or EventBus()
        self._group_commit = GroupCommit(self.commit_staged)

    # ------------------------------------------------------------ single instance

    def ingest(self, source: bytes | str | os.PathLike[str], *, origin: str = "api",
               study_instance_uid: str | None = None) -> IngestResult:
        """Ingest one PS3.10 file (bytes or path). Never raises for bad input: see the result.

        ``study_instance_uid``: the study the sender says the instance belongs to (STOW-RS
        ``POST /studies/{study}``); an instance of another study is rejected, nothing is written.
        """
        staged = self.stage(source, origin=origin, study_instance_uid=study_instance_uid)
        if isinstance(staged, IngestResult):
            return staged
        return self._group_commit.submit(staged, origin)

    def stage(self, source: bytes | str | os.PathLike[str], *, origin: str = "api",
              study_instance_uid: str | None = None, blobs: BlobBatch | None = None) -> StagedInstance | IngestResult:
        """First half of :meth:`ingest`: parse, validate and write the blob, index nothing.

        Returns the final result when there is nothing to index (refused, identical re-send), else
        the staged instance for :meth:`commit_staged` -- or for :meth:`discard_staged` when the
        request it came in fails as a whole (a truncated STOW-RS body indexes nothing). With ``blobs``
        the bytes go into that batch, which :meth:`commit_staged` publishes before it indexes.
        """
        try:
            prepared, payload = self.stager.prepare(source)
        except RejectedInstance as exc:
            return IngestResult.rejected(exc)
        if study_instance_uid is not None and prepared.record.study["study_instance_uid"] != study_instance_uid:
            return IngestResult.rejected(RejectedInstance(
                "study-mismatch", f"StudyInstanceUID is not {study_instance_uid}, the study in the request URL",
                "StudyInstanceUID"), prepared.sop_instance_uid, prepared.record.instance["sop_class_uid"])
        # No index lookup here: the commit decides duplicates and conflicts (and logs conflicts) under the
        # write lock anyway, and a re-sent identical instance writes nothing (its content-addressed blob
        # exists). Only a refused conflict writes a blob for nothing, which the commit deletes again.
        try:
            self.stager.write_blob(prepared, payload, into=blobs)
        except StorageError as exc:
            log.error("blob store write failed for %s: %s", prepared.sop_instance_uid, exc)
            return _storage_failure(prepared.sop_instance_uid, prepared.record.instance["sop_class_uid"])
        return stage(prepared)

    def discard_staged(self, items: Sequence[StagedInstance], *, blobs: BlobBatch | None = None) -> None:
        """Forget staged instances that will not be indexed: delete their blobs unless referenced (with
        ``blobs``, the batch they were written into: what it had not published yet simply goes)."""
        keys = blobs.discard() if blobs is not None else [item.blob_key for item in items]
        for key in dict.fromkeys(keys):
            if not self.index.is_blob_referenced(key):
                self.blobs.delete(key)

    # ------------------------------------------------------------------- batches

    def commit_staged(self, items: Sequence[StagedInstance], *, origin: str,
                      journal: Sequence[JournalEntry] = (), blobs: BlobBatch | None = None) -> list[IngestResult]:
        """Index instances whose blobs are stored (or in ``blobs``, published first); clean up, announce.

        A batch that cannot be published indexes nothing: every instance gets the storage failure.
        """
        if blobs is not None:
            try:
                blobs.publish()
            except StorageError as exc:
                log.error("blob store write failed for %d instance(s): %s", len(items), exc)
                self.discard_staged(items, blobs=blobs)
                return [_storage_failure(item.record.instance["sop_instance_uid"],
                                         item.record.instance["sop_class_uid"]) for item in items]
        outcomes = self.index.commit(items, policy=self.settings.duplicate_policy, origin=origin,
                                     journal=journal)
        results = []
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.superseded_blob_key and not self.index.is_blob_referenced(outcome.superseded_blob_key):
                self.blobs.delete(outcome.superseded_blob_key)
            if outcome.outcome is Outcome.REJECTED and not self.index.is_blob_referenced(item.blob_key):
                self.blobs.delete(item.blob_key)  # written for nothing: the index refused it
            elif outcome.unused_blob_key and not self.index.is_blob_referenced(outcome.unused_blob_key):
                self.blobs.delete(outcome.unused_blob_key)  # a duplicate of an instance stored under another key
            result = self._result(item, outcome)
            if outcome.outcome in (Outcome.STORED, Outcome.REPLACED):
                self.events.emit(INSTANCE_STORED, InstanceStored(
                    sop_instance_uid=str(result.sop_instance_uid),
                    series_instance_uid=str(result.series_instance_uid),
                    study_instance_uid=str(result.study_instance_uid),
                    sop_class_uid=str(item.record.instance["sop_class_uid"]),
                    replaced=outcome.outcome is Outcome.REPLACED, origin=origin))
            elif outcome.outcome is Outcome.REJECTED:
                log.info("rejected %s: %s", result.sop_instance_uid, outcome.reason)
            results.append(result)
        return results

    @staticmethod
    def _result(item: PreparedInstance | StagedInstance, outcome: CommitOutcome) -> IngestResult:
        rec = item.record
        return IngestResult(
            outcome=outcome.outcome,
            sop_instance_uid=rec.instance["sop_instance_uid"],
            study_instance_uid=rec.study["study_instance_uid"],
            series_instance_uid=rec.series["series_instance_uid"],
            reason=outcome.reason, message=outcome.message, attribute=outcome.attribute,
            sop_class_uid=rec.instance["sop_class_uid"],
        )
