"""DIMSE status codes (PS3.4 B.2.3 Storage, C.4.1.1.4 Find, PS3.7 C General statuses)."""

from imagebank.archive.status import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    REFUSED_NOT_AUTHORIZED,
    SUCCESS,
    store_status,
)

FIND_PENDING = 0xFF00  # PS3.4 C.4.1.1.4: "Pending: matches are continuing"
FIND_CANCELLED = 0xFE00  # "Cancel: matching terminated due to Cancel request"
FIND_IDENTIFIER_INVALID = 0xA900  # "Failed: Identifier does not match SOP Class"
FIND_UNABLE_TO_PROCESS = 0xC000  # "Failed: Unable to process"

__all__ = [
    "CANNOT_UNDERSTAND", "DATASET_DOES_NOT_MATCH", "DUPLICATE_SOP_INSTANCE", "FIND_CANCELLED",
    "FIND_IDENTIFIER_INVALID", "FIND_PENDING", "FIND_UNABLE_TO_PROCESS", "OUT_OF_RESOURCES",
    "REFUSED_NOT_AUTHORIZED", "SUCCESS", "store_status",
]
