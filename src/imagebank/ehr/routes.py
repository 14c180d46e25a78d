"""HTTP: the FHIR R4 REST API under ``/fhir`` (http.html) and the EHR views under ``/api/ehr``.

- ``GET /fhir/metadata``: CapabilityStatement.
- ``POST /fhir``: a Bundle (transaction all-or-nothing; batch/collection/searchset entry by entry).
- ``POST /fhir/{type}``, ``PUT /fhir/{type}/{id}``: create / update-or-create one resource.
- ``GET /fhir/{type}/{id}``, ``.../_history``, ``.../_history/{vid}``: read, history, vread.
- ``GET /fhir/{type}?...``: search, answered with a searchset Bundle. ImagingStudy is generated from
  the DICOM archive (see ``imaging_study``).
- ``GET /api/ehr/timeline``: one patient's imaging and record on a time axis; ``/api/ehr/unlinked``.

Errors are OperationOutcomes with the HTTP status FHIR prescribes (400 invalid, 404 unknown, 413 too
large, 415 wrong media type, 422 for a resource that fails validation).
"""

import datetime as dt
import json
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool

from imagebank import __version__
from imagebank.config import Settings
from imagebank.ehr import imaging_study, search, timeline, unlinked
from imagebank.ehr.bundles import process_bundle
from imagebank.ehr.outcome import FhirError, Issue, operation_outcome
from imagebank.ehr.store import CopyRefused, EhrStore, Stored
from imagebank.ehr.validation import CLINICAL_TYPES, _model, validate
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.security.policy import Principal
from imagebank.security.roles import Permission
from imagebank.storage.database import read_only
from imagebank.web.auth import Requirement, client_address

FHIR_JSON = "application/fhir+json"
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SEARCHABLE = sorted(CLINICAL_TYPES)


def fhir_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status_code=status,
                    media_type=FHIR_JSON, headers=headers)


def error_response(exc: FhirError) -> Response:
    return fhir_response(exc.outcome(), exc.status)


def _check_type(resource_type: str) -> None:
    if not _TYPE_RE.match(resource_type) or _model(resource_type) is None:
        raise FhirError(404, [Issue("not-supported", f"{resource_type[:64]!r} is not a FHIR R4 resource type")])


def _check_id(resource_id: str) -> None:
    if not _ID_RE.match(resource_id):
        raise FhirError(400, [Issue("value", f"{resource_id[:80]!r} is not a valid FHIR id")])


def _headers(stored: Stored, base: str) -> dict[str, str]:
    return {"ETag": f'W/"{stored.version_id}"',
            "Last-Modified": stored.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Location": f"{base}/{stored.resource_type}/{stored.resource_id}/_history/{stored.version_id}"}


def capability_statement(base: str) -> dict[str, Any]:
    params = {"Patient": ["_id", "identifier", "name", "family", "given", "birthdate", "gender"],
              "ImagingStudy": sorted(imaging_study.PARAMS - {"_count", "_offset", "_sort", "_total", "_format"})}
    common = ["_id", "patient", "subject", "patient.identifier", "code", "category", "identifier", "status", "date",
              "encounter"]
    resources = []
    for rtype in SEARCHABLE:
        names = params.get(rtype, common + (["accession"] if rtype in ("ServiceRequest", "DiagnosticReport") else []))
        interactions = ["read", "vread", "history-instance", "search-type"]
        if rtype != "ImagingStudy":
            interactions += ["create", "update"]
        resources.append({"type": rtype, "versioning": "versioned", "readHistory": True,
                          "updateCreate": True, "interaction": [{"code": c} for c in interactions],
                          "searchParam": [{"name": n, "type": "date" if n in ("date", "birthdate") else "token"}
                                          for n in names]})
    return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "date": dt.date.today().isoformat(), "fhirVersion": "4.0.1", "format": ["json"],
            "software": {"name": "Imagebank", "version": __version__},
            "implementation": {"description": "Imagebank FHIR R4 API", "url": base},
            "rest": [{"mode": "server", "resource": resources,
                      "interaction": [{"code": "transaction"}, {"code": "batch"}]}]}


async def _json_body(request: Request, limit_mb: int) -> Any:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (FHIR_JSON, "application/json", "application/json+fhir"):
        raise FhirError(415, [Issue("not-supported", f"send {FHIR_JSON} (got {media or 'no Content-Type'})")])
    limit = limit_mb * 2**20
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError(413, [Issue("too-costly", f"the body is larger than {limit_mb} MiB (ehr.max_bundle_mb)")])
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise FhirError(413, [Issue("too-costly", f"the body is larger than {limit_mb} MiB (ehr.max_bundle_mb)")])
    if b"\\u0000" in body:
        raise FhirError(400, [Issue("value", "a string holds a NUL character (\\u0000), which no FHIR string may contain")])
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise FhirError(400, [Issue("structure", f"the body is not JSON: {type(exc).__name__}")]) from None


