"""The FHIR R4 API and the patient timeline over real HTTP, with images in the archive linked to the
record: searches, generated ImagingStudy, versions, OperationOutcome errors, authorization, audit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
import requests

from tests.conftest import LiveServer
from tests.ehr.conftest import ACSN, MRN, condition, order, patient, psa, report

FHIR_JSON = "application/fhir+json"


@dataclass
class Fhir:
    url: str
    writer: requests.Session
    reader: requests.Session
    researcher: requests.Session
    audit: Any
    study_uid: str
    accession: str
    mrn: str
    study_day: str

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.reader.get(self.url + path, params=params)


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture
def fhir(settings: Any, secured: Any, make_instance: Any) -> Iterator[Fhir]:
    from imagebank.web.app import create_app

    archive, accounts, audit = secured
    data = make_instance()
    ds = pydicom.dcmread(__import__("io").BytesIO(data))
    archive.ingest(data, origin="test")
    accounts.create_user("ehr-feed", ["service"], "service password 1")
    accounts.create_user("dr", ["clinician"], "clinician password 1")
    accounts.create_user("res", ["researcher"], "researcher password 1")
    with LiveServer(create_app(settings, archive, accounts, audit)) as server:
        yield Fhir(server.url, _session(accounts.create_token("ehr-feed", "t")),
                   _session(accounts.create_token("dr", "t")), _session(accounts.create_token("res", "t")),
                   audit, ds.StudyInstanceUID, ds.AccessionNumber, ds.PatientID,
                   f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}")


def _load_record(fhir: Fhir) -> dict[str, Any]:
    day = fhir.study_day
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                 "subject": {"reference": "Patient/p1"},
                 "period": {"start": f"{day}T08:00:00Z", "end": f"{day}T18:00:00Z"}}
    resources = [patient("p1", fhir.mrn), encounter, condition("c1", "p1", "C61", "2023-11-01"),
                 psa("o1", "p1", 3.1, "2023-06-01"), psa("o2", "p1", 5.4, "2023-10-20"),
                 psa("o3", "p1", 7.9, "2024-02-01"),
                 order("s1", "p1", fhir.accession, day), report("r1", "p1", fhir.accession, day, fhir.study_uid)]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}
    response = fhir.writer.post(fhir.url + "/fhir", json=bundle, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    assert all(e["response"]["status"] == "201 Created" for e in body["entry"])
    return body


def _ids(bundle: dict[str, Any]) -> list[str]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_search_by_patient_code_date_identifier_and_accession(fhir: Fhir) -> None:
    _load_record(fhir)
    assert _ids(fhir.get("/fhir/Patient", identifier=f"{MRN}|{fhir.mrn}").json()) == ["p1"]
    assert _ids(fhir.get("/fhir/Patient", name="mull").json()) == ["p1"]  # accent- and case-insensitive
    assert _ids(fhir.get("/fhir/Patient", name="").json()) == ["p1"]  # an empty parameter is ignored
    psa_code = "http://loinc.org|2857-1"
    assert _ids(fhir.get("/fhir/Observation", patient="Patient/p1", code=psa_code).json()) == ["o1", "o2", "o3"]
    assert _ids(fhir.get("/fhir/Observation", patient="p1", code=psa_code, date="ge2023-10").json()) == ["o2", "o3"]
    assert _ids(fhir.get("/fhir/Observation", **{"patient.identifier": f"{MRN}|{fhir.mrn}", "date": "lt2023-07"})
                .json()) == ["o1"]
    assert _ids(fhir.get("/fhir/Condition", code="http://hl7.org/fhir/sid/icd-10-cm|C61").json()) == ["c1"]
    assert _ids(fhir.get("/fhir/Condition", code="http://snomed.info/sct|399068003").json()) == ["c1"]
    assert _ids(fhir.get("/fhir/ServiceRequest", accession=fhir.accession).json()) == ["s1"]
    assert _ids(fhir.get("/fhir/DiagnosticReport", identifier=fhir.accession).json()) == ["r1"]
    page = fhir.get("/fhir/Observation", patient="p1", _count="2").json()
    assert page["total"] == 3 and len(page["entry"]) == 2
    following = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert _ids(fhir.reader.get(following).json()) == ["o3"]


def test_imaging_study_is_generated_from_the_archive_and_linked(fhir: Fhir) -> None:
    _load_record(fhir)
    found = fhir.get("/fhir/ImagingStudy", patient="Patient/p1").json()
    assert _ids(found) == [fhir.study_uid]
    study = found["entry"][0]["resource"]
    assert study["subject"] == {"reference": "Patient/p1"}
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{fhir.study_uid}"} in study["identifier"]
    assert {"type": ACSN, "value": fhir.accession} in study["identifier"]
    assert study["basedOn"] == [{"reference": "ServiceRequest/s1"}]
    assert study["contained"][0]["address"] == fhir.url + "/dicom-web"
    assert study["numberOfInstances"] == 1 and "instance" not in study["series"][0]  # search: no instance lists
    read = fhir.get(f"/fhir/ImagingStudy/{fhir.study_uid}").json()
    assert read["id"] == fhir.study_uid and len(read["series"][0]["instance"]) == 1
    assert _ids(fhir.get("/fhir/ImagingStudy", accession=fhir.accession).json()) == [fhir.study_uid]
    assert _ids(fhir.get("/fhir/ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{fhir.study_uid}").json())
    # the generated resource is valid R4
    from fhir.resources.R4B.imagingstudy import ImagingStudy

    ImagingStudy.model_validate(study)
    ImagingStudy.model_validate(read)


def test_timeline_puts_images_and_record_on_one_axis(fhir: Fhir) -> None:
    _load_record(fhir)
    response = fhir.reader.get(fhir.url + "/api/ehr/timeline", params={"patient_id": fhir.mrn, "issuer": "IBGH"})
    assert response.status_code == 200, response.text
    body = response.json()
    kinds = [e["kind"] for e in body["events"]]
    assert {"imaging-study", "encounter", "condition", "observation", "order", "report"} <= set(kinds)
    dates = [e["date"] for e in body["events"]]
    assert dates == sorted(dates)
    study = next(e for e in body["events"] if e["kind"] == "imaging-study")
    assert study["study"] == fhir.study_uid
    assert study["order"] == "ServiceRequest/s1" and study["report"] == "DiagnosticReport/r1"
    assert study["encounter"] == "e1"
    events = fhir.audit.query(patient_id=f"{fhir.mrn}@IBGH")
    assert any(e.object_type == "timeline" and e.user_name == "dr" for e in events)
    by_fhir_id = fhir.reader.get(fhir.url + "/api/ehr/timeline", params={"patient": "p1"}).json()
    assert by_fhir_id["record"] == body["record"]


def test_versions_read_vread_history_and_put(fhir: Fhir) -> None:
    _load_record(fhir)
    changed = psa("o3", "p1", 8.2, "2024-02-01")
    response = fhir.writer.put(fhir.url + "/fhir/Observation/o3", json=changed, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200 and response.headers["ETag"] == 'W/"2"'
    assert fhir.get("/fhir/Observation/o3").json()["valueQuantity"]["value"] == 8.2
    assert fhir.get("/fhir/Observation/o3/_history/1").json()["valueQuantity"]["value"] == 7.9
    history = fhir.get("/fhir/Observation/o3/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    created = fhir.writer.post(fhir.url + "/fhir/Observation", json={**psa("x", "p1", 1, "2024"), "id": None},
                               headers={"Content-Type": FHIR_JSON})
    assert created.status_code == 400  # "id": null is not valid JSON FHIR
    fresh = psa("x", "p1", 1, "2024")
    del fresh["id"]
    created = fhir.writer.post(fhir.url + "/fhir/Observation", json=fresh, headers={"Content-Type": FHIR_JSON})
    assert created.status_code == 201 and "/_history/1" in created.headers["Location"]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"), [
    ("get", "/fhir/Observation?bogus=1", {}, 400, "unknown search parameter 'bogus'"),
    ("get", "/fhir/Observation?date=yesterday", {}, 400, "is not a FHIR date"),
    ("get", "/fhir/Observation?_count=abc", {}, 400, "not a whole number"),
    ("get", "/fhir/Observation?code%3Aexact=x", {}, 400, "not supported"),
    ("get", "/fhir/Observation?code=%00", {}, 400, "NUL"),
    ("post", "/fhir", {"data": b'{"resourceType": "Bundle", "type": "batch", "x": "\\u0000"}',
                      "headers": {"Content-Type": FHIR_JSON}}, 400, "NUL"),
    ("get", "/fhir/Nonsense", {}, 404, "not a FHIR R4 resource type"),
    ("get", "/fhir/Observation/nope", {}, 404, "is not known"),
    ("get", "/fhir/Observation/bad id!", {}, 400, "not a valid FHIR id"),
    ("post", "/fhir", {"data": b"{not json", "headers": {"Content-Type": FHIR_JSON}}, 400, "not JSON"),
    ("post", "/fhir", {"data": b"<Bundle/>", "headers": {"Content-Type": "application/fhir+xml"}}, 415, "send"),
    ("post", "/fhir", {"json": {"resourceType": "Bundle", "type": "history"}}, 400, "Bundle.type"),
    ("put", "/fhir/Observation/o9", {"json": {"resourceType": "Observation", "id": "o9", "status": "final"}}, 400,
     "Observation.code"),
    ("put", "/fhir/Observation/o9", {"json": {"resourceType": "Patient", "id": "o9"}}, 400, "must be a Observation"),
])
def test_bad_requests_get_an_operation_outcome(fhir: Fhir, method: str, path: str, kwargs: dict[str, Any],
                                               status: int, needle: str) -> None:
    response = getattr(fhir.writer if method != "get" else fhir.reader, method)(fhir.url + path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert needle in outcome["issue"][0]["diagnostics"] + " ".join(outcome["issue"][0].get("expression", []))
    assert fhir.get("/fhir/metadata").status_code == 200  # and the server keeps serving


def test_authorization_researchers_and_anonymous_get_no_identified_ehr(fhir: Fhir) -> None:
    _load_record(fhir)
    refused = fhir.researcher.get(fhir.url + "/fhir/Patient")
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    anonymous = requests.get(fhir.url + "/fhir/Observation")
    assert anonymous.status_code == 401 and anonymous.json()["issue"][0]["code"] == "login"
    assert fhir.reader.post(fhir.url + "/fhir", json={"resourceType": "Bundle", "type": "batch"}).status_code == 403
    assert requests.get(fhir.url + "/fhir/metadata").json()["fhirVersion"] == "4.0.1"  # public, no PHI


def test_unlinked_report_over_http(fhir: Fhir) -> None:
    before = fhir.get("/api/ehr/unlinked").json()
    assert before["dicom_patients_without_ehr_record"]["count"] == 1
    assert before["studies_without_order"]["count"] == 1
    _load_record(fhir)
    fhir.writer.put(fhir.url + "/fhir/ServiceRequest/s2", json=order("s2", "p1", "NOSTUDY1", "2025-01-01"),
                    headers={"Content-Type": FHIR_JSON})
    after = fhir.get("/api/ehr/unlinked").json()
    assert after["dicom_patients_without_ehr_record"]["count"] == 0
    assert after["studies_without_order"]["count"] == 0 and after["studies_without_report"]["count"] == 0
    assert after["studies_without_encounter"]["count"] == 0
    assert after["orders_without_study"]["examples"] == [
        {"resource": "ServiceRequest/s2", "accession": "NOSTUDY1", "study": None}]


def test_date_prefixes_compare_ranges_and_sort_and_modifiers(fhir: Fhir) -> None:
    year = condition("cy", "p1", "C61", "2024")  # a partial date covers the whole year
    day = condition("cd", "p1", "C61", "2024-03-10")
    for resource in (year, day):
        assert fhir.writer.put(f"{fhir.url}/fhir/Condition/{resource['id']}", json=resource,
                               headers={"Content-Type": FHIR_JSON}).status_code == 201

    def found(**params: str) -> list[str]:
        return sorted(_ids(fhir.get("/fhir/Condition", **params).json()))

    assert found(date="ge2024-06-01") == ["cy"]  # the year reaches past June
    assert found(date="eq2024-03-10") == ["cd"]  # only the day lies within that day
    assert found(date="eq2024") == ["cd", "cy"]
    assert found(date="sa2023-12-31") == ["cd", "cy"] and found(date="sa2024-01-01") == ["cd"]
    assert found(date="eb2025-01-01") == ["cd", "cy"] and found(date="eb2024-12-31") == ["cd"]
    assert _ids(fhir.get("/fhir/Condition", _sort="-_id").json()) == ["cy", "cd"]
    refused = fhir.get("/fhir/Condition", **{"status:not": "active"})
    assert refused.status_code == 400 and "modifier ':not'" in refused.json()["issue"][0]["diagnostics"]
    assert len(fhir.get("/fhir/Condition", _count="100000").json()["entry"]) == 2  # clamped, not refused


def test_create_assigns_the_id_whatever_the_client_sent(fhir: Fhir) -> None:
    response = fhir.writer.post(fhir.url + "/fhir/Observation", json=psa("mine", "p1", 1.0, "2024"),
                                headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201 and response.json()["id"] != "mine"
    assert fhir.get("/fhir/Observation/mine").status_code == 404


def test_unlinked_report_survives_a_malformed_study_date(fhir: Fhir, secured: Any, make_instance: Any) -> None:
    archive, _accounts, _audit = secured
    archive.ingest(make_instance(number=7, StudyInstanceUID="1.2.826.0.1.3680043.99.1",
                                 SeriesInstanceUID="1.2.826.0.1.3680043.99.1.1", StudyDate="20240230",
                                 AccessionNumber="BADDATE"), origin="test")
    _load_record(fhir)
    response = fhir.get("/api/ehr/unlinked")
    assert response.status_code == 200, response.text
    assert response.json()["studies_without_encounter"]["examples"][0]["accession"] == "BADDATE"
