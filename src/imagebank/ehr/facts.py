"""What the index needs to know about one FHIR R4 resource, read off its JSON (pure, no I/O).

Searches, the patient timeline and cohort queries work on these extracted facts (dates, codes,
values, accession numbers, the patient it belongs to) so they never parse stored JSON. The element
each fact comes from is the one FHIR R4 defines for that resource type; where R4 offers a choice
(``effective[x]``, ``onset[x]``, ``performed[x]``, ``occurrence[x]``) every date-like choice is tried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: HL7 v2 table 0203 identifier type codes (FHIR R4 ``identifier-type`` value set).
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACCESSION_TYPE = "ACSN"
#: How FHIR R4 ImagingStudy.identifier carries the Study Instance UID (ImagingStudy notes; RFC 3001).
DICOM_UID_SYSTEM = "urn:dicom:uid"

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR R4 datatypes.html#id
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: Per resource type: the elements holding the clinically relevant start time, in order of preference.
DATE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": ("birthDate",),
    "Encounter": ("period",),
    "Condition": ("onsetDateTime", "onsetPeriod", "recordedDate", "abatementDateTime"),
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "ServiceRequest": ("occurrenceDateTime", "occurrencePeriod", "authoredOn"),
    "ImagingStudy": ("started",),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
    "Immunization": ("occurrenceDateTime",),
    "AllergyIntolerance": ("onsetDateTime", "recordedDate"),
}

#: Per resource type: the elements whose CodeableConcepts are indexed, with the role they play.
CODE_ELEMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "Encounter": (("type", "code"), ("class", "category"), ("reasonCode", "reason")),
    "Condition": (("code", "code"), ("category", "category"), ("bodySite", "body-site")),
    "Observation": (("code", "code"), ("category", "category"), ("valueCodeableConcept", "value"),
                    ("bodySite", "body-site")),
    "Procedure": (("code", "code"), ("category", "category"), ("reasonCode", "reason"), ("bodySite", "body-site")),
    "DiagnosticReport": (("code", "code"), ("category", "category"), ("conclusionCode", "value")),
    "ServiceRequest": (("code", "code"), ("category", "category"), ("reasonCode", "reason"),
                       ("bodySite", "body-site")),
    "ImagingStudy": (("procedureCode", "code"), ("modality", "category"), ("reasonCode", "reason")),
    "MedicationRequest": (("medicationCodeableConcept", "code"), ("category", "category"),
                          ("reasonCode", "reason")),
    "MedicationStatement": (("medicationCodeableConcept", "code"),),
    "Immunization": (("vaccineCode", "code"),),
    "AllergyIntolerance": (("code", "code"),),
}


@dataclass
class ResourceFacts:
    resource_type: str
    resource_id: str
    #: The Patient this resource is about: a logical id, or ``(system, value)`` for an identifier reference.
    patient_ref: str | None = None
    patient_identifier: tuple[str, str] | None = None
    status: str | None = None
    effective_date: dt.date | None = None
    effective_at: str | None = None
    effective_end: dt.date | None = None
    code_system: str | None = None
    code: str | None = None
    label: str | None = None
    value_num: float | None = None
    value_unit: str | None = None
    value_text: str | None = None
    accession_number: str | None = None
    study_instance_uid: str | None = None
    encounter_id: str | None = None
    #: (role, system, code) of every coding and identifier.
    codes: list[tuple[str, str, str]] = field(default_factory=list)
    content_hash: str = ""


def _text(value: Any, limit: int) -> str | None:
    """A string cut to its column's width (the resource JSON keeps the whole value)."""
    if value is None:
        return None
    return str(value)[:limit] or None


