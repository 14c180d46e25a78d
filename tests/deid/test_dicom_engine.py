"""The profile engine on real datasets: every Table E.1-1 attribute at two depths, options, pseudonyms, marking."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebank.deid.dicom import DicomDeidentifier, Limits
from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.deid.profile import BASIC, RESEARCH, Option, Profile, SafePrivate, load_table
from imagebank.deid.pseudonyms import Pseudonymizer
from imagebank.deid.verify import LeakScanner
from imagebank.dicom.part10 import part10_bytes

KEY = b"k" * 32
MARK = "LEAKYVALUE"
SOURCE_UID = "1.2.826.0.1.3680043.10.999.1.2.3.4"


def _value(vr: str) -> object:
    """An identifying-looking value valid for ``vr`` (what a careless sender might put anywhere)."""
    vr = vr.split(" or ")[0]
    return {
        "PN": f"{MARK}^PATIENT", "DA": "20240305", "TM": "101010", "DT": "20240305101010", "UI": SOURCE_UID,
        "AS": "045Y", "IS": "5", "DS": "1.5", "CS": MARK, "AE": MARK, "UR": f"http://{MARK}.example",
        "US": 1, "SS": 1, "UL": 1, "SL": 1, "UV": 1, "SV": 1, "FL": 1.0, "FD": 1.0, "AT": 0x00100010,
        "OB": MARK.encode(), "OW": MARK.encode() * 2, "UN": MARK.encode(), "OF": b"\0" * 4, "OD": b"\0" * 8,
        "OL": b"\0" * 4, "OV": b"\0" * 8,
    }.get(vr, f"{MARK} 12345678")


def _every_table_attribute() -> Dataset:
    ds = Dataset()
    for row in load_table().rows:
        if row.tag == "PRIVATE" or "X" in row.tag:
            continue
        tag = int(row.tag, 16)
        if tag == 0x00420011:
            continue  # Encapsulated Document: a document object is quarantined whole (test_pixels)
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.PatientName = f"{MARK}^NESTED"
            item.ReferencedSOPInstanceUID = SOURCE_UID
            item.add_new(0x00081030, "LO", f"{MARK} nested description")
            ds.add_new(tag, vr, Sequence([item]))
        else:
            ds.add_new(tag, vr, _value(vr))
    ds.add_new(0x60003000, "OW", MARK.encode() * 2)  # overlay data
    ds.add_new(0x60004000, "LT", f"{MARK} overlay comment")
    ds.add_new(0x50000010, "US", 1)  # curve data group
    ds.add_new(0x00091010, "LO", f"{MARK} private")  # private element without creator
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return ds


def _engine(profile: Profile = BASIC, key: bytes = KEY) -> DicomDeidentifier:
    return DicomDeidentifier(profile, Pseudonymizer(key))


def _assert_clean(ds: Dataset) -> None:
    for elem in ds.iterall():
        if elem.VR == "SQ":
            continue
        value = elem.value
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        assert MARK.lower() not in text.lower(), f"{elem.tag} {elem.keyword} kept an identifying value"
        assert SOURCE_UID not in text, f"{elem.tag} {elem.keyword} kept the original UID"


def _through_file(ds: Dataset, syntax: str) -> Dataset:
    """``ds`` written as a PS3.10 file and read back: every element raw, as the engine meets real input."""
    for tag in [t for t in ds.keys() if t.group in (0x0000, 0x0002)]:
        del ds[tag]  # command and file meta elements cannot be in a file's data set
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("source", ["in-memory", "explicit-file", "implicit-file"])
@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "inside-a-sequence"])
def test_basic_profile_handles_every_attribute_of_table_e1_1(nested, source):
    inner = _every_table_attribute()
    if nested:
        # An attribute must be handled at any depth: put all of them inside an unlisted sequence item.
        ds = Dataset()
        ds.SOPClassUID = inner.SOPClassUID
        ds.AnatomicRegionSequence = Sequence([inner])
        assert load_table().row_for(0x00082218) is None  # the wrapper itself is not in the table
    else:
        ds = inner
    if source != "in-memory":
        ds.SOPInstanceUID = SOURCE_UID
        ds = _through_file(ds, ExplicitVRLittleEndian if source == "explicit-file" else ImplicitVRLittleEndian)
    result = _engine().deidentify(ds, subject="sys|p1", known=KnownIdentifiers())
    out = result.dataset
    _assert_clean(out)
    if source != "in-memory":
        # What is written (raw bytes reused, values replaced as bytes) is what was checked.
        _assert_clean(pydicom.dcmread(io.BytesIO(part10_bytes(out))))
    target = out.AnatomicRegionSequence[0] if nested else out
    table = load_table()
    for row in table.rows:
        if row.tag == "PRIVATE" or "X" in row.tag:
            continue
        tag = int(row.tag, 16)
        action = BASIC.action(row)
        if tag in (0x00100010, 0x00100020):
            continue  # replaced by the pseudonym (checked below)
        if action == "X":
            assert tag not in target, f"{row.keyword} should be removed"
        elif action == "Z" and target.get(tag) is not None and target[tag].VR != "SQ":
            assert target[tag].value in ("", None, b""), f"{row.keyword} should be empty"
        elif action == "U" and target.get(tag) is not None and target[tag].VR == "UI":
            assert str(target[tag].value).startswith("2.25."), row.keyword
    assert 0x60003000 not in target and 0x60004000 not in target and 0x50000010 not in target
    assert 0x00091010 not in target


@pytest.mark.parametrize("source", ["in-memory", "explicit-file", "implicit-file"])
def test_research_profile_shifts_dates_maps_uids_and_marks_the_output(source):
    ds = _every_table_attribute()
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "MRN0042"
    ds.StudyDate = "20240305"
    ds.StudyTime = "101530"
    ds.AcquisitionDateTime = "20240305101530.250000+0100"
    ds.StudyInstanceUID = "1.2.3.4.5.6.7.8"
    if source != "in-memory":
        ds = _through_file(ds, ExplicitVRLittleEndian if source == "explicit-file" else ImplicitVRLittleEndian)
    pseudonyms = Pseudonymizer(KEY)
    result = DicomDeidentifier(RESEARCH, pseudonyms).deidentify(ds, subject="sys|MRN0042",
                                                               known=KnownIdentifiers.from_dataset(ds))
    out = result.dataset
    shift = pseudonyms.date_shift_days("sys|MRN0042")
    assert -1095 <= shift <= -1
    assert out.StudyDate == (dt.date(2024, 3, 5) + dt.timedelta(days=shift)).strftime("%Y%m%d")
    assert out.StudyTime == "101530"  # time of day kept
    assert out.AcquisitionDateTime.endswith("101530.250000+0100")
    assert out.StudyInstanceUID == pseudonyms.uid("1.2.3.4.5.6.7.8")
    assert out.PatientName == out.PatientID == pseudonyms.patient("sys|MRN0042") == result.pseudonym
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PS3.15-2025" in out.DeidentificationMethod
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert {"113100", "113107", "113105", "113104", "113103", "113108", "113101"} <= codes
    assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)
    assert out.PatientAge == "045Y"  # Retain Patient Characteristics


def test_the_same_patient_gets_the_same_pseudonym_shift_and_uids_across_runs_and_keys_differ():
    a, b, other = Pseudonymizer(KEY), Pseudonymizer(bytes(KEY)), Pseudonymizer(b"o" * 32)
    assert a.patient("s|1") == b.patient("s|1") != other.patient("s|1")
    assert a.date_shift_days("s|1") == b.date_shift_days("s|1")
    assert a.uid("1.2.3") == b.uid("1.2.3") != other.uid("1.2.3")
    assert a.patient("s|1") != a.patient("s|2")
    assert len(a.uid("1.2.3")) <= 64 and a.uid("1.2.3").startswith("2.25.")
    assert a.shift_dt("20240305235959", "s|1").endswith("235959")
    assert a.shift_iso("2024-03", "s|1").count("-") == 1  # partial dates keep their precision


def test_references_between_instances_still_match_after_mapping(make_instance):
    first = pydicom.dcmread(io.BytesIO(make_instance(number=1)))
    second = pydicom.dcmread(io.BytesIO(make_instance(number=2)))
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([ref])
    engine = _engine(RESEARCH)
    out1 = engine.deidentify(first, subject="s|1").dataset
    out2 = engine.deidentify(second, subject="s|1").dataset
    assert out2.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    assert out2.ReferencedImageSequence[0].ReferencedSOPClassUID == first.SOPClassUID  # classes are not identity
    assert out1.StudyInstanceUID == out2.StudyInstanceUID
    assert out1.FrameOfReferenceUID == out2.FrameOfReferenceUID
    assert out1.file_meta.MediaStorageSOPInstanceUID == out1.SOPInstanceUID


def test_private_elements_are_removed_unless_listed_safe(make_instance):
    def with_private() -> Dataset:
        ds = pydicom.dcmread(io.BytesIO(make_instance()))
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        block.add_new(0x27, "SH", "safe value")
        block.add_new(0x28, "LO", "DOE^JOHN")
        return ds

    out = _engine(RESEARCH).deidentify(with_private(), subject="s|1").dataset
    assert not [e for e in out if e.tag.is_private]
    safe = Profile("safe", RESEARCH.options | {Option.RETAIN_SAFE_PRIVATE},
                   (SafePrivate("GEMS_PARM_01", 0x0043, 0x27),))
    out = _engine(safe).deidentify(with_private(), subject="s|1").dataset
    assert out[0x00431027].value == "safe value"
    assert 0x00431028 not in out
    assert out[0x00430010].value == "GEMS_PARM_01"


def test_structured_content_text_is_scrubbed_with_the_patients_own_identifiers(make_instance):
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    family = str(ds.PatientName).split("^")[0]
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = f"Patient {family.title()} seen on 2024-03-05, MRN {ds.PatientID}."
    item.DateTime = "20240305101010"
    ds.ContentSequence = Sequence([item])
    ds.StudyDescription = f"CT chest for {family}"
    known = KnownIdentifiers.from_dataset(ds)
    pseudonyms = Pseudonymizer(KEY)
    out = DicomDeidentifier(RESEARCH, pseudonyms).deidentify(ds, subject="s|1", known=known).dataset
    text = out.ContentSequence[0].TextValue
    assert family.lower() not in text.lower() and str(known.ids & {ds.PatientID}) not in text
    shifted = (dt.date(2024, 3, 5) + dt.timedelta(days=pseudonyms.date_shift_days("s|1"))).isoformat()
    assert shifted in text
    assert family.lower() not in out.StudyDescription.lower() and out.StudyDescription.startswith("CT chest")
    assert not LeakScanner(known, shifted_dates={pseudonyms.shift_date(d, "s|1") for d in known.dates}
                           ).scan_dataset(out)


def test_basic_profile_empties_structured_content_instead_of_cleaning_it(make_instance):
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    item = Dataset()
    item.TextValue = "anything"
    ds.ContentSequence = Sequence([item])
    out = _engine(BASIC).deidentify(ds, subject="s|1").dataset
    assert len(out.ContentSequence) == 0
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.StudyDate == ""


def test_hostile_structures_are_quarantined_not_processed():
    deep = Dataset()
    node = deep
    for _ in range(30):
        child = Dataset()
        node.AnatomicRegionSequence = Sequence([child])
        node = child
    deep.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(Quarantined) as info:
        _engine().deidentify(deep, subject="s|1", known=KnownIdentifiers())
    assert info.value.reason == "too-deep"
    wide = Dataset()
    wide.AnatomicRegionSequence = Sequence([Dataset() for _ in range(50)])
    engine = DicomDeidentifier(BASIC, Pseudonymizer(KEY), limits=Limits(max_sequence_items=10))
    with pytest.raises(Quarantined) as info:
        engine.deidentify(wide, subject="s|1", known=KnownIdentifiers())
    assert info.value.reason == "too-large"


def test_the_verifier_reports_what_an_unprocessed_dataset_leaks(make_instance):
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    known = KnownIdentifiers.from_dataset(ds)
    leaks = LeakScanner(known).scan_dataset(ds)
    kinds = {leak.kind for leak in leaks}
    assert {"name", "id", "date", "uid"} <= kinds
    assert all(str(ds.PatientName) not in str(leak) for leak in leaks)  # reports say where, never what
    ds.add_new(0x00091010, "LO", "x")
    assert any(leak.kind == "private" for leak in LeakScanner(KnownIdentifiers()).scan_dataset(ds))


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
@pytest.mark.parametrize("profile", [BASIC, RESEARCH], ids=["basic", "research"])
def test_values_read_and_replaced_as_bytes_give_what_pydicom_gives(syntax, profile, monkeypatch):
    """The raw-bytes fast path (imagebank.dicom.rawvalues) changes nothing in the output: the same object
    de-identified with it switched off (every value through pydicom) is written byte for byte the same."""
    from imagebank.dicom import rawvalues

    def source() -> Dataset:
        inner = _every_table_attribute()
        ds = _every_table_attribute()
        ds.PatientName = "DOE^JOHN"
        ds.PatientID = "MRN0042"
        ds.AnatomicRegionSequence = Sequence([inner])
        ds.SOPInstanceUID = SOURCE_UID
        ds.StudyDescription = "Chest CT for DOE"  # scrubbed to a value of odd length (padding)
        ds.ImageComments = "Seen 03/05/2024 by Dr Smith"
        ds.ReferencedSOPInstanceUID = ["1.2.3.4.5.66", "1.2.3.4.5.777"]  # multi-valued
        return _through_file(ds, syntax)

    def run(ds: Dataset) -> bytes:
        out = _engine(profile).deidentify(ds, subject="s|1", known=KnownIdentifiers.from_dataset(ds)).dataset
        return part10_bytes(out)

    fast = run(source())
    with monkeypatch.context() as patch:
        patch.setattr(rawvalues, "read", lambda *args: None)
        patch.setattr(rawvalues, "replace", lambda *args: False)
        patch.setattr(rawvalues, "empty", lambda *args: False)
        slow = run(source())
    assert fast == slow
