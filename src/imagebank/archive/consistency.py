"""Index versus blob store: find (and optionally repair) what a crash or an operator left behind.

What can legitimately exist after a crash (see :mod:`imagebank.archive.pipeline`) is an *orphan*
blob: bytes written whose index transaction never committed, or a replaced blob not yet deleted.
Orphans younger than a grace period are left alone because an ingest may be about to commit them.
A *missing* blob (indexed but absent) or a wrong computed count would be a real defect: the check
reports them, and ``repair`` recomputes counts (missing bytes cannot be conjured back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, Table, func, select, update

from imagebank.archive.pipeline import Archive
from imagebank.storage.schema import instances, patients, series, studies


@dataclass
class ConsistencyReport:
    instances: int = 0
    blobs: int = 0
    missing_blobs: list[str] = field(default_factory=list)
    size_mismatches: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    count_mismatches: list[str] = field(default_factory=list)
    removed_orphans: int = 0
    fixed_counts: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing_blobs or self.size_mismatches or self.count_mismatches)

    def render(self) -> str:
        lines = [
            f"index: {self.instances} instances; blob store: {self.blobs} blobs",
            f"missing blobs: {len(self.missing_blobs)}; size mismatches: {len(self.size_mismatches)}; "
            f"wrong computed counts: {len(self.count_mismatches)}; orphan blobs: {len(self.orphan_blobs)}",
        ]
        lines += [f"  missing: {uid}" for uid in self.missing_blobs[:20]]
        lines += [f"  count: {m}" for m in self.count_mismatches[:20]]
        if self.removed_orphans or self.fixed_counts:
            lines.append(f"repaired: removed {self.removed_orphans} orphan blobs, fixed {self.fixed_counts} counts")
        lines.append("consistent" if self.ok else "INCONSISTENT")
        return "\n".join(lines)


def _count_checks(conn: Connection) -> list[tuple[str, Table, int, dict[str, int]]]:
    """(label, table, pk, {column: true value}) for every row whose stored counts are wrong.

    True values are counted from the instance rows themselves (never from other stored counts), so
    one repair pass fixes every level at once.
    """
    wrong: list[tuple[str, Table, int, dict[str, int]]] = []
    per_series = {pk: int(n) for pk, n in conn.execute(
        select(instances.c.series_pk, func.count()).group_by(instances.c.series_pk))}
    for pk, stored in conn.execute(select(series.c.id, series.c.number_of_series_related_instances)):
        true = per_series.get(pk, 0)
        if stored != true:
            wrong.append((f"series #{pk}", series, pk, {"number_of_series_related_instances": true}))

    study_rows = conn.execute(
        select(series.c.study_pk, func.count(func.distinct(series.c.id)), func.count(instances.c.id))
        .select_from(series.outerjoin(instances, instances.c.series_pk == series.c.id))
        .group_by(series.c.study_pk))
    per_study = {pk: (int(n), int(i)) for pk, n, i in study_rows}
    for pk, n_series, n_inst in conn.execute(select(
            studies.c.id, studies.c.number_of_study_related_series, studies.c.number_of_study_related_instances)):
        t_series, t_inst = per_study.get(pk, (0, 0))
        if (n_series, n_inst) != (t_series, t_inst):
            wrong.append((f"study #{pk}", studies, pk, {"number_of_study_related_series": t_series,
                                                       "number_of_study_related_instances": t_inst}))

    patient_rows = conn.execute(
        select(studies.c.patient_pk, func.count(func.distinct(studies.c.id)), func.count(func.distinct(series.c.id)),
               func.count(instances.c.id))
        .select_from(studies.outerjoin(series, series.c.study_pk == studies.c.id)
                     .outerjoin(instances, instances.c.series_pk == series.c.id))
        .group_by(studies.c.patient_pk))
    per_patient = {pk: (int(a), int(b), int(c)) for pk, a, b, c in patient_rows}
    for pk, a, b, c in conn.execute(select(
            patients.c.id, patients.c.number_of_patient_related_studies,
            patients.c.number_of_patient_related_series, patients.c.number_of_patient_related_instances)):
        t_studies, t_series, t_inst = per_patient.get(pk, (0, 0, 0))
        if (a, b, c) != (t_studies, t_series, t_inst):
            wrong.append((f"patient #{pk}", patients, pk, {
                "number_of_patient_related_studies": t_studies, "number_of_patient_related_series": t_series,
                "number_of_patient_related_instances": t_inst}))
    return wrong


def check_archive(archive: Archive, *, repair: bool = False, grace_seconds: float = 3600.0,
                  verify_sizes: bool = True) -> ConsistencyReport:
    report = ConsistencyReport()
    engine = archive.index.engine
    referenced: set[str] = set()
    with engine.connect() as conn:
        for uid, key, size in conn.execute(select(instances.c.sop_instance_uid, instances.c.blob_key, instances.c.size)):
            report.instances += 1
            referenced.add(key)
            if not archive.blobs.exists(key):
                report.missing_blobs.append(uid)
            elif verify_sizes and archive.blobs.size(key) != size:
                report.size_mismatches.append(uid)
        wrong_counts = _count_checks(conn)
    report.count_mismatches = [label for label, *_ in wrong_counts]

    now = time.time()
    for key in archive.blobs.keys():
        report.blobs += 1
        if key in referenced:
            continue
        report.orphan_blobs.append(key)
        if repair and now - archive.blobs.modified_at(key) >= grace_seconds:
            if not archive.index.is_blob_referenced(key):  # re-check: an ingest may just have committed it
                archive.blobs.delete(key)
                report.removed_orphans += 1

    if repair and wrong_counts:
        with engine.begin() as conn:
            for _label, table, pk, values in wrong_counts:
                conn.execute(update(table).where(table.c.id == pk).values(**values))
                report.fixed_counts += 1
    if repair and hasattr(archive.blobs, "remove_stale_temporaries"):
        archive.blobs.remove_stale_temporaries()
    return report
