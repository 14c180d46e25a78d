"""FHIR resources de-identified with the images' pseudonyms and date shifts; verified leak-free."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from imagebank.deid.ehr import FhirDeidentifier
from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.deid.pseudonyms import Pseudonymizer
from imagebank.deid.verify import LeakScanner
from imagebank.synth.ehr import iter_resources

KEY = b"e" * 32


def _record(index: int) -> tuple[list[dict], KnownIdentifiers, str]:
    resources = list(iter_resources(7, 1, index))
    known = KnownIdentifiers()
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    known.collect_fhir(patient)
    ident = patient["identifier"][0]
    return resources, known, f"{ident['system']}|{ident['value']}"


@pytest.mark.parametrize("index", range(6))
def test_a_whole_synthetic_record_comes_out_without_any_identifier(index):
    resources, known, subject = _record(index)
    pseudonyms = Pseudonymizer(KEY)
    engine = FhirDeidentifier(pseudonyms)
    scanner = LeakScanner(known, shifted_dates={pseudonyms.shift_date(d, subject) for d in known.dates})
    for resource in resources:
        out = engine.deidentify(resource, subject=subject, known=known)
        leaks = scanner.scan_json(out, resource["resourceType"])
        assert not leaks, f"{resource['resourceType']}: {leaks}"
        assert "text" not in out and "meta" not in out


def test_references_dates_and_ids_stay_consistent_within_the_record():
    resources, known, subject = _record(0)
    pseudonyms = Pseudonymizer(KEY)
    engine = FhirDeidentifier(pseudonyms)
    by_id = {(r["resourceType"], r["id"]): r for r in resources}
    outs = {(r["resourceType"], r["id"]): engine.deidentify(r, subject=subject, known=known) for r in resources}
    pseudonym = pseudonyms.patient(subject)
    patient = next(o for (t, _), o in outs.items() if t == "Patient")
    assert patient["id"] == pseudonym and "name" not in patient and "address" not in patient
    assert patient["identifier"] == [{"system": "urn:imagebank:research-subject", "value": pseudonym}]
    shift = dt.timedelta(days=pseudonyms.date_shift_days(subject))
    source_patient = next(r for r in resources if r["resourceType"] == "Patient")
    assert patient["birthDate"] == (dt.date.fromisoformat(source_patient["birthDate"]) + shift).isoformat()
    encounter_ids = {o["id"] for (t, _), o in outs.items() if t == "Encounter"}
    reports = 0
    for (rtype, rid), out in outs.items():
        source = by_id[(rtype, rid)]
        if "subject" in out:
            assert out["subject"]["reference"] == f"Patient/{pseudonym}"
        if "encounter" in out:
            assert out["encounter"]["reference"].split("/")[1] in encounter_ids
        if rtype == "DiagnosticReport":
            reports += 1
            study = source["imagingStudy"][0]["reference"].split("/")[1]
            assert out["imagingStudy"][0]["reference"] == f"ImagingStudy/{pseudonyms.uid(study)}"
            text = base64.b64decode(out["presentedForm"][0]["data"]).decode()
            assert "[" in text  # identifiers replaced by bracketed tokens
            assert out["issued"][:10] == (dt.date.fromisoformat(source["issued"][:10]) + shift).isoformat()
            assert out["issued"][10:] == source["issued"][10:]  # time of day and offset kept
        if rtype == "Observation" and "valueQuantity" in source:
            assert out["valueQuantity"] == source["valueQuantity"]  # values and UCUM units are research data
            assert out["code"] == source["code"]
    assert reports


def test_malformed_resources_are_quarantined():
    engine = FhirDeidentifier(Pseudonymizer(KEY))
    with pytest.raises(Quarantined):
        engine.deidentify({"id": "x"}, subject="s|1", known=KnownIdentifiers())
    bad = {"resourceType": "DiagnosticReport", "presentedForm": [{"contentType": "text/plain", "data": "@@@"}]}
    with pytest.raises(Quarantined):
        engine.deidentify(bad, subject="s|1", known=KnownIdentifiers())
