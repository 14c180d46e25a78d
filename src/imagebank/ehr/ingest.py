"""Bulk EHR ingest from files: FHIR Bulk Data NDJSON (one resource per line, ``.ndjson`` or
``.ndjson.gz``), Bundles (``.json``) and single resources, or folders of them.

Flat memory: NDJSON is read line by line in chunks; a chunk is validated (in worker processes when
there are several CPUs: validation is the expensive part) and committed in one transaction together
with the byte offset reached, so an interrupted run resumes where it stopped (``ehr_ingest_progress``)
and re-running a finished file costs nothing. Bad lines are reported with ``file:line`` and the
element at fault; they never stop the rest of the file. Transaction Bundles read from files load
entry by entry too (a bulk load keeps every good resource); over HTTP they stay all-or-nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, insert, select, update

from imagebank.ehr.bundles import process_bundle
from imagebank.ehr.facts import ResourceFacts, extract
from imagebank.ehr.outcome import FhirError, Issue
from imagebank.ehr.store import EhrStore
from imagebank.ehr.validation import validate
from imagebank.storage.schema import ehr_ingest_progress

JOB_KEY = "ehr-ingest"
#: Patients first: their identifiers and links settle identity before the resources that name them.
_TYPE_ORDER = {"Patient": 0, "Encounter": 1}


@dataclass
class Rejection:
    location: str  # file:line or file#entry
    issues: list[Issue]

    def render(self) -> str:
        first = self.issues[0] if self.issues else Issue("invalid", "rejected")
        where = f" at {first.expression}" if first.expression else ""
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        return f"{self.location}: {first.diagnostics}{where}{more}"


@dataclass
class IngestSummary:
    actions: Counter[str] = field(default_factory=Counter)  # created / updated / unchanged / rejected
    by_type: Counter[str] = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)
    files: int = 0
    skipped_files: int = 0
    seconds: float = 0.0
    max_rejections_kept: int = 1000

    @property
    def stored(self) -> int:
        return self.actions["created"] + self.actions["updated"] + self.actions["unchanged"]

    def reject(self, rejection: Rejection) -> None:
        self.actions["rejected"] += 1
        if len(self.rejections) < self.max_rejections_kept:
            self.rejections.append(rejection)

    def render(self) -> str:
        total = self.stored + self.actions["rejected"]
        rate = total / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{total} resources from {self.files} file(s) in {self.seconds:.1f} s ({rate:.0f}/s): "
                 f"{self.actions['created']} created, {self.actions['updated']} updated, "
                 f"{self.actions['unchanged']} unchanged, {self.actions['rejected']} rejected"
                 + (f"; {self.skipped_files} file(s) already done" if self.skipped_files else "")]
        if self.by_type:
            lines.append("  by type: " + ", ".join(f"{t} {n}" for t, n in sorted(self.by_type.items())))
        for rejection in self.rejections[:20]:
            lines.append("  rejected " + rejection.render())
        if self.actions["rejected"] > 20:
            lines.append(f"  ... and {self.actions['rejected'] - 20} more rejected")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"actions": dict(self.actions), "by_type": dict(self.by_type), "files": self.files,
                "seconds": round(self.seconds, 3),
                "rejected": [{"location": r.location, "issues": [i.as_json() for i in r.issues]}
                             for r in self.rejections]}


# ---------------------------------------------------------------------------------------- sources

def _is_ndjson(path: Path) -> bool:
    return path.name.endswith((".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz"))


def list_sources(path: str | os.PathLike[str]) -> list[Path]:
    """The FHIR files under ``path`` (a file or a folder), Patient files first."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_file():
        return [root]
    files = [p for p in root.rglob("*") if p.is_file() and (_is_ndjson(p) or p.suffix == ".json")]

    def order(p: Path) -> tuple[int, str]:
        return _TYPE_ORDER.get(p.name.split(".", 1)[0].split("-", 1)[0], 9), str(p)
    return sorted(files, key=order)


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _source_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()


def count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if _is_ndjson(path):
            with _open(path) as fh:
                total += sum(1 for line in fh if line.strip())
        else:
            total += 1
    return total


# ---------------------------------------------------------------------------------------- checking

def check_lines(lines: list[bytes]) -> tuple[list[tuple[int, list[Issue]]], list[ResourceFacts]]:
    """Positions and problems of the bad lines of a chunk, and the facts of the good ones in order
    (runs in worker processes: validation and extraction are the CPU-heavy part of ingest)."""
    bad = []
    facts = []
    for i, raw in enumerate(lines):
        issues = _check_line(raw)
        if isinstance(issues, list):
            bad.append((i, issues))
        else:
            facts.append(issues)
    return bad, facts


def _check_line(raw: bytes) -> list[Issue] | ResourceFacts:
    if b"\\u0000" in raw:
        return [Issue("value", "a string holds a NUL character (\\u0000), which no FHIR string may contain")]
    try:
        resource = json.loads(raw)
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            return [Issue("not-supported", "a Bundle inside NDJSON: send Bundles as .json files")]
        return validate(resource) or extract(resource)
    except ValueError as exc:
        return [Issue("structure", f"not JSON: {exc}")]
    except Exception as exc:  # noqa: BLE001 - one odd line (deep nesting...) must not stop the file
        return [Issue("exception", f"could not be read: {type(exc).__name__}")]


