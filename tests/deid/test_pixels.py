"""Pixel data risk and cleaning (imagebank.deid.pixels) on synthetic images with burned-in text.

The synthetic ultrasound image is 640x480: a speckle "sector" of smoothed noise (like real B-mode
texture, which OCR reads as short nonsense words) and a banner in the top 60 rows with a name, an MRN
and a date drawn in Pillow's built-in font, white on black as scanners draw them. Its Manufacturer is
"Imagebank Synthetic", which the rule shipped in data/pixel-regions.json covers.

OCR tests need the ``tesseract`` program (Debian: tesseract-ocr). Locally they are skipped when it is
missing; under ``CI=true`` they fail instead, so CI can never go green without having run them.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    VideoEndoscopicImageStorage,
    VLPhotographicImageStorage,
    generate_uid,
)

from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.deid.pixels import (
    DEFAULT_RULES_PATH,
    OcrWord,
    RegionRule,
    TesseractOcr,
    assess,
    clean_pixels,
    find_ocr,
    load_rules,
    ocr_views,
    parse_tsv,
    text_boxes,
)
from imagebank.errors import ConfigError

ROWS, COLUMNS = 480, 640
BANNER = (0, 0, 640, 60)  # where the synthetic scanner draws its banner (and the shipped rule's region)
NAME, MRN, DATE = "DOE^JOHN", "MRN 12345678", "2024-03-15"
# What must not be readable after cleaning, as OCR prints it (letters and digits, lower case).
SECRETS = ("doe", "john", "12345678", "20240315", "2024", "0315")


# ---------------------------------------------------------------------------------------- synthetic data
def speckle(seed: int) -> np.ndarray:
    """A fan-shaped sector of smoothed speckle on black, 8-bit."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.rayleigh(45, (ROWS, COLUMNS)).clip(0, 255).astype(np.uint8))
    texture = np.asarray(noise.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float64) * 1.6
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS]
    angle = np.arctan2(xx - COLUMNS / 2, yy + 60)
    radius = np.hypot(xx - COLUMNS / 2, yy + 60)
    sector = (np.abs(angle) < 0.6) & (radius > 140) & (radius < 520)
    return np.where(sector, texture.clip(0, 200), 0).astype(np.uint8)


def draw_banner(gray: np.ndarray, lines: tuple[str, ...] = (NAME, MRN), corner: str = DATE,
                size: int = 16) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """``gray`` with the text drawn white, and the text's bounding boxes."""
    image = Image.fromarray(gray)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    boxes = []
    for i, line in enumerate(lines):
        draw.text((12, 8 + 24 * i), line, fill=255, font=font)
        boxes.append(tuple(int(v) for v in draw.textbbox((12, 8 + 24 * i), line, font=font)))
    if corner:
        draw.text((500, 8), corner, fill=255, font=font)
        boxes.append(tuple(int(v) for v in draw.textbbox((500, 8), corner, font=font)))
    return np.asarray(image), boxes


