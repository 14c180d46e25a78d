"""Feed the synthetic hospital into the archive (through the bulk pipeline) or into a folder.

Generated instances travel as :class:`~imagebank.archive.sources.SourceItem` of kind ``synthetic``
whose name encodes ``patient/study/series/instance``: worker processes regenerate and render them
on their own, so the parent never holds pixel data and a million-patient run streams in flat memory.
The bulk journal makes an interrupted ``imagebank demo`` resumable like any other ingest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imagebank.archive.sources import SourceItem
from imagebank.synth.dicom_writer import render_instance
from imagebank.synth.plan import plan_patient

KIND = "synthetic"


@dataclass(frozen=True)
class HospitalSpec:
    seed: int = 42
    patients: int = 10
    metadata_only: bool = False
    #: Cap on instances per series (metadata-only defaults to 1: tiny and still hierarchical).
    max_instances_per_series: int | None = None

    @property
    def cap(self) -> int | None:
        if self.max_instances_per_series is not None:
            return self.max_instances_per_series
        return 1 if self.metadata_only else None

    @property
    def container(self) -> str:
        return f"{self.seed}:{int(self.metadata_only)}:{self.cap or 0}"


def _parse_container(container: str) -> tuple[int, bool, int | None]:
    seed, metadata_only, cap = container.split(":")
    return int(seed), metadata_only == "1", int(cap) or None


def load_synthetic(item: SourceItem) -> bytes:
    seed, metadata_only, cap = _parse_container(item.container)
    p, s, se, n = (int(x) for x in item.name.split("/"))
    patient = plan_patient(seed, p, cap)
    study = patient.studies[s]
    return render_instance(patient, study, study.series[se], n, metadata_only=metadata_only)



def iter_items(spec: HospitalSpec) -> Iterator[SourceItem]:
    for p in range(spec.patients):
        patient = plan_patient(spec.seed, p, spec.cap)
        for s, study in enumerate(patient.studies):
            for se, series in enumerate(study.series):
                for n in range(1, series.instances + 1):
                    yield SourceItem(KIND, spec.container, f"{p}/{s}/{se}/{n}", 0, 0)


def count_instances(spec: HospitalSpec) -> int:
    return sum(series.instances for p in range(spec.patients)
               for study in plan_patient(spec.seed, p, spec.cap).studies for series in study.series)


def write_folder(spec: HospitalSpec, out: str | os.PathLike[str]) -> int:
    """Write the hospital as PS3.10 files under ``out/<MRN>/<study>/<series>/<n>.dcm``; returns the count."""
    root = Path(out)
    written = 0
    for item in iter_items(spec):
        p, s, se, n = (int(x) for x in item.name.split("/"))
        patient = plan_patient(spec.seed, p, spec.cap)
        path = root / patient.mrn / f"S{s:02d}" / f"SE{se + 1:02d}" / f"{n:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(load_synthetic(item))
        written += 1
    return written


def _ct_slice(args: tuple[int, int, int, bool]) -> tuple[str, bytes]:
    """Slice ``n`` of a long CT chest series for patient ``p`` (benchmark corpus)."""
    import dataclasses

    from imagebank.synth.plan import STUDY_PROTOCOLS

    seed, p, n, metadata_only = args
    patient = plan_patient(seed, p)
    protocol = STUDY_PROTOCOLS["CT_CHEST"]
    base = patient.studies[0]
    series = dataclasses.replace(base.series[0], protocol=protocol.series[0], instances=CT_CORPUS_SERIES_LENGTH)
    study = dataclasses.replace(base, protocol=protocol, series=(series,))
    name = f"{patient.mrn}/{n:05d}.dcm"
    return name, render_instance(patient, study, series, n, metadata_only=metadata_only)


CT_CORPUS_SERIES_LENGTH = 250


def write_ct_corpus(out: str | os.PathLike[str], slices: int, *, seed: int = 1, metadata_only: bool = False,
                    processes: int | None = None) -> int:
    """Write ``slices`` CT slices (512x512, 16-bit; 250-slice series, one per patient) under ``out``.

    Already-written files are kept, so a benchmark corpus is generated once and reused.
    """
    from multiprocessing import get_context

    root = Path(out)
    jobs = [(seed, i // CT_CORPUS_SERIES_LENGTH, i % CT_CORPUS_SERIES_LENGTH + 1, metadata_only)
            for i in range(slices)]
    todo = [j for j in jobs if not (root / plan_patient(seed, j[1]).mrn / f"{j[2]:05d}.dcm").is_file()]
    with get_context("spawn").Pool(processes or os.cpu_count()) as pool:
        for name, data in pool.imap_unordered(_ct_slice, todo, chunksize=16):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
    return len(jobs)
