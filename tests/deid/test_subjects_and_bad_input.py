"""Subject keys through the EHR patient index; hostile and broken input never released, never logged."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pytest

from imagebank.deid.errors import Quarantined
from imagebank.deid.run import read_dicom
from imagebank.deid.subjects import SubjectResolver, direct_key

MRN = "https://ibgh.example.org/fhir/sid/mrn"
RMC = "https://rmc.example.org/fhir/sid/mrn"
SYSTEMS = {"IBGH": MRN, "RMC": RMC}


def _patient(pid: str, system: str, mrn: str, **extra) -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{"system": system, "value": mrn}],
            "name": [{"family": "Nakamura", "given": ["Aiko"]}], "birthDate": "1961-05-03", **extra}


def test_one_person_at_two_hospitals_gets_one_subject_key(settings):
    from imagebank.context import open_engine
    from imagebank.ehr.store import EhrStore

    engine = open_engine(settings)
    store = EhrStore(engine, SYSTEMS)
    store.write([_patient("a", MRN, "IB-1"),
                 _patient("b", RMC, "RM-9", link=[{"other": {"reference": "Patient/a"}, "type": "seealso"}])])
    resolver = SubjectResolver(SYSTEMS, engine)
    first, record_a = resolver.for_dicom("IB-1", "IBGH")
    second, record_b = resolver.for_dicom("RM-9", "RMC")
    assert first == second == f"{MRN}|IB-1"  # the record's smallest identifier, whichever MRN the study had
    assert record_a == record_b is not None
    known = resolver.known_for_record(record_a)
    assert {"IB-1", "RM-9"} <= known.ids and "Nakamura" in known.name_parts
    # Without the EHR the key is still deterministic, from the issuer's mapped system.
    assert SubjectResolver(SYSTEMS).for_dicom("RM-9", "RMC") == (f"{RMC}|RM-9", None)
    assert direct_key("X1", "OTHER", SYSTEMS) == "urn:imagebank:dicom-issuer:OTHER|X1"
    engine.dispose()


def _explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


@pytest.mark.parametrize("tag", [(0x0010, 0x1001), (0x7FE1, 0x0010)], ids=["public", "private"])
def test_an_unknown_vr_is_quarantined_not_guessed(make_instance, tag):
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue() + _explicit_element(*tag, b"ZZ", b"DOE^JOHN")
    from imagebank.deid.dicom import DicomDeidentifier
    from imagebank.deid.profile import RESEARCH
    from imagebank.deid.pseudonyms import Pseudonymizer

    with pytest.raises(Quarantined) as info:
        DicomDeidentifier(RESEARCH, Pseudonymizer(b"k" * 32)).deidentify(read_dicom(data), subject="s|1")
    assert info.value.reason == "unreadable"
    assert "DOE" not in info.value.message


def test_pydicom_warnings_with_patient_values_stay_out_of_the_output(tmp_path: Path, make_instance, database_url):
    """An invalid value makes pydicom warn with the value quoted; the job must not print it."""
    from click.testing import CliRunner

    from imagebank.cli import main

    source = tmp_path / "in" / "bad.dcm"
    source.parent.mkdir()
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    ds.PatientName = "SECRETNAME^" + "X" * 70  # over PN's 64 characters per component group: pydicom warns
    ds.PatientAge = "SECRETAGE"  # invalid AS, quoted by pydicom's validation warning
    ds.save_as(source, enforce_file_format=True)
    env = {"IMAGEBANK_DATA": str(tmp_path / "data"), "IMAGEBANK_DATABASE__URL": database_url}
    runner = CliRunner()
    assert runner.invoke(main, ["deid", "project", "create", "p"], env=env).exit_code == 0
    result = runner.invoke(main, ["deid", "run", "--project", "p", "--output", str(tmp_path / "out"),
                                  "--workers", "2", "--no-progress", str(source.parent)], env=env)
    assert "SECRET" not in result.output
    assert "released 1 objects" in result.output
    out = next((tmp_path / "out" / "dicom").rglob("*.dcm"))
    assert b"SECRET" not in out.read_bytes()
