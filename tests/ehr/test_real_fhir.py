"""FHIR written by others, not only our generator: HL7's official R4 examples, real Synthea output
and the carebundle generator's US Core NDJSON all load; what is invalid is named, the rest stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imagebank.ehr.ingest import EhrIngest, list_sources

SAMPLES = Path(__file__).parent / ".samples"
CLINICAL = ("Patient", "Encounter", "Condition", "Observation", "Procedure", "DiagnosticReport", "ServiceRequest",
            "ImagingStudy", "MedicationRequest")


def _samples(name: str) -> Path:
    folder = SAMPLES / name
    if not (SAMPLES / ".complete").is_file():
        message = f"{folder} missing: './run test' fetches the FHIR sample packages from the npm registry"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


def test_official_r4_examples_load(store: Any) -> None:
    folder = _samples("r4-examples")
    singles = [p for p in folder.glob("*.json") if p.name.split("-", 1)[0] in CLINICAL]
    assert len(singles) > 150
    summary = EhrIngest(store, workers=1).run(sorted(singles))
    # Every clinical example of the specification is valid R4 and must be accepted.
    assert summary.actions["rejected"] == 0, summary.render()
    assert all(summary.by_type[t] > 0 for t in CLINICAL), summary.by_type
    peter = store.read("Patient", "example").resource
    assert peter["name"][0]["family"] == "Chalmers"
    assert store.read("ImagingStudy", "example").resource["series"][0]["modality"]["code"] == "CT"


def test_official_example_bundles_load_entry_by_entry(store: Any) -> None:
    folder = _samples("r4-examples")
    bundles = []
    for path in sorted(folder.glob("Bundle-*.json")):
        kind = json.loads(path.read_text()).get("type")
        if kind in ("transaction", "batch", "collection", "searchset", "document"):
            bundles.append(path)
    assert len(bundles) >= 10
    summary = EhrIngest(store, workers=1).run(bundles)
    assert summary.stored > 50, summary.render()
    for rejection in summary.rejections:  # what fails is reported with the element at fault
        assert rejection.issues and rejection.issues[0].diagnostics


def test_synthea_patient_bundles_link_into_one_record_each(store: Any) -> None:
    folder = _samples("synthea")
    files = sorted(folder.glob("*.json"))
    assert len(files) == 2
    summary = EhrIngest(store, workers=1).run(files)
    assert summary.stored > 100, summary.render()
    # The fixture of one patient has two invalid R4 resources (Synthea v2.4 wrote Condition.category as
    # an object; a hand-added Observation has a time with a zone offset, which R4 ``time`` forbids): both
    # are refused with the element named, the rest of that patient's bundle loads (file ingest).
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        from imagebank.storage.schema import ehr_resources

        records = conn.execute(select(func.count(func.distinct(ehr_resources.c.record_id)))
                               .where(ehr_resources.c.resource_type.in_(CLINICAL))).scalar_one()
    assert summary.by_type["Patient"] == 2 and records == 2
    assert summary.by_type["ImagingStudy"] >= 1 and summary.by_type["Observation"] > 50
    assert summary.rejections, "the known-invalid Synthea Condition was accepted"
    assert {r.issues[0].expression for r in summary.rejections} == {
        "Bundle.entry[16].resource.category", "Bundle.entry[221].resource.valueTime"}


def test_carebundle_us_core_ndjson_loads(store: Any, tmp_path: Path) -> None:
    out = tmp_path / "carebundle"
    carebundle = str(Path(sys.executable).parent / "carebundle")
    subprocess.run([carebundle, "generate", "--profile", "mixed", "--count", "8", "--seed", "3", "--sex", "mixed",
                    "--format", "ndjson", "--out", str(out)], check=True, capture_output=True)
    files = list_sources(out)
    assert files, list(out.rglob("*"))
    summary = EhrIngest(store, workers=1).run(files)
    assert summary.actions["rejected"] == 0, summary.render()
    assert summary.by_type["Patient"] == 8 and summary.by_type["Observation"] > 20
