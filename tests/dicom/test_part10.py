"""The fast PS3.10 writer writes exactly what pydicom's dcmwrite writes, for every kind of element."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

import imagebank.dicom.part10 as part10
from imagebank.deid.dicom import DicomDeidentifier
from imagebank.deid.errors import Quarantined
from imagebank.deid.profile import RESEARCH, load_table
from imagebank.deid.pseudonyms import Pseudonymizer


def _readable_test_files() -> list[str]:
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(get_testdata_files("*")):
            try:
                ds = pydicom.dcmread(name)
            except Exception:  # noqa: BLE001 - not every test file is a readable DICOM file (that is their point)
                continue
            if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) and "SOPClassUID" in ds:
                files.append(name)
    return files


TEST_FILES = _readable_test_files()


def _expected(ds: Dataset) -> bytes | None:
    """dcmwrite's output for ``ds`` (zero preamble), or None when pydicom refuses to write it."""
    ds.preamble = None
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None
    return buffer.getvalue()


def _both(path: str | Path | bytes) -> tuple[Dataset, Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(path, bytes):
            return pydicom.dcmread(io.BytesIO(path)), pydicom.dcmread(io.BytesIO(path))
        return pydicom.dcmread(path), pydicom.dcmread(path)


def _compare(ours: Dataset, theirs: Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = copy.deepcopy(theirs)
        expected = _expected(theirs)
        if expected is None:
            # dcmwrite refuses it; ours may write it (see test_a_data_set_read_as_implicit_is_written_explicit),
            # and then it must read back with every element as it was.
            try:
                written = part10.part10_bytes(ours)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
                return
            assert pydicom.dcmread(io.BytesIO(written)) == reference
            return
        assert part10.part10_bytes(ours) == expected


@pytest.fixture
def fast_path_count(monkeypatch):
    """How many objects were written without falling back to dcmwrite."""
    calls = {"fallback": 0, "total": 0}
    fallback, chunks = part10._with_pydicom, part10.part10_chunks

    def counting_fallback(ds):
        calls["fallback"] += 1
        return fallback(ds)

    def counting_chunks(ds):
        calls["total"] += 1
        return chunks(ds)

    monkeypatch.setattr(part10, "_with_pydicom", counting_fallback)
    monkeypatch.setattr(part10, "part10_chunks", counting_chunks)
    return calls


def test_there_are_test_files():
    assert len(TEST_FILES) > 50


@pytest.mark.parametrize("path", TEST_FILES, ids=[Path(p).name for p in TEST_FILES])
def test_unchanged_objects_are_written_like_dcmwrite(path):
    ours, theirs = _both(path)
    _compare(ours, theirs)


@pytest.mark.parametrize("path", TEST_FILES, ids=[Path(p).name for p in TEST_FILES])
def test_fully_decoded_objects_are_written_like_dcmwrite(path):
    """Every element decoded (the writer encodes each value itself or through pydicom)."""
    ours, theirs = _both(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for ds in (ours, theirs):
                for _ in ds.iterall():
                    pass
        except Exception:  # noqa: BLE001 - a file whose values pydicom cannot decode
            pytest.skip("pydicom cannot decode every element of this file")
    _compare(ours, theirs)


def test_deidentified_objects_are_written_like_dcmwrite():
    """Every test file the engine releases (the others are quarantined: unsafe pixel data, unreadable)."""
    engine = DicomDeidentifier(RESEARCH, Pseudonymizer(b"k" * 32), ocr=None)
    compared = 0
    for path in TEST_FILES:
        ours, theirs = _both(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                engine.deidentify(ours, subject="s")
                engine.deidentify(theirs, subject="s")
            except Quarantined:
                continue
        _compare(ours, theirs)
        compared += 1
    assert compared >= 25  # 28 of pydicom 3.0.2's files are released with OCR off


def test_most_test_files_take_the_fast_path(fast_path_count):
    for path in TEST_FILES:
        ours, _ = _both(path)
        try:
            part10.part10_chunks(ours)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            continue
    assert fast_path_count["total"] == len(TEST_FILES)
    assert fast_path_count["fallback"] < len(TEST_FILES) * 0.2


def _every_vr_dataset() -> Dataset:
    """One element per attribute of Table E.1-1 (every VR the standard uses), values set from Python."""
    ds = Dataset()
    samples = {"PN": "Doe^Jane", "DA": "20240305", "TM": "101010.5", "DT": "20240305101010", "UI": "1.2.3.4.5",
               "AS": "045Y", "IS": "5", "DS": "1.5", "CS": "ABC", "AE": "AET", "UR": "http://x.example/a",
               "US": 7, "SS": -7, "UL": 70000, "SL": -70000, "UV": 2**40, "SV": -(2**40), "FL": 1.25, "FD": 2.5,
               "AT": 0x00100010, "OB": b"\x01\x02\x03", "OW": b"\x01\x02\x03\x04", "UN": b"\x01\x02\x03",
               "OF": b"\0" * 4, "OD": b"\0" * 8, "OL": b"\0" * 4, "OV": b"\0" * 8}
    for row in load_table().rows:
        if row.tag == "PRIVATE" or "X" in row.tag:
            continue
        tag = int(row.tag, 16)
        if tag >> 16 in (0x0000, 0x0002):
            continue  # command and file meta elements have no place in a data set
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.PatientName = "Nested^Name"
            item.CodeValue = "123"
            ds.add_new(tag, vr, Sequence([item]))
        else:
            ds.add_new(tag, vr, samples.get(vr, "Some text value"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
@pytest.mark.parametrize("charset", ["", "ISO_IR 100", "ISO_IR 192", "\\ISO 2022 IR 87"])
def test_every_vr_read_back_and_changed_is_written_like_dcmwrite(syntax, charset, fast_path_count):
    source = _every_vr_dataset()
    if charset:
        source.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    source.file_meta = FileMetaDataset()
    source.file_meta.TransferSyntaxUID = syntax
    data = _expected(source)
    assert data is not None
    ours, theirs = _both(data)
    for ds in (ours, theirs):
        ds.PatientName = "Pseudo^Nym"
        ds.StudyDate = ["20200101", "20200102"]
        ds.ImageComments = "Ünïcode text"
        ds.ReferringPhysicianName = ""
        ds.Rows = 512
        for elem in ds.iterall():
            _ = elem.value  # decode everything that is left
    _compare(ours, theirs)
    assert fast_path_count == {"total": 1, "fallback": 0}


def test_a_data_set_read_as_implicit_is_written_explicit():
    """A file whose transfer syntax says explicit VR while its data set is implicit (pydicom reads it with a
    warning; dcmwrite then fails on the elements without a VR): written with the dictionary's VRs."""
    path = next(p for p in TEST_FILES if Path(p).name == "SC_rgb_jpeg.dcm")
    ours, theirs = _both(path)
    assert _expected(theirs) is None  # what pydicom alone does with it
    written = pydicom.dcmread(io.BytesIO(part10.part10_bytes(ours)))
    source, _ = _both(path)
    assert written == source
    assert not written.is_implicit_VR and written.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("instance_uid", ["1.2.3.4", "1.2.3.45", "2.25.123456789012345678901234567890123456789"])
def test_file_meta_prefix_is_what_pydicom_writes_for_a_received_data_set(instance_uid: str) -> None:
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import create_file_meta

    from imagebank.dicom.part10 import file_meta_prefix

    for syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"):
        expected = io.BytesIO()
        expected.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(expected, create_file_meta(
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=instance_uid, transfer_syntax=syntax))
        assert file_meta_prefix("1.2.840.10008.5.1.4.1.1.2", instance_uid, syntax, PYNETDICOM_IMPLEMENTATION_UID,
                                PYNETDICOM_IMPLEMENTATION_VERSION) == expected.getvalue()
