"""File and Bundle ingest: bad resources are named and skipped, transactions are atomic, runs resume."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from imagebank.ehr.bundles import process_bundle
from imagebank.ehr.ingest import EhrIngest, list_sources
from imagebank.ehr.outcome import FhirError
from tests.ehr.conftest import condition, order, patient, psa


def _ndjson(path: Path, resources: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources))
    return path


def test_ndjson_loads_good_lines_and_names_the_bad_element(store: Any, tmp_path: Path) -> None:
    bad_value = psa("o2", "p1", 1.0, "2024-01-02")
    bad_value["valueQuantity"]["value"] = "lots"
    no_status = psa("o3", "p1", 1.0, "2024-01-02")
    del no_status["status"]
    path = _ndjson(tmp_path / "Observation.ndjson", [
        psa("o1", "p1", 5.2, "2024-01-02"), bad_value, "{not json", no_status, {"resourceType": "Nonsense", "id": "x"},
        psa("o4", "p1", 7.0, "2024-03-02")])
    summary = EhrIngest(store, workers=1).run([path])
    assert summary.actions["created"] == 2 and summary.actions["rejected"] == 4
    rendered = {r.location: r.render() for r in summary.rejections}
    assert "Observation.valueQuantity.value" in rendered["Observation.ndjson:2"]
    assert "not JSON" in rendered["Observation.ndjson:3"]
    assert "Observation.status" in rendered["Observation.ndjson:4"]
    assert "'Nonsense' is not a FHIR R4 resource type" in rendered["Observation.ndjson:5"]
    assert store.read("Observation", "o4") is not None and store.read("Observation", "o2") is None


def test_rerun_is_free_and_an_interrupted_run_resumes(store: Any, tmp_path: Path, monkeypatch: Any) -> None:
    path = _ndjson(tmp_path / "Observation.ndjson", [psa(f"o{i}", "p1", i, "2024-01-02") for i in range(25)])
    calls = {"n": 0}
    real_write = store.write

    def crashing_write(resources: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("power cut")
        return real_write(resources, **kw)

    monkeypatch.setattr(store, "write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        EhrIngest(store, batch_size=10, workers=1).run([path])
    assert store.counts() == {"Observation": 20}  # two committed chunks, nothing half-written
    monkeypatch.setattr(store, "write", real_write)
    resumed = EhrIngest(store, batch_size=10, workers=1).run([path])
    assert resumed.actions == {"created": 5}  # only the rest
    again = EhrIngest(store, batch_size=10, workers=1).run([path])
    assert again.skipped_files == 1 and again.stored == 0
    restarted = EhrIngest(store, batch_size=10, workers=1, resume=False).run([path])
    assert restarted.actions == {"unchanged": 25}


def test_gzip_ndjson_folder_with_worker_processes(store: Any, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    with gzip.open(folder / "Observation.ndjson.gz", "wt") as fh:
        for i in range(30):
            fh.write(json.dumps(psa(f"o{i}", "p1", i, "2024-01-02")) + "\n")
    _ndjson(folder / "Patient.ndjson", [patient("p1", "M1")])
    files = list_sources(folder)
    assert files[0].name == "Patient.ndjson"
    summary = EhrIngest(store, batch_size=7, workers=2).run(files)
    assert summary.actions == {"created": 31}
    assert store.read("Observation", "o29").record_id == store.read("Patient", "p1").record_id


def _bundle(kind: str, entries: list[Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_transaction_is_all_or_nothing(store: Any) -> None:
    bad = psa("o2", "p1", 1.0, "not a date")
    bundle = _bundle("transaction", [
        {"resource": patient("p1", "M1"), "request": {"method": "PUT", "url": "Patient/p1"}},
        {"resource": bad, "request": {"method": "PUT", "url": "Observation/o2"}}])
    with pytest.raises(FhirError) as caught:
        process_bundle(store, bundle)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == "Bundle.entry[1].resource.effectiveDateTime"
    assert store.counts() == {}


def test_transaction_resolves_urn_uuid_references_and_resending_does_not_duplicate(store: Any) -> None:
    pid = "urn:uuid:6c6b0b4e-8f0e-4a43-9c5a-3d2b1f0e9a11"
    obs = psa("ignored", "x", 5.0, "2024-01-02")
    del obs["id"]
    obs["subject"] = {"reference": pid}
    p = patient("p", "M1")
    del p["id"]
    bundle = _bundle("transaction", [
        {"fullUrl": pid, "resource": p, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0b9e1f3c-5d8a-4b2e-8f4a-1c2d3e4f5a6b", "resource": obs,
         "request": {"method": "POST", "url": "Observation"}}])
    result = process_bundle(store, bundle)
    assert [e.status for e in result.entries] == ["201 Created", "201 Created"]
    stored = store.read("Observation", "0b9e1f3c-5d8a-4b2e-8f4a-1c2d3e4f5a6b")
    assert stored.resource["subject"]["reference"] == "Patient/6c6b0b4e-8f0e-4a43-9c5a-3d2b1f0e9a11"
    assert stored.record_id == store.read("Patient", "6c6b0b4e-8f0e-4a43-9c5a-3d2b1f0e9a11").record_id
    again = process_bundle(store, bundle)
    assert [e.written.action for e in again.entries] == ["unchanged", "unchanged"]
    assert sum(store.counts().values()) == 2
    response = again.response("http://x/fhir")
    assert response["type"] == "transaction-response" and response["entry"][0]["response"]["status"] == "200 OK"


def test_batch_loads_the_good_entries_and_reports_the_bad(store: Any) -> None:
    bad = condition("c2", "p1", "C61", "2023-05-01")
    bad["code"] = "C61"  # a string where a CodeableConcept belongs
    result = process_bundle(store, _bundle("batch", [
        {"resource": condition("c1", "p1", "C61", "2023-05-01"), "request": {"method": "PUT", "url": "Condition/c1"}},
        {"resource": bad, "request": {"method": "PUT", "url": "Condition/c2"}},
        {"request": {"method": "DELETE", "url": "Condition/c1"}},
        {"resource": order("s1", "p1", "A1", "2024-01-01"), "request": {"method": "PUT", "url": "ServiceRequest/s9"}}]))
    statuses = [e.status for e in result.entries]
    assert statuses == ["201 Created", "400 Bad Request", "400 Bad Request", "400 Bad Request"]
    assert result.entries[1].issues[0].expression.startswith("Bundle.entry[1].resource.code")
    assert "not supported" in result.entries[2].issues[0].diagnostics
    assert "differs from the id in request.url" in result.entries[3].issues[0].diagnostics
    assert store.counts() == {"Condition": 1}


def test_collection_and_searchset_bundles_from_files(store: Any, tmp_path: Path) -> None:
    searchset = _bundle("searchset", [{"fullUrl": "http://other/fhir/Patient/p1", "resource": patient("p1", "M1"),
                                        "search": {"mode": "match"}}])
    (tmp_path / "a.json").write_text(json.dumps(searchset))
    (tmp_path / "b.json").write_text(json.dumps(_bundle("collection", [{"resource": psa("o1", "p1", 1, "2024")}])))
    (tmp_path / "c.json").write_text(json.dumps(condition("c1", "p1", "C61", "2023")))
    (tmp_path / "d.json").write_text(json.dumps(_bundle("history", [])))
    summary = EhrIngest(store, workers=1).run(list_sources(tmp_path))
    assert summary.actions == {"created": 3, "rejected": 1}
    assert "Bundle.type 'history'" in summary.rejections[0].render()


def test_a_nul_character_or_absurd_nesting_rejects_one_line_only(store: Any, tmp_path: Path) -> None:
    nul = json.dumps(psa("o2", "p1", 1.0, "2024-01-02")).replace("PSA", "PS\\u0000A")
    deep = '{"resourceType": "Observation", "id": "o3", "extension": ' + "[" * 100000 + "]" * 100000 + "}"
    path = _ndjson(tmp_path / "Observation.ndjson", [psa("o1", "p1", 1.0, "2024-01-02"), nul, deep,
                                                     psa("o4", "p1", 2.0, "2024-01-03")])
    summary = EhrIngest(store, workers=1).run([path])
    assert summary.actions["created"] == 2 and summary.actions["rejected"] == 2
    assert "NUL" in summary.rejections[0].render()
