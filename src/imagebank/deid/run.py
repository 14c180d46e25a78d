"""The de-identification job: sources in, released objects or quarantine records out. Resumable, parallel.

For every source object (a DICOM file, an archived instance, a patient's EHR resources):

1. read it; anything unreadable is quarantined with the reason;
2. resolve its subject (:mod:`.subjects`) and what is known to identify them (the object + their EHR record);
3. de-identify (:mod:`.dicom`, :mod:`.ehr`), pixel data included (:mod:`.pixels`);
4. run the leak verifier (:mod:`.verify`) on the result: any hit quarantines the object;
5. write it atomically (temporary file + rename; synced to disk before it is journaled, in groups, see
   :class:`GroupCommit`): an output file either is complete and verified or does not exist;
6. record the pseudonym and study in the linkage vault, then the source in the job journal, so a rerun
   skips what is done (a crash between 5 and 6 redoes one object and rewrites the same bytes).

Quarantine records (reason, source location) stay in the clinical zone (``DATA/deid-quarantine``); the
output's ``deid-report.json`` carries counts only. Logs and reports never contain patient values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebank.deid.dicom import DicomDeidentifier
from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.deid.profile import Option, Profile
from imagebank.deid.verify import LeakScanner
from imagebank.dicom import quiet_pydicom
from imagebank.dicom.part10 import part10_chunks

#: Sources handed to a worker at once: enough to amortize inter-process overhead, small enough to balance.
BATCH = 16


@dataclass(frozen=True)
class Source:
    """One object to de-identify: a file path, or a blob key of the archive."""

    kind: str  # "file" | "blob"
    location: str
    label: str  # journal identity: path + size + mtime, or SOP Instance UID + blob key

    @property
    def journal_key(self) -> str:
        return hashlib.sha256(self.label.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs (picklable): it rebuilds the engine from this."""

    key: bytes
    max_shift_days: int
    profile: Profile
    issuer_systems: dict[str, str]
    output_dir: str
    database_url: str | None = None  # the index, for EHR-aware subjects; None: direct keys only
    blob_url: str | None = None
    pixel_rules_file: str | None = None
    ocr: bool = True
    institutions: tuple[str, ...] = ()


@dataclass
class ItemResult:
    source: Source
    status: str  # "released" | "quarantined"
    reason: str = ""
    message: str = ""
    output: str = ""
    pseudonym: str = ""
    subject_key: str = ""
    shift_days: int = 0
    study_uid: str = ""
    source_study_uid: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    pixel_method: str = "none"


@dataclass
class JobReport:
    project: str
    profile: dict[str, Any]
    released: int = 0
    quarantined: int = 0
    skipped: int = 0  # done by an earlier run (journal)
    reasons: Counter[str] = field(default_factory=Counter)
    pixel_methods: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    ehr_resources: int = 0
    ehr_quarantined: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["reasons"] = dict(self.reasons)
        data["pixel_methods"] = dict(self.pixel_methods)
        return data


