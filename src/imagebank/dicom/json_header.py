"""The cached DICOM JSON header of an instance (PS3.18 Annex F).

Values larger than the bulk-data threshold are replaced by a ``BulkDataURI`` relative to the
instance (``bulkdata/<tag>``); the DICOMweb layer prefixes the instance URL when it answers a
metadata request, so the cached form stays valid if the server's address changes.
Pixel Data is never parsed on ingest; instances with an Image Pixel Module (Rows and Columns present)
get a Pixel Data BulkDataURI pointing to the frames.
"""

from __future__ import annotations

import json
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement

BULKDATA_PREFIX = "bulkdata/"
PIXEL_DATA_TAG = "7FE00010"


def _bulk_uri(elem: DataElement) -> str:
    return f"{BULKDATA_PREFIX}{elem.tag:08X}"


def dicom_json_header(ds: Dataset, *, bulk_data_threshold: int = 1024) -> str:
    """Serialize ``ds`` (without File Meta) as DICOM JSON text with bulk data left out."""
    as_dict: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=bulk_data_threshold,
        bulk_data_element_handler=_bulk_uri,
        suppress_invalid_tags=True,
    )
    if "00280010" in as_dict and "00280011" in as_dict and PIXEL_DATA_TAG not in as_dict:
        as_dict[PIXEL_DATA_TAG] = {"vr": "OW", "BulkDataURI": f"{BULKDATA_PREFIX}{PIXEL_DATA_TAG}"}
    return json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False)
