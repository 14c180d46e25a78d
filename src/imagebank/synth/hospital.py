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
