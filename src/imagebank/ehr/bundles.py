"""Processing FHIR R4 Bundles (bundle.html, http.html#transaction).

- ``transaction``: all or nothing. Every entry is validated first; one bad entry rejects the whole
  Bundle with an OperationOutcome naming it (``Bundle.entry[3].resource.status``) and nothing is
  stored. Otherwise all entries commit in one database transaction.
- ``batch``, ``collection``, ``searchset`` (and ``document``/``message`` contents): each entry on its
  own; bad entries are reported in the response and the rest still load.

Identity: ``PUT Type/id`` and resources that carry an id keep it; a ``POST`` of a resource without id
takes the UUID of its ``urn:uuid:`` fullUrl (so sending the same Bundle twice updates instead of
duplicating), else a new UUID. References to another entry's fullUrl are rewritten to ``Type/id``
(http.html#trules).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DataError

from imagebank.ehr.outcome import FhirError, Issue, operation_outcome
from imagebank.ehr.store import CopyRefused, EhrStore, Written
from imagebank.ehr.validation import validate

ACCEPTED_TYPES = ("transaction", "batch", "collection", "searchset", "document", "message")
_URL_RE = re.compile(r"^(?:.*/)?([A-Z][A-Za-z]+)(?:/([A-Za-z0-9\-.]{1,64}))?/?(?:\?.*)?$")
_UUID_RE = re.compile(r"^urn:uuid:([0-9a-fA-F-]{36})$")


@dataclass
class EntryOutcome:
    index: int
    status: str  # "201 Created", "200 OK", "400 Bad Request" ...
    written: Written | None = None
    issues: list[Issue] = field(default_factory=list)

    def as_json(self, base: str) -> dict[str, Any]:
        response: dict[str, Any] = {"status": self.status}
        if self.written is not None:
            w = self.written
            response["location"] = f"{w.resource_type}/{w.resource_id}/_history/{w.version_id}"
            response["etag"] = f'W/"{w.version_id}"'
            response["lastModified"] = w.last_updated.isoformat()
        if self.issues:
            response["outcome"] = operation_outcome(self.issues)
        entry: dict[str, Any] = {"response": response}
        if self.written is not None:
            entry["fullUrl"] = f"{base}/{self.written.resource_type}/{self.written.resource_id}"
        return entry


@dataclass
class BundleResult:
    bundle_type: str
    entries: list[EntryOutcome]

    @property
    def written(self) -> list[Written]:
        return [e.written for e in self.entries if e.written is not None]

    @property
    def rejected(self) -> list[EntryOutcome]:
        return [e for e in self.entries if e.issues]

    def response(self, base: str) -> dict[str, Any]:
        kind = "transaction-response" if self.bundle_type == "transaction" else "batch-response"
        return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": kind,
                "entry": [e.as_json(base) for e in self.entries]}


def _status(written: Written) -> str:
    return {"created": "201 Created", "updated": "200 OK", "unchanged": "200 OK"}[written.action]


def _rewrite_references(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in mapping:
                out[key] = mapping[item]
            else:
                out[key] = _rewrite_references(item, mapping)
        return out
    if isinstance(value, list):
        return [_rewrite_references(v, mapping) for v in value]
    return value


def _prepare(index: int, entry: Any) -> tuple[dict[str, Any] | None, str | None, list[Issue]]:
    """The entry's resource with its logical id settled, its fullUrl, and problems found so far."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict):
        return None, None, [Issue("structure", "a Bundle entry must be an object", where)]
    resource = entry.get("resource")
    full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
    request: dict[str, Any] = entry["request"] if isinstance(entry.get("request"), dict) else {}
    method = str(request.get("method") or "").upper()
    if method in ("GET", "HEAD", "DELETE", "PATCH"):
        return None, full_url, [Issue("not-supported", f"{method} entries are not supported here: send the "
                                                       "resources to store (POST or PUT)", f"{where}.request.method")]
    if not isinstance(resource, dict):
        return None, full_url, [Issue("required", "the entry has no resource", f"{where}.resource")]
    resource = dict(resource)
    rtype = resource.get("resourceType")
    if method == "PUT":
        match = _URL_RE.match(str(request.get("url") or ""))
        if not match or not match.group(2) or match.group(1) != rtype:
            return None, full_url, [Issue("value", f"PUT needs the url '{rtype}/<id>'", f"{where}.request.url")]
        if resource.get("id") not in (None, match.group(2)):
            return None, full_url, [Issue("value", f"resource id {resource.get('id')!r} differs from the id in "
                                                   f"request.url {match.group(2)!r}", f"{where}.resource.id")]
        resource["id"] = match.group(2)
    elif method == "POST" or resource.get("id") is None:
        # A create ignores the id the client sent (http.html#create); the urn:uuid of the entry's fullUrl
        # names it stably, so sending the same Bundle again updates instead of duplicating.
        uuid_match = _UUID_RE.match(full_url or "")
        resource["id"] = uuid_match.group(1).lower() if uuid_match else str(uuid.uuid4())
    return resource, full_url, []


