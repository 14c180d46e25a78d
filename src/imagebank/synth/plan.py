"""What the synthetic hospital contains, derived deterministically from ``(seed, patient index)``.

Pure data and arithmetic: no pixels, no files. Every random choice for patient ``i`` comes from a
generator seeded by ``sha256(seed, i)``, so patients are independent of each other and of how many
are generated, and a worker process can rebuild any one patient without the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

from imagebank.dicom.uids import uid_from_name
from imagebank.synth.people import (
    FAMILY_NAMES,
    FEMALE_GIVEN_NAMES,
    INSTITUTIONS,
    MALE_GIVEN_NAMES,
    PHYSICIAN_NAMES,
)

#: Fixed "today" of the synthetic hospital: generation must not depend on the wall clock.
REFERENCE_DATE = dt.date(2026, 1, 1)
MRN_ISSUER = "IBGH"


@dataclass(frozen=True)
class Equipment:
    manufacturer: str
    model: str
    station: str
    software: str


EQUIPMENT: dict[str, tuple[Equipment, ...]] = {
    "CT": (Equipment("SIEMENS", "SOMATOM Force", "CT01", "syngo CT VA50A"),
           Equipment("GE MEDICAL SYSTEMS", "Revolution CT", "CT02", "revo_ct_22"),
           Equipment("Philips", "IQon Spectral CT", "CT03", "5.0.2")),
    "MR": (Equipment("SIEMENS", "MAGNETOM Vida", "MR01", "syngo MR XA31"),
           Equipment("GE MEDICAL SYSTEMS", "SIGNA Premier", "MR02", "RX29.1"),
           Equipment("Philips Medical Systems", "Ingenia Elition X", "MR03", "5.7.1")),
    "MG": (Equipment("HOLOGIC, Inc.", "Selenia Dimensions", "MG01", "1.11.2"),
           Equipment("GE Healthcare", "Senographe Pristina", "MG02", "ADS_60.12")),
    "CR": (Equipment("Carestream Health", "DRX-Evolution", "CR01", "5.7"),
           Equipment("FUJIFILM Corporation", "FCR PROFECT CS", "CR02", "A08")),
    "DX": (Equipment("Agfa", "DX-D 600", "DX01", "VA20"),
           Equipment("SIEMENS", "YSIO X.pree", "DX02", "VF10")),
}


@dataclass(frozen=True)
class SeriesProtocol:
    modality: str
    description: str
    body_part: str
    phantom: str  # key of the drawing in phantoms.py
    instances: int
    rows: int
    columns: int
    slice_thickness: float = 0.0
    variant: str = ""  # sequence (T1/T2/FLAIR...), view (L CC...), etc.


@dataclass(frozen=True)
class StudyProtocol:
    key: str
    description: str
    modality: str
    code: str  # a local procedure code, reused as ServiceRequest.code by the EHR generator
    series: tuple[SeriesProtocol, ...]


def _ct(desc: str, body: str, phantom: str, n: int, thickness: float) -> SeriesProtocol:
    return SeriesProtocol("CT", desc, body, phantom, n, 512, 512, thickness)


def _mr(desc: str, body: str, phantom: str, n: int, variant: str, size: int = 256) -> SeriesProtocol:
    return SeriesProtocol("MR", desc, body, phantom, n, size, size, 4.0, variant)


STUDY_PROTOCOLS: dict[str, StudyProtocol] = {p.key: p for p in (
    StudyProtocol("CT_CHEST", "CT CHEST W/O CONTRAST", "CT", "IMG-CT-CHEST", (
        _ct("Lung 1.0 B70f", "CHEST", "ct_chest", 24, 1.0), _ct("Mediastinum 3.0 B30f", "CHEST", "ct_chest", 16, 3.0))),
    StudyProtocol("CT_ABDOMEN", "CT ABDOMEN PELVIS W CONTRAST", "CT", "IMG-CT-ABD", (
        _ct("Abdomen 3.0 Br40 portal venous", "ABDOMEN", "ct_abdomen", 24, 3.0),)),
    StudyProtocol("CT_HEAD", "CT HEAD W/O CONTRAST", "CT", "IMG-CT-HEAD", (
        _ct("Head 5.0 H30s", "HEAD", "ct_head", 20, 5.0),)),
    StudyProtocol("CT_SPINE", "CT CERVICAL SPINE W/O CONTRAST", "CT", "IMG-CT-SPINE", (
        _ct("C-Spine 2.0 Bone", "CSPINE", "ct_spine", 20, 2.0),)),
    StudyProtocol("MR_BRAIN", "MRI BRAIN W/WO CONTRAST", "MR", "IMG-MR-BRAIN", (
        _mr("t1_mprage_sag", "BRAIN", "mr_brain", 16, "T1"), _mr("t2_tse_tra", "BRAIN", "mr_brain", 16, "T2"),
        _mr("t2_flair_tra", "BRAIN", "mr_brain", 16, "FLAIR"))),
    StudyProtocol("MR_PROSTATE", "MRI PROSTATE MULTIPARAMETRIC", "MR", "IMG-MR-PROSTATE", (
        _mr("t2_tse_tra_prostate", "PROSTATE", "mr_prostate", 16, "T2"),
        _mr("ep2d_diff_b1400", "PROSTATE", "mr_prostate", 16, "DWI", 128),
        _mr("ep2d_diff_ADC", "PROSTATE", "mr_prostate", 16, "ADC", 128))),
    StudyProtocol("MR_SPINE", "MRI LUMBAR SPINE W/O CONTRAST", "MR", "IMG-MR-LSPINE", (
        _mr("t1_tse_sag", "LSPINE", "mr_spine", 12, "T1"), _mr("t2_tse_sag", "LSPINE", "mr_spine", 12, "T2"))),
    StudyProtocol("MG_SCREENING", "MAMMOGRAPHY SCREENING BILATERAL", "MG", "IMG-MG-SCREEN", tuple(
        SeriesProtocol("MG", f"{side} {view}", "BREAST", "mg", 1, 1024, 832, 0.0, f"{side} {view}")
        for side in ("R", "L") for view in ("CC", "MLO"))),
    StudyProtocol("CR_CHEST", "XR CHEST 2 VIEWS", "CR", "IMG-XR-CHEST", (
        SeriesProtocol("CR", "Chest PA", "CHEST", "xr_chest", 1, 1024, 1024, 0.0, "PA"),
        SeriesProtocol("CR", "Chest LAT", "CHEST", "xr_chest", 1, 1024, 1024, 0.0, "LAT"))),
    StudyProtocol("DX_CHEST", "XR CHEST 1 VIEW PORTABLE", "DX", "IMG-XR-CHEST-1V", (
        SeriesProtocol("DX", "Chest AP portable", "CHEST", "xr_chest", 1, 1024, 1024, 0.0, "AP"),)),
)}


@dataclass(frozen=True)
class Condition:
    """A diagnosis for the future EHR: ``code`` in ``system`` with an onset date."""

    key: str
    system: str
    code: str
    display: str
    onset: dt.date


# Clinical profiles: condition codes (ICD-10-CM) and the imaging each one leads to.
PROFILES: dict[str, tuple[tuple[str, str, str], tuple[str, ...], str | None, tuple[int, int]]] = {
    # key: ((system, code, display), studies, sex restriction, (min age, max age))
    "prostate_cancer": (("http://hl7.org/fhir/sid/icd-10-cm", "C61", "Malignant neoplasm of prostate"),
                        ("MR_PROSTATE", "MR_PROSTATE", "CT_ABDOMEN"), "M", (50, 85)),
    "breast_screening": (("http://hl7.org/fhir/sid/icd-10-cm", "Z12.31",
                          "Encounter for screening mammogram for malignant neoplasm of breast"),
                         ("MG_SCREENING", "MG_SCREENING", "MG_SCREENING"), "F", (40, 80)),
    "breast_cancer": (("http://hl7.org/fhir/sid/icd-10-cm", "C50.911",
                       "Malignant neoplasm of unspecified site of right female breast"),
                      ("MG_SCREENING", "MG_SCREENING", "CT_CHEST"), "F", (40, 80)),
    "spine_injury": (("http://hl7.org/fhir/sid/icd-10-cm", "S13.4XXA", "Sprain of ligaments of cervical spine"),
                     ("CT_SPINE", "MR_SPINE", "CR_CHEST"), None, (18, 75)),
    "alzheimers": (("http://hl7.org/fhir/sid/icd-10-cm", "G30.9", "Alzheimer's disease, unspecified"),
                   ("MR_BRAIN", "MR_BRAIN", "CT_HEAD"), None, (60, 90)),
    "parkinsons": (("http://hl7.org/fhir/sid/icd-10-cm", "G20", "Parkinson's disease"),
                   ("MR_BRAIN", "CT_HEAD"), None, (55, 90)),
    "multiple_sclerosis": (("http://hl7.org/fhir/sid/icd-10-cm", "G35", "Multiple sclerosis"),
                           ("MR_BRAIN", "MR_BRAIN", "MR_SPINE"), None, (20, 60)),
    "ibd": (("http://hl7.org/fhir/sid/icd-10-cm", "K50.90", "Crohn's disease, unspecified, without complications"),
            ("CT_ABDOMEN", "CT_ABDOMEN"), None, (18, 70)),
    "lung_nodule": (("http://hl7.org/fhir/sid/icd-10-cm", "R91.1", "Solitary pulmonary nodule"),
                    ("CT_CHEST", "CT_CHEST", "CR_CHEST"), None, (45, 85)),
    "background": (("http://hl7.org/fhir/sid/icd-10-cm", "I10", "Essential (primary) hypertension"),
                   ("CR_CHEST", "DX_CHEST"), None, (18, 95)),
}


@dataclass(frozen=True)
class PlannedSeries:
    number: int
    uid: str
    protocol: SeriesProtocol
    equipment: Equipment
    instances: int


@dataclass(frozen=True)
class PlannedStudy:
    index: int
    uid: str
    protocol: StudyProtocol
    date: dt.date
    time: dt.time
    accession_number: str
    study_id: str
    referring_physician: str
    institution: str
    indication: str  # condition key that motivated the exam
    series: tuple[PlannedSeries, ...]

    @property
    def frame_of_reference_uid(self) -> str:
        return uid_from_name("for", self.uid)


@dataclass(frozen=True)
class SyntheticPatient:
    seed: int
    index: int
    mrn: str
    issuer: str
    family_name: str
    given_name: str
    sex: str
    birth_date: dt.date
    height_m: float
    weight_kg: float
    conditions: tuple[Condition, ...]
    studies: tuple[PlannedStudy, ...]

    @property
    def dicom_name(self) -> str:
        return f"{self.family_name}^{self.given_name}"

    def age_at(self, day: dt.date) -> int:
        return day.year - self.birth_date.year - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))


def _rng(seed: int, *parts: object) -> random.Random:
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    # Deterministic, seeded randomness for synthetic data (never for secrets): B311 does not apply.
    return random.Random(int.from_bytes(digest[:8], "big"))  # nosec B311


def _pick_profiles(rng: random.Random, sex: str, age: int) -> list[str]:
    eligible = [k for k, (_c, _s, only, (lo, hi)) in PROFILES.items()
                if k != "background" and (only is None or only == sex) and lo <= age <= hi]
    chosen = rng.sample(eligible, k=min(len(eligible), rng.choice((1, 1, 1, 2))))
    return chosen + ["background"] if rng.random() < 0.4 or not chosen else chosen


@lru_cache(maxsize=64)
def plan_patient(seed: int, index: int, max_instances_per_series: int | None = None) -> SyntheticPatient:
    """The synthetic patient number ``index`` of hospital ``seed`` (identical on every machine)."""
    rng = _rng(seed, "patient", index)
    sex = "M" if rng.random() < 0.5 else "F"
    family = rng.choice(FAMILY_NAMES)
    given = rng.choice(MALE_GIVEN_NAMES if sex == "M" else FEMALE_GIVEN_NAMES)
    age_now = rng.randint(20, 92)
    birth = REFERENCE_DATE - dt.timedelta(days=age_now * 365 + rng.randint(0, 364))
    height = round(rng.gauss(1.77 if sex == "M" else 1.64, 0.07), 2)
    weight = round(max(40.0, rng.gauss(82 if sex == "M" else 68, 13)), 1)

    conditions: list[Condition] = []
    planned: list[tuple[dt.date, str, str]] = []  # (date, study protocol key, indication)
    for profile in _pick_profiles(rng, sex, age_now):
        (system, code, display), study_keys, _only, (lo, _hi) = PROFILES[profile]
        earliest = max(birth + dt.timedelta(days=lo * 365), REFERENCE_DATE - dt.timedelta(days=12 * 365))
        span = (REFERENCE_DATE - dt.timedelta(days=30) - earliest).days
        onset = earliest + dt.timedelta(days=rng.randint(0, max(span, 1) - 1)) if span > 0 else earliest
        conditions.append(Condition(profile, system, code, display, onset))
        day = onset - dt.timedelta(days=rng.randint(0, 20))  # work-up imaging around diagnosis
        for key in study_keys:
            if day >= REFERENCE_DATE:
                break
            planned.append((day, key, profile))
            day += dt.timedelta(days=rng.randint(60, 540))  # follow-ups over months to years
    planned.sort()

    studies: list[PlannedStudy] = []
    for s_index, (day, key, indication) in enumerate(planned):
        protocol = STUDY_PROTOCOLS[key]
        study_uid = uid_from_name("study", seed, index, s_index)
        equipment = rng.choice(EQUIPMENT[protocol.modality])
        institution = rng.choice(INSTITUTIONS)[0]
        series = tuple(
            PlannedSeries(
                number=n + 1,
                uid=uid_from_name("series", seed, index, s_index, n),
                protocol=sp,
                equipment=equipment,
                instances=min(sp.instances, max_instances_per_series or sp.instances),
            )
            for n, sp in enumerate(protocol.series)
        )
        studies.append(PlannedStudy(
            index=s_index, uid=study_uid, protocol=protocol, date=day,
            time=dt.time(rng.randint(7, 19), rng.randint(0, 59), rng.randint(0, 59)),
            accession_number=f"A{seed % 100:02d}{index:08d}{s_index:02d}",
            study_id=str(1000 + s_index), referring_physician=rng.choice(PHYSICIAN_NAMES),
            institution=institution, indication=indication, series=series))

    return SyntheticPatient(
        seed=seed, index=index, mrn=f"MRN{seed % 1000:03d}{index:07d}", issuer=MRN_ISSUER,
        family_name=family, given_name=given, sex=sex, birth_date=birth, height_m=height, weight_kg=weight,
        conditions=tuple(conditions), studies=tuple(studies))


def instance_uid(patient: SyntheticPatient, study: PlannedStudy, series: PlannedSeries, number: int) -> str:
    return uid_from_name("instance", patient.seed, patient.index, study.index, series.number, number)