def dataset(pixels: np.ndarray, *, sop_class: str = UltrasoundImageStorage, modality: str = "US",
            photometric: str = "MONOCHROME2", manufacturer: str = "Imagebank Synthetic",
            model: str = "SYNTH-US", **attributes: object) -> Dataset:
    """An uncompressed dataset around ``pixels`` ((frames,) rows, columns (, 3))."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.PatientName = NAME
    ds.PatientID = "12345678"
    color = photometric in ("RGB", "YBR_FULL_422")
    multi = pixels.ndim == (4 if color else 3)
    if multi:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1:3] if multi else pixels.shape[:2]
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def ultrasound(seed: int = 1, **kwargs: object) -> tuple[Dataset, list[tuple[int, int, int, int]]]:
    gray, boxes = draw_banner(speckle(seed))
    return dataset(gray, **kwargs), boxes


def ct_slice(**attributes: object) -> Dataset:
    pixels = (np.arange(64 * 64, dtype=np.int16).reshape(64, 64) % 2000) - 1000
    attributes = {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], **attributes}
    return dataset(pixels, sop_class=CTImageStorage, modality="CT", manufacturer="ACME", model="CT-1", **attributes)


def roundtrip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def readable_secrets(ocr: TesseractOcr, gray: np.ndarray) -> set[str]:
    words = [w.text for view, _ in ocr_views(gray) for w in ocr.words(view)]
    text = " ".join(re.sub(r"[^0-9a-z]", "", w.lower()) for w in words)
    return {s for s in SECRETS if s in text}


def frame_gray(ds: Dataset, index: int = 0) -> np.ndarray:
    array = ds.pixel_array
    frame = array[index] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array
    if frame.ndim == 3:
        frame = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return frame.astype(np.uint8)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ocr() -> TesseractOcr:
    engine = find_ocr()
    if engine is None:
        message = "tesseract (Debian: tesseract-ocr, tesseract-ocr-eng) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI requires OCR: {message}")
        pytest.skip(message)
    return engine


@pytest.fixture(scope="module")
def rules() -> list[RegionRule]:
    return load_rules(DEFAULT_RULES_PATH)


class CountingOcr:
    """Wraps an engine to count calls (multi-frame images must not be OCR'd frame by frame)."""

    def __init__(self, engine: TesseractOcr) -> None:
        self.engine = engine
        self.calls = 0

    def words(self, image: np.ndarray) -> list[OcrWord]:
        self.calls += 1
        return self.engine.words(image)


# ---------------------------------------------------------------------------------------- assess
def test_ct_without_burned_in_annotation_is_not_at_risk() -> None:
    assert assess(ct_slice()) == assess(ct_slice(BurnedInAnnotation="NO"))
    risk = assess(ct_slice(BurnedInAnnotation="NO"))
    assert (risk.at_risk, risk.kind, risk.reasons) == (False, "image", ())


def test_ct_declaring_burned_in_annotation_is_at_risk() -> None:
    risk = assess(ct_slice(BurnedInAnnotation="YES"))
    assert risk.at_risk and risk.kind == "image"
    assert "Burned In Annotation is YES" in risk.reasons


def test_ct_screen_save_is_at_risk() -> None:
    risk = assess(ct_slice(ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"]))
    assert risk.at_risk
    assert any("SCREEN SAVE" in reason for reason in risk.reasons)


def test_ultrasound_is_at_risk_even_when_it_declares_no_burned_in_annotation() -> None:
    ds, _ = ultrasound(BurnedInAnnotation="NO")
    risk = assess(ds)
    assert risk.at_risk and "modality US" in risk.reasons


@pytest.mark.parametrize("sop_class", [SecondaryCaptureImageStorage, MultiFrameSingleBitSecondaryCaptureImageStorage,
                                       MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
                                       MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
                                       MultiFrameTrueColorSecondaryCaptureImageStorage])
def test_every_secondary_capture_sop_class_is_at_risk_whatever_the_modality(sop_class: str) -> None:
    ds = ct_slice()
    ds.SOPClassUID = sop_class
    risk = assess(ds)
    assert risk.at_risk and "secondary capture SOP Class" in risk.reasons


def test_slide_label_is_at_risk_but_slide_tissue_is_not() -> None:
    label = ct_slice(Modality="SM", ImageType=["ORIGINAL", "PRIMARY", "LABEL", "NONE"])
    volume = ct_slice(Modality="SM", ImageType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"])
    assert assess(label).at_risk
    assert not assess(volume).at_risk


def test_reasons_never_contain_patient_values() -> None:
    ds, _ = ultrasound(BurnedInAnnotation="YES")
    text = " ".join(assess(ds).reasons)
    assert "DOE" not in text and "12345678" not in text


def test_encapsulated_pdf_is_a_document_and_is_quarantined(rules: list[RegionRule]) -> None:
    ds = Dataset()
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 DOE^JOHN\n"
    risk = assess(ds)
    assert (risk.at_risk, risk.kind) == (True, "document")
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=rules, ocr=None)
    assert caught.value.reason == "pixel-document"


@pytest.mark.parametrize("how", ["sop-class", "transfer-syntax"])
def test_video_is_quarantined(how: str, rules: list[RegionRule]) -> None:
    ds, _ = ultrasound()
    if how == "sop-class":
        ds.SOPClassUID = VideoEndoscopicImageStorage
    else:
        ds.file_meta.TransferSyntaxUID = MPEG4HP41
    assert assess(ds).kind == "video" and assess(ds).at_risk
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=rules, ocr=None)
    assert caught.value.reason == "pixel-video"


def test_object_without_pixel_data_is_not_at_risk() -> None:
    ds = ct_slice()
    del ds.PixelData
    assert assess(ds) == assess(ds).__class__(False, "none")


@pytest.mark.parametrize("attributes", [
    {"RecognizableVisualFeatures": "YES"},
    {"SOPClassUID": VLPhotographicImageStorage, "Modality": "XC"},  # a photograph that does not say NO
])
def test_images_that_may_show_a_face_are_quarantined(attributes: dict[str, str], rules: list[RegionRule]) -> None:
    ds, _ = ultrasound(**attributes)
    assert assess(ds).recognizable
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=rules, ocr=None)
    assert caught.value.reason == "pixel-recognizable"


def test_photograph_declared_without_faces_is_cleaned_not_quarantined(rules: list[RegionRule]) -> None:
    ds, _ = ultrasound(SOPClassUID=VLPhotographicImageStorage, Modality="XC", RecognizableVisualFeatures="NO")
    assert not assess(ds).recognizable
    assert clean_pixels(ds, rules=rules, ocr=None).changed


# ---------------------------------------------------------------------------------------- rules
def test_shipped_rules_load_and_cover_the_synthetic_ultrasound(rules: list[RegionRule]) -> None:
    ds, _ = ultrasound()
    assert [rule.name for rule in rules if rule.matches(ds)] == ["imagebank-synthetic-us-banner"]
    ds.Manufacturer = "imagebank synthetic "  # case and surrounding spaces do not matter
    assert any(rule.matches(ds) for rule in rules)
    ds.Manufacturer = "Imagebank Synthetic Inc"  # but the whole value must match
    assert not any(rule.matches(ds) for rule in rules)


def test_rule_with_matrix_size_does_not_match_other_sizes(rules: list[RegionRule]) -> None:
    ds = dataset(np.zeros((240, 320), np.uint8))
    assert not any(rule.matches(ds) for rule in rules)


@pytest.mark.parametrize("rule, field", [
    ({"name": "x", "manufacturer": "GE(", "model": ".*", "regions": [[0, 0, 1, 1]]}, "manufacturer"),
    ({"name": "x", "manufacturer": "GE", "model": ".*", "regions": [[5, 0, 1, 1]]}, "region"),
    ({"name": "x", "manufacturer": "GE", "model": ".*", "regions": []}, "regions"),
    ({"name": "x", "manufacturer": "GE", "model": ".*", "regions": [[0, 0, 1, 1]], "row": 5}, "row"),
    ({"name": "x", "manufacturer": "GE", "regions": [[0, 0, 1, 1]]}, "model"),
])
def test_invalid_rule_files_are_refused_with_the_field_named(tmp_path, rule: dict, field: str) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [rule]}))
    with pytest.raises(ConfigError, match=field):
        load_rules(path)


