"""The synthetic hospital is deterministic, internally consistent and varied enough to test with."""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter

import numpy as np
import pydicom

from imagebank.synth.dicom_writer import build_dataset, render_instance
from imagebank.synth.hospital import HospitalSpec, count_instances, iter_items, load_synthetic
from imagebank.synth.plan import STUDY_PROTOCOLS, plan_patient


def _digest_of_hospital(seed: int, patients: int) -> str:
    h = hashlib.sha256()
    for item in iter_items(HospitalSpec(seed=seed, patients=patients, max_instances_per_series=2)):
        h.update(load_synthetic(item))
    return h.hexdigest()


def test_same_seed_same_bytes_and_different_seed_differs() -> None:
    plan_patient.cache_clear()
    first = _digest_of_hospital(5, 2)
    plan_patient.cache_clear()
    assert _digest_of_hospital(5, 2) == first
    assert _digest_of_hospital(6, 2) != first


def test_patient_does_not_depend_on_hospital_size() -> None:
    a = plan_patient(9, 3)
    plan_patient.cache_clear()
    assert plan_patient(9, 3) == a


def test_attributes_are_consistent_across_a_patients_instances() -> None:
    for index in range(15):
        patient = plan_patient(1, index)
        assert patient.studies, "every patient has imaging"
        dates = [s.date for s in patient.studies]
        assert dates == sorted(dates)
        for study in patient.studies:
            assert patient.birth_date < study.date
            for series in study.series:
                ds = build_dataset(patient, study, series, 1, metadata_only=True)
                assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (
                    patient.mrn, patient.dicom_name, patient.birth_date.strftime("%Y%m%d"), patient.sex)
                assert ds.StudyInstanceUID == study.uid and ds.AccessionNumber == study.accession_number
                assert ds.Modality == study.protocol.modality
                assert int(ds.PatientAge[:3]) == patient.age_at(study.date)


def test_hospital_is_varied_and_patients_have_priors() -> None:
    modalities: Counter[str] = Counter()
    protocols: set[str] = set()
    manufacturers: set[str] = set()
    with_priors = 0
    accessions: set[str] = set()
    n = 80
    for index in range(n):
        patient = plan_patient(2, index)
        same_kind = Counter(s.protocol.key for s in patient.studies)
        with_priors += any(v > 1 for v in same_kind.values())
        for study in patient.studies:
            modalities[study.protocol.modality] += 1
            protocols.add(study.protocol.key)
            manufacturers.add(study.series[0].equipment.manufacturer)
            assert study.accession_number not in accessions
            accessions.add(study.accession_number)
    assert set(modalities) == {"CT", "MR", "MG", "CR", "DX"}
    assert protocols == set(STUDY_PROTOCOLS)
    assert len(manufacturers) >= 6
    assert with_priors > n // 3
    years = {s.date.year for i in range(n) for s in plan_patient(2, i).studies}
    assert len(years) >= 8


def test_mammography_has_four_views() -> None:
    patient, study = next((p, s) for i in range(200) for p in [plan_patient(4, i)] for s in p.studies
                          if s.protocol.key == "MG_SCREENING")
    views = set()
    for series in study.series:
        ds = build_dataset(patient, study, series, 1, metadata_only=True)
        views.add((ds.ImageLaterality, ds.ViewPosition))
    assert views == {("R", "CC"), ("R", "MLO"), ("L", "CC"), ("L", "MLO")}


def test_pixel_data_is_anatomy_not_noise() -> None:
    patient, study = next((p, s) for i in range(50) for p in [plan_patient(3, i)] for s in p.studies
                          if s.protocol.key == "CT_CHEST")
    ds = pydicom.dcmread(io.BytesIO(render_instance(patient, study, study.series[0], 12)))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert ds.Rows == ds.Columns == 512 and ds.BitsAllocated == 16
    assert (hu < -900).mean() > 0.2  # air around the body and in the lungs
    assert ((hu > -150) & (hu < 100)).mean() > 0.1  # soft tissue
    assert (hu > 300).mean() > 0.001  # bone
    # Neighbouring pixels are strongly correlated (structures), unlike white noise.
    a, b = hu[:, :-1].ravel(), hu[:, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_metadata_only_mode_is_tiny_and_scales() -> None:
    spec = HospitalSpec(seed=8, patients=3, metadata_only=True)
    sizes = [len(load_synthetic(item)) for item in iter_items(spec)]
    assert sizes and max(sizes) < 4096
    assert count_instances(spec) == len(sizes)
    start = time.perf_counter()
    far = plan_patient(8, 999_999)  # the millionth patient costs the same as the first
    assert far.mrn.endswith("0999999") and time.perf_counter() - start < 0.5