def content_hash(resource: dict[str, Any]) -> str:
    """Hash of the resource without server-assigned ``meta.versionId``/``meta.lastUpdated``: re-sending
    the same content is recognized as unchanged and creates no new version."""
    body = dict(resource)
    meta = body.get("meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        if meta:
            body["meta"] = meta
        else:
            body.pop("meta")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def reference_id(reference: str | None, resource_type: str) -> str | None:
    """The logical id in a relative literal reference to ``resource_type`` (``Patient/123``), else None.

    Absolute URLs point at another server's resources (references.html#literal): ``Patient/123`` there
    is not our Patient/123. Absolute references between the entries of one Bundle are rewritten to
    relative ones before they get here (see ``bundles``).
    """
    if not isinstance(reference, str) or "/" not in reference or ":" in reference:
        return None
    parts = reference.split("?", 1)[0].rstrip("/").split("/")
    if "_history" in parts:  # Patient/1/_history/2
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type and ID_RE.match(parts[-1]):
        return parts[-1]
    return None


def parse_fhir_date(value: str | None) -> tuple[dt.date, dt.date] | None:
    """First and last day covered by a FHIR date/dateTime/instant (``2024``, ``2024-05``, ``2024-05-02T...``)."""
    if not value or not isinstance(value, str):
        return None
    try:
        if len(value) == 4:
            year = int(value)
            return dt.date(year, 1, 1), dt.date(year, 12, 31)
        if len(value) == 7:
            first = dt.date(int(value[:4]), int(value[5:7]), 1)
            nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return first, nxt - dt.timedelta(days=1)
        day = dt.date.fromisoformat(value[:10])
        return day, day
    except ValueError:
        return None


def _codings(concept: Any) -> Iterator[tuple[str, str, str | None]]:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            if isinstance(coding, dict) and coding.get("code"):
                yield str(coding.get("system") or ""), str(coding["code"]), coding.get("display")
        if "system" in concept and "code" in concept and "coding" not in concept:  # a bare Coding (Encounter.class)
            yield str(concept.get("system") or ""), str(concept["code"]), concept.get("display")


def _concepts(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []


def _is_accession(identifier: dict[str, Any]) -> bool:
    for _system, code, _display in _codings(identifier.get("type")):
        if code == ACCESSION_TYPE:
            return True
    return False


def _set_dates(facts: ResourceFacts, resource: dict[str, Any]) -> None:
    for element in DATE_ELEMENTS.get(facts.resource_type, ()):
        value = resource.get(element)
        if isinstance(value, dict):  # Period
            start, end = value.get("start"), value.get("end")
            first = parse_fhir_date(start) or parse_fhir_date(end)
            if first:
                facts.effective_at = (start or end)
                facts.effective_date = first[0]
                last = parse_fhir_date(end)
                facts.effective_end = last[1] if last else None
                return
        elif (span := parse_fhir_date(value)) is not None:
            facts.effective_at, facts.effective_date = value, span[0]
            facts.effective_end = span[1] if span[1] != span[0] else None  # "2024" covers the whole year
            return


def _set_value(facts: ResourceFacts, resource: dict[str, Any]) -> None:
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), (int, float)):
        facts.value_num = float(quantity["value"])
        facts.value_unit = _text(quantity.get("code") or quantity.get("unit"), 64)
        return
    for key in ("valueInteger", "valueDecimal"):
        if isinstance(resource.get(key), (int, float)) and not isinstance(resource.get(key), bool):
            facts.value_num = float(resource[key])
            return
    concept = resource.get("valueCodeableConcept")
    if isinstance(concept, dict):
        first = next(_codings(concept), None)
        facts.value_text = _text(concept.get("text") or (first[2] if first else None) or (first[1] if first else None),
                                 512)
        return
    for key in ("valueString", "valueBoolean", "valueDateTime"):
        if key in resource:
            facts.value_text = str(resource[key])[:512]
            return