def test_region_rule_cleans_without_ocr(rules: list[RegionRule]) -> None:
    ds, _ = ultrasound(BurnedInAnnotation="YES")
    before = frame_gray(ds).copy()
    outcome = clean_pixels(ds, rules=rules, ocr=None)
    assert outcome.changed and outcome.method == "regions:imagebank-synthetic-us-banner"
    assert outcome.boxes == (BANNER,)
    after = frame_gray(ds)
    x0, y0, x1, y1 = BANNER
    assert not after[y0:y1, x0:x1].any()
    assert np.array_equal(after[y1:], before[y1:])  # the sector is untouched
    assert ds.BurnedInAnnotation == "NO"


def test_at_risk_image_without_rule_or_ocr_is_quarantined_naming_the_device() -> None:
    ds, _ = ultrasound(manufacturer="ACME Medical", model="Sono 9")
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=[], ocr=None)
    assert caught.value.reason == "pixel-risk"
    assert "ACME Medical / Sono 9" in caught.value.message and "tesseract-ocr" in caught.value.message
    assert "DOE" not in caught.value.message


def test_image_not_at_risk_is_left_byte_for_byte(rules: list[RegionRule]) -> None:
    ds = ct_slice(BurnedInAnnotation="NO")
    before = ds.PixelData
    assert clean_pixels(ds, rules=rules, ocr=None).method == "none"
    assert ds.PixelData is before and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_icon_image_of_an_at_risk_image_is_removed(rules: list[RegionRule]) -> None:
    ds, _ = ultrasound()
    icon = Dataset()
    icon.Rows = icon.Columns = 8
    ds.IconImageSequence = [icon]
    clean_pixels(ds, rules=rules, ocr=None)
    assert "IconImageSequence" not in ds


