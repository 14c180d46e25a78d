"""DICOM status codes for ingest outcomes, shared by C-STORE (PS3.4 B.2.3) and STOW-RS (PS3.18 10.5.3,
whose Failure Reason values are the same codes: PS3.18 Table 10.5.3-2 refers to PS3.4 Annex B)."""

from imagebank.archive.pipeline import IngestResult
from imagebank.storage.index import Outcome

SUCCESS = 0x0000
REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x general failure: "Refused: Not Authorized"
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.5.x: "Duplicate SOP Instance"
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: "Refused: Out of Resources"
DATASET_DOES_NOT_MATCH = 0xA900  # PS3.4 B.2.3: "Error: Data Set Does Not Match SOP Class"
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3: "Error: Cannot Understand"

_REJECTION_STATUS = {
    "duplicate-conflict": DUPLICATE_SOP_INSTANCE,
    "out-of-resources": OUT_OF_RESOURCES,
    "patient-mismatch": DATASET_DOES_NOT_MATCH,
    "hierarchy-mismatch": DATASET_DOES_NOT_MATCH,
    "study-mismatch": DATASET_DOES_NOT_MATCH,
}


def store_status(result: IngestResult) -> int:
    """The storage status for an ingest result (identical re-sends succeed: nothing is lost)."""
    if result.outcome is not Outcome.REJECTED:
        return SUCCESS
    return _REJECTION_STATUS.get(result.reason or "", CANNOT_UNDERSTAND)
