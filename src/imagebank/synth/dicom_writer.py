"""Planned instance -> PS3.10 bytes, with the modules of its IOD filled consistently (PS3.3 A.3 CT,
A.4 MR, A.26 Digital Mammography, A.2 CR, A.26 DX)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from imagebank.synth.phantoms import PHANTOMS
from imagebank.synth.plan import PlannedSeries, PlannedStudy, SyntheticPatient, instance_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}

# Lesions appear in the images of the condition that motivated the exam.
_LESION_INDICATIONS = {"prostate_cancer", "breast_cancer", "spine_injury", "multiple_sclerosis", "ibd",
                       "lung_nodule"}

_WINDOWS = {"ct_chest": ("-600\\40", "1500\\400"), "ct_abdomen": ("40", "400"), "ct_head": ("40", "80"),
            "ct_spine": ("500", "2000")}

_MG_VIEW_CODES = {"CC": ("R-10242", "cranio-caudal"), "MLO": ("R-10226", "medio-lateral oblique")}


def _da(d: object) -> str:
    return d.strftime("%Y%m%d")  # type: ignore[attr-defined]


def _pixel_rng(patient: SyntheticPatient, study: PlannedStudy, series: PlannedSeries, number: int) -> np.random.Generator:
    digest = hashlib.sha256(f"px/{patient.seed}/{patient.index}/{study.index}/{series.number}/{number}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def build_dataset(patient: SyntheticPatient, study: PlannedStudy, series: PlannedSeries, number: int,
                  *, metadata_only: bool = False) -> Dataset:
    """The complete data set of instance ``number`` (1-based) of ``series``."""
    sp = series.protocol
    modality = sp.modality
    sop_uid = instance_uid(patient, study, series, number)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _da(study.date)
    ds.StudyTime = ds.SeriesTime = study.time.strftime("%H%M%S")
    seconds = study.time.hour * 3600 + study.time.minute * 60 + study.time.second + series.number * 300 + number
    ds.ContentTime = f"{seconds // 3600 % 24:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    ds.AccessionNumber = study.accession_number
    ds.Modality = modality
    ds.Manufacturer = series.equipment.manufacturer
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referring_physician
    ds.StationName = series.equipment.station
    ds.StudyDescription = study.protocol.description
    ds.SeriesDescription = sp.description
    ds.ManufacturerModelName = series.equipment.model
    ds.SoftwareVersions = series.equipment.software
    ds.DeviceSerialNumber = hashlib.sha256(series.equipment.station.encode()).hexdigest()[:8].upper()
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.mrn
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age_at(study.date):03d}Y"
    ds.PatientSize = f"{patient.height_m:.2f}"
    ds.PatientWeight = f"{patient.weight_kg:.1f}"
    ds.BodyPartExamined = sp.body_part
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS" if modality in ("CT", "MR") else ""
    req = Dataset()
    req.RequestedProcedureID = study.accession_number
    req.ScheduledProcedureStepID = f"{study.accession_number}-1"
    ds.RequestAttributesSequence = Sequence([req])
    ds.PerformedProcedureStepStartDate = _da(study.date)
    ds.PerformedProcedureStepStartTime = ds.StudyTime

    lesion = study.indication in _LESION_INDICATIONS
    z = (number - 0.5) / max(series.instances, 1)
    if modality in ("CT", "MR"):
        _cross_sectional(ds, series, number, z)
    elif modality == "MG":
        side, view = sp.variant.split()
        ds.ImageLaterality = side
        ds.Laterality = side
        ds.ViewPosition = view
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _MG_VIEW_CODES[view][0], "SRT", _MG_VIEW_CODES[view][1]
        ds.ViewCodeSequence = Sequence([code])
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.BreastImplantPresent = "NO"
        ds.ImagerPixelSpacing = ds.PixelSpacing = "0.1\\0.1"
    else:
        ds.ViewPosition = sp.variant
        ds.ImagerPixelSpacing = ds.PixelSpacing = "0.35\\0.35"
        if modality == "DX":
            ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else ""]
    ds.ContentQualification = "PRODUCT" if modality in ("MG", "DX") else None
    if ds.ContentQualification is None:
        del ds.ContentQualification
    if not metadata_only:
        _pixels(ds, series, number, z, lesion, _pixel_rng(patient, study, series, number))
    return ds


def _cross_sectional(ds: Dataset, series: PlannedSeries, number: int, z: float) -> None:
    sp = series.protocol
    fov = 350.0 if sp.modality == "CT" else (240.0 if sp.body_part != "PROSTATE" else 200.0)
    spacing = fov / sp.columns
    thickness = sp.slice_thickness or 3.0
    location = -number * thickness
    ds.SliceThickness = f"{thickness:g}"
    ds.SpacingBetweenSlices = f"{thickness:g}"
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    sagittal = sp.phantom == "mr_spine"
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1] if sagittal else [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = ([f"{location:g}", f"{-fov / 2:g}", f"{fov / 2:g}"] if sagittal
                               else [f"{-fov / 2:g}", f"{-fov / 2:g}", f"{location:g}"])
    ds.SliceLocation = f"{location:g}"
    if sp.modality == "CT":
        ds.KVP = "120"
        ds.XRayTubeCurrent = 200
        ds.ExposureTime = 500
        ds.ConvolutionKernel = sp.description.split()[-1]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        center, width = _WINDOWS.get(sp.phantom, ("40", "400"))
        ds.WindowCenter, ds.WindowWidth = center.split("\\"), width.split("\\")
        ds.AcquisitionNumber = 1
    else:
        variant = sp.variant or "T1"
        ds.ScanningSequence = "EP" if variant in ("DWI", "ADC") else "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = {"T1": "600", "T2": "4000", "FLAIR": "9000"}.get(variant, "5000")
        ds.EchoTime = {"T1": "12", "T2": "100", "FLAIR": "120"}.get(variant, "80")
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = "3" if "Vida" in series.equipment.model or "Premier" in series.equipment.model else "1.5"
        ds.SequenceName = variant.lower()


def _pixels(ds: Dataset, series: PlannedSeries, number: int, z: float, lesion: bool,
            rng: np.random.Generator) -> None:
    sp = series.protocol
    image = PHANTOMS[sp.phantom](sp.rows, sp.columns, z, rng, sp.variant, lesion)
    if sp.modality == "CT":
        stored = np.clip(image + 1024.0, 0, 4095)  # RescaleIntercept -1024
        bits = 12
        photometric = "MONOCHROME2"
    elif sp.modality == "MR":
        stored = np.clip(image, 0, 4095)
        bits = 12
        photometric = "MONOCHROME2"
        ds.WindowCenter, ds.WindowWidth = "600", "1200"
    else:
        # Projection images: attenuation -> detector value. CR here uses MONOCHROME1 (high = white
        # is low value) as many CR readers do, so viewers' inversion handling is exercised.
        scaled = np.clip(image, 0, 1) * 4095.0
        photometric = "MONOCHROME1" if sp.modality == "CR" else "MONOCHROME2"
        stored = 4095.0 - scaled if photometric == "MONOCHROME1" else scaled
        bits = 12
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = sp.rows, sp.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype(np.uint16).tobytes()


def encode(ds: Dataset) -> bytes:
    """PS3.10 file bytes (preamble, File Meta, Explicit VR Little Endian data set)."""
    meta = FileMetaDataset()
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "IMAGEBANK_SYN"
    ds.file_meta = meta
    buffer = io.BytesIO()
    if "SOPClassUID" in ds and "SOPInstanceUID" in ds:
        dcmwrite(buffer, ds, enforce_file_format=True)
    else:  # only tests build such broken files; keep them PS3.10-shaped so the rule under test is hit
        ds.preamble = b"\0" * 128
        dcmwrite(buffer, ds)
    return buffer.getvalue()


def render_instance(patient: SyntheticPatient, study: PlannedStudy, series: PlannedSeries, number: int,
                    *, metadata_only: bool = False) -> bytes:
    return encode(build_dataset(patient, study, series, number, metadata_only=metadata_only))