# ---------------------------------------------------------------------------------------- encodings
def jpeg_dataset(color: bool) -> Dataset:
    """A JPEG Baseline ultrasound as scanners send it: YBR_FULL_422 colour or 8-bit grey."""
    gray, _ = draw_banner(speckle(3))
    image = Image.fromarray(np.stack([gray] * 3, axis=-1) if color else gray)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, subsampling=1)  # 4:2:2, as YBR_FULL_422 says
    ds = dataset(np.asarray(image), photometric="RGB" if color else "MONOCHROME2")
    ds.PhotometricInterpretation = "YBR_FULL_422" if color else "MONOCHROME2"
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


@pytest.mark.parametrize("color", [True, False])
def test_jpeg_input_is_written_back_uncompressed_with_consistent_attributes(color: bool,
                                                                            rules: list[RegionRule]) -> None:
    ds = jpeg_dataset(color)
    assert clean_pixels(ds, rules=rules, ocr=None).changed
    out = roundtrip(ds)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == ("RGB" if color else "MONOCHROME2")
    assert (out.BitsAllocated, out.BitsStored, out.SamplesPerPixel) == (8, 8, 3 if color else 1)
    assert out.LossyImageCompression == "01" and out.LossyImageCompressionMethod == "ISO_10918_1"
    assert len(out.PixelData) == ROWS * COLUMNS * (3 if color else 1)
    x0, y0, x1, y1 = BANNER
    assert not out.pixel_array[y0:y1, x0:x1].any()
    assert out.pixel_array[200:300, 250:400].mean() > 20  # the sector survived decoding


def test_rle_multi_frame_is_cleaned_on_every_frame(rules: list[RegionRule]) -> None:
    frames = np.stack([draw_banner(speckle(seed))[0] for seed in range(4)])
    ds = dataset(frames, sop_class=UltrasoundMultiFrameImageStorage)
    ds.compress(RLELossless, generate_instance_uid=False)
    uid = ds.SOPInstanceUID
    assert clean_pixels(ds, rules=rules, ocr=None).changed
    out = roundtrip(ds)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and out.NumberOfFrames == 4
    assert out.SOPInstanceUID == uid  # UIDs are the profile's business, not the cleaner's
    x0, y0, x1, y1 = BANNER
    assert not out.pixel_array[:, y0:y1, x0:x1].any()
    assert np.array_equal(out.pixel_array[:, y1:], frames[:, y1:])


def test_monochrome1_is_blacked_out_with_its_maximum(rules: list[RegionRule]) -> None:
    gray, _ = draw_banner(speckle(4))
    ds = dataset((255 - gray).astype(np.uint8), photometric="MONOCHROME1")
    clean_pixels(ds, rules=rules, ocr=None)
    x0, y0, x1, y1 = BANNER
    assert (ds.pixel_array[y0:y1, x0:x1] == 255).all()


def test_palette_color_is_blacked_out_with_its_darkest_entry(rules: list[RegionRule]) -> None:
    gray, _ = draw_banner(speckle(5))
    ds = dataset(gray, photometric="PALETTE COLOR")
    ramp = np.arange(256, dtype=np.uint16)[::-1] * 257  # entry 255 is black
    for color in ("Red", "Green", "Blue"):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", ramp.astype("<u2").tobytes())
    clean_pixels(ds, rules=rules, ocr=None)
    x0, y0, x1, y1 = BANNER
    assert (ds.pixel_array[y0:y1, x0:x1] == 255).all()


def test_single_bit_secondary_capture_stays_bit_packed(rules: list[RegionRule]) -> None:
    bits = (speckle(6) > 100).astype(np.uint8)[np.newaxis]
    ds = dataset(bits, sop_class=MultiFrameSingleBitSecondaryCaptureImageStorage, modality="OT")
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    from pydicom.pixels import pack_bits
    ds.PixelData = pack_bits(bits)
    clean_pixels(ds, rules=[RegionRule("Imagebank Synthetic", ".*", ((0, 0, 640, 60),), "banner")], ocr=None)
    out = roundtrip(ds)
    assert len(out.PixelData) == ROWS * COLUMNS // 8
    assert not out.pixel_array[:60].any() and np.array_equal(out.pixel_array[60:], bits[0, 60:])


