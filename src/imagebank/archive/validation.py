"""Acceptance rules for an incoming instance (pure: a parsed header in, a refusal or nothing out).

Each refusal names the attribute and the rule; none quotes a patient-identifying value.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword

from imagebank.dicom import rawvalues
from imagebank.dicom.uids import uid_problem
from imagebank.errors import RejectedInstance

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the DICOMDIR SOP Class: an index, not an instance

# The four UIDs that place an instance in the patient/study/series/instance hierarchy (PS3.3 C.7/C.12).
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _text(ds: Dataset, keyword: str, codec: str | None = "latin-1") -> str:
    """``str(ds.<keyword>)`` (``""`` when absent), from the raw bytes where that gives the same, so the
    element stays raw for the header and index readers after it."""
    fast = rawvalues.text_of(ds, tag_for_keyword(keyword) or 0, codec)
    if fast is not None:
        return fast
    value = ds.get(keyword)
    return "" if value is None else str(value)


def validate_file_meta(ds: Dataset) -> None:
    """PS3.10 7.1: the File Meta Information must name the transfer syntax and match the data set."""
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if meta is None or not ts:
        raise RejectedInstance(
            "file-meta", "File Meta Information lacks TransferSyntaxUID (0002,0010) (PS3.10 7.1)",
            "TransferSyntaxUID",
        )
    if problem := uid_problem(ts):
        raise RejectedInstance("invalid-uid", f"TransferSyntaxUID (0002,0010) {problem}", "TransferSyntaxUID")
    for meta_kw, ds_kw in (("MediaStorageSOPClassUID", "SOPClassUID"),
                           ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        meta_value = str(meta.get(meta_kw, ""))
        if meta_value and ds_kw in ds and meta_value != _text(ds, ds_kw):
            raise RejectedInstance(
                "file-meta",
                f"{meta_kw} in File Meta Information does not match {ds_kw} in the data set (PS3.10 7.1)",
                meta_kw,
            )


def validate_dataset(ds: Dataset, *, require_patient_id: bool = True) -> None:
    """The identifying attributes an archive needs to file the instance at all."""
    uids = {}
    for keyword in REQUIRED_UIDS:
        text = uids[keyword] = _text(ds, keyword).strip()
        if not text:
            raise RejectedInstance("missing-attribute", f"{keyword} is missing or empty", keyword)
        if problem := uid_problem(text):
            raise RejectedInstance("invalid-uid", f"{keyword} {problem}", keyword)
    if uids["SOPClassUID"] == MEDIA_STORAGE_DIRECTORY:
        raise RejectedInstance(
            "not-an-instance", "a DICOMDIR is a media index, not an instance: ingest the folder or the DICOMDIR "
            "path instead, so the files it references are read", "SOPClassUID",
        )
    if uids["StudyInstanceUID"] == uids["SeriesInstanceUID"] or uids["SeriesInstanceUID"] == uids["SOPInstanceUID"]:
        raise RejectedInstance(
            "invalid-uid", "StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID must differ", "SeriesInstanceUID",
        )
    codec = rawvalues.text_codec(ds, "latin-1")
    patient_id = _text(ds, "PatientID", codec).strip()
    if require_patient_id and not patient_id:
        raise RejectedInstance("missing-attribute", "PatientID (0010,0020) is missing or empty", "PatientID")
    if len(patient_id) > 64:
        raise RejectedInstance("invalid-value", "PatientID (0010,0020) is longer than 64 characters (LO)", "PatientID")
    issuer = _text(ds, "IssuerOfPatientID", codec)
    if len(issuer) > 64:
        raise RejectedInstance(
            "invalid-value", "IssuerOfPatientID (0010,0021) is longer than 64 characters (LO)", "IssuerOfPatientID",
        )