def extract(resource: dict[str, Any]) -> ResourceFacts:
    """The indexable facts of a (validated) resource."""
    rtype = resource["resourceType"]
    facts = ResourceFacts(rtype, resource["id"], content_hash=content_hash(resource))
    status = resource.get("status")
    facts.status = status[:32] if isinstance(status, str) else None
    _set_dates(facts, resource)

    if rtype == "Patient":
        facts.patient_ref = resource["id"]
        names = resource.get("name") or []
        official = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), None)
        name = official or (names[0] if names and isinstance(names[0], dict) else {})
        from imagebank.dicom.names import fold_person_name

        family = name.get("family") if isinstance(name.get("family"), str) else ""
        given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))  # "given": ["A", null] is legal
        dicom_form = f"{family}^{given}" if family or given else str(name.get("text") or "")
        facts.label = (fold_person_name(dicom_form) or "")[:512] or None
        facts.value_text = _text(resource.get("gender"), 32)
    else:
        subject = resource.get("subject") or resource.get("patient")
        if isinstance(subject, dict):
            facts.patient_ref = reference_id(subject.get("reference"), "Patient")
            ident = subject.get("identifier")
            # An identifier without a system is unique nowhere: it never links a resource to a patient.
            if facts.patient_ref is None and isinstance(ident, dict) and ident.get("value") and ident.get("system"):
                facts.patient_identifier = (str(ident["system"])[:256], str(ident["value"])[:128])
        encounter = resource.get("encounter") or resource.get("context")
        if isinstance(encounter, dict):
            facts.encounter_id = reference_id(encounter.get("reference"), "Encounter")

    for element, role in CODE_ELEMENTS.get(rtype, ()):
        for concept in _concepts(resource.get(element)):
            for system, code, display in _codings(concept):
                facts.codes.append((role, system, code))
                if role == "code" and facts.code is None:
                    facts.code_system, facts.code = system, code
                    facts.label = (display or (concept.get("text") if isinstance(concept, dict) else None)
                                   or code)[:512]
            if role == "code" and facts.label is None and isinstance(concept, dict) and concept.get("text"):
                facts.label = str(concept["text"])[:512]
    for component in _concepts(resource.get("component")):
        if isinstance(component, dict):
            for system, code, _ in _codings(component.get("code")):
                facts.codes.append(("component", system, code))
            for system, code, _ in _codings(component.get("valueCodeableConcept")):
                facts.codes.append(("component-value", system, code))

    for identifier in _concepts(resource.get("identifier")):
        if not isinstance(identifier, dict) or not identifier.get("value"):
            continue
        system, value = str(identifier.get("system") or ""), str(identifier["value"])
        facts.codes.append(("identifier", system, value[:128]))
        if _is_accession(identifier) and facts.accession_number is None:
            facts.accession_number = value[:64]
        if system == DICOM_UID_SYSTEM and value.startswith("urn:oid:") and len(value) <= 72 \
                and _UID_RE.match(value[8:]):
            facts.study_instance_uid = value[8:]
    if rtype == "DiagnosticReport" and facts.study_instance_uid is None:
        for ref in _concepts(resource.get("imagingStudy")):
            uid = reference_id(ref.get("reference") if isinstance(ref, dict) else None, "ImagingStudy")
            if uid and _UID_RE.match(uid) and len(uid) <= 64:
                facts.study_instance_uid = uid
                break
    if rtype == "Observation":
        _set_value(facts, resource)
    facts.effective_at = _text(facts.effective_at, 40)
    facts.status = _text(facts.status, 32)
    facts.label = _text(facts.label, 512)
    facts.encounter_id = _text(facts.encounter_id, 64)
    if facts.code_system is not None:
        facts.code_system = facts.code_system[:256]
        facts.code = (facts.code or "")[:128]
    facts.codes = [(r, s[:256], c[:128]) for r, s, c in dict.fromkeys(facts.codes)]
    return facts


def patient_identifiers(patient: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """``(system, value, use)`` of a Patient's identifiers that can identify a person: not ``old``, and
    with a system (a bare value such as "12345" would merge strangers from two feeds)."""
    out = []
    for identifier in _concepts(patient.get("identifier")):
        if isinstance(identifier, dict) and identifier.get("value") and identifier.get("system") \
                and identifier.get("use") != "old":
            out.append((str(identifier["system"])[:256], str(identifier["value"])[:128],
                        _text(identifier.get("use"), 16)))
    return out


def patient_links(patient: dict[str, Any]) -> list[str]:
    """Logical ids of the Patients this one is linked to. Every R4 link type (replaced-by, replaces,
    refer, seealso) asserts the same individual (Patient.link definition), so all of them merge."""
    out = []
    for link in _concepts(patient.get("link")):
        other = link.get("other") if isinstance(link, dict) else None
        ref = reference_id(other.get("reference"), "Patient") if isinstance(other, dict) else None
        if ref:
            out.append(ref)
    return out
