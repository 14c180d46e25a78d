"""De-identify FHIR R4 resources with the same pseudonyms, date shifts and UID map as the images.

The rules follow HIPAA Safe Harbor (45 CFR 164.514(b)(2)) applied to FHIR's data types, with the DICOM side's
choices for what research keeps:

- the patient's logical id and every reference to it become the pseudonym (``Patient/IB...``), so rows join
  per patient and with the images (whose PatientID is the same pseudonym);
- other logical ids and references map through the keyed identifier function (links between an order, its
  report and its encounter survive); ``ImagingStudy/<Study UID>`` maps through the UID map, the same one the
  DICOM output uses;
- every date, dateTime and instant moves by the patient's shift (intervals kept, time of day kept);
- business identifiers keep their system and get a keyed value; names, telecom, addresses, photos and
  contacts are removed, as are narratives (``text``: generated HTML that repeats names) and ``meta``;
- free text (notes, conclusions, valueString, descriptions, report attachments in text/plain) goes through
  the text scrubber with the patient's known identifiers; attachments of other types are dropped.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.deid.pseudonyms import Pseudonymizer

#: Keys whose string values are codes, not text: kept as they are.
_CODED_KEYS = frozenset({
    "resourceType", "system", "code", "unit", "version", "status", "use", "gender", "intent", "priority",
    "comparator", "contentType", "language", "mode", "type", "url", "profile", "valueCode", "valueBoolean",
    "lastUpdated", "versionId", "fullUrl", "method", "kind", "severity", "criticality", "category",
    "clinicalStatus", "verificationStatus", "mimeType",
})
#: Keys holding identity of people and places: removed wherever they appear.
_DROP_KEYS = frozenset({"name", "telecom", "address", "photo", "contact", "text", "meta", "link",
                        "generalPractitioner", "managingOrganization", "birthPlace", "signature"})
#: ``name`` is a person's or organization's in these resources; elsewhere it is a label (kept, scrubbed).
_NAMED_RESOURCES = frozenset({"Patient", "Practitioner", "RelatedPerson", "Person", "Organization", "Location",
                              "PractitionerRole", "Group", "HealthcareService", "Endpoint"})
_ISO_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/\d+)?$")


class FhirDeidentifier:
    def __init__(self, pseudonyms: Pseudonymizer, scrubber: Callable[..., Any] | None = None, *,
                 institutions: tuple[str, ...] = ()) -> None:
        self.pseudonyms = pseudonyms
        if scrubber is None:
            from imagebank.deid.text import scrub_text
            scrubber = scrub_text
        self.scrubber = scrubber
        self.institutions = institutions

    def deidentify(self, resource: dict[str, Any], *, subject: str, known: KnownIdentifiers,
                   patient_ids: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A de-identified copy of ``resource``. ``patient_ids``: FHIR Patient ids of the subject's record."""
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            raise Quarantined("unreadable", "a FHIR resource without resourceType")
        walker = _Walker(self, subject, known, patient_ids, named=rtype in _NAMED_RESOURCES)
        out = walker.value(resource, key="", depth=0)
        out["resourceType"] = rtype
        if rtype == "Patient":
            pseudonym = self.pseudonyms.patient(subject)
            out["id"] = pseudonym
            out["identifier"] = [{"system": "urn:imagebank:research-subject", "value": pseudonym}]
            out.pop("extension", None)  # US Core race/ethnicity/birth sex: free text and places inside
        elif isinstance(resource.get("id"), str):
            out["id"] = self.pseudonyms.identifier("fhir-id", f"{rtype}/{resource['id']}")
        return out


class _Walker:
    def __init__(self, engine: FhirDeidentifier, subject: str, known: KnownIdentifiers,
                 patient_ids: frozenset[str], *, named: bool) -> None:
        self.engine = engine
        self.p = engine.pseudonyms
        self.subject = subject
        self.known = known
        self.patient_ids = patient_ids
        self.named = named

    def value(self, value: Any, *, key: str, depth: int) -> Any:
        if depth > 64:
            raise Quarantined("too-deep", "FHIR resource nested deeper than 64 levels")
        if isinstance(value, dict):
            return self.obj(value, depth)
        if isinstance(value, list):
            return [v for v in (self.value(item, key=key, depth=depth + 1) for item in value) if v is not None]
        if isinstance(value, str):
            return self.string(value, key)
        return value

    def obj(self, obj: dict[str, Any], depth: int) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for key, item in obj.items():
            if key in _DROP_KEYS and (key != "name" or self.named or depth > 0 and _looks_like_human_name(item)):
                if key == "text" and isinstance(item, str):  # CodeableConcept.text, Annotation.text: free text
                    out[key] = self.string(item, "text")
                continue
            if key == "display":
                if "code" in obj and isinstance(item, str):
                    out[key] = item  # a Coding's display is the code's meaning
                continue  # a Reference's display is usually a person's or a place's name
            if key == "reference" and isinstance(item, str):
                mapped = self.reference(item)
                if mapped:
                    out[key] = mapped
                continue
            if key == "identifier":
                out[key] = self.identifiers(item)
                continue
            if key == "id" and depth > 0:
                continue  # element ids inside a resource carry no meaning for research
            if key == "data" and obj.get("contentType", "").startswith("text/") and isinstance(item, str):
                out[key] = self.attachment_text(item)
                continue
            if key in ("data", "url") and "contentType" in obj:
                continue  # non-text attachments (PDF, images) and their locations: not cleanable here
            mapped_value = self.value(item, key=key, depth=depth + 1)
            if mapped_value is not None:
                out[key] = mapped_value
        return out

    def string(self, text: str, key: str) -> str:
        if _ISO_DATE.match(text) and text[:4].isdigit() and key not in ("code", "value", "version"):
            return self.p.shift_iso(text, self.subject)
        if key in _CODED_KEYS:
            return text
        result = self.engine.scrubber(text, self.known, shift=lambda d: self.p.shift_date(d, self.subject),
                                      institutions=self.engine.institutions)
        return str(result.text)

    def reference(self, ref: str) -> str | None:
        match = _REFERENCE.match(ref)
        if match is None:
            # Absolute URLs, contained (#...) and conditional references cannot be mapped safely.
            return ref if ref.startswith("#") else None
        rtype, rid = match.group(1), match.group(2)
        if rtype == "Patient":
            return f"Patient/{self.p.patient(self.subject)}"
        if rtype == "ImagingStudy" and re.fullmatch(r"[0-9.]+", rid):
            return f"ImagingStudy/{self.p.uid(rid)}"
        return f"{rtype}/{self.p.identifier('fhir-id', f'{rtype}/{rid}')}"

    def identifiers(self, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        out = []
        for ident in items:
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
                continue
            system = ident.get("system", "")
            mapped: dict[str, Any] = {"value": self.p.identifier(f"identifier:{system}", ident["value"])}
            if system:
                mapped["system"] = system
            if isinstance(ident.get("type"), dict):
                mapped["type"] = {k: v for k, v in ident["type"].items() if k == "coding"}
            out.append(mapped)
        return out if isinstance(value, list) else (out[0] if out else None)

    def attachment_text(self, data: str) -> str:
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Quarantined("unreadable", "a text attachment that is not base64 UTF-8") from None
        return base64.b64encode(self.string(text, "data").encode("utf-8")).decode("ascii")


def _looks_like_human_name(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return any(isinstance(i, dict) and ("family" in i or "given" in i) for i in items)