# ---------------------------------------------------------------------------------------------- workers
class Worker:
    """One process's engine: built once, then fed batches of sources."""

    def __init__(self, config: WorkerConfig) -> None:
        from sqlalchemy import create_engine

        from imagebank.deid.pixels import DEFAULT_RULES_PATH, find_ocr, load_rules
        from imagebank.deid.pseudonyms import Pseudonymizer
        from imagebank.deid.subjects import SubjectResolver

        self.config = config
        self.pseudonyms = Pseudonymizer(config.key, max_shift_days=config.max_shift_days)
        rules = list(load_rules(DEFAULT_RULES_PATH))
        if config.pixel_rules_file:
            rules += load_rules(Path(config.pixel_rules_file))
        self.engine = DicomDeidentifier(config.profile, self.pseudonyms, pixel_rules=tuple(rules),
                                        ocr=find_ocr() if config.ocr else None, institutions=config.institutions)
        self.resolver = SubjectResolver(config.issuer_systems,
                                        create_engine(config.database_url) if config.database_url else None)
        self.blobs = None
        if config.blob_url:
            from imagebank.storage.blobs import open_blob_store
            self.blobs = open_blob_store(config.blob_url)
        self.output = Path(config.output_dir)
        self.profile = config.profile

    def process(self, source: Source) -> ItemResult:
        try:
            return self._process(source)
        except Quarantined as exc:
            return ItemResult(source, "quarantined", exc.reason, exc.message)
        except MemoryError:
            return ItemResult(source, "quarantined", "too-large", "the object does not fit in memory")
        except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError, OverflowError,
                IndexError, EOFError) as exc:
            # Values are decoded on first use: an element pydicom cannot decode shows up here.
            return ItemResult(source, "quarantined", "unreadable", f"cannot decode an element ({type(exc).__name__})")

    def _read(self, source: Source) -> tuple[Dataset, int]:
        if source.kind == "blob":
            if self.blobs is None:
                raise Quarantined("unreadable", "no blob store configured for archive sources")
            data = self.blobs.get(source.location)
        else:
            try:
                data = Path(source.location).read_bytes()
            except OSError as exc:
                raise Quarantined("unreadable", f"cannot read the file ({exc.strerror})") from None
        return read_dicom(data), len(data)

    def _process(self, source: Source) -> ItemResult:
        ds, size = self._read(source)
        patient_id = str(ds.get("PatientID", "") or "").strip()
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
        if not patient_id:
            # No patient to key on: each study becomes its own subject (still pseudonymous, still shifted).
            patient_id = "study:" + str(ds.get("StudyInstanceUID", "") or "unknown")
        subject, record = self.resolver.for_dicom(patient_id, issuer)
        known = KnownIdentifiers.from_dataset(ds)
        known.update(self.resolver.known_for_record(record))
        scanner = self.scanner(known, subject)
        result = self.engine.deidentify(ds, subject=subject, known=known)
        leaks = scanner.scan_dataset(result.dataset, allowed_private=self._kept_private(result.dataset),
                                     constant=self.engine.constant_elements)
        if leaks:
            raise Quarantined("leak", "the verifier found " + "; ".join(sorted({str(x) for x in leaks})[:5]))
        out_ds = result.dataset
        rel = Path(result.pseudonym) / _safe(out_ds.get("StudyInstanceUID", "study")) / _safe(
            out_ds.get("SeriesInstanceUID", "series")) / f"{_safe(out_ds.get('SOPInstanceUID', 'instance'))}.dcm"
        written = write_atomic(out_ds, self.output / "dicom" / rel)
        return ItemResult(source, "released", output=str(rel), pseudonym=result.pseudonym, subject_key=subject,
                          shift_days=self.pseudonyms.date_shift_days(subject), study_uid=result.study_uid,
                          source_study_uid=result.source_study_uid, bytes_in=size, bytes_out=written,
                          pixel_method=result.pixel_method)

    def scanner(self, known: KnownIdentifiers, subject: str) -> LeakScanner:
        profile = self.profile
        return LeakScanner(
            known, shifted_dates={self.pseudonyms.shift_date(d, subject) for d in known.dates},
            check_dates=not profile.has(Option.RETAIN_FULL_DATES),
            check_uids=not profile.has(Option.RETAIN_UIDS),
            check_institutions=not profile.has(Option.RETAIN_INSTITUTION_IDENTITY))

    def _kept_private(self, ds: Dataset) -> frozenset[int]:
        if not self.profile.has(Option.RETAIN_SAFE_PRIVATE):
            return frozenset()
        return frozenset(int(e.tag) for e in ds if e.tag.is_private)


def read_dicom(data: bytes) -> Dataset:
    """Parse a whole DICOM object, or raise :class:`Quarantined` saying why it cannot be."""
    try:
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            # No preamble: still DICOM if it starts like a raw data set (group 0002 or 0008, little endian).
            if len(data) < 8 or int.from_bytes(data[:2], "little") not in (0x0002, 0x0008):
                raise Quarantined("unreadable", "not a DICOM file") from None
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        _check_complete(ds)
    except (InvalidDicomError, ValueError, TypeError, KeyError, NotImplementedError, EOFError, OverflowError,
            AttributeError, IndexError) as exc:
        raise Quarantined("unreadable", f"not a readable DICOM object ({type(exc).__name__})") from None
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise Quarantined("unreadable", "not a DICOM composite instance (no SOP Class/Instance UID)")
    return ds


