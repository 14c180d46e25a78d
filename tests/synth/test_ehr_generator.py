"""The synthetic EHR is deterministic, valid FHIR R4, linked to the imaging and clinically coherent."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import json
import re
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psutil
import pytest
from fhir.resources.R4B import get_fhir_model_class

from imagebank.synth.ehr import (
    ACCESSION_SYSTEM,
    FHIR_BASE,
    ISSUER_SYSTEMS,
    iter_resources,
    patient_bundle,
    patient_resources,
    write_ndjson,
)
from imagebank.synth.plan import REFERENCE_DATE, SyntheticPatient, plan_patient

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _dump(resources: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> str:
    return json.dumps(list(resources), ensure_ascii=False, sort_keys=True)


@cache
def _record(seed: int, index: int) -> tuple[SyntheticPatient, tuple[dict[str, Any], ...]]:
    patient = plan_patient(seed, index)
    return patient, tuple(patient_resources(patient))


def _of_type(resources: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == kind]


def _code(resource: dict[str, Any]) -> str:
    return str(resource["code"]["coding"][0]["code"])


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _day(stamp: str) -> dt.date:
    return dt.date.fromisoformat(stamp[:10])


def _patients_with(profile: str, seed: int = 42, first: int = 200) -> list[int]:
    return [i for i in range(first) if any(c.key == profile for c in plan_patient(seed, i).conditions)]


# ---------------------------------------------------------------------- determinism


def test_same_seed_same_record_and_other_seed_differs() -> None:
    plan_patient.cache_clear()
    first = _dump(iter_resources(7, 6))
    plan_patient.cache_clear()
    assert _dump(iter_resources(7, 6)) == first
    assert _dump(iter_resources(8, 6)) != first


def test_patient_record_does_not_depend_on_how_many_patients_are_generated() -> None:
    alone = _dump(iter_resources(7, 1, start=4))
    plan_patient.cache_clear()
    among_many = [r for r in iter_resources(7, 9) if r["id"].startswith("7-4-") or r["id"] in ("7-4", "7-4-rmc")]
    assert _dump(among_many) == alone


# ---------------------------------------------------------------------- validity


def test_every_resource_validates_against_the_fhir_r4b_models() -> None:
    seen: Counter[str] = Counter()
    ids: set[tuple[str, str]] = set()
    for index in range(40):
        _patient, resources = _record(42, index)
        assert resources[0]["resourceType"] == "Patient"
        for resource in resources:
            kind = resource["resourceType"]
            get_fhir_model_class(kind).model_validate(resource)
            assert FHIR_ID.match(resource["id"]), resource["id"]
            assert (kind, resource["id"]) not in ids
            ids.add((kind, resource["id"]))
            seen[kind] += 1
    assert set(seen) == {"Patient", "Encounter", "Condition", "Procedure", "MedicationRequest", "ServiceRequest",
                         "Observation", "DiagnosticReport"}


def test_bundles_validate_and_use_put_for_transactions() -> None:
    patient = plan_patient(42, 3)
    transaction = patient_bundle(patient)
    get_fhir_model_class("Bundle").model_validate(transaction)
    assert transaction["type"] == "transaction"
    for entry in transaction["entry"]:
        path = f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        assert entry["request"] == {"method": "PUT", "url": path}
        assert entry["fullUrl"] == f"{FHIR_BASE}/{path}"
    collection = patient_bundle(patient, "collection")
    get_fhir_model_class("Bundle").model_validate(collection)
    assert all("request" not in e for e in collection["entry"])
    assert [e["resource"] for e in collection["entry"]] == patient_resources(patient)
    with pytest.raises(ValueError, match="bundle_type"):
        patient_bundle(patient, "searchset")


def test_references_resolve_inside_the_patients_record() -> None:
    for index in range(40):
        _patient, resources = _record(42, index)
        present = {f"{r['resourceType']}/{r['id']}" for r in resources}
        for resource in resources:
            for reference in _references(resource):
                assert not reference.startswith(("http:", "https:", "urn:"))  # relative references only
                if not reference.startswith("ImagingStudy/"):  # the archive holds those
                    assert reference in present, (resource["id"], reference)


def test_nothing_happens_after_the_reference_date() -> None:
    for index in range(40):
        _patient, resources = _record(42, index)
        for resource in resources:
            for key in ("effectiveDateTime", "performedDateTime", "authoredOn", "occurrenceDateTime",
                        "onsetDateTime", "recordedDate"):
                if key in resource:
                    assert _day(resource[key]) < REFERENCE_DATE, (resource["id"], key)
            if "issued" in resource:
                assert _day(resource["issued"]) <= REFERENCE_DATE


# ---------------------------------------------------------------------- linkage with the imaging


def test_patient_carries_the_dicom_mrn_issuer_and_demographics() -> None:
    for index in range(40):
        patient, resources = _record(42, index)
        main = resources[0]
        assert main["id"] == f"42-{index}"
        mrn = main["identifier"][0]
        assert (mrn["system"], mrn["value"]) == (ISSUER_SYSTEMS["IBGH"], patient.mrn)
        assert mrn["type"]["coding"][0]["code"] == "MR"
        assert main["name"][0]["family"] == patient.family_name and main["name"][0]["given"] == [patient.given_name]
        assert main["gender"] == {"M": "male", "F": "female"}[patient.sex]
        assert main["birthDate"] == patient.birth_date.isoformat()
        assert {t["system"] for t in main["telecom"]} == {"phone", "email"} and main["address"][0]["postalCode"]


def test_orders_and_reports_carry_the_study_accession_numbers_and_an_encounter_on_the_study_date() -> None:
    for index in range(40):
        patient, resources = _record(42, index)
        studies = {s.accession_number: s for s in patient.studies}
        encounters = {e["id"]: e for e in _of_type(resources, "Encounter")}
        orders = {}
        for order in _of_type(resources, "ServiceRequest"):
            acsn = order["identifier"][0]
            assert acsn["system"] == ACCESSION_SYSTEM and acsn["type"]["coding"][0]["code"] == "ACSN"
            study = studies[acsn["value"]]
            assert order["code"]["coding"][0]["code"] == study.protocol.code
            assert _day(order["occurrenceDateTime"]) == study.date
            assert _day(order["authoredOn"]) <= study.date
            encounter = encounters[order["encounter"]["reference"].split("/")[1]]
            assert _day(encounter["period"]["start"]) == study.date
            assert encounter["serviceProvider"]["display"] == study.institution
            orders[acsn["value"]] = order
        assert set(orders) == set(studies)
        reports = _of_type(resources, "DiagnosticReport")
        assert {r["identifier"][0]["value"] for r in reports} == set(studies)
        for report in reports:
            acc = report["identifier"][0]["value"]
            study = studies[acc]
            assert report["basedOn"] == [{"reference": f"ServiceRequest/{orders[acc]['id']}"}]
            assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study.uid}"}]
            assert report["encounter"] == orders[acc]["encounter"]
            assert _day(report["issued"]) == study.date + dt.timedelta(days=1)
            text = base64.b64decode(report["presentedForm"][0]["data"]).decode("utf-8")
            for line in (f"Patient: {patient.given_name} {patient.family_name}", f"MRN: {patient.mrn}",
                         f"DOB: {patient.birth_date.isoformat()}", f"Accession: {acc}",
                         f"Exam date: {study.date.isoformat()}", f"Institution: {study.institution}"):
                assert line in text
            assert "IMPRESSION:" in text and "Electronically signed by Dr. " in text
            assert report["conclusion"] in text


def test_spine_injury_work_up_is_an_emergency_encounter() -> None:
    index = _patients_with("spine_injury")[0]
    patient, resources = _record(42, index)
    first = next(s for s in patient.studies if s.indication == "spine_injury")
    order = next(o for o in _of_type(resources, "ServiceRequest") if o["identifier"][0]["value"] == first.accession_number)
    encounter = next(e for e in _of_type(resources, "Encounter") if f"Encounter/{e['id']}" == order["encounter"]["reference"])
    assert encounter["class"]["code"] == "EMER"


def test_riverside_duplicates_link_both_ways_and_keep_their_own_resources() -> None:
    duplicated = 0
    for index in range(100):
        _patient, resources = _record(42, index)
        patients = _of_type(resources, "Patient")
        if len(patients) == 1:
            assert "link" not in patients[0]
            continue
        duplicated += 1
        main, rmc = patients
        assert rmc["id"] == f"{main['id']}-rmc"
        assert main["link"] == [{"other": {"reference": f"Patient/{rmc['id']}"}, "type": "replaces"}]
        assert rmc["link"] == [{"other": {"reference": f"Patient/{main['id']}"}, "type": "replaced-by"}]
        assert rmc["identifier"][0]["system"] == ISSUER_SYSTEMS["RMC"] and rmc["identifier"][0]["value"].startswith("R")
        assert (rmc["name"], rmc["birthDate"], rmc["gender"]) == (main["name"], main["birthDate"], main["gender"])
        on_rmc = [r for r in resources[2:] if r["subject"]["reference"] == f"Patient/{rmc['id']}"]
        kinds = Counter(r["resourceType"] for r in on_rmc)
        assert kinds["Encounter"] == 1 and kinds["Observation"] >= 2
        assert max(_day(r.get("effectiveDateTime") or r["period"]["start"]) for r in on_rmc) < min(
            _day(s["occurrenceDateTime"]) for s in _of_type(resources, "ServiceRequest"))
    assert 3 <= duplicated <= 25


# ---------------------------------------------------------------------- disease patterns


def test_prostate_cancer_has_a_rising_psa_above_4_near_diagnosis_and_a_gleason_score() -> None:
    indices = _patients_with("prostate_cancer")
    assert len(indices) >= 5
    earlier_below_4 = 0
    for index in indices:
        patient, resources = _record(42, index)
        onset = next(c.onset for c in patient.conditions if c.key == "prostate_cancer")
        psa = [(_day(o["effectiveDateTime"]), o["valueQuantity"]["value"]) for o in _of_type(resources, "Observation")
               if _code(o) == "2857-1" and "valueQuantity" in o]
        assert psa and all(o["valueQuantity"]["unit"] == "ng/mL" for o in _of_type(resources, "Observation")
                           if _code(o) == "2857-1" and "valueQuantity" in o)
        assert any(v > 4 and abs((day - onset).days) <= 90 for day, v in psa)
        earlier_below_4 += any(v < 4 and day < onset for day, v in psa)
        biopsy = next(p for p in _of_type(resources, "Procedure") if _code(p) == "65575008")
        gleason = next(o for o in _of_type(resources, "Observation") if _code(o) == "35266-6")
        assert 6 <= gleason["valueInteger"] <= 9 and gleason["partOf"] == [{"reference": f"Procedure/{biopsy['id']}"}]
        assert any(m["medicationCodeableConcept"]["coding"][0]["code"] == "42375"
                   for m in _of_type(resources, "MedicationRequest"))
    assert earlier_below_4 >= 1


def test_mammograms_get_a_birads_assessment_that_matches_the_report() -> None:
    cancer_first: Counter[int] = Counter()
    checked = 0
    for index in range(200):
        patient, resources = _record(42, index)
        observations = {o["id"]: o for o in _of_type(resources, "Observation")}
        seen_cancer = False
        for report in _of_type(resources, "DiagnosticReport"):
            study = next(s for s in patient.studies if s.accession_number == report["identifier"][0]["value"])
            if study.protocol.modality != "MG":
                assert "result" not in report
                continue
            (result,) = report["result"]
            birads = observations[result["reference"].split("/")[1]]
            category = int(next(c["code"] for c in birads["valueCodeableConcept"]["coding"]
                                if c["system"].endswith("/birads")))
            assert birads["effectiveDateTime"] == report["effectiveDateTime"]
            assert f"BI-RADS {category}:" in report["conclusion"]
            if study.indication == "breast_cancer" and not seen_cancer:
                cancer_first[category] += 1
                seen_cancer = True
            checked += 1
    assert checked >= 20
    assert sum(cancer_first.values()) >= 3
    assert cancer_first[4] + cancer_first[5] >= 0.7 * sum(cancer_first.values())


def test_brca_variants_appear_among_the_first_200_patients() -> None:
    genes: Counter[str] = Counter()
    for index in range(200):
        _patient, resources = _record(42, index)
        for obs in _of_type(resources, "Observation"):
            if _code(obs) != "69548-6":
                continue
            assert obs["valueCodeableConcept"]["coding"][0]["code"] == "LA9633-4"
            parts = {c["code"]["coding"][0]["code"]: c["valueCodeableConcept"]["coding"][0] for c in obs["component"]}
            assert parts["48018-6"]["system"] == "http://www.genenames.org"
            assert parts["48004-6"]["system"] == "http://varnomen.hgvs.org" and ":c." in parts["48004-6"]["code"]
            assert parts["53037-8"]["code"] == "LA6668-3"
            genes[parts["48018-6"]["code"]] += 1
    assert genes and set(genes) <= {"HGNC:1100", "HGNC:1101"}


def test_alzheimers_mmse_declines_over_years() -> None:
    checked = 0
    for index in _patients_with("alzheimers"):
        _patient, resources = _record(42, index)
        scores = sorted((o["effectiveDateTime"], o["valueQuantity"]["value"]) for o in _of_type(resources, "Observation")
                        if _code(o) == "72107-6")
        assert all(0 <= v <= 30 for _t, v in scores)
        if len(scores) >= 2 and (_day(scores[-1][0]) - _day(scores[0][0])).days > 2 * 365:
            assert scores[-1][1] < scores[0][1]
            checked += 1
    assert checked >= 1


def test_conditions_carry_icd10_and_snomed_codings() -> None:
    for index in range(40):
        patient, resources = _record(42, index)
        conditions = _of_type(resources, "Condition")
        assert [c["code"]["coding"][0]["code"] for c in conditions] == [c.code for c in patient.conditions]
        for resource, planned in zip(conditions, patient.conditions, strict=True):
            systems = [c["system"] for c in resource["code"]["coding"]]
            assert systems[0] == "http://hl7.org/fhir/sid/icd-10-cm"
            assert ("http://snomed.info/sct" in systems) == (planned.key != "breast_screening")
            assert resource["onsetDateTime"] == planned.onset.isoformat()


def test_a_few_lab_results_are_not_quantities() -> None:
    kinds: Counter[str] = Counter()
    for index in range(200):
        _patient, resources = _record(42, index)
        for obs in _of_type(resources, "Observation"):
            if obs["category"][0]["coding"][0]["code"] == "laboratory":
                kinds[next(k for k in obs if k.startswith("value"))] += 1
    share = 1 - kinds["valueQuantity"] / sum(kinds.values())
    assert 0.02 <= share <= 0.12
    assert kinds["valueString"] and kinds["valueCodeableConcept"]


# ---------------------------------------------------------------------- bulk export


def test_write_ndjson_writes_one_file_per_type_matching_the_stream(tmp_path: Path) -> None:
    counts = write_ndjson(tmp_path, 42, 30, start=10)
    expected = Counter(r["resourceType"] for r in iter_resources(42, 30, start=10))
    assert counts == dict(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{kind}.ndjson" for kind in expected)
    for kind, n in expected.items():
        lines = (tmp_path / f"{kind}.ndjson").read_text(encoding="utf-8").splitlines()
        assert len(lines) == n
        assert all(json.loads(line)["resourceType"] == kind for line in lines)
    accented = [n for i in range(10, 40) for n in (plan_patient(42, i).family_name, plan_patient(42, i).given_name)
                if not n.isascii()]
    assert accented and accented[0] in (tmp_path / "Patient.ndjson").read_text(encoding="utf-8")  # ensure_ascii=False


def test_write_ndjson_streams_in_flat_memory(tmp_path: Path) -> None:
    # Exact Python allocations on a sample (tracemalloc slows generation tenfold)...
    tracemalloc.start()
    try:
        write_ndjson(tmp_path / "sample", 42, 100, start=3000)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # held together, these 100 records take ~20 MB
    # ...and the process footprint over 2,000 patients.
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    counts = write_ndjson(tmp_path / "big", 42, 2000)
    assert process.memory_info().rss - before < 50_000_000
    assert sum(counts.values()) > 2000 * 40
