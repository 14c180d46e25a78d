"""The synthetic hospital's electronic health record, as FHIR R4 resources (plain ``dict``\\ s).

The same patients that :mod:`~imagebank.synth.plan` images get a clinical record here, so that
imaging and EHR data can be joined, de-identified and queried together in tests and demos. Every
value comes from generators seeded by ``(seed, "ehr", patient index, ...)`` and from the patient's
plan, never from the wall clock (:data:`~imagebank.synth.plan.REFERENCE_DATE` is "today"): patient
``i`` of hospital ``seed`` is identical on every machine and whatever the number of patients
generated, and a million patients stream in constant memory.

Linkage facts other code relies on:

- ``Patient.identifier`` carries the DICOM PatientID (``patient.mrn``) with system
  ``ISSUER_SYSTEMS[patient.issuer]`` (the DICOM IssuerOfPatientID, "IBGH"); name, sex and birth date
  equal the DICOM PatientName, PatientSex and PatientBirthDate.
- One ``ServiceRequest`` (the order) and one ``DiagnosticReport`` (the radiology report) per planned
  study carry the study's AccessionNumber as an ``ACSN`` identifier with system
  :data:`ACCESSION_SYSTEM`; the report points at ``ImagingStudy/<StudyInstanceUID>``.
- Each study has an ``Encounter`` on the study date (the order and report reference it), whose
  ``serviceProvider`` is the DICOM InstitutionName.
- About 10% of patients also have an older record from Riverside Medical Center (``<id>-rmc``, MRN
  system ``ISSUER_SYSTEMS["RMC"]``) linked both ways through ``Patient.link`` (``replaces`` /
  ``replaced-by``); one outside visit and its observations still reference that record, which is
  what identity-merging code has to resolve.
- References are relative (``Patient/<id>``); ids are ``<seed>-<index>[-<kind>-<n>]``, unique and
  within FHIR's ``[A-Za-z0-9\\-.]{1,64}``.

Nothing is validated at generation time (that costs more than building the dicts): the tests validate
samples against the ``fhir.resources`` R4B models instead.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from imagebank.synth.plan import REFERENCE_DATE, Condition, PlannedStudy, SyntheticPatient, _rng, plan_patient

Resource = dict[str, Any]

#: MRN identifier system per DICOM IssuerOfPatientID.
ISSUER_SYSTEMS: dict[str, str] = {
    "IBGH": "https://ibgh.example.org/fhir/sid/mrn",
    "RMC": "https://rmc.example.org/fhir/sid/mrn",
}
#: Identifier system of accession numbers (ServiceRequest and DiagnosticReport, = DICOM AccessionNumber).
ACCESSION_SYSTEM = "https://ibgh.example.org/fhir/sid/accession"
#: Base of the absolute ``fullUrl`` of bundle entries (relative references resolve against it).
FHIR_BASE = "https://ibgh.example.org/fhir"
#: Local procedure codes of the imaging orders (``StudyProtocol.code``).
IMAGING_PROCEDURE_SYSTEM = "https://ibgh.example.org/fhir/CodeSystem/imaging-procedure"
#: Local codes for assessments without a LOINC code we are sure of (BI-RADS, MDS-UPDRS III, EDSS).
LOCAL_OBSERVATION_SYSTEM = "https://ibgh.example.org/fhir/CodeSystem/observation"
BIRADS_SYSTEM = "https://ibgh.example.org/fhir/CodeSystem/birads"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HGNC = "http://www.genenames.org"
HGVS = "http://varnomen.hgvs.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"

HOSPITAL = "Imagebank General Hospital"
RMC_NAME = "Riverside Medical Center"
BUNDLE_TYPES = ("transaction", "batch", "collection")

# Order of resource types in a patient's record: patients first, then what others reference.
RESOURCE_ORDER = ("Patient", "Encounter", "Condition", "Procedure", "MedicationRequest", "ServiceRequest",
                  "Observation", "DiagnosticReport")

_CATEGORY_DISPLAY = {"vital-signs": "Vital Signs", "laboratory": "Laboratory", "imaging": "Imaging",
                     "survey": "Survey", "exam": "Exam"}

# (system, code, display) of the observation codes.
Code = tuple[str, str, str]
WEIGHT: Code = (LOINC, "29463-7", "Body weight")
HEIGHT: Code = (LOINC, "8302-2", "Body height")
BMI: Code = (LOINC, "39156-5", "Body mass index (BMI) [Ratio]")
BP_PANEL: Code = (LOINC, "85354-9", "Blood pressure panel with all children optional")
SYSTOLIC: Code = (LOINC, "8480-6", "Systolic blood pressure")
DIASTOLIC: Code = (LOINC, "8462-4", "Diastolic blood pressure")
HEART_RATE: Code = (LOINC, "8867-4", "Heart rate")
PSA: Code = (LOINC, "2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma")
GLEASON: Code = (LOINC, "35266-6", "Gleason score in Specimen Qualitative")
MMSE: Code = (LOINC, "72107-6", "Total score [MMSE]")
CRP: Code = (LOINC, "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma")
CALPROTECTIN: Code = (LOINC, "38445-3", "Calprotectin [Mass/mass] in Stool")
HBA1C: Code = (LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
CREATININE: Code = (LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma")
LDL: Code = (LOINC, "18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay")
URINE_PROTEIN: Code = (LOINC, "20454-5", "Protein [Presence] in Urine by Test strip")
PAIN: Code = (LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported")
GENETIC_VARIANT: Code = (LOINC, "69548-6", "Genetic variant assessment")
GENE_STUDIED: Code = (LOINC, "48018-6", "Gene studied [ID]")
DNA_CHANGE: Code = (LOINC, "48004-6", "DNA change (c.HGVS)")
CLINICAL_SIGNIFICANCE: Code = (LOINC, "53037-8", "Genetic variation clinical significance [Imp]")
BIRADS: Code = (LOCAL_OBSERVATION_SYSTEM, "birads-assessment", "BI-RADS assessment category")
UPDRS_III: Code = (LOCAL_OBSERVATION_SYSTEM, "mds-updrs-part-iii", "MDS-UPDRS Part III motor examination total score")
EDSS: Code = (LOCAL_OBSERVATION_SYSTEM, "edss", "Kurtzke Expanded Disability Status Scale (EDSS) score")
IMAGING_REPORT: Code = (LOINC, "18748-4", "Diagnostic imaging study")

#: SNOMED CT concept for each profile's disease (the screening encounter has none on purpose).
SNOMED_DISEASE: dict[str, tuple[str, str]] = {
    "prostate_cancer": ("399068003", "Malignant tumor of prostate"),
    "breast_cancer": ("254837009", "Malignant neoplasm of breast"),
    "spine_injury": ("39848009", "Whiplash injury to neck"),
    "alzheimers": ("26929004", "Alzheimer's disease"),
    "parkinsons": ("49049000", "Parkinson's disease"),
    "multiple_sclerosis": ("24700007", "Multiple sclerosis"),
    "ibd": ("34000006", "Crohn's disease"),
    "lung_nodule": ("427359005", "Solitary nodule of lung"),
    "background": ("59621000", "Essential hypertension"),
}

#: Diagnostic procedure done at the diagnosis visit (SNOMED CT code, display).
PROCEDURES: dict[str, tuple[str, str]] = {
    "prostate_cancer": ("65575008", "Biopsy of prostate"),
    "breast_cancer": ("122548005", "Biopsy of breast"),
    "multiple_sclerosis": ("277762005", "Lumbar puncture"),
    "ibd": ("73761001", "Colonoscopy"),
}

#: Treatment per profile: RxNorm code and its name, the prescription as written, dosage instruction.
#: Where a clinical-drug RxCUI was not certain, the ingredient concept is coded and the text is precise.
MEDICATIONS: dict[str, tuple[str, str, str, str]] = {
    "prostate_cancer": ("42375", "leuprolide", "Leuprolide acetate 22.5 mg depot injection",
                        "22.5 mg intramuscular injection every 12 weeks"),
    "breast_cancer": ("198240", "tamoxifen 10 MG Oral Tablet", "Tamoxifen 10 mg oral tablet",
                      "Take 2 tablets (20 mg) by mouth once daily"),
    "spine_injury": ("197806", "ibuprofen 600 MG Oral Tablet", "Ibuprofen 600 mg oral tablet",
                     "Take 1 tablet by mouth every 8 hours with food as needed for pain, for up to 10 days"),
    "alzheimers": ("997223", "donepezil hydrochloride 10 MG Oral Tablet", "Donepezil 10 mg oral tablet",
                   "Take 1 tablet by mouth at bedtime"),
    "parkinsons": ("197444", "carbidopa 25 MG / levodopa 100 MG Oral Tablet", "Carbidopa/levodopa 25/100 mg oral tablet",
                   "Take 1 tablet by mouth three times daily"),
    "multiple_sclerosis": ("72257", "interferon beta-1a", "Interferon beta-1a 30 mcg intramuscular injection",
                           "30 mcg intramuscular injection once weekly"),
    "ibd": ("52582", "mesalamine", "Mesalamine 1.2 g delayed-release oral tablet",
            "Take 2 tablets (2.4 g) by mouth once daily with food"),
    "background": ("314076", "lisinopril 10 MG Oral Tablet", "Lisinopril 10 mg oral tablet",
                   "Take 1 tablet by mouth once daily"),
}

#: The clinic that sees each profile (encounter type text).
CLINICS: dict[str, str] = {
    "prostate_cancer": "Urology", "breast_screening": "Preventive medicine", "breast_cancer": "Breast surgery",
    "spine_injury": "Orthopedics", "alzheimers": "Memory clinic", "parkinsons": "Movement disorders clinic",
    "multiple_sclerosis": "Neurology", "ibd": "Gastroenterology", "lung_nodule": "Pulmonology",
    "background": "Primary care",
}

# BI-RADS assessment categories: display and, for 0-5, the SNOMED CT finding (DICOM CID 6027).
BIRADS_CATEGORIES: dict[int, tuple[str, str | None]] = {
    0: ("Incomplete - need additional imaging evaluation", "397138000"),
    1: ("Negative", "397140005"),
    2: ("Benign", "397141009"),
    3: ("Probably benign", "397143007"),
    4: ("Suspicious", "397144001"),
    5: ("Highly suggestive of malignancy", "397145000"),
    6: ("Known biopsy-proven malignancy", None),
}

# Pathogenic germline variants: (gene, HGNC id, HGVS c. notation).
BRCA_VARIANTS = (
    ("BRCA1", "HGNC:1100", "NM_007294.4:c.68_69del"),
    ("BRCA1", "HGNC:1100", "NM_007294.4:c.5266dup"),
    ("BRCA1", "HGNC:1100", "NM_007294.4:c.181T>G"),
    ("BRCA2", "HGNC:1101", "NM_000059.4:c.5946del"),
    ("BRCA2", "HGNC:1101", "NM_000059.4:c.6275_6276del"),
)

RADIOLOGISTS = ("Helen Marsh", "Rafael Ortega", "Ingrid Halvorsen", "Samuel Adeyemi", "Yuko Nakamura",
                "Tomás Ferreira", "Priya Raman", "Claire Beaumont")
_CITIES = (("Springfield", "IL", "627", "217"), ("Riverside", "CA", "925", "951"), ("Franklin", "TN", "370", "615"),
           ("Greenville", "SC", "296", "864"), ("Madison", "WI", "537", "608"), ("Salem", "OR", "973", "503"),
           ("Georgetown", "KY", "403", "502"), ("Burlington", "VT", "054", "802"))
_STREETS = ("Maple Avenue", "Oak Street", "Cedar Lane", "Elm Street", "Lakeview Drive", "Hillcrest Road",
            "Washington Boulevard", "Mill Road", "Church Street", "Sunset Terrace")

_TECHNIQUE = {
    "CT_CHEST": "Helical CT of the chest without intravenous contrast; 1 mm lung and 3 mm mediastinal reconstructions.",
    "CT_ABDOMEN": "Helical CT of the abdomen and pelvis in the portal venous phase after 100 mL of intravenous "
                  "iodinated contrast.",
    "CT_HEAD": "Axial CT of the head without contrast, 5 mm reconstructions.",
    "CT_SPINE": "Helical CT of the cervical spine without contrast with sagittal and coronal reformats.",
    "MR_BRAIN": "Multiplanar MRI of the brain before and after gadolinium: sagittal 3D T1, axial T2 and FLAIR.",
    "MR_PROSTATE": "Multiparametric MRI of the prostate at 3 T: axial T2, diffusion-weighted imaging (b 1400) "
                   "with ADC map.",
    "MR_SPINE": "Sagittal T1 and T2 MRI of the lumbar spine without contrast.",
    "MG_SCREENING": "Bilateral full-field digital mammography, CC and MLO views.",
    "CR_CHEST": "PA and lateral radiographs of the chest.",
    "DX_CHEST": "Single portable AP radiograph of the chest.",
}

_NORMAL_READ = {
    "CT_CHEST": ("The lungs are clear. No pulmonary nodule. No mediastinal or hilar lymphadenopathy. "
                 "No pleural or pericardial effusion.", "No acute intrathoracic abnormality."),
    "CT_ABDOMEN": ("Liver, spleen, pancreas, adrenal glands and kidneys are unremarkable. No lymphadenopathy. "
                   "No free fluid or free air. Bowel loops are normal in caliber.", "No acute abnormality in the "
                   "abdomen or pelvis."),
    "CT_HEAD": ("No intracranial hemorrhage, mass effect or acute territorial infarct. Ventricles and sulci are "
                "appropriate for age.", "No acute intracranial abnormality."),
    "CT_SPINE": ("Normal alignment. No acute fracture. Prevertebral soft tissues are normal.",
                 "No acute fracture or malalignment of the cervical spine."),
    "MR_BRAIN": ("No abnormal signal or enhancement. Ventricles and sulci are appropriate for age.",
                 "Normal MRI of the brain."),
    "MR_SPINE": ("Normal alignment and marrow signal. No disc herniation or canal stenosis. The conus terminates "
                 "at L1.", "Normal MRI of the lumbar spine."),
    "MR_PROSTATE": ("Prostate volume 35 mL. No focal lesion in the peripheral or transition zone.",
                    "No clinically significant lesion (PI-RADS 1)."),
    "MG_SCREENING": ("Scattered areas of fibroglandular density. No suspicious mass, calcification or "
                     "architectural distortion.", "Negative mammogram. BI-RADS 1: Negative."),
    "CR_CHEST": ("The lungs are clear. Cardiomediastinal silhouette is within normal limits. No pleural "
                 "effusion or pneumothorax.", "No acute cardiopulmonary process."),
    "DX_CHEST": ("Portable technique. The lungs are clear. Heart size is normal. No pleural effusion or "
                 "pneumothorax.", "No acute cardiopulmonary process."),
}


def _stamp(day: dt.date, minute_of_day: int, second: int = 0) -> str:
    """A FHIR dateTime: the synthetic hospital keeps time in UTC, so it equals DICOM StudyDate/StudyTime."""
    minute_of_day = min(max(minute_of_day, 0), 1439)
    return f"{day.isoformat()}T{minute_of_day // 60:02d}:{minute_of_day % 60:02d}:{second:02d}+00:00"


def _coding(code: Code) -> dict[str, str]:
    return {"system": code[0], "code": code[1], "display": code[2]}


def _concept(code: Code) -> Resource:
    return {"coding": [{"system": code[0], "code": code[1], "display": code[2]}], "text": code[2]}


def _quantity(value: float, unit: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _ascii(text: str) -> str:
    """Email-safe spelling of a name (``Lefèvre`` -> ``lefevre``, ``O'Brien`` -> ``obrien``)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum() or ch == "-")


def _physician(dicom_name: str) -> str:
    """``House^Gregory^^Dr.`` -> ``Gregory House``."""
    family, given = (dicom_name.split("^") + ["", ""])[:2]
    return f"{given} {family}".strip()


def _days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


class _Chart:
    """Builds one patient's record; ids are numbered in creation order, which is itself deterministic."""

    def __init__(self, patient: SyntheticPatient) -> None:
        self.patient = patient
        self.pid = f"{patient.seed}-{patient.index}"
        self.patient_ref = f"Patient/{self.pid}"
        self.rng = _rng(patient.seed, "ehr", patient.index)
        self.resources: dict[str, list[Resource]] = {t: [] for t in RESOURCE_ORDER}
        self.condition_ids: dict[str, str] = {}
        self.htn_onset: dt.date | None = None
        self.psa_at_diagnosis: float | None = None
        self.gleason: int | None = None
        self.prostate_lesion: tuple[int, str] | None = None  # (mm, side) at the first prostate MR
        self.nodule_mm: int | None = None
        self.nodule_lobe: str | None = None
        self.counts = {"enc": 0, "obs": 0, "proc": 0, "med": 0}

    # ------------------------------------------------------------------ generic builders

    def _next(self, kind: str) -> str:
        n = self.counts[kind]
        self.counts[kind] = n + 1
        return f"{self.pid}-{kind}-{n}"

    def encounter(self, day: dt.date, minute: int, duration: int, type_text: str, *, cls: str = "AMB",
                  provider: str = HOSPITAL, subject: str | None = None, reason: Condition | None = None,
                  diagnosis: str | None = None) -> tuple[str, str]:
        """Add a finished encounter; returns its id and start time."""
        eid = self._next("enc")
        start = _stamp(day, minute)
        res: Resource = {
            "resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": ACT_CODE, "code": cls, "display": "emergency" if cls == "EMER" else "ambulatory"},
            "type": [{"text": type_text}],
            "subject": {"reference": subject or self.patient_ref},
            "period": {"start": start, "end": _stamp(day, minute + duration)},
            "serviceProvider": {"display": provider},
        }
        if reason is not None:
            res["reasonCode"] = [{"coding": [{"system": reason.system, "code": reason.code, "display": reason.display}],
                                  "text": reason.display}]
        if diagnosis is not None:
            res["diagnosis"] = [{"condition": {"reference": f"Condition/{diagnosis}"}, "rank": 1}]
        self.resources["Encounter"].append(res)
        return eid, start

    def observation(self, category: str, code: Code, when: str, encounter: str, subject: str | None = None,
                    **value: Any) -> Resource:
        res: Resource = {
            "resourceType": "Observation", "id": self._next("obs"), "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category,
                                      "display": _CATEGORY_DISPLAY[category]}]}],
            "code": _concept(code),
            "subject": {"reference": subject or self.patient_ref},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "effectiveDateTime": when,
        }
        res.update(value)
        self.resources["Observation"].append(res)
        return res

    def measure(self, category: str, code: Code, when: str, encounter: str, value: float, unit: str,
                subject: str | None = None) -> Resource:
        return self.observation(category, code, when, encounter, subject, valueQuantity=_quantity(value, unit))

    def visit(self, day: dt.date, rng: random.Random, type_text: str, *, subject: str | None = None,
              provider: str = HOSPITAL, reason: Condition | None = None,
              diagnosis: str | None = None) -> tuple[str, str]:
        """An office visit with vital signs; returns the encounter id and its time."""
        eid, when = self.encounter(day, rng.randint(8 * 60, 16 * 60 + 30), rng.randint(15, 40), type_text,
                                   subject=subject, provider=provider, reason=reason, diagnosis=diagnosis)
        self.vitals(day, when, eid, rng, subject)
        return eid, when

    def vitals(self, day: dt.date, when: str, encounter: str, rng: random.Random, subject: str | None) -> None:
        p = self.patient
        weight = round(p.weight_kg * (1 + rng.gauss(0, 0.015)), 1)
        self.measure("vital-signs", WEIGHT, when, encounter, weight, "kg", subject)
        self.measure("vital-signs", HEIGHT, when, encounter, round(p.height_m * 100, 1), "cm", subject)
        self.measure("vital-signs", BMI, when, encounter, round(weight / (p.height_m * p.height_m), 1), "kg/m2", subject)
        if self.htn_onset is not None and day > self.htn_onset:  # treated hypertension
            systolic, diastolic = rng.randint(122, 142), rng.randint(74, 90)
        elif self.htn_onset is not None and day > self.htn_onset - _days(730):  # untreated / diagnosis
            systolic, diastolic = rng.randint(140, 168), rng.randint(88, 102)
        else:
            systolic, diastolic = rng.randint(104, 134), rng.randint(62, 85)
        self.observation("vital-signs", BP_PANEL, when, encounter, subject, component=[
            {"code": _concept(SYSTOLIC), "valueQuantity": _quantity(systolic, "mm[Hg]")},
            {"code": _concept(DIASTOLIC), "valueQuantity": _quantity(diastolic, "mm[Hg]")},
        ])
        self.measure("vital-signs", HEART_RATE, when, encounter, rng.randint(56, 96), "/min", subject)

    def procedure(self, code: tuple[str, str], when: str, encounter: str, condition: str) -> str:
        pid = self._next("proc")
        self.resources["Procedure"].append({
            "resourceType": "Procedure", "id": pid, "status": "completed",
            "code": {"coding": [{"system": SNOMED, "code": code[0], "display": code[1]}], "text": code[1]},
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "performedDateTime": when,
            "reasonReference": [{"reference": f"Condition/{condition}"}],
        })
        return pid

    def prescribe(self, profile: str, when: str, encounter: str, condition: str, status: str = "active") -> None:
        code, name, text, dosage = MEDICATIONS[profile]
        self.resources["MedicationRequest"].append({
            "resourceType": "MedicationRequest", "id": self._next("med"), "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": name}], "text": text},
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "authoredOn": when,
            "reasonReference": [{"reference": f"Condition/{condition}"}],
            "dosageInstruction": [{"text": dosage}],
        })

    def follow_up_days(self, onset: dt.date, rng: random.Random, every: tuple[int, int], limit: int) -> list[dt.date]:
        """Visit days after ``onset`` at random intervals, before "today"."""
        days, day = [], onset
        for _ in range(limit):
            day += _days(rng.randint(*every))
            if day >= REFERENCE_DATE:
                break
            days.append(day)
        return days

    # ------------------------------------------------------------------ the record

    def build(self) -> list[Resource]:
        p, rng = self.patient, self.rng
        rmc_id = f"{self.pid}-rmc" if rng.random() < 0.10 else None
        self.add_patients(rng, rmc_id)
        for condition in p.conditions:
            if condition.key == "background":
                self.htn_onset = condition.onset
        for k, condition in enumerate(p.conditions):
            self.condition_ids[condition.key] = f"{self.pid}-cond-{k}"
        for k, condition in enumerate(p.conditions):
            self.add_condition(k, condition)
        if rmc_id is not None:
            self.add_outside_visit(rng, rmc_id)
        previous: dict[str, PlannedStudy] = {}
        nth: dict[str, int] = {}
        for study in p.studies:
            n = nth.get(study.indication, 0)
            nth[study.indication] = n + 1
            self.add_study(study, previous.get(study.protocol.key), n)
            previous[study.protocol.key] = study
        return [res for kind in RESOURCE_ORDER for res in self.resources[kind]]

    def add_patients(self, rng: random.Random, rmc_id: str | None) -> None:
        p = self.patient
        city, state, zip_prefix, area = rng.choice(_CITIES)
        name = [{"use": "official", "family": p.family_name, "given": [p.given_name]}]
        main: Resource = {
            "resourceType": "Patient", "id": self.pid, "active": True,
            "identifier": [{
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                "system": ISSUER_SYSTEMS[p.issuer], "value": p.mrn, "assigner": {"display": HOSPITAL},
            }],
            "name": name,
            "telecom": [
                {"system": "phone", "value": f"({area}) 555-01{rng.randint(0, 99):02d}", "use": "home"},
                {"system": "email", "value": f"{_ascii(p.given_name)}.{_ascii(p.family_name)}{rng.randint(1, 99)}"
                                             "@example.com", "use": "home"},
            ],
            "gender": "male" if p.sex == "M" else "female",
            "birthDate": p.birth_date.isoformat(),
            "address": [{"use": "home", "line": [f"{rng.randint(1, 9999)} {rng.choice(_STREETS)}"], "city": city,
                         "state": state, "postalCode": f"{zip_prefix}{rng.randint(0, 99):02d}", "country": "US"}],
            "managingOrganization": {"display": HOSPITAL},
        }
        self.resources["Patient"].append(main)
        if rmc_id is None:
            return
        main["link"] = [{"other": {"reference": f"Patient/{rmc_id}"}, "type": "replaces"}]
        self.resources["Patient"].append({
            "resourceType": "Patient", "id": rmc_id, "active": False,
            "identifier": [{
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                "system": ISSUER_SYSTEMS["RMC"], "value": f"R{(p.index * 7919 + p.seed * 104729) % 10**9:09d}",
                "assigner": {"display": RMC_NAME},
            }],
            "name": [{"use": "official", "family": p.family_name, "given": [p.given_name]}],
            "telecom": [{"system": "phone", "value": f"({area}) 555-01{rng.randint(0, 99):02d}", "use": "old"}],
            "gender": main["gender"],
            "birthDate": main["birthDate"],
            "managingOrganization": {"display": RMC_NAME},
            "link": [{"other": {"reference": self.patient_ref}, "type": "replaced-by"}],
        })

    def add_outside_visit(self, rng: random.Random, rmc_id: str) -> None:
        """An older visit at Riverside Medical Center, still filed under the RMC record."""
        p = self.patient
        first = min([c.onset for c in p.conditions] + [s.date for s in p.studies])
        day = max(first - _days(800 + rng.randint(30, 700)), p.birth_date + _days(365 * 16))
        if day >= first:
            day = max(first - _days(30), p.birth_date + _days(1))
        subject = f"Patient/{rmc_id}"
        enc, when = self.visit(day, rng, "Outside primary care visit (Riverside Medical Center)", subject=subject,
                               provider=RMC_NAME)
        self.measure("laboratory", CREATININE, when, enc, round(rng.uniform(0.6, 1.2), 2), "mg/dL", subject)
        self.measure("laboratory", HBA1C, when, enc, round(rng.uniform(4.8, 6.0), 1), "%", subject)

    def add_condition(self, k: int, cond: Condition) -> None:
        p = self.patient
        rng = _rng(p.seed, "ehr", p.index, "condition", k)
        cid = self.condition_ids[cond.key]
        provider = next((s.institution for s in p.studies if s.indication == cond.key), HOSPITAL)
        clinic = CLINICS[cond.key]
        enc, when = self.visit(cond.onset, rng, f"{clinic} consultation", provider=provider, reason=cond,
                               diagnosis=cid)
        codings = [{"system": cond.system, "code": cond.code, "display": cond.display}]
        if cond.key in SNOMED_DISEASE:
            snomed = SNOMED_DISEASE[cond.key]
            codings.append({"system": SNOMED, "code": snomed[0], "display": snomed[1]})
        screening = cond.key == "breast_screening"
        resolved = screening
        res: Resource = {
            "resourceType": "Condition", "id": cid,
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{
                "system": CONDITION_CATEGORY,
                "code": "encounter-diagnosis" if screening else "problem-list-item",
                "display": "Encounter Diagnosis" if screening else "Problem List Item"}]}],
            "code": {"coding": codings, "text": cond.display},
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": f"Encounter/{enc}"},
            "onsetDateTime": cond.onset.isoformat(),
            "recordedDate": (cond.onset + _days(rng.randint(0, 3))).isoformat(),
        }
        if cond.key == "spine_injury":
            healed = cond.onset + _days(rng.randint(90, 150))
            if healed < REFERENCE_DATE:
                res["abatementDateTime"] = healed.isoformat()
                resolved = True
        res["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved" if resolved else "active"}]}
        self.resources["Condition"].append(res)
        if cond.key in PROCEDURES:
            procedure = self.procedure(PROCEDURES[cond.key], when, enc, cid)
            if cond.key == "prostate_cancer":
                self.gleason = rng.choices((6, 7, 8, 9), weights=(25, 45, 15, 15))[0]
                self.observation("laboratory", GLEASON, when, enc, partOf=[{"reference": f"Procedure/{procedure}"}],
                                 issued=_stamp(cond.onset + _days(3), rng.randint(9 * 60, 17 * 60)),
                                 valueInteger=self.gleason)
        if cond.key in MEDICATIONS:
            self.prescribe(cond.key, when, enc, cid, "completed" if cond.key == "spine_injury" else "active")
        story = _STORIES.get(cond.key)
        if story is not None:
            story(self, cond, cid, enc, when, rng)

    # ------------------------------------------------------------------ disease courses

    def prostate_cancer(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        """PSA rising over ~2 years to the diagnostic value (> 4), then falling under androgen deprivation."""
        psa_dx = round(rng.uniform(4.6, 24.0), 2)
        self.psa_at_diagnosis = psa_dx
        baseline = rng.uniform(0.3, 0.75)  # fraction of the diagnostic value two years earlier
        for months in (24, 18, 12, 6):
            if rng.random() < 0.85:
                day = cond.onset - _days(months * 30 + rng.randint(-20, 20))
                value = psa_dx * baseline ** (months / 24) * (1 + rng.gauss(0, 0.05))
                v_enc, v_when = self.visit(day, rng, "Primary care visit")  # before the diagnosis: no reason yet
                self.measure("laboratory", PSA, v_when, v_enc, round(value, 2), "ng/mL")
        self.measure("laboratory", PSA, when, enc, psa_dx, "ng/mL")
        nadir, relapse = rng.uniform(0.02, 0.6), rng.random() < 0.2
        for day in self.follow_up_days(cond.onset, rng, (80, 200), 6):
            elapsed = (day - cond.onset).days / 30  # months under treatment
            value = max(nadir, psa_dx * 0.08 ** (elapsed / 3))
            if relapse and elapsed > 12:
                value *= 2 ** ((elapsed - 12) / 4)
            value *= 1 + rng.gauss(0, 0.08)
            f_enc, f_when = self.visit(day, rng, "Urology follow-up", reason=cond)
            if value < 0.1:  # below the assay's reporting limit: labs send text
                self.observation("laboratory", PSA, f_when, f_enc, valueString="<0.1")
            else:
                self.measure("laboratory", PSA, f_when, f_enc, round(value, 2), "ng/mL")

    def breast(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        """Oncology follow-up with vitals, and for some patients a pathogenic BRCA1/2 variant."""
        cancer = cond.key == "breast_cancer"
        if cancer:
            for day in self.follow_up_days(cond.onset, rng, (150, 240), 2):
                self.visit(day, rng, "Breast surgery follow-up", reason=cond)
        if rng.random() < (0.30 if cancer else 0.03):
            day = cond.onset + _days(rng.randint(20, 90))
            g_enc, g_when = (self.visit(day, rng, "Genetic counseling visit", reason=cond) if day < REFERENCE_DATE
                             else (enc, when))
            gene, hgnc, hgvs = rng.choice(BRCA_VARIANTS)
            self.observation("laboratory", GENETIC_VARIANT, g_when, g_enc,
                             valueCodeableConcept=_concept((LOINC, "LA9633-4", "Present")),
                             component=[
                                 {"code": _concept(GENE_STUDIED), "valueCodeableConcept": _concept((HGNC, hgnc, gene))},
                                 {"code": _concept(DNA_CHANGE), "valueCodeableConcept": _concept((HGVS, hgvs, hgvs))},
                                 {"code": _concept(CLINICAL_SIGNIFICANCE),
                                  "valueCodeableConcept": _concept((LOINC, "LA6668-3", "Pathogenic"))},
                             ])

    def spine_injury(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        """Pain that fades over the following three months."""
        initial = rng.randint(6, 9)
        self.measure("survey", PAIN, when, enc, initial, "{score}")
        for day in (cond.onset + _days(14 + rng.randint(0, 7)), cond.onset + _days(42 + rng.randint(0, 14)),
                    cond.onset + _days(90 + rng.randint(0, 30))):
            if day >= REFERENCE_DATE:
                break
            left = max(0.0, 1 - (day - cond.onset).days / 120)
            pain = min(10, max(0, round(initial * left + rng.gauss(0.5, 0.8))))
            f_enc, f_when = self.visit(day, rng, "Orthopedics follow-up", reason=cond)
            self.measure("survey", PAIN, f_when, f_enc, pain, "{score}")

    def _score_course(self, cond: Condition, enc: str, when: str, rng: random.Random, category: str, code: Code,
                      start: float, per_year: float, bounds: tuple[float, float], step: float) -> None:
        """A clinical score measured every ~6 months, drifting by ``per_year``."""
        def rounded(v: float) -> float:
            v = min(bounds[1], max(bounds[0], v))
            return int(round(v)) if step == 1 else round(round(v / step) * step, 1)
        self.measure(category, code, when, enc, rounded(start), "{score}")
        for day in self.follow_up_days(cond.onset, rng, (150, 220), 8):
            years = (day - cond.onset).days / 365.25
            f_enc, f_when = self.visit(day, rng, f"{CLINICS[cond.key]} follow-up", reason=cond)
            self.measure(category, code, f_when, f_enc, rounded(start + per_year * years + rng.gauss(0, step)), "{score}")

    def alzheimers(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        self._score_course(cond, enc, when, rng, "survey", MMSE, rng.uniform(16, 26), -rng.uniform(1.5, 4.0),
                           (0, 30), 1)

    def parkinsons(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        self._score_course(cond, enc, when, rng, "exam", UPDRS_III, rng.uniform(12, 35), rng.uniform(1.5, 4.0),
                           (0, 132), 1)

    def multiple_sclerosis(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        self._score_course(cond, enc, when, rng, "exam", EDSS, rng.uniform(1.0, 3.0), rng.uniform(0.1, 0.4),
                           (0, 9.5), 0.5)

    def ibd(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        """CRP and fecal calprotectin high at diagnosis and at flares, low in remission."""
        def labs(flare: bool, l_when: str, l_enc: str) -> None:
            crp = rng.uniform(20, 120) if flare else rng.uniform(0.3, 6)
            if crp < 1.0:
                self.observation("laboratory", CRP, l_when, l_enc, valueString="<1.0")
            else:
                self.measure("laboratory", CRP, l_when, l_enc, round(crp, 1), "mg/L")
            calprotectin = rng.uniform(300, 1800) if flare else rng.uniform(20, 120)
            self.measure("laboratory", CALPROTECTIN, l_when, l_enc, round(calprotectin), "ug/g")
        labs(True, when, enc)
        for day in self.follow_up_days(cond.onset, rng, (90, 180), 8):
            f_enc, f_when = self.visit(day, rng, "Gastroenterology follow-up", reason=cond)
            labs(rng.random() < 0.25, f_when, f_enc)

    def background(self, cond: Condition, cid: str, enc: str, when: str, rng: random.Random) -> None:
        """Yearly check-ups with metabolic labs (hypertension on lisinopril)."""
        male = self.patient.sex == "M"
        hba1c, creat, ldl = rng.uniform(5.0, 6.2), rng.uniform(0.8, 1.2) if male else rng.uniform(0.6, 1.0), rng.uniform(90, 170)

        def labs(l_when: str, l_enc: str, year: int) -> None:
            self.measure("laboratory", HBA1C, l_when, l_enc, round(hba1c + 0.05 * year + rng.gauss(0, 0.1), 1), "%")
            self.measure("laboratory", CREATININE, l_when, l_enc, round(creat * (1 + 0.01 * year) + rng.gauss(0, 0.04), 2),
                         "mg/dL")
            self.measure("laboratory", LDL, l_when, l_enc, round(ldl - 2 * year + rng.gauss(0, 6)), "mg/dL")
            if rng.random() < 0.15:  # a qualitative result now and then (valueCodeableConcept)
                positive = rng.random() < 0.15
                self.observation("laboratory", URINE_PROTEIN, l_when, l_enc, valueCodeableConcept=_concept(
                    (SNOMED, "10828004", "Positive") if positive else (SNOMED, "260385009", "Negative")))
        labs(when, enc, 0)
        for year, day in enumerate(self.follow_up_days(cond.onset, rng, (335, 395), 12), start=1):
            y_enc, y_when = self.visit(day, rng, "Annual check-up", reason=cond)
            labs(y_when, y_enc, year)

    # ------------------------------------------------------------------ imaging

    def add_study(self, study: PlannedStudy, prior: PlannedStudy | None, nth: int) -> None:
        """Order, encounter, report (and BI-RADS) of one planned study."""
        p = self.patient
        rng = _rng(p.seed, "ehr", p.index, "study", study.index)
        cond = next((c for c in p.conditions if c.key == study.indication), None)
        desc = study.protocol.description
        minute = study.time.hour * 60 + study.time.minute
        emergency = study.indication == "spine_injury" and nth == 0
        enc, _ = self.encounter(study.date, minute - 20, 75, f"{'Emergency' if emergency else 'Outpatient'} imaging: "
                                f"{desc}", cls="EMER" if emergency else "AMB", provider=study.institution, reason=cond,
                                diagnosis=self.condition_ids.get(study.indication))
        when = _stamp(study.date, minute, study.time.second)
        if emergency:
            self.measure("survey", PAIN, _stamp(study.date, minute - 15), enc, rng.randint(7, 10), "{score}")
        referring = _physician(study.referring_physician)

        def acsn() -> Resource:
            return {"type": {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}]},
                    "system": ACCESSION_SYSTEM, "value": study.accession_number}
        sr_id, dr_id = f"{self.pid}-sr-{study.index}", f"{self.pid}-dr-{study.index}"
        order: Resource = {
            "resourceType": "ServiceRequest", "id": sr_id, "identifier": [acsn()], "status": "completed",
            "intent": "order",
            "category": [{"coding": [{"system": SNOMED, "code": "363679005", "display": "Imaging"}]}],
            "code": {"coding": [{"system": IMAGING_PROCEDURE_SYSTEM, "code": study.protocol.code, "display": desc}],
                     "text": desc},
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": f"Encounter/{enc}"},
            "occurrenceDateTime": when,
            "authoredOn": _stamp(study.date - _days(0 if emergency else rng.randint(2, 14)),
                                 minute - 10 if emergency else rng.randint(8 * 60, 17 * 60)),
            "requester": {"display": referring},
        }
        if cond is not None:
            order["reasonCode"] = [{"coding": [{"system": cond.system, "code": cond.code, "display": cond.display}],
                                    "text": cond.display}]
            order["reasonReference"] = [{"reference": f"Condition/{self.condition_ids[cond.key]}"}]
        self.resources["ServiceRequest"].append(order)

        history, findings, impression, urgent, birads = self.read(study, nth, rng)
        results = []
        if birads is not None:
            label, snomed = BIRADS_CATEGORIES[birads]
            codings = [{"system": BIRADS_SYSTEM, "code": str(birads), "display": label}]
            if snomed is not None:
                codings.append({"system": SNOMED, "code": snomed, "display": f"Mammography assessment (Category {birads})"})
            obs = self.observation("imaging", BIRADS, when, enc, valueCodeableConcept={
                "coding": codings, "text": f"BI-RADS {birads}: {label}"},
                derivedFrom=[{"reference": f"ImagingStudy/{study.uid}"}])
            results.append({"reference": f"Observation/{obs['id']}"})
        issued_day = study.date + _days(1)
        issued = _stamp(issued_day, rng.randint(7 * 60, 18 * 60), rng.randint(0, 59))
        radiologist = rng.choice(RADIOLOGISTS)
        age = p.age_at(study.date)
        comparison = f"{prior.protocol.description} dated {prior.date.isoformat()}." if prior else "None."
        indication = f" Indication: {cond.display} ({cond.code})." if cond else ""
        lines = [
            "RADIOLOGY REPORT",
            f"Patient: {p.given_name} {p.family_name}",
            f"MRN: {p.mrn}",
            f"DOB: {p.birth_date.isoformat()}",
            f"Accession: {study.accession_number}",
            f"Exam: {desc}",
            f"Exam date: {study.date.isoformat()}",
            f"Referring physician: Dr. {referring}",
            f"Institution: {study.institution}",
            "",
            f"CLINICAL HISTORY: {age}-year-old {'man' if p.sex == 'M' else 'woman'}. {history}{indication}",
            "",
            f"TECHNIQUE: {_TECHNIQUE[study.protocol.key]}",
            "",
            f"COMPARISON: {comparison}",
            "",
            "FINDINGS:",
            findings,
            "",
            "IMPRESSION:",
            impression,
            "",
        ]
        if urgent or rng.random() < 0.1:
            phone = f"(555) 010-{rng.randint(1000, 9999)}"
            if urgent:
                lines.append(f"These findings were discussed by telephone with Dr. {referring} at {phone} on "
                             f"{issued[:10]} at {issued[11:16]}.")
            else:
                lines.append(f"Questions about this report: call back the reading room at {phone}.")
        lines.append(f"Electronically signed by Dr. {radiologist} on {issued[:10]}.")
        text = "\n".join(lines) + "\n"
        report: Resource = {
            "resourceType": "DiagnosticReport", "id": dr_id, "identifier": [acsn()],
            "basedOn": [{"reference": f"ServiceRequest/{sr_id}"}],
            "status": "final",
            "category": [{"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]}],
            "code": {"coding": [_coding(IMAGING_REPORT)], "text": desc},
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": f"Encounter/{enc}"},
            "effectiveDateTime": when,
            "issued": issued,
            "resultsInterpreter": [{"display": f"Dr. {radiologist}"}],
            "imagingStudy": [{"reference": f"ImagingStudy/{study.uid}"}],
            "conclusion": impression.split("\n", 1)[0],
            "presentedForm": [{"contentType": "text/plain", "language": "en",
                               "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                               "title": f"{desc} report"}],
        }
        if results:
            report["result"] = results
        self.resources["DiagnosticReport"].append(report)

    def read(self, study: PlannedStudy, nth: int, rng: random.Random) -> tuple[str, str, str, bool, int | None]:
        """The radiologist's reading: history, findings, impression, call-back?, BI-RADS category (MG)."""
        key, indication = study.protocol.key, study.indication
        findings, impression = _NORMAL_READ[key]
        history, urgent, birads = "Routine examination.", False, None
        if key == "MG_SCREENING":
            birads = self._birads(study, nth, rng)
            findings, impression = _mammogram(birads, indication, rng)
            history = ("Palpable lump in the right breast." if indication == "breast_cancer" and nth == 0 else
                       "Right breast carcinoma, surveillance." if indication == "breast_cancer" else
                       "Screening mammogram. No current breast complaints.")
            urgent = birads in (4, 5)
        elif indication == "prostate_cancer":
            if key == "MR_PROSTATE" and nth == 0:
                size = rng.randint(8, 22)
                pirads = 5 if size >= 15 else rng.choice((4, 4, 5))
                side = rng.choice(("left", "right"))
                self.prostate_lesion = (size, side)
                history = f"Elevated PSA ({self.psa_at_diagnosis or 6.5} ng/mL)."
                findings = (f"Prostate volume {rng.randint(30, 70)} mL. {size} mm lesion in the {side} posterolateral "
                            f"peripheral zone, hypointense on T2 with marked restricted diffusion (ADC "
                            f"{rng.randint(550, 850)} x10^-6 mm2/s). No extraprostatic extension. Seminal vesicles are "
                            "unremarkable. No pelvic lymphadenopathy.")
                impression = (f"PI-RADS {pirads}: {size} mm {side} peripheral zone lesion, clinically significant "
                              "cancer likely. Targeted biopsy recommended.")
                urgent = True
            elif key == "MR_PROSTATE":
                size, side = self.prostate_lesion or (12, "left")
                now = max(3, size - rng.randint(2, 8))
                history = "Known prostate adenocarcinoma on androgen deprivation therapy."
                findings = (f"Treatment-related diffuse T2 hypointensity. The {side} peripheral zone lesion measures "
                            f"{now} mm (previously {size} mm). No new lesion. No lymphadenopathy.")
                impression = f"Interval decrease of the {side} peripheral zone lesion ({now} mm, previously {size} mm)."
            else:
                history = f"Prostate adenocarcinoma, Gleason {self.gleason or 7}; staging."
                if rng.random() < 0.15:
                    findings = ("Two enlarged left external iliac lymph nodes, up to 14 mm in short axis. No sclerotic "
                                "osseous lesion. Liver and adrenal glands are unremarkable.")
                    impression = "Left external iliac lymphadenopathy, suspicious for nodal metastases."
                    urgent = True
                else:
                    findings = ("No pelvic or retroperitoneal lymphadenopathy. No sclerotic osseous lesion. Liver and "
                                "adrenal glands are unremarkable.")
                    impression = "No evidence of nodal or osseous metastatic disease."
        elif indication == "breast_cancer":
            history = "Right breast carcinoma; staging."
            findings = ("No pulmonary nodule or mass. No axillary, mediastinal or hilar lymphadenopathy. "
                        "Postsurgical changes in the right breast. No osseous lesion.")
            impression = "No evidence of thoracic metastatic disease."
        elif indication == "spine_injury":
            history = ("Motor vehicle collision with neck pain; evaluate for fracture." if nth == 0 else
                       "Persistent neck and back pain after trauma.")
            if key == "MR_SPINE":
                findings = ("Mild edema of the interspinous and supraspinous ligaments, consistent with ligamentous "
                            "sprain. Vertebral body heights are preserved. No disc herniation or canal stenosis.")
                impression = "Ligamentous sprain without fracture or cord compromise."
        elif indication in ("alzheimers", "parkinsons"):
            alz = indication == "alzheimers"
            history = ("Progressive memory loss; evaluate for neurodegenerative disease." if alz and nth == 0 else
                       "Known Alzheimer's disease; follow-up." if alz else
                       "Resting tremor and bradykinesia; exclude a structural cause.")
            if alz:
                mta = min(4, 2 + nth)
                findings = (f"{'Moderate' if nth == 0 else 'Progressive'} generalized cerebral volume loss with "
                            f"disproportionate bilateral hippocampal atrophy (MTA score {mta}). Scattered periventricular "
                            "white matter hyperintensities (Fazekas 1). No hemorrhage or mass.")
                impression = f"Medial temporal lobe predominant atrophy (MTA {mta}), in keeping with Alzheimer's disease."
            else:
                findings = ("Mild age-related volume loss. No infarct, hemorrhage or mass. No features of normal "
                            "pressure hydrocephalus.")
                impression = "No structural cause of parkinsonism identified."
        elif indication == "multiple_sclerosis":
            history = ("Episode of numbness and blurred vision; evaluate for demyelinating disease." if nth == 0 else
                       "Known multiple sclerosis; surveillance for new lesions.")
            if key == "MR_BRAIN":
                lesions, enhancing = rng.randint(6, 20), rng.randint(0, 3)
                findings = (f"{lesions} ovoid T2/FLAIR hyperintense lesions in periventricular, juxtacortical and "
                            f"infratentorial white matter, several perpendicular to the lateral ventricles. {enhancing} "
                            "enhancing lesion(s) after gadolinium.")
                impression = ("Multifocal demyelinating lesions"
                              f"{' with active enhancement' if enhancing else ' without active enhancement'}, "
                              "consistent with multiple sclerosis.")
        elif indication == "ibd":
            flare = nth == 0 or rng.random() < 0.4
            history = ("Abdominal pain, diarrhea and weight loss; suspected Crohn's disease." if nth == 0 else
                       "Known Crohn's disease; evaluate disease activity.")
            if flare:
                wall, length = rng.randint(6, 12), rng.randint(8, 25)
                findings = (f"Bowel wall thickening of the terminal ileum up to {wall} mm over a {length} cm segment with "
                            "mucosal hyperenhancement and engorged vasa recta (comb sign). Reactive mesenteric lymph "
                            "nodes. No abscess or fistula.")
                impression = "Active terminal ileitis, consistent with Crohn's disease. No abscess."
            else:
                findings = ("Mild residual wall thickening of the terminal ileum (4 mm) without hyperenhancement. "
                            "No abscess, fistula or obstruction.")
                impression = "Improved terminal ileal Crohn's disease without active inflammation."
        elif indication == "lung_nodule":
            history = ("Incidental pulmonary nodule on prior imaging." if nth == 0 else
                       "Follow-up of a pulmonary nodule (Fleischner).")
            known = self.nodule_mm
            lobe = self.nodule_lobe or rng.choice(("right upper", "right lower", "left upper", "left lower",
                                                   "right middle"))
            self.nodule_lobe = lobe
            if key == "CT_CHEST":
                if known is None:
                    nodule = rng.randint(6, 14)
                    findings = f"Solid {nodule} mm nodule in the {lobe} lobe with smooth margins. No lymphadenopathy."
                    impression = f"{nodule} mm solid pulmonary nodule in the {lobe} lobe; follow-up CT in 3-6 months."
                else:
                    nodule = known + rng.choice((0, 0, 0, 1, 2, 3))
                    change = "stable" if nodule == known else f"increased from {known} mm"
                    findings = f"The solid {lobe} lobe nodule measures {nodule} mm ({change}). No new nodule."
                    impression = (f"{'Stable' if nodule == known else 'Growing'} {nodule} mm {lobe} lobe nodule"
                                  f"{'.' if nodule == known else '; PET-CT or tissue sampling recommended.'}")
                    urgent = nodule > known
                self.nodule_mm = nodule
            else:
                findings = (f"Small nodular opacity projecting over the {lobe} zone, corresponding to the known nodule. "
                            "No consolidation or effusion.")
                impression = "Known pulmonary nodule, better assessed on CT. No acute process."
        elif indication == "background":
            history = "Hypertension; preoperative assessment." if key == "CR_CHEST" else "Shortness of breath."
        return history, findings, impression, urgent, birads

    def _birads(self, study: PlannedStudy, nth: int, rng: random.Random) -> int:
        if study.indication == "breast_cancer":
            if nth == 0:
                return rng.choices((4, 5, 0), weights=(50, 40, 10))[0]
            onset = next(c.onset for c in self.patient.conditions if c.key == "breast_cancer")
            if (study.date - onset).days < 180:
                return 6
            return rng.choices((2, 3, 4), weights=(65, 20, 15))[0]
        return rng.choices((1, 2, 0, 3), weights=(60, 28, 8, 4))[0]


def _mammogram(birads: int, indication: str, rng: random.Random) -> tuple[str, str]:
    density = rng.choice(("almost entirely fatty (A)", "scattered areas of fibroglandular density (B)",
                          "heterogeneously dense (C)", "extremely dense (D)"))
    side = "right" if indication == "breast_cancer" else rng.choice(("right", "left"))
    clock = rng.randint(1, 12)
    size = rng.randint(6, 28)
    lesion = {
        0: f"Focal asymmetry in the {side} breast upper outer quadrant, seen on the CC view only.",
        1: "No suspicious mass, calcification or architectural distortion.",
        2: "Stable benign-appearing coarse calcifications and a circumscribed intramammary lymph node.",
        3: f"Circumscribed oval {size} mm mass at {clock} o'clock in the {side} breast.",
        4: f"Irregular {size} mm mass with indistinct margins at {clock} o'clock in the {side} breast, "
           f"{rng.randint(2, 9)} cm from the nipple.",
        5: f"Irregular spiculated {size} mm mass at {clock} o'clock in the {side} breast with associated fine "
           "pleomorphic calcifications and skin retraction.",
        6: f"Known biopsy-proven malignancy in the {side} breast with biopsy marker clip in place.",
    }[birads]
    advice = {0: "Recall for additional diagnostic imaging.", 1: "Routine screening in 1 year.",
              2: "Routine screening in 1 year.", 3: "Short-interval follow-up mammogram in 6 months.",
              4: "Ultrasound-guided core needle biopsy recommended.", 5: "Tissue sampling recommended.",
              6: "Surgical excision when clinically appropriate."}[birads]
    label = BIRADS_CATEGORIES[birads][0]
    return f"The breasts are {density}. {lesion}", f"BI-RADS {birads}: {label}. {advice}"


_Story = Callable[[_Chart, Condition, str, str, str, random.Random], None]
_STORIES: dict[str, _Story] = {
    "prostate_cancer": _Chart.prostate_cancer,
    "breast_cancer": _Chart.breast,
    "breast_screening": _Chart.breast,
    "spine_injury": _Chart.spine_injury,
    "alzheimers": _Chart.alzheimers,
    "parkinsons": _Chart.parkinsons,
    "multiple_sclerosis": _Chart.multiple_sclerosis,
    "ibd": _Chart.ibd,
    "background": _Chart.background,
}


# ---------------------------------------------------------------------- public API


def patient_resources(patient: SyntheticPatient) -> list[Resource]:
    """The whole record of one patient: Patient resource(s) first, then Encounters, Conditions, ...

    Each call builds fresh dicts, so callers may mutate what they get.
    """
    return _Chart(patient).build()


def patient_bundle(patient: SyntheticPatient, bundle_type: str = "transaction") -> Resource:
    """A Bundle of the patient's record.

    ``transaction`` and ``batch`` entries are ``PUT <Type>/<id>`` (idempotent: loading twice updates);
    ``collection`` entries have no request. ``fullUrl`` is absolute under :data:`FHIR_BASE`, so the
    relative references inside resolve to entries of the same bundle.
    """
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle_type must be one of {', '.join(BUNDLE_TYPES)}, not {bundle_type!r}")
    entries = []
    for res in patient_resources(patient):
        path = f"{res['resourceType']}/{res['id']}"
        entry: Resource = {"fullUrl": f"{FHIR_BASE}/{path}", "resource": res}
        if bundle_type != "collection":
            entry["request"] = {"method": "PUT", "url": path}
        entries.append(entry)
    return {"resourceType": "Bundle", "id": f"{patient.seed}-{patient.index}-record", "type": bundle_type,
            "entry": entries}


def iter_resources(seed: int, patients: int, start: int = 0) -> Iterator[Resource]:
    """Every resource of patients ``start`` .. ``start + patients - 1``, one patient at a time."""
    for index in range(start, start + patients):
        yield from patient_resources(plan_patient(seed, index))


def write_ndjson(out_dir: str | os.PathLike[str], seed: int, patients: int, start: int = 0) -> dict[str, int]:
    """Write the record of ``patients`` patients in the FHIR Bulk Data export layout.

    One ``<Type>.ndjson`` per resource type, one compact UTF-8 JSON resource per line. Resources are
    streamed straight to the files (memory stays flat whatever ``patients`` is); each file is written
    under a temporary name and renamed into place at the end, ``Patient.ndjson`` last, so a reader never
    sees a half-written file, an interrupted run leaves the previous files untouched, and the presence of
    ``Patient.ndjson`` means the export is complete. Returns the count per type.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    files: dict[str, IO[str]] = {}
    counts: dict[str, int] = {}

    def temporary(kind: str) -> Path:
        return out / f".{kind}.ndjson.partial"

    try:
        for res in iter_resources(seed, patients, start):
            kind = res["resourceType"]
            fh = files.get(kind)
            if fh is None:
                fh = files[kind] = open(temporary(kind), "w", encoding="utf-8", newline="\n")
                counts[kind] = 0
            fh.write(encode(res))
            fh.write("\n")
            counts[kind] += 1
        for fh in files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        for kind in sorted(files, key=lambda k: k == "Patient"):  # Patient.ndjson last: it marks a complete export
            os.replace(temporary(kind), out / f"{kind}.ndjson")
    except BaseException:
        for kind, fh in files.items():
            fh.close()
            temporary(kind).unlink(missing_ok=True)
        raise
    return dict(sorted(counts.items()))


__all__ = ["ACCESSION_SYSTEM", "FHIR_BASE", "ISSUER_SYSTEMS", "iter_resources", "patient_bundle", "patient_resources",
           "write_ndjson"]