def _check_complete(ds: Dataset) -> None:
    """pydicom reads a file cut short without complaint, giving its last value fewer bytes than its header
    announced: such a file is a half-transferred object and must not be released."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if isinstance(value, (bytes, bytearray)) and length not in (None, 0xFFFFFFFF) and len(value) < length:
            raise Quarantined("truncated", "the file ends before its last element (a partial transfer?)")


_MADE_DIRS: set[Path] = set()


def write_atomic(ds: Dataset, path: Path) -> int:
    """Write ``ds`` as a PS3.10 file at ``path`` via a temporary file and rename; returns its size."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (False, True))
        new_meta = FileMetaDataset()
        new_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        new_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        new_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                      ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)
        ds.file_meta = new_meta
    if path.parent not in _MADE_DIRS:
        path.parent.mkdir(parents=True, exist_ok=True)
        if len(_MADE_DIRS) < 100_000:
            _MADE_DIRS.add(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        chunks = part10_chunks(ds)
        with open(tmp, "wb") as file:
            file.writelines(chunks)
        os.replace(tmp, path)
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        tmp.unlink(missing_ok=True)
        raise Quarantined("unwritable", f"the de-identified object cannot be encoded ({type(exc).__name__})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sum(len(chunk) for chunk in chunks)


def _safe(uid: object) -> str:
    text = str(uid or "")
    return "".join(c for c in text if c.isalnum() or c in ".-") or "unknown"


_WORKER: Worker | None = None


def _init_worker(config: WorkerConfig) -> None:
    global _WORKER
    quiet_pydicom()
    _WORKER = Worker(config)


def _run_batch(batch: list[Source]) -> list[ItemResult]:
    if _WORKER is None:
        raise RuntimeError("the de-identification worker was not initialised")
    return [_WORKER.process(source) for source in batch]


class GroupCommit:
    """Journal lines become durable in groups, behind the work: a background thread syncs the outputs
    written so far to disk, then appends their lines to the journal and fsyncs it.

    A line is only ever taken after its output file was renamed into place, and written only after a sync
    that started later, so the journal never names a file that a power cut could lose; the work itself
    never waits for the disk (one sync per group instead of one fsync per file).
    """

    def __init__(self, path: Path, *, max_items: int = 64, max_seconds: float = 1.0) -> None:
        import threading

        self.path = path
        self.max_items = max_items
        self.max_seconds = max_seconds
        self._pending: list[str] = []
        self._cond = threading.Condition()
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="deid-group-commit", daemon=True)
        self._thread.start()

    def add(self, lines: list[str]) -> None:
        if self._error is not None:
            raise self._error
        with self._cond:
            self._pending.extend(lines)
            if len(self._pending) >= self.max_items:
                self._cond.notify()

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._stop and len(self._pending) < self.max_items:
                        self._cond.wait(self.max_seconds)
                    lines, self._pending = self._pending, []
                    stop = self._stop
                if lines:
                    os.sync()
                    with open(self.path, "a", encoding="utf-8") as journal:
                        journal.write("".join(lines))
                        journal.flush()
                        os.fsync(journal.fileno())
                if stop:
                    with self._cond:
                        if not self._pending:
                            return
        except Exception as exc:  # noqa: BLE001 - any failure is raised in the job by add()/close()
            self._error = exc

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error


# ---------------------------------------------------------------------------------------------- sources
def file_sources(paths: Iterable[Path]) -> Iterator[Source]:
    """Every file under ``paths`` (folders walked in sorted order; hidden files skipped)."""
    for root in paths:
        if root.is_file():
            candidates: Iterable[Path] = [root]
        else:
            candidates = sorted(p for p in root.rglob("*") if p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(root).parts))
        for path in candidates:
            stat = path.stat()
            resolved = str(path.resolve())
            yield Source("file", resolved, f"file:{resolved}:{stat.st_size}:{stat.st_mtime_ns}")