def _prefixed(issues: list[Issue], index: int) -> list[Issue]:
    return [Issue(i.code, i.diagnostics, f"Bundle.entry[{index}].resource" + (
        i.expression[i.expression.find("."):] if i.expression and "." in i.expression else ""), i.severity)
        for i in issues]


def entries_of(bundle: dict[str, Any]) -> Iterator[Any]:
    entries = bundle.get("entry") or []
    yield from entries if isinstance(entries, list) else ()


def check_bundle(bundle: Any) -> str:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "expected a Bundle resource", "structure")
    kind = bundle.get("type")
    if kind not in ACCEPTED_TYPES:
        raise FhirError(400, [Issue("value", f"Bundle.type {kind!r} is not one of {', '.join(ACCEPTED_TYPES)}",
                                    "Bundle.type")])
    if not isinstance(bundle.get("entry", []), list):
        raise FhirError(400, [Issue("structure", "Bundle.entry must be an array", "Bundle.entry")])
    return str(kind)


def process_bundle(store: EhrStore, bundle: Any, *, chunk: int = 500, atomic: bool = True) -> BundleResult:
    """Validate and store a Bundle's entries; raises :class:`FhirError` for a rejected transaction.

    ``atomic=False`` loads even a transaction entry by entry: bulk file ingest wants every good resource
    of an export (one bad Condition must not lose a patient's whole history), the FHIR transaction
    interaction over HTTP keeps the all-or-nothing rule.
    """
    kind = check_bundle(bundle)
    prepared: list[tuple[int, dict[str, Any] | None, list[Issue]]] = []
    mapping: dict[str, str] = {}
    for index, entry in enumerate(entries_of(bundle)):
        resource, full_url, issues = _prepare(index, entry)
        if resource is not None and not issues:
            issues = _prefixed(validate(resource), index)
            if full_url and not issues:
                mapping[full_url] = f"{resource['resourceType']}/{resource['id']}"
        prepared.append((index, resource, issues))
    outcomes = [EntryOutcome(index, "400 Bad Request", issues=issues) if issues else EntryOutcome(index, "")
                for index, _resource, issues in prepared]
    atomic = atomic and kind == "transaction"
    if atomic and any(o.issues for o in outcomes):
        raise FhirError(400, [i for o in outcomes for i in o.issues])
    valid = [(index, _rewrite_references(resource, mapping) if mapping else resource)
             for index, resource, issues in prepared if not issues and resource is not None]
    step = len(valid) if atomic else chunk  # a transaction commits as one unit
    for start in range(0, len(valid), max(step, 1)):
        part = valid[start:start + max(step, 1)]
        resources = [r for _i, r in part]
        if atomic:
            try:
                results: list[Written | Exception] = list(store.write(resources))
            except (DataError, CopyRefused):
                raise FhirError(400, [Issue("value", "the database refused a value of the transaction (too long "
                                                     "for its column or not storable); nothing was stored")]) from None
        else:
            results = store.write_each(resources)
        for (index, resource), written in zip(part, results, strict=True):
            if isinstance(written, Exception):
                outcomes[index] = EntryOutcome(index, "400 Bad Request", issues=[Issue(
                    "value", f"the database refused a value of this {resource.get('resourceType')}",
                    f"Bundle.entry[{index}].resource")])
            else:
                outcomes[index].written, outcomes[index].status = written, _status(written)
    return BundleResult(kind, outcomes)