def install_ehr(app: FastAPI, settings: Settings, store: EhrStore, audit: AuditTrail) -> None:
    router = APIRouter(tags=["FHIR R4"])
    read = Depends(Requirement(Permission.EHR_READ))
    write = Depends(Requirement(Permission.EHR_WRITE, audit=("110107", "C")))
    engine = store.engine
    options = settings.ehr

    def fhir_base(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/fhir"

    def dicomweb_base(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/dicom-web"

    @router.get("/fhir/metadata", dependencies=[Depends(Requirement(Permission.PUBLIC))],
                summary="FHIR CapabilityStatement")
    def metadata(request: Request) -> Response:
        return fhir_response(capability_statement(fhir_base(request)))

    @router.post("/fhir", dependencies=[write], summary="FHIR transaction / batch / collection Bundle")
    async def post_bundle(request: Request) -> Response:
        try:
            bundle = await _json_body(request, options.max_bundle_mb)
            result = await run_in_threadpool(process_bundle, store, bundle)
        except FhirError as exc:
            return error_response(exc)
        return fhir_response(result.response(fhir_base(request)))

    async def _store_one(request: Request, resource_type: str, resource_id: str | None) -> Response:
        try:
            _check_type(resource_type)
            if resource_id is not None:
                _check_id(resource_id)
            resource = await _json_body(request, options.max_bundle_mb)
            if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
                raise FhirError(400, [Issue("invalid", f"the body must be a {resource_type} resource", "resourceType")])
            if "id" in resource and resource["id"] is None:  # json.html: null is never a FHIR value
                raise FhirError(400, [Issue("value", "id is null: leave it out instead", f"{resource_type}.id")])
            if resource_id is not None:
                if resource.get("id") not in (None, resource_id):
                    raise FhirError(400, [Issue("value", f"the resource id {resource.get('id')!r} differs from the "
                                                         f"id in the URL {resource_id!r}", f"{resource_type}.id")])
                resource["id"] = resource_id
            else:  # a create: the server names the resource (http.html#create), whatever id was sent
                resource["id"] = str(uuid.uuid4())
            issues = validate(resource)
            if issues:
                raise FhirError(400, issues)
            try:
                written = (await run_in_threadpool(store.write, [resource]))[0]
            except (DataError, CopyRefused):
                raise FhirError(400, [Issue("value", "the database refused a value of this resource (too long "
                                                     "for its column or not storable)")]) from None
        except FhirError as exc:
            return error_response(exc)
        stored = await run_in_threadpool(store.read, written.resource_type, written.resource_id)
        if stored is None:  # pragma: no cover - written a moment ago
            raise HTTPException(500, "the resource vanished after it was written")
        status = 201 if written.action == "created" else 200
        return fhir_response(stored.resource, status, _headers(stored, fhir_base(request)))

    @router.post("/fhir/{resource_type}", dependencies=[write], summary="FHIR create")
    async def create(request: Request, resource_type: str) -> Response:
        return await _store_one(request, resource_type, None)

    @router.put("/fhir/{resource_type}/{resource_id}", dependencies=[write], summary="FHIR update (or create)")
    async def update(request: Request, resource_type: str, resource_id: str) -> Response:
        return await _store_one(request, resource_type, resource_id)

    @router.get("/fhir/{resource_type}/{resource_id}", dependencies=[read], summary="FHIR read")
    def read_resource(request: Request, resource_type: str, resource_id: str) -> Response:
        try:
            _check_type(resource_type)
            _check_id(resource_id)
            if resource_type == "ImagingStudy":
                with read_only(engine) as conn:
                    generated = imaging_study.read(conn, resource_id, dicomweb_base(request))
                if generated is not None:
                    return fhir_response(generated)
            stored = store.read(resource_type, resource_id)
            if stored is None:
                raise FhirError(404, [Issue("not-found", f"{resource_type}/{resource_id} is not known")])
        except FhirError as exc:
            return error_response(exc)
        return fhir_response(stored.resource, headers=_headers(stored, fhir_base(request)))

    @router.get("/fhir/{resource_type}/{resource_id}/_history/{version}", dependencies=[read], summary="FHIR vread")
    def vread(request: Request, resource_type: str, resource_id: str, version: str) -> Response:
        try:
            _check_type(resource_type)
            _check_id(resource_id)
            if not version.isdigit():
                raise FhirError(400, [Issue("value", f"{version[:20]!r} is not a version id")])
            stored = store.read(resource_type, resource_id, int(version))
            if stored is None:
                raise FhirError(404, [Issue("not-found", f"{resource_type}/{resource_id} has no version {version}")])
        except FhirError as exc:
            return error_response(exc)
        return fhir_response(stored.resource, headers=_headers(stored, fhir_base(request)))

    @router.get("/fhir/{resource_type}/{resource_id}/_history", dependencies=[read], summary="FHIR history")
    def history(request: Request, resource_type: str, resource_id: str) -> Response:
        try:
            _check_type(resource_type)
            _check_id(resource_id)
            versions = store.history(resource_type, resource_id)
            if not versions:
                raise FhirError(404, [Issue("not-found", f"{resource_type}/{resource_id} is not known")])
        except FhirError as exc:
            return error_response(exc)
        base = fhir_base(request)
        return fhir_response({"resourceType": "Bundle", "type": "history", "total": len(versions), "entry": [
            {"fullUrl": f"{base}/{v.resource_type}/{v.resource_id}", "resource": v.resource,
             "request": {"method": "PUT" if v.version_id > 1 else "POST", "url": f"{v.resource_type}/{v.resource_id}"},
             "response": {"status": "200 OK" if v.version_id > 1 else "201 Created",
                          "lastModified": v.last_updated.isoformat()}} for v in versions]})

    @router.get("/fhir/{resource_type}", dependencies=[read], summary="FHIR search")
    def search_type(request: Request, resource_type: str) -> Response:
        strict = "handling=lenient" not in request.headers.get("prefer", "")
        params = list(request.query_params.multi_items())
        try:
            _check_type(resource_type)
            if any("\x00" in k or "\x00" in v for k, v in params):
                raise FhirError(400, [Issue("value", "a search parameter holds a NUL character")])
            with read_only(engine) as conn:
                if resource_type == "ImagingStudy":
                    result = imaging_study.search(conn, params, dicomweb_base(request),
                                                  max_page=options.max_page_size, strict=strict)
                else:
                    result = search.search(conn, resource_type, params, max_page=options.max_page_size, strict=strict)
        except FhirError as exc:
            return error_response(exc)
        base = fhir_base(request)
        return fhir_response(search.searchset(result, f"{base}/{resource_type}", resource_type, base))

    # ------------------------------------------------------------------ EHR views

    @router.get("/api/ehr/timeline", summary="A patient's imaging and clinical record on one time axis")
    def patient_timeline(request: Request, principal: Annotated[Principal, read], patient: str | None = None,
                         identifier: str | None = None, patient_id: str | None = None, issuer: str = "",
                         record: Annotated[int | None, Query(ge=1, le=2**62)] = None, since: dt.date | None = None,
                         until: dt.date | None = None) -> Response:
        """Name the patient by one of: ``patient`` (FHIR Patient id), ``identifier`` (system|value),
        ``patient_id`` (+ ``issuer``: the DICOM PatientID) or ``record`` (patient record id)."""
        if any("\x00" in x for x in (patient, identifier, patient_id, issuer) if x):
            raise HTTPException(400, "a parameter holds a NUL character")
        given = [x for x in (patient, identifier, patient_id, record) if x is not None]
        if len(given) != 1:
            raise HTTPException(400, "name the patient with exactly one of patient, identifier, patient_id, record")
        ident = None
        if identifier is not None:
            system, _, value = identifier.partition("|")
            if not system or not value:
                raise HTTPException(400, "identifier must be system|value")
            ident = (system, value)
        with read_only(engine) as conn:
            try:
                rec, dicom = timeline.resolve(conn, record=record, patient=patient, identifier=ident,
                                              dicom=(patient_id, issuer) if patient_id is not None else None)
            except timeline.UnknownPatient as exc:
                raise HTTPException(404, str(exc)) from None
            body = timeline.timeline(conn, rec, dicom, since=since, until=until)
        who = (f"{dicom[0].patient_id}@{dicom[0].issuer_of_patient_id}" if dicom else
               f"{body['identifiers'][0]['value']}@{body['identifiers'][0]['system']}" if body["identifiers"] else
               f"record:{rec}")
        audit.record(AuditEvent("110110", "R", user_name=principal.name, user_roles=",".join(sorted(principal.roles)),
                                network_address=client_address(request), patient_id=who[:130],
                                object_type="timeline", object_id=f"record:{rec}"))
        return Response(json.dumps(body, ensure_ascii=False, default=str), media_type="application/json")

    @router.get("/api/ehr/unlinked", dependencies=[read], summary="What could not be linked between archive and EHR")
    def unlinked_report(limit: int = 10) -> dict[str, Any]:
        with read_only(engine) as conn:
            return unlinked.report(conn, limit=max(0, min(limit, 1000)))

    @router.get("/api/ehr/stats", dependencies=[read], summary="EHR resources by type")
    def ehr_stats() -> dict[str, int]:
        return store.counts()

    app.include_router(router)


def outcome_for_http_error(status: int, detail: Any) -> Response:
    """The app's error handler, for paths under /fhir: an OperationOutcome instead of plain JSON."""
    code = {401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported"}.get(status, "processing")
    return fhir_response(operation_outcome([Issue(code, str(detail))]), status)
