"""The ingest-time header (DICOM JSON) and index values read from raw bytes are exactly what pydicom gives."""

from __future__ import annotations

import io
import json
import warnings

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebank.dicom import attributes
from imagebank.dicom.json_header import _bulk_uri, dicom_json_dict
from tests.dicom.test_part10 import TEST_FILES


def _read(data: bytes | str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, stop_before_pixels=True)


def _pydicom_json(ds: Dataset) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.to_json_dict(1024, _bulk_uri, suppress_invalid_tags=True)


def _pydicom_record(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> attributes.IndexRecord:
    with monkeypatch.context() as patch:
        patch.setattr(attributes, "READ_RAW", False)
        return attributes.extract_index_record(ds)


def _same(data: bytes | str, monkeypatch: pytest.MonkeyPatch) -> Dataset:
    ours = _read(data)
    assert json.dumps(dicom_json_dict(ours), sort_keys=True) == json.dumps(_pydicom_json(_read(data)), sort_keys=True)
    ours = _read(data)
    assert attributes.extract_index_record(ours) == _pydicom_record(_read(data), monkeypatch)
    return ours


def test_pydicom_test_files(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in TEST_FILES:
        _same(path, monkeypatch)


def _edge_values(charset: str) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5.6\x00"[:-1]
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientID = "  MRN 001  "
    ds.PatientName = "Müller^Jürgen^^Dr=ミュラー^ユルゲン=" if charset == "ISO_IR 192" else "Müller^Jürgen^^Dr"
    ds.OtherPatientIDs = ["A1", "", "B 2 "]
    ds.NameOfPhysiciansReadingStudy = ["Doe^John", "Roe^Rita"]
    ds.ReferringPhysicianName = ""
    ds.StudyDate = "20240305"
    ds.StudyTime = "101010.123 "
    ds.AccessionNumber = "ACC-1"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesNumber = " 7 "
    ds.InstanceNumber = "12.0"  # not a valid IS: pydicom still reads 12 when not strict, strict JSON drops it
    ds.NumberOfFrames = "3"
    ds.Rows = 512
    ds.Columns = 256
    ds.BitsAllocated = 16
    ds.PatientWeight = "81.5"
    ds.PatientSize = "1.8e0"
    ds.ImagePositionPatient = ["-125.0", "0", "1e2"]
    ds.WindowCenter = ["40", ""]  # an empty value among numbers
    ds.add_new(0x00281053, "DS", "1")
    ds.add_new(0x00080008 + 0x10000000, "UN", b"\x01\x02")
    ds.BodyPartExamined = "chest"  # lowercase CS: pydicom warns but keeps it
    ds.StudyDescription = "x" * 70  # longer than LO's 64: strict reading refuses it
    ds.ImageComments = "Ünïcode \\ text with a backslash"
    ds.InstitutionName = "Klinikum   "
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.LargestImagePixelValue = 4095
    ds.add_new(0x00189219, "FD", [1.5, -2.25])  # TomoAngle (FD, multi-valued)
    ds.add_new(0x00209241, "FL", 0.5)
    ds.add_new(0x00181090, "IS", "")  # CardiacNumberOfImages, empty
    ds.add_new(0x00420011, "OB", b"\x00" * 2000)  # EncapsulatedDocument: a bulk data URI
    ds.add_new(0x00281201, "OW", b"\x01\x02\x03\x04")  # RedPaletteColorLookupTableData: inline
    ds.add_new(0x00091010, "LO", "private")
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.FrameOfReferenceUID = "1.2.3.4.5"
    good = Dataset()
    good.CodeValue = "113076"
    good.CodingSchemeDesignator = "DCM"
    good.CodeMeaning = "Segmentation"
    ds.AnatomicRegionSequence = Sequence([good])
    bad = Dataset()
    bad.CodeValue = "1"
    bad.CodingSchemeDesignator = "bad scheme"  # SH is fine, but a lowercase CS inside makes the item invalid
    bad.add_new(0x00080105, "CS", "lower")
    ds.ConceptNameCodeSequence = Sequence([bad])
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.RequestAttributesSequence[0].RequestedProcedureID = "RP1"
    ds.IssuerOfAccessionNumberSequence = Sequence([Dataset()])
    ds.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID = "HOSP"
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
@pytest.mark.parametrize("charset", ["", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6\\ISO 2022 IR 87"])
def test_edge_values(syntax: str, charset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _edge_values(charset.split("\\")[0] if "\\" in charset else charset)
    if "\\" in charset:
        source.SpecificCharacterSet = charset.split("\\")
    source.file_meta = FileMetaDataset()
    source.file_meta.TransferSyntaxUID = syntax
    source.file_meta.MediaStorageSOPClassUID = source.SOPClassUID
    source.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(buffer, source, enforce_file_format=True)
    ours = _same(buffer.getvalue(), monkeypatch)
    if "2022" not in charset:
        # The fast path was taken: most elements were never turned into pydicom DataElements.
        raw = sum(isinstance(elem, RawDataElement) for elem in ours._dict.values())
        assert raw > len(ours._dict) * 0.6
    header = dicom_json_dict(_read(buffer.getvalue()))
    # Values strict reading refuses are left out, as pydicom leaves them out: a too long LO, an IS written
    # as a decimal, an empty value among numbers.
    assert not {"00081030", "00200013", "00281050"} & set(header)
    assert header["00420011"] == {"vr": "OB", "BulkDataURI": "bulkdata/00420011"}


def test_cached_header_fragments_and_index_values_equal_fresh_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text header and the index record come partly from caches keyed by raw bytes: the second
    instance of a series (warm caches) gets exactly what converting it afresh gives."""
    from imagebank.dicom import json_header

    sources = [*TEST_FILES]
    for path in sources:
        json_header._FRAGMENTS.clear()
        attributes._VALUES.clear()
        cold_header = json_header.dicom_json_header(_read(path))
        cold_record = attributes.extract_index_record(_read(path))
        warm_header = json_header.dicom_json_header(_read(path))
        warm_record = attributes.extract_index_record(_read(path))
        assert warm_header == cold_header
        assert warm_record == cold_record == _pydicom_record(_read(path), monkeypatch)
        expected = dicom_json_dict(_read(path))
        if "00280010" in expected and "00280011" in expected and "7FE00010" not in expected:
            expected["7FE00010"] = {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
        assert json.loads(warm_header) == expected
        assert warm_header == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
