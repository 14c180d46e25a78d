"""Query matching (PS3.4 C.2.2.2) against an ingested synthetic hospital, on SQLite and PostgreSQL.

The hospital's plan is the oracle: every expectation is computed from it independently of the index.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagebank.archive import Archive
from imagebank.archive.bulk import bulk_ingest
from imagebank.config import Settings
from imagebank.dicom.names import fold_person_name
from imagebank.query import InvalidQuery, Level, find
from imagebank.synth.hospital import HospitalSpec, iter_items
from imagebank.synth.plan import SyntheticPatient, plan_patient

SEED, PATIENTS = 21, 12


@pytest.fixture
def hospital(archive: Archive, settings: Settings) -> tuple[Archive, list[SyntheticPatient]]:
    spec = HospitalSpec(seed=SEED, patients=PATIENTS, metadata_only=True, max_instances_per_series=2)
    bulk_ingest(archive, settings, iter_items(spec), workers=1, progress=False)
    return archive, [plan_patient(SEED, i, spec.cap) for i in range(PATIENTS)]


def _studies(patients: list[SyntheticPatient]) -> list[tuple[SyntheticPatient, Any]]:
    return [(p, s) for p in patients for s in p.studies]


def test_single_value_patient_id(hospital: Any) -> None:
    archive, patients = hospital
    target = patients[3]
    found = find(archive.index.engine, Level.STUDY, {"PatientID": target.mrn, "StudyDate": ""})
    assert {r["StudyInstanceUID"] for r in found} == {s.uid for s in target.studies}
    assert all(r["StudyDate"] for r in found)


def test_person_names_match_case_and_accent_insensitively(hospital: Any) -> None:
    archive, patients = hospital
    target = patients[0]
    query = target.family_name.lower() + "*"
    found = find(archive.index.engine, Level.PATIENT, {"PatientName": query}, root="PATIENT")
    expected = {p.mrn for p in patients if (fold_person_name(p.dicom_name) or "").startswith(
        fold_person_name(target.family_name) or "")}
    assert {r["PatientID"] for r in found} == expected and target.mrn in expected


def test_date_ranges_closed_and_open(hospital: Any) -> None:
    archive, patients = hospital
    engine = archive.index.engine
    every = _studies(patients)
    cases = {"20180101-20211231": lambda d: "20180101" <= d <= "20211231",
             "-20170630": lambda d: d <= "20170630", "20230101-": lambda d: d >= "20230101"}
    for query, keep in cases.items():
        found = find(engine, Level.STUDY, {"StudyDate": query})
        expected = {s.uid for _, s in every if keep(s.date.strftime("%Y%m%d"))}
        assert {r["StudyInstanceUID"] for r in found} == expected, query


def test_list_of_uids(hospital: Any) -> None:
    archive, patients = hospital
    wanted = [s.series[0].uid for _, s in _studies(patients)[:3]]
    found = find(archive.index.engine, Level.SERIES, {"SeriesInstanceUID": "\\".join(wanted), "Modality": ""})
    assert {r["SeriesInstanceUID"] for r in found} == set(wanted)


def test_modalities_in_study_matches_any_of_its_values(hospital: Any) -> None:
    archive, patients = hospital
    found = find(archive.index.engine, Level.STUDY, {"ModalitiesInStudy": "MR\\MG"})
    expected = {s.uid for _, s in _studies(patients) if s.protocol.modality in ("MR", "MG")}
    assert {r["StudyInstanceUID"] for r in found} == expected and expected


def test_counts_are_returned(hospital: Any) -> None:
    archive, patients = hospital
    study = patients[1].studies[0]
    found = find(archive.index.engine, Level.STUDY, {"StudyInstanceUID": study.uid,
                                                     "NumberOfStudyRelatedSeries": "", "NumberOfStudyRelatedInstances": ""})
    assert found[0]["NumberOfStudyRelatedSeries"] == len(study.series)
    assert found[0]["NumberOfStudyRelatedInstances"] == sum(s.instances for s in study.series)


def test_image_level_reads_other_keys_from_the_cached_header(hospital: Any) -> None:
    archive, patients = hospital
    study = next(s for _, s in _studies(patients) if s.protocol.modality == "CT")
    found = find(archive.index.engine, Level.IMAGE, {"StudyInstanceUID": study.uid,
                                                     "SeriesInstanceUID": study.series[0].uid, "SliceThickness": "",
                                                     "InstanceNumber": ""})
    assert [r["InstanceNumber"] for r in found] == [1, 2]
    assert all(float(r["SliceThickness"]) > 0 for r in found)


def test_limit_and_offset_page_through_results(hospital: Any) -> None:
    archive, _ = hospital
    engine = archive.index.engine
    everything = [r["StudyInstanceUID"] for r in find(engine, Level.STUDY, {})]
    pages = [r["StudyInstanceUID"] for off in range(0, len(everything), 5)
             for r in find(engine, Level.STUDY, {}, limit=5, offset=off)]
    assert pages == everything


@pytest.mark.parametrize("identifier,level,message", [
    ({"Modality": "CT"}, "STUDY", "SERIES-level key"),
    ({"StudyDate": "20201301"}, "STUDY", "not a date"),
    ({"StudyDate": "20211231-20200101"}, "STUDY", "ends before it starts"),
    ({"StudyInstanceUID": "1.2.*"}, "STUDY", "wild cards are not allowed"),
    ({"NotAKeyword": ""}, "STUDY", "not a DICOM attribute keyword"),
    ({}, "FRAME", "not PATIENT, STUDY, SERIES or IMAGE"),
])
def test_invalid_identifiers_are_refused_with_a_reason(hospital: Any, identifier: dict[str, str], level: str,
                                                       message: str) -> None:
    archive, _ = hospital
    with pytest.raises(InvalidQuery, match=message):
        find(archive.index.engine, level, identifier)


def test_study_root_has_no_patient_level(hospital: Any) -> None:
    with pytest.raises(InvalidQuery, match="no PATIENT level"):
        find(hospital[0].index.engine, Level.PATIENT, {}, root="STUDY")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_wildcards_agree_with_fnmatch(hospital: Any, data: st.DataObject) -> None:
    archive, patients = hospital
    folded = {p.mrn: fold_person_name(p.dicom_name) or "" for p in patients}
    source = data.draw(st.sampled_from(sorted(folded.values())))
    chars = list(source)
    for i in data.draw(st.lists(st.integers(0, len(chars) - 1), max_size=3)):
        chars[i] = "?"
    cut = data.draw(st.integers(1, len(chars)))
    pattern = "".join(chars[:cut]) + ("*" if cut < len(chars) else "")
    found = find(archive.index.engine, Level.PATIENT, {"PatientName": pattern.lower()}, root="PATIENT")
    expected = {mrn for mrn, name in folded.items() if fnmatch.fnmatchcase(name, pattern)}
    assert {r["PatientID"] for r in found} == expected


@pytest.mark.parametrize("level, identifier", [
    (Level.STUDY, {}),
    (Level.STUDY, {"ModalitiesInStudy": "CT"}),
    (Level.STUDY, {"ModalitiesInStudy": "MR\\MG"}),
    (Level.STUDY, {"ModalitiesInStudy": "C*"}),
    (Level.STUDY, {"ModalitiesInStudy": "CT", "StudyDate": "20180101-"}),
    (Level.STUDY, {"PatientName": "A*"}),
    (Level.STUDY, {"PatientSex": "F", "ModalitiesInStudy": "MR"}),
    (Level.SERIES, {"Modality": "MR"}),
    (Level.SERIES, {"Modality": "CT", "PatientSex": "M"}),
    (Level.SERIES, {"ModalitiesInStudy": "MG"}),
    (Level.IMAGE, {"Modality": "CT"}),
    (Level.IMAGE, {"PatientSex": "F", "StudyDate": "-20200101"}),
])
def test_count_agrees_with_find(hospital: Any, level: Level, identifier: dict[str, str]) -> None:
    """count() joins only the levels its keys name and asks ModalitiesInStudy of the series: it must still
    count exactly what find() returns."""
    from imagebank.query.engine import count

    archive, _ = hospital
    found = find(archive.index.engine, level, identifier)
    assert count(archive.index.engine, level, identifier) == len(found)
    if "ModalitiesInStudy" in identifier and level is Level.STUDY:
        wanted = identifier["ModalitiesInStudy"].split("\\")
        assert found and all(any(fnmatch.fnmatchcase(m, w) for w in wanted for m in r["ModalitiesInStudy"].split("\\"))
                             for r in found)
