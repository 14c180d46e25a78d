"""Structural validation of FHIR R4 resources with the fhir.resources models.

fhir.resources ships R5, R4B and STU3 models, not R4 (4.0.1). R4B (4.3) left every resource type
Imagebank indexes (Patient, Encounter, Condition, Observation, Procedure, DiagnosticReport,
ServiceRequest, ImagingStudy, MedicationRequest) structurally as in R4, so its models validate R4
content: cardinality, required elements, datatypes and their regular expressions, choice types
(only one ``value[x]``), unknown elements. Required terminology bindings are not checked by the
library; the few codes Imagebank itself relies on (``status``) are only indexed, never trusted.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from imagebank.ehr.facts import ID_RE
from imagebank.ehr.outcome import Issue

#: Types stored and indexed with their patient (subject) and dates; any other valid type is kept too.
CLINICAL_TYPES = frozenset({
    "Patient", "Encounter", "Condition", "Observation", "Procedure", "DiagnosticReport", "ServiceRequest",
    "ImagingStudy", "MedicationRequest",
})

_ISSUE_CODES = {"missing": "required", "model_field_validation.missing": "required", "extra_forbidden": "structure"}


@lru_cache(maxsize=256)
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        return None


def _fhirpath(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate(resource: Any, *, require_id: bool = True) -> list[Issue]:
    """Problems that make ``resource`` unacceptable (an empty list when it is valid)."""
    if not isinstance(resource, dict):
        return [Issue("structure", "a FHIR resource must be a JSON object")]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return [Issue("required", "the resource has no resourceType", "resourceType")]
    if rtype in ("Bundle", "OperationOutcome"):
        return [Issue("not-supported", f"a {rtype} cannot be stored as a resource here", "resourceType")]
    model = _model(rtype)
    if model is None:
        return [Issue("not-supported", f"{rtype!r} is not a FHIR R4 resource type", "resourceType")]
    rid = resource.get("id")
    if rid is None and require_id:
        return [Issue("required", f"the {rtype} has no id: resources sent without a request URL need their "
                                  "logical id so that sending them again updates instead of duplicating", f"{rtype}.id")]
    if rid is not None and not (isinstance(rid, str) and ID_RE.match(rid)):
        return [Issue("value", f"{rid!r} is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)", f"{rtype}.id")]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for error in exc.errors()[:20]:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            issues.append(Issue(_ISSUE_CODES.get(str(error.get("type")), "value" if error.get("loc") else "invalid"),
                                message, _fhirpath(rtype, tuple(error.get("loc") or ()))))
        return issues
    except (ValueError, TypeError) as exc:  # validators that raise outside pydantic's error collection
        return [Issue("invalid", str(exc)[:500], rtype)]
    return []
