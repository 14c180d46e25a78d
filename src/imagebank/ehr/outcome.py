"""FHIR R4 OperationOutcome (operationoutcome.html): how every FHIR error is reported.

``issue.code`` comes from the IssueType value set (invalid, structure, required, value, not-found,
not-supported, processing, exception); ``expression`` names the element as a FHIRPath
(``Observation.valueQuantity.value``) so a sender can find what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    code: str  # IssueType: invalid, structure, required, value, not-found, not-supported, processing ...
    diagnostics: str
    expression: str | None = None
    severity: str = "error"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            body["expression"] = [self.expression]
        return body


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_json() for i in issues]}


def information(text: str) -> dict[str, Any]:
    return operation_outcome([Issue("informational", text, severity="information")])


class FhirError(Exception):
    """A request-level FHIR failure: HTTP ``status`` with an OperationOutcome body."""

    def __init__(self, status: int, issues: list[Issue] | str, code: str = "invalid") -> None:
        self.status = status
        self.issues = [Issue(code, issues)] if isinstance(issues, str) else issues
        super().__init__("; ".join(i.diagnostics for i in self.issues))

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)