class EhrIngest:
    """Loads files into an :class:`EhrStore`; ``progress(n)`` is called with each batch of resources done."""

    def __init__(self, store: EhrStore, *, batch_size: int = 1000, workers: int = 0, resume: bool = True,
                 progress: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.batch_size = batch_size
        self.workers = workers or (os.cpu_count() or 1)
        self.resume = resume
        self.progress = progress or (lambda _n: None)

    def run(self, paths: list[Path]) -> IngestSummary:
        summary = IngestSummary()
        started = time.perf_counter()
        pool: Executor | None = ProcessPoolExecutor(self.workers) if self.workers > 1 else None
        try:
            for path in paths:
                summary.files += 1
                if _is_ndjson(path):
                    self._ndjson(path, summary, pool)
                else:
                    self._json(path, summary)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        summary.seconds = time.perf_counter() - started
        return summary

    # ------------------------------------------------------------------ journal

    def _start_offset(self, path: Path, key: str) -> int | None:
        """Where to resume ``path`` (None: already fully loaded)."""
        stat = path.stat()
        if not self.resume:
            return 0
        with self.store.engine.connect() as conn:
            row = conn.execute(select(ehr_ingest_progress).where(
                ehr_ingest_progress.c.job_key == JOB_KEY, ehr_ingest_progress.c.source_key == key)).first()
        if row is None or row.size != stat.st_size or row.mtime_ns != stat.st_mtime_ns:
            return 0
        return None if row.done else int(row.offset)

    def _journal(self, path: Path, key: str, offset: int, done: bool) -> Callable[[Connection], None]:
        stat = path.stat()

        def write(conn: Connection) -> None:
            values = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "offset": offset, "done": int(done)}
            updated = conn.execute(update(ehr_ingest_progress).where(
                ehr_ingest_progress.c.job_key == JOB_KEY, ehr_ingest_progress.c.source_key == key).values(**values))
            if updated.rowcount == 0:
                conn.execute(insert(ehr_ingest_progress).values(job_key=JOB_KEY, source_key=key, **values))
        return write

    # ------------------------------------------------------------------ NDJSON

    def _chunks(self, path: Path, offset: int) -> Iterator[tuple[list[bytes], list[int], int]]:
        """Chunks of non-empty lines with their line numbers and the byte offset after the chunk."""
        lines: list[bytes] = []
        numbers: list[int] = []
        with _open(path) as fh:
            if offset:
                fh.seek(offset)
            number = 0  # line numbers are relative to the resume point when resuming
            position = offset
            for raw in fh:
                number += 1
                position += len(raw)
                if raw.strip():
                    lines.append(raw)
                    numbers.append(number)
                if len(lines) >= self.batch_size:
                    yield lines, numbers, position
                    lines, numbers = [], []
            yield lines, numbers, position

    def _ndjson(self, path: Path, summary: IngestSummary, pool: Executor | None) -> None:
        key = _source_key(path)
        offset = self._start_offset(path, key)
        if offset is None:
            summary.skipped_files += 1
            return
        # Validation of the next chunks (in worker processes) overlaps the database write of this one.
        ahead = max(1, self.workers - 1)
        pending: deque[tuple[list[bytes], list[int], int, Any]] = deque()
        chunks = self._chunks(path, offset)
        for lines, numbers, position in chunks:
            future = pool.submit(check_lines, lines) if pool is not None else None
            pending.append((lines, numbers, position, future))
            if len(pending) > ahead:
                self._commit(path, key, summary, *pending.popleft())
        while pending:
            item = pending.popleft()
            self._commit(path, key, summary, *item, done=not pending)

    def _commit(self, path: Path, key: str, summary: IngestSummary, lines: list[bytes], numbers: list[int],
                position: int, future: Any, done: bool = False) -> None:
        bad_list, facts = future.result() if future is not None else check_lines(lines)
        bad = dict(bad_list)
        resources = []
        for i, raw in enumerate(lines):
            if i in bad:
                summary.reject(Rejection(f"{path.name}:{numbers[i]}", bad[i]))
            else:
                resources.append(json.loads(raw))
        good = [numbers[i] for i in range(len(lines)) if i not in bad]
        outcomes = self.store.write_each(resources, facts, also=self._journal(path, key, position, done), durable=False)
        for number, resource, written in zip(good, resources, outcomes, strict=True):
            if isinstance(written, Exception):
                summary.reject(Rejection(f"{path.name}:{number}", [Issue(
                    "value", f"the database refused a value of this {resource.get('resourceType')} ({written})")]))
                continue
            summary.actions[written.action] += 1
            summary.by_type[written.resource_type] += 1
        self.progress(len(lines))

    # ------------------------------------------------------------------ Bundles and single resources

    def _json(self, path: Path, summary: IngestSummary) -> None:
        key = _source_key(path)
        if self._start_offset(path, key) is None:
            summary.skipped_files += 1
            return
        try:
            document = json.loads(path.read_bytes())
        except ValueError as exc:
            summary.reject(Rejection(path.name, [Issue("structure", f"not JSON: {exc}")]))
            self.progress(1)
            return
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            try:
                result = process_bundle(self.store, document, atomic=False)
            except FhirError as exc:
                summary.reject(Rejection(path.name, exc.issues))
                self.progress(1)
                return
            for outcome in result.entries:
                if outcome.issues:
                    summary.reject(Rejection(f"{path.name}#entry{outcome.index}", outcome.issues))
                elif outcome.written is not None:
                    summary.actions[outcome.written.action] += 1
                    summary.by_type[outcome.written.resource_type] += 1
            self.store.write([], also=self._journal(path, key, path.stat().st_size, True))
        else:
            issues = validate(document)
            if issues:
                summary.reject(Rejection(path.name, issues))
            else:
                for written in self.store.write([document], also=self._journal(path, key, path.stat().st_size, True)):
                    summary.actions[written.action] += 1
                    summary.by_type[written.resource_type] += 1
        self.progress(1)