def test_undecodable_pixel_data_is_quarantined(rules: list[RegionRule]) -> None:
    ds = jpeg_dataset(color=False)
    ds.PixelData = encapsulate([b"\xff\xd8 this is not a JPEG stream \xff\xd9"])
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=rules, ocr=None)
    assert caught.value.reason == "pixel-unreadable"


# ---------------------------------------------------------------------------------------- OCR
def test_tesseract_tsv_is_parsed_into_words() -> None:
    tsv = ("level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
           "1\t1\t0\t0\t0\t0\t0\t0\t640\t480\t-1\t\n"
           "5\t1\t1\t1\t1\t1\t12\t8\t60\t12\t91.5\tDOE*JOHN\n"
           "5\t1\t1\t1\t1\t2\t80\t8\t10\t12\t40\t \n")
    assert list(parse_tsv(tsv)) == [OcrWord("DOE*JOHN", 91.5, (12, 8, 72, 20))]


def test_find_ocr_returns_none_without_the_program() -> None:
    assert find_ocr("/nonexistent/tesseract") is None


def test_words_read_in_speckle_are_not_taken_for_text() -> None:
    gray = speckle(7)
    words = [OcrWord("ae", 35.0, (300, 200, 330, 215)), OcrWord("DOE", 20.0, (12, 8, 40, 20))]
    gray[8:20, 12:40] = 0
    gray[10:18, 14:38:3] = 255  # strokes on black
    assert text_boxes(words, gray, 1) == [(8, 4, 44, 24)]


def test_ocr_reads_the_burned_in_text(ocr: TesseractOcr) -> None:
    ds, _ = ultrasound()
    assert readable_secrets(ocr, frame_gray(ds)) >= {"john", "12345678", "20240315"}


def test_ocr_cleaning_leaves_no_readable_text_and_zero_pixels(ocr: TesseractOcr) -> None:
    ds, text_boxes_drawn = ultrasound(manufacturer="ACME Medical", model="Sono 9")
    sector_before = frame_gray(ds)[100:, :].copy()
    outcome = clean_pixels(ds, rules=[], ocr=ocr)
    assert outcome.changed and outcome.method == "ocr"
    after = frame_gray(ds)
    for x0, y0, x1, y1 in text_boxes_drawn:
        assert not after[y0:y1, x0:x1].any()
    assert readable_secrets(ocr, after) == set()
    # Speckle is not mistaken for text wholesale: most of the sector is as it was.
    assert (after[100:, :] == sector_before).mean() > 0.97
    assert ds.BurnedInAnnotation == "NO"


def test_rule_and_ocr_together(ocr: TesseractOcr, rules: list[RegionRule]) -> None:
    image = Image.fromarray(draw_banner(speckle(8))[0])
    # A second copy of the name at the bottom, which the rule for the banner does not cover.
    ImageDraw.Draw(image).text((20, 440), "JOHN DOE 12345678", fill=255, font=ImageFont.load_default(size=16))
    ds = dataset(np.asarray(image))
    outcome = clean_pixels(ds, rules=rules, ocr=ocr)
    assert outcome.method == "regions:imagebank-synthetic-us-banner+ocr"
    assert readable_secrets(ocr, frame_gray(ds)) == set()


def test_rgb_image_is_cleaned_by_ocr(ocr: TesseractOcr) -> None:
    gray, drawn = draw_banner(speckle(9))
    rgb = np.stack([gray, gray, gray], axis=-1)
    rgb[..., 2] = (rgb[..., 2] * 0.6).astype(np.uint8)  # a tint, so the channels differ
    ds = dataset(rgb, photometric="RGB", manufacturer="ACME Medical")
    assert clean_pixels(ds, rules=[], ocr=ocr).changed
    for x0, y0, x1, y1 in drawn:
        assert not ds.pixel_array[y0:y1, x0:x1].any()
    assert readable_secrets(ocr, frame_gray(ds)) == set()