def archive_sources(index_engine: Any, study_uids: Iterable[str] | None) -> Iterator[Source]:
    """The stored instances of the given studies (all studies when None), from the archive's index."""
    from sqlalchemy import select

    from imagebank.storage.database import read_only
    from imagebank.storage.index import MetadataIndex
    from imagebank.storage.schema import studies

    if study_uids is None:
        with read_only(index_engine) as conn:
            study_uids = [r[0] for r in conn.execute(select(studies.c.study_instance_uid).order_by(studies.c.id))]
    index = MetadataIndex(index_engine)
    for study_uid in study_uids:
        for located in index.locate(study_uid):
            yield Source("blob", located.blob_key, f"blob:{located.sop_instance_uid}:{located.blob_key}")


# ---------------------------------------------------------------------------------------------- the job
class DeidJob:
    """Runs sources through workers, keeps the journal, the vault and the quarantine up to date."""

    def __init__(self, config: WorkerConfig, *, project: str, vault: Any, quarantine_dir: Path,
                 workers: int = 1) -> None:
        self.config = config
        self.project = project
        self.vault = vault
        self.quarantine_dir = quarantine_dir
        self.workers = max(1, workers)
        self.output = Path(config.output_dir)
        self.journal_path = self.output / ".deid-journal"
        self.report = JobReport(project, config.profile.describe())
        self._recorded: set[tuple[str, str]] = set()

    def done_keys(self, *, retry_quarantined: bool = False) -> set[str]:
        """Sources finished by earlier runs (quarantined ones too, unless they are to be tried again)."""
        if not self.journal_path.is_file():
            return set()
        done = set()
        for line in self.journal_path.read_text().splitlines():
            key, _, status = line.partition("\t")
            if key and (status == "released" or not retry_quarantined):
                done.add(key)
        return done

    def run(self, sources: Iterable[Source], *, progress: Callable[[int], None] | None = None,
            retry_quarantined: bool = False) -> JobReport:
        started = time.perf_counter()
        self.output.mkdir(parents=True, exist_ok=True)
        for stale in (self.output / "dicom").rglob(".*.tmp"):  # left by a run that was killed mid-write
            stale.unlink(missing_ok=True)
        done = self.done_keys(retry_quarantined=retry_quarantined)
        pending = []
        for source in sources:
            if source.journal_key in done:
                self.report.skipped += 1
                if progress:
                    progress(1)
            else:
                pending.append(source)
        batches = [pending[i:i + BATCH] for i in range(0, len(pending), BATCH)]
        journal = GroupCommit(self.journal_path)
        try:
            if self.workers == 1:
                _init_worker(self.config)
                results: Iterable[list[ItemResult]] = map(_run_batch, batches)
                self._collect(results, journal, progress)
            else:
                with ProcessPoolExecutor(self.workers, initializer=_init_worker, initargs=(self.config,)) as pool:
                    self._collect(pool.map(_run_batch, batches), journal, progress)
        finally:
            journal.close()
        self.report.seconds += time.perf_counter() - started
        return self.report

    def _collect(self, results: Iterable[list[ItemResult]], journal: GroupCommit,
                 progress: Callable[[int], None] | None) -> None:
        for batch in results:
            # The vault first (one transaction per batch, only what it has not seen), then the journal: a
            # crash in between redoes the batch, never journals an output the vault cannot trace back.
            entries = [(i.pseudonym, i.subject_key, i.shift_days, i.study_uid, i.source_study_uid) for i in batch
                       if i.status == "released" and (i.pseudonym, i.study_uid) not in self._recorded]
            if entries:
                self.vault.record_many(self.project, entries)
                self._recorded.update((e[0], e[3]) for e in entries)
            for item in batch:
                if item.status == "released":
                    self.report.released += 1
                    self.report.bytes_in += item.bytes_in
                    self.report.bytes_out += item.bytes_out
                    self.report.pixel_methods[item.pixel_method] += 1
                else:
                    self._quarantine(item)
            journal.add([f"{item.source.journal_key}\t{item.status}\n" for item in batch])
            if progress:
                progress(len(batch))

    def _quarantine(self, item: ItemResult) -> None:
        """Recorded in the clinical zone with where the source is; the output report counts reasons only."""
        self.report.quarantined += 1
        self.report.reasons[item.reason] += 1
        self.quarantine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {"project": self.project, "source": item.source.location, "kind": item.source.kind,
                  "reason": item.reason, "message": item.message,
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = self.quarantine_dir / f"{item.source.journal_key[:32]}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    def write_report(self) -> Path:
        path = self.output / "deid-report.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report.as_dict(), indent=1, sort_keys=True))
        os.replace(tmp, path)
        return path


# ---------------------------------------------------------------------------------------------- EHR rows
class EhrExport:
    """De-identify the EHR tables per patient record into ``OUTPUT/ehr/<ResourceType>.ndjson``.

    Each record's resources share the subject key, pseudonym and date shift of that person's images. The
    files are written as ``.part`` and renamed at the end: a crashed export leaves no partial output.
    """

    def __init__(self, worker: Worker, index_engine: Any, *, project: str, vault: Any, quarantine: DeidJob) -> None:
        from imagebank.deid.ehr import FhirDeidentifier

        self.worker = worker
        self.engine = index_engine
        self.project = project
        self.vault = vault
        self.quarantine = quarantine
        self.fhir = FhirDeidentifier(worker.pseudonyms, institutions=worker.config.institutions)

    def records(self) -> list[int]:
        from sqlalchemy import select

        from imagebank.storage.database import read_only
        from imagebank.storage.schema import ehr_resources

        with read_only(self.engine) as conn:
            return sorted(int(r[0]) for r in conn.execute(
                select(ehr_resources.c.record_id).where(ehr_resources.c.record_id.is_not(None)).distinct()))

    def run(self, records: Iterable[int] | None = None, *,
            progress: Callable[[int], None] | None = None) -> JobReport:
        from sqlalchemy import select

        from imagebank.storage.database import read_only
        from imagebank.storage.schema import ehr_resources, fhir_patient_ids

        report = self.quarantine.report
        started = time.perf_counter()
        folder = self.worker.output / "ehr"
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, Any] = {}
        try:
            for record in (self.records() if records is None else records):
                subject = self.worker.resolver.for_record(record) or f"urn:imagebank:record|{record}"
                known = self.worker.resolver.known_for_record(record)
                scanner = self.worker.scanner(known, subject)
                with read_only(self.engine) as conn:
                    patient_ids = frozenset(r[0] for r in conn.execute(
                        select(fhir_patient_ids.c.patient_id).where(fhir_patient_ids.c.record_id == record)))
                    rows = list(conn.execute(select(ehr_resources.c.resource_type, ehr_resources.c.resource_id,
                                                    ehr_resources.c.resource_json)
                                             .where(ehr_resources.c.record_id == record)
                                             .order_by(ehr_resources.c.id)))
                pseudonym = self.worker.pseudonyms.patient(subject)
                for row in rows:
                    source = Source("ehr", f"{row.resource_type}/{row.resource_id}",
                                    f"ehr:{row.resource_type}/{row.resource_id}")
                    try:
                        out = self.fhir.deidentify(json.loads(row.resource_json), subject=subject, known=known,
                                                   patient_ids=patient_ids)
                        leaks = scanner.scan_json(out, row.resource_type)
                        if leaks:
                            raise Quarantined("leak", "the verifier found " + "; ".join(
                                sorted({str(x) for x in leaks})[:5]))
                    except Quarantined as exc:
                        report.ehr_quarantined += 1
                        self.quarantine._quarantine(ItemResult(source, "quarantined", exc.reason, exc.message))
                        continue
                    handle = files.get(row.resource_type)
                    if handle is None:
                        handle = files[row.resource_type] = open(
                            folder / f"{row.resource_type}.ndjson.part", "w", encoding="utf-8")
                    handle.write(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n")
                    report.ehr_resources += 1
                self.vault.record(self.project, pseudonym=pseudonym, subject_key=subject,
                                  date_shift_days=self.worker.pseudonyms.date_shift_days(subject))
                if progress:
                    progress(1)
        finally:
            for handle in files.values():
                handle.close()
        for rtype in files:
            os.replace(folder / f"{rtype}.ndjson.part", folder / f"{rtype}.ndjson")
        report.seconds += time.perf_counter() - started
        return report
