"""Storing FHIR resources: versions instead of duplicates, codes with their systems, identity merges."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from imagebank.storage.schema import ehr_resource_codes, ehr_resources, patient_records
from tests.ehr.conftest import ICD10, LOINC, MRN, RMC, SNOMED, condition, patient, psa


def _record_of(store: Any, rtype: str, rid: str) -> int:
    stored = store.read(rtype, rid)
    assert stored is not None
    return int(stored.record_id)


def test_resending_updates_with_a_new_version_and_keeps_the_old_one(store: Any) -> None:
    first = store.write([patient("p1", "M1"), psa("o1", "p1", 5.2, "2024-01-02T10:00:00Z")])
    assert [w.action for w in first] == ["created", "created"]
    again = store.write([psa("o1", "p1", 5.2, "2024-01-02T10:00:00Z")])
    assert again[0].action == "unchanged" and again[0].version_id == 1
    changed = store.write([psa("o1", "p1", 6.1, "2024-01-02T10:00:00Z")])
    assert changed[0].action == "updated" and changed[0].version_id == 2

    current = store.read("Observation", "o1")
    assert current.resource["valueQuantity"]["value"] == 6.1 and current.resource["meta"]["versionId"] == "2"
    assert store.read("Observation", "o1", 1).resource["valueQuantity"]["value"] == 5.2
    assert [v.version_id for v in store.history("Observation", "o1")] == [2, 1]
    with store.engine.connect() as conn:
        rows = conn.execute(select(ehr_resources.c.value_num).where(ehr_resources.c.resource_id == "o1")).all()
    assert [r.value_num for r in rows] == [6.1]  # one row: never a duplicate


def test_the_same_resource_twice_in_one_batch_is_an_update(store: Any) -> None:
    written = store.write([psa("o1", "p1", 1.0, "2024-01-02"), psa("o1", "p1", 2.0, "2024-01-02")])
    assert [(w.action, w.version_id) for w in written] == [("created", 1), ("updated", 2)]


def test_codes_keep_their_system(store: Any) -> None:
    store.write([condition("c1", "p1", "C61", "2023-05-01"), psa("o1", "p1", 5.2, "2024-01-02")])
    with store.engine.connect() as conn:
        codes = {(r.role, r.system, r.code) for r in conn.execute(select(ehr_resource_codes))}
    assert ("code", ICD10, "C61") in codes and ("code", SNOMED, "399068003") in codes
    assert ("code", LOINC, "2857-1") in codes
    assert ("category", "http://terminology.hl7.org/CodeSystem/observation-category", "laboratory") in codes


def test_resources_loaded_before_their_patient_join_its_record(store: Any) -> None:
    store.write([psa("o1", "p1", 5.2, "2024-01-02")])  # NDJSON: Observation.ndjson may come first
    store.write([patient("p1", "M1")])
    assert _record_of(store, "Observation", "o1") == _record_of(store, "Patient", "p1")


def test_patient_link_merges_two_records_into_one(store: Any) -> None:
    store.write([patient("main", "M1"), psa("o1", "main", 5.0, "2024-01-02")])
    store.write([patient("old", "R9", RMC), psa("o2", "old", 3.0, "2020-01-02")])
    assert _record_of(store, "Patient", "main") != _record_of(store, "Patient", "old")
    linked = patient("old", "R9", RMC, link=[{"other": {"reference": "Patient/main"}, "type": "replaced-by"}])
    store.write([linked])
    records = {_record_of(store, t, i) for t, i in
               [("Patient", "main"), ("Patient", "old"), ("Observation", "o1"), ("Observation", "o2")]}
    assert len(records) == 1
    with store.engine.connect() as conn:
        merged = conn.execute(select(patient_records).where(patient_records.c.merged_into.is_not(None))).all()
    assert len(merged) == 1 and merged[0].merged_into == records.pop()


def test_a_shared_identifier_merges_patients_from_two_feeds(store: Any) -> None:
    store.write([patient("a", "M1")])
    other_feed = patient("b", "R1", RMC)
    other_feed["identifier"].append({"system": MRN, "value": "M1"})
    store.write([other_feed])
    assert _record_of(store, "Patient", "a") == _record_of(store, "Patient", "b")


def test_subject_by_identifier_reference(store: Any) -> None:
    store.write([patient("p1", "M1")])
    obs = psa("o1", "p1", 5.0, "2024-01-02")
    obs["subject"] = {"identifier": {"system": MRN, "value": "M1"}}
    store.write([obs])
    assert _record_of(store, "Observation", "o1") == _record_of(store, "Patient", "p1")


def test_stored_json_is_the_resource_with_server_meta(store: Any) -> None:
    resource = psa("o1", "p1", 5.2, "2024-01-02")
    store.write([resource])
    with store.engine.connect() as conn:
        stored = json.loads(conn.execute(select(ehr_resources.c.resource_json)).scalar_one())
    meta = stored.pop("meta")
    assert stored == resource and meta["versionId"] == "1" and meta["lastUpdated"].endswith("Z")


def test_identifiers_without_a_system_never_merge_strangers(store: Any) -> None:
    a, b = patient("a", "x"), patient("b", "y")
    a["identifier"] = [{"value": "12345"}]
    b["identifier"] = [{"value": "12345"}]
    store.write([a, b])
    assert _record_of(store, "Patient", "a") != _record_of(store, "Patient", "b")


def test_references_to_another_server_do_not_link_to_our_patient(store: Any) -> None:
    store.write([patient("123", "M1")])
    obs = psa("o1", "123", 5.0, "2024-01-02")
    obs["subject"] = {"reference": "http://other-hospital.example/fhir/Patient/123"}
    store.write([obs])
    assert store.read("Observation", "o1").record_id is None


def test_odd_but_valid_json_is_indexed_and_long_values_are_cut_to_their_columns(store: Any) -> None:
    p = patient("p1", "M1")
    p["name"] = [{"family": "Doe", "given": ["Jo", None], "_given": [None, {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "IN"}]}]}]
    p["gender"] = "unknown"
    obs = psa("o1", "p1", 1.0, "2024-01-02T10:00:00.12345678901234567890+00:00")
    del obs["valueQuantity"]
    obs["valueCodeableConcept"] = {"text": "x" * 5000}
    obs["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:" + "1" * 100}]
    from imagebank.ehr.validation import validate

    assert validate(p) == [] and validate(obs) == []
    written = store.write([p, obs])
    assert [w.action for w in written] == ["created", "created"]
    assert store.read("Observation", "o1").resource["valueCodeableConcept"]["text"] == "x" * 5000