def test_declared_burned_in_text_that_ocr_cannot_find_is_quarantined(ocr: TesseractOcr) -> None:
    ds = dataset(speckle(10), manufacturer="ACME Medical", BurnedInAnnotation="YES")
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=[], ocr=ocr)
    assert caught.value.reason == "pixel-risk"


def test_known_identifiers_are_blacked_out_whatever_ocr_confidence(ocr: TesseractOcr) -> None:
    known = KnownIdentifiers()
    known.add_name(NAME)
    known.add_id("12345678")
    ds, drawn = ultrasound(manufacturer="ACME Medical")
    clean_pixels(ds, rules=[], ocr=ocr, known=known)
    assert readable_secrets(ocr, frame_gray(ds)) == set()


def multi_frame(lines_per_frame: Callable[[int], tuple[str, ...]],
                frames: int = 5) -> tuple[Dataset, list[tuple[int, int, int, int]]]:
    drawn = [draw_banner(speckle(20 + i), lines=lines_per_frame(i)) for i in range(frames)]
    pixels = np.stack([gray for gray, _ in drawn])
    boxes = [box for _, frame_boxes in drawn for box in frame_boxes]
    return dataset(pixels, sop_class=UltrasoundMultiFrameImageStorage, manufacturer="ACME Medical"), boxes


def test_multi_frame_ocr_reads_a_sample_and_cleans_every_frame(ocr: TesseractOcr) -> None:
    ds, drawn = multi_frame(lambda i: (NAME, MRN), frames=9)
    counting = CountingOcr(ocr)
    assert clean_pixels(ds, rules=[], ocr=counting).changed
    assert counting.calls < 9 * 2  # fewer than reading every frame once
    for index in range(9):
        assert readable_secrets(ocr, frame_gray(ds, index)) == set(), f"frame {index}"
        for x0, y0, x1, y1 in drawn:
            assert not ds.pixel_array[index, y0:y1, x0:x1].any()


def test_multi_frame_whose_text_changes_between_frames_is_quarantined(ocr: TesseractOcr) -> None:
    ds, _ = multi_frame(lambda i: (NAME, MRN) if i < 3 else ("SMITH^ANNA", "ACC 99887766"))
    with pytest.raises(Quarantined) as caught:
        clean_pixels(ds, rules=[], ocr=ocr)
    assert caught.value.reason == "pixel-text"


def test_compressed_ultrasound_is_cleaned_by_ocr(ocr: TesseractOcr) -> None:
    ds = jpeg_dataset(color=True)
    ds.Manufacturer = "ACME Medical"
    assert clean_pixels(ds, rules=[], ocr=ocr).changed
    out = roundtrip(ds)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and out.PhotometricInterpretation == "RGB"
    assert readable_secrets(ocr, frame_gray(out)) == set()


@pytest.fixture
def pydicom_ultrasound() -> Iterator[Callable[[str], Dataset]]:
    from pydicom.data import get_testdata_file

    def load(name: str) -> Dataset:
        path = get_testdata_file(name)
        assert path is not None, f"pydicom's test file {name} is missing"
        return pydicom.dcmread(path)
    yield load


@pytest.mark.parametrize("name, words", [
    ("examples_jpeg2k.dcm", ("baptist", "630p630", "78f78", "44cg43")),  # GE LOGIQ 700, JPEG 2000, 640x480
    ("examples_palette.dcm", ("5252011", "11052514", "philips")),  # Philips CX50, palette colour, 800x350
])
def test_real_scanner_banners_are_cleaned(ocr: TesseractOcr, pydicom_ultrasound: Callable[[str], Dataset],
                                          name: str, words: tuple[str, ...]) -> None:
    """pydicom's example ultrasound images carry real (anonymised) scanner banners."""
    ds = pydicom_ultrasound(name)
    assert clean_pixels(ds, rules=[], ocr=ocr).changed
    out = roundtrip(ds)
    array = out.pixel_array
    if out.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        array = apply_color_lut(array, out) // 256
    gray = (array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    text = " ".join(re.sub(r"[^0-9a-z]", "", w.text.lower()) for v, _ in ocr_views(gray) for w in ocr.words(v))
    assert not [word for word in words if word in text]
