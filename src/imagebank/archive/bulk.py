"""Parallel, resumable bulk ingest with a progress bar and a summary.

Worker processes do the CPU- and I/O-heavy half of the pipeline (read, parse, validate, hash, write
the blob); the parent does the index half in batched transactions through
:meth:`Archive.commit_staged`. Each batch transaction also records which sources it finished in the
``ingest_sources`` journal, so after a crash or Ctrl-C the same command skips exactly what was
committed. Work in flight is bounded, so memory stays flat however many files there are.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from imagebank.archive.pipeline import Archive, Stager
from imagebank.archive.sources import SourceItem
from imagebank.config import Settings
from imagebank.errors import RejectedInstance, StorageError
from imagebank.storage.index import JournalEntry, Outcome, StagedInstance

CHUNK = 16
BATCH = 256
BATCH_SECONDS = 1.0
JOURNAL_CHUNK = 500


@dataclass
class BulkSummary:
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    bytes_stored: int = 0
    seconds: float = 0.0

    def add(self, item: SourceItem, outcome: str, message: str | None = None, size: int = 0) -> None:
        self.counts[outcome] += 1
        if outcome in (Outcome.STORED.value, Outcome.REPLACED.value):
            self.bytes_stored += size
        if message:
            self.reasons[message] += 1
            examples = self.examples.setdefault(message, [])
            if len(examples) < 3:
                examples.append(item.display)

    @property
    def processed(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "skipped")

    def render(self) -> str:
        c = self.counts
        rate = self.processed / self.seconds if self.seconds else 0.0
        mb = self.bytes_stored / 1e6
        lines = [
            f"stored {c['stored']}, replaced {c['replaced']}, duplicates {c['duplicate']}, "
            f"rejected {c['rejected']}, skipped (already ingested) {c['skipped']}",
            f"{self.processed} files in {self.seconds:.1f} s ({rate:.0f} files/s, {mb:.1f} MB stored)",
        ]
        for message, n in self.reasons.most_common():
            lines.append(f"  rejected x{n}: {message}")
            lines.extend(f"      e.g. {ex}" for ex in self.examples.get(message, []))
        return "\n".join(lines)


# ------------------------------------------------------------------ worker side

_worker_stager: Stager | None = None


def _init_worker(settings: Settings, digest_algorithm: str) -> None:
    """Workers only stage (blob side); the parent process alone writes the index."""
    global _worker_stager
    from imagebank.context import open_blobs
    from imagebank.dicom import quiet_pydicom

    quiet_pydicom()
    _worker_stager = Stager(open_blobs(settings), settings.ingest, digest_algorithm=digest_algorithm)


def _stage_items(items: list[SourceItem]) -> list[tuple[SourceItem, StagedInstance | tuple[str, str]]]:
    if _worker_stager is None:
        raise RuntimeError("bulk-ingest worker used before its initializer ran")
    return [(item, _stage_one(_worker_stager, item)) for item in items]


def _stage_one(stager: Stager, item: SourceItem) -> StagedInstance | tuple[str, str]:
    try:
        return stager.stage(item.load())
    except RejectedInstance as exc:
        return ("rejected", exc.message)  # about the file itself: a rerun would refuse it again
    except StorageError as exc:
        return ("failed", f"storage failure: {exc}")  # transient: a rerun retries it
    except OSError as exc:
        return ("failed", f"cannot read the file ({exc.strerror or type(exc).__name__})")


# ------------------------------------------------------------------ parent side


def _chunks(items: Iterable[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    chunk: list[SourceItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Committer:
    def __init__(self, archive: Archive, job_key: str | None, origin: str, summary: BulkSummary,
                 progress: Any) -> None:
        self.archive, self.job_key, self.origin = archive, job_key, origin
        self.summary, self.progress = summary, progress
        self.staged: list[tuple[SourceItem, StagedInstance]] = []
        self.failed: list[tuple[SourceItem, str, bool]] = []  # (item, message, permanent)
        self.last = time.monotonic()

    def add(self, item: SourceItem, result: StagedInstance | tuple[str, str]) -> None:
        if isinstance(result, StagedInstance):
            self.staged.append((item, result))
        else:
            self.failed.append((item, result[1], result[0] == "rejected"))
        if len(self.staged) + len(self.failed) >= BATCH or time.monotonic() - self.last > BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.staged and not self.failed:
            return
        results = self.archive.commit_staged([s for _, s in self.staged], origin=self.origin)
        # The journal only remembers what a rerun would do the same way: stored, duplicate, and files
        # refused for what they contain. Storage or read failures, and index-time refusals (which a
        # changed duplicate policy may accept), are tried again by the next run.
        journal: list[JournalEntry] = []
        if self.job_key:
            journal += [JournalEntry(self.job_key, i.key, i.size, i.mtime_ns, "rejected")
                        for i, _, permanent in self.failed if permanent]
            journal += [JournalEntry(self.job_key, i.key, i.size, i.mtime_ns, r.outcome.value)
                        for (i, _), r in zip(self.staged, results, strict=True) if r.outcome is not Outcome.REJECTED]
            self.archive.index.record_journal(journal)
        for (item, staged), result in zip(self.staged, results, strict=True):
            self.summary.add(item, result.outcome.value, result.message, staged.size)
        for item, message, _ in self.failed:
            self.summary.add(item, Outcome.REJECTED.value, message)
        if self.progress is not None:
            self.progress.update(len(self.staged) + len(self.failed))
        self.staged, self.failed = [], []
        self.last = time.monotonic()


def bulk_ingest(
    archive: Archive,
    settings: Settings,
    items: Iterable[SourceItem],
    *,
    job_key: str | None = None,
    resume: bool = True,
    workers: int | None = None,
    total: int | None = None,
    progress: bool = True,
    origin: str = "cli",
) -> BulkSummary:
    """Ingest ``items`` through ``archive``; see the module docstring for the division of labour."""
    from tqdm import tqdm

    summary = BulkSummary()
    started = time.monotonic()

    def pending() -> Iterator[SourceItem]:
        for chunk in _chunks(items, JOURNAL_CHUNK):
            done = archive.index.journal(job_key, [i.key for i in chunk]) if (job_key and resume) else {}
            for item in chunk:
                if done.get(item.key) == (item.size, item.mtime_ns):
                    summary.counts["skipped"] += 1
                    if bar is not None:
                        bar.update(1)
                    continue
                yield item

    n_workers = workers if workers is not None else (settings.ingest.workers or os.cpu_count() or 1)
    bar = tqdm(total=total, unit="file", dynamic_ncols=True, disable=not progress, delay=0.5) if progress else None
    committer = _Committer(archive, job_key, origin, summary, bar)
    try:
        if n_workers <= 1:
            for item in pending():
                committer.add(item, _stage_one(archive.stager, item))
        else:
            _run_pool(settings, pending(), n_workers, committer)
        committer.flush()
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def _run_pool(settings: Settings, items: Iterator[SourceItem], n_workers: int, committer: _Committer) -> None:
    context = multiprocessing.get_context("spawn")  # no inherited DB connections or threads
    max_in_flight = n_workers * 4
    with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker,
                             initargs=(settings, committer.archive.stager.digest_algorithm)) as pool:
        in_flight: set[Future[Any]] = set()
        chunks = _chunks(items, CHUNK)
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < max_in_flight:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                in_flight.add(pool.submit(_stage_items, chunk))
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                for item, result in future.result():
                    committer.add(item, result)
