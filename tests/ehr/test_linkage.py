"""The synthetic hospital's images and EHR, loaded separately, end up as one record per patient:
MRN + issuer link DICOM to FHIR, Riverside duplicates merge through Patient.link, studies meet their
orders, reports and encounters; a cohort question can be answered from the joined data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select

from imagebank.archive.bulk import bulk_ingest
from imagebank.ehr import timeline
from imagebank.ehr.ingest import EhrIngest, list_sources
from imagebank.ehr.unlinked import report
from imagebank.storage.database import read_only
from imagebank.storage.schema import ehr_resource_codes, ehr_resources, fhir_patient_ids
from imagebank.synth.ehr import write_ndjson
from imagebank.synth.hospital import HospitalSpec, iter_items
from imagebank.synth.plan import plan_patient

PATIENTS = 40


def _load(archive: Any, settings: Any, store: Any, tmp_path: Path) -> None:
    spec = HospitalSpec(seed=42, patients=PATIENTS, metadata_only=True)
    bulk_ingest(archive, settings, iter_items(spec), job_key="t", workers=1, progress=False)
    write_ndjson(tmp_path / "ehr", 42, PATIENTS)
    summary = EhrIngest(store, workers=1).run(list_sources(tmp_path / "ehr"))
    assert summary.actions["rejected"] == 0, summary.render()


def test_everything_links_and_duplicates_merge(archive: Any, settings: Any, store: Any, tmp_path: Path) -> None:
    _load(archive, settings, store, tmp_path)
    with read_only(store.engine) as conn:
        findings = report(conn)
        assert {name: f["count"] for name, f in findings.items() if f["count"]} == {}
        records = conn.execute(select(func.count(func.distinct(fhir_patient_ids.c.record_id)))).scalar_one()
        assert records == PATIENTS  # 40 people, although some have two Patient resources
        duplicated = next(i for i in range(PATIENTS)
                          if conn.execute(select(fhir_patient_ids).where(
                              fhir_patient_ids.c.patient_id == f"42-{i}-rmc")).first())
        person = plan_patient(42, duplicated)
        record, dicom = timeline.resolve(conn, dicom=(person.mrn, "IBGH"))
        view = timeline.timeline(conn, record, dicom)
    assert {p["id"] for p in view["patients"]} == {f"42-{duplicated}", f"42-{duplicated}-rmc"}
    studies = [e for e in view["events"] if e["kind"] == "imaging-study"]
    assert len(studies) == len(person.studies)
    assert all("order" in s and "report" in s and "encounter" in s for s in studies)


def test_cohort_prostate_mri_within_90_days_of_diagnosis_with_psa_over_4(archive: Any, settings: Any, store: Any,
                                                                          tmp_path: Path) -> None:
    """The research question of the product brief, answered on the linked clinical data."""
    _load(archive, settings, store, tmp_path)
    expected = set()
    for i in range(PATIENTS):
        p = plan_patient(42, i)
        onset = next((c.onset for c in p.conditions if c.key == "prostate_cancer"), None)
        if onset and any(s.protocol.key == "MR_PROSTATE" and abs((s.date - onset).days) <= 90 for s in p.studies):
            expected.add(f"42-{i}")
    assert expected, "the synthetic hospital should contain prostate cancer patients"

    dx, lab = ehr_resources.alias("dx"), ehr_resources.alias("lab")
    dx_code, lab_code = ehr_resource_codes.alias("dxc"), ehr_resource_codes.alias("labc")
    with read_only(store.engine) as conn:
        rows = conn.execute(
            select(dx.c.record_id, dx.c.effective_date, lab.c.value_num, lab.c.effective_date.label("lab_day"))
            .join(dx_code, and_(dx_code.c.resource_pk == dx.c.id, dx_code.c.system == "http://hl7.org/fhir/sid/icd-10-cm",
                                dx_code.c.code == "C61"))
            .join(lab, lab.c.record_id == dx.c.record_id)
            .join(lab_code, and_(lab_code.c.resource_pk == lab.c.id, lab_code.c.system == "http://loinc.org",
                                 lab_code.c.code == "2857-1"))
            .where(dx.c.resource_type == "Condition", lab.c.value_num > 4)).all()
        with_psa = {r.record_id for r in rows}
        cohort = set()
        for record in with_psa:
            _rec, dicom = timeline.resolve(conn, record=record)
            view = timeline.timeline(conn, record, dicom)
            onset = next(dt.date.fromisoformat(e["date"][:10]) for e in view["events"]
                         if e["kind"] == "condition" and e.get("code", {}).get("code") == "C61")
            for event in view["events"]:
                if event["kind"] == "imaging-study" and "MR" in event["modalities"] and "PROSTATE" in event["title"] \
                        and abs((dt.date.fromisoformat(event["date"][:10]) - onset).days) <= 90:
                    cohort.add(next(p["id"] for p in view["patients"] if not p["id"].endswith("-rmc")))
    assert cohort and cohort <= expected
