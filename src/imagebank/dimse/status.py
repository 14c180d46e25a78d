"""DIMSE status codes for ingest outcomes (PS3.4 B.2.3 Storage, PS3.7 C General statuses)."""

from imagebank.archive import IngestResult, Outcome

SUCCESS = 0x0000
REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x general failure: "Refused: Not Authorized"
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.5.x: "Duplicate SOP Instance"
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: "Refused: Out of Resources"
DATASET_DOES_NOT_MATCH = 0xA900  # PS3.4 B.2.3: "Error: Data Set Does Not Match SOP Class"
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3: "Error: Cannot Understand"
FIND_PENDING = 0xFF00  # PS3.4 C.4.1.1.4: "Pending: matches are continuing"
FIND_CANCELLED = 0xFE00  # "Cancel: matching terminated due to Cancel request"
FIND_IDENTIFIER_INVALID = 0xA900  # "Failed: Identifier does not match SOP Class"
FIND_UNABLE_TO_PROCESS = 0xC000  # "Failed: Unable to process"

_REJECTION_STATUS = {
    "duplicate-conflict": DUPLICATE_SOP_INSTANCE,
    "out-of-resources": OUT_OF_RESOURCES,
    "patient-mismatch": DATASET_DOES_NOT_MATCH,
    "hierarchy-mismatch": DATASET_DOES_NOT_MATCH,
}


def store_status(result: IngestResult) -> int:
    """The C-STORE response status for an ingest result (identical re-sends succeed: nothing is lost)."""
    if result.outcome is not Outcome.REJECTED:
        return SUCCESS
    return _REJECTION_STATUS.get(result.reason or "", CANNOT_UNDERSTAND)
