"""Pixel data: which images may show identity, and blacking out the text burned into them.

The header profile cannot touch what a modality drew into the pixels: ultrasound banners with the
patient's name, screen captures of a workstation, scanned request forms. PS3.15 E.3.3 (Clean Pixel Data
Option) asks that such text be removed from the pixels themselves and Burned In Annotation (0028,0301)
be set to NO afterwards. This module does that in three steps:

1. :func:`assess` decides from the header alone whether an object may carry identity in its payload
   (:class:`PixelRisk`), so objects that cannot carry any skip decoding altogether.
2. :func:`clean_pixels` blacks out the regions configured for the device (:class:`RegionRule`, loaded
   from JSON by :func:`load_rules`), then, where an OCR engine is installed, every word it can read,
   and reads the result again to confirm nothing legible is left.
3. Whatever cannot be made safe -- documents, video, faces, text that OCR still reads, an at-risk image
   with neither a rule nor OCR, pixel data that does not decode -- raises :class:`Quarantined`; it is
   never passed through.

Everything here is pure logic on a :class:`~pydicom.dataset.Dataset` and NumPy arrays except
:class:`TesseractOcr`, the adapter that runs the ``tesseract`` program (Debian ``tesseract-ocr``, which
brings ``tesseract-ocr-eng``); another engine only has to implement :class:`OcrEngine`.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess  # nosec B404 - runs tesseract, a fixed program with fixed arguments, no shell
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder, pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    MPEGTransferSyntaxes,
    SMPTEST211020UncompressedInterlacedActiveVideo,
    SMPTEST211020UncompressedProgressiveActiveVideo,
)

from imagebank.deid.errors import Quarantined
from imagebank.deid.identifiers import KnownIdentifiers, normalize
from imagebank.errors import ConfigError, ImagebankError

#: The region rules shipped with Imagebank (see the file's own description of each rule).
DEFAULT_RULES_PATH = Path(__file__).parent / "data" / "pixel-regions.json"

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: columns x0..x1-1 of rows y0..y1-1 (half-open, like slices)

# ------------------------------------------------------------------------------------------ risk tables
# Modality (0008,0060), PS3.3 C.7.3.1.1.1. These are the modalities whose images are, as a class, made by
# devices or workflows that write text into the pixels:
#   US   every scanner draws a banner (name, ID, date, institution) into the image it stores;
#   XC, ES, GM  external-camera, endoscopy and microscopy frame grabbers capture the device's screen,
#        overlays included;
#   OT, SC, DOC  "other", secondary capture (not a standard Modality value, but written by many capture
#        stations) and scanned documents: screenshots and paper, text by construction.
# SM (slide microscopy) is *not* listed as a whole: its VOLUME and THUMBNAIL images show tissue only and
# are far too large to OCR, but its LABEL and OVERVIEW images show the slide label, which carries the
# patient's name or accession number -- see _SM_LABEL_TYPES. Other modalities (CT, MR, CR/DX, XA...) are at
# risk only when the header says so (Burned In Annotation, Image Type, SOP Class).
RISKY_MODALITIES = frozenset({"US", "XC", "OT", "SC", "DOC", "ES", "GM"})

# SOP Classes whose instances are captures or photographs (PS3.4 Annex B), at risk whatever the Modality.
RISKY_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.6": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.6.1": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.3": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.3.1": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.77.1.1": "VL endoscopic",
    "1.2.840.10008.5.1.4.1.1.77.1.2": "VL microscopic",
    "1.2.840.10008.5.1.4.1.1.77.1.3": "VL microscopic",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL photographic",
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "ophthalmic photography",
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": "ophthalmic photography",
    "1.2.840.10008.5.1.4.1.1.77.1.5.5": "ophthalmic photography",
    "1.2.840.10008.5.1.4.1.1.77.1.5.6": "ophthalmic photography",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "dermoscopic photography",
}

# Photographs of the outside of the body: a face may be in them, and no cleaner here removes faces, so
# they pass only when Recognizable Visual Features (0028,0302) says NO (PS3.3 Table C.7-9).
_PHOTOGRAPH_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.77.1.4.1"})
_PHOTOGRAPH_MODALITIES = frozenset({"XC"})

# Encapsulated documents (PS3.3 A.45, A.85...): PDF, CDA, STL, OBJ, MTL. Their payload is not pixels and
# nothing here can clean it.
DOCUMENT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.104.2", "1.2.840.10008.5.1.4.1.1.104.3",
    "1.2.840.10008.5.1.4.1.1.104.4", "1.2.840.10008.5.1.4.1.1.104.5",
})
# Video: the Video Endoscopic/Microscopic/Photographic SOP Classes, and any object in an MPEG-2, H.264,
# HEVC or SMPTE ST 2110 transfer syntax (pydicom can decode none of them to frames).
VIDEO_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.2.1", "1.2.840.10008.5.1.4.1.1.77.1.4.1",
})
VIDEO_TRANSFER_SYNTAXES = frozenset({*MPEGTransferSyntaxes, SMPTEST211020UncompressedProgressiveActiveVideo,
                                     SMPTEST211020UncompressedInterlacedActiveVideo})

# Image Type (0008,0008) values that mean "a picture of a screen or a page" (PS3.3 C.7.6.1.1.2), compared
# without spaces and underscores. SECONDARY (value 2: made after the examination) is included on purpose:
# it covers console screen saves, dose reports and 3D renderings with their captions, and the header
# cannot tell those from a caption-free reformat (value 3 is not used consistently by vendors). The cost
# is that reformats are OCR'd, or quarantined where no OCR engine is installed.
#: Not "SECONDARY" alone: every CT/MR reformat (MPR, MIP) is DERIVED\SECONDARY and carries no more burned-in
#: text than its source; Burned In Annotation YES flags the ones that do.
RISKY_IMAGE_TYPE_VALUES = frozenset({
    "SCREENSAVE", "SCREENSHOT", "SCREENCAPTURE", "CAPTURE", "DOSEINFO", "DOSEREPORT", "REPORT",
    "SUMMARY", "LABEL",
})
_SM_LABEL_TYPES = frozenset({"LABEL", "OVERVIEW"})  # PS3.3 C.8.12.4.1.1, VL Whole Slide Microscopy

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# ------------------------------------------------------------------------------------------ OCR tuning
#: Words read with at least this confidence (0-100) and two letters or digits are text wherever they lie.
HIGH_CONFIDENCE = 60.0
#: Three letters read with this confidence over tissue are taken as legible text: OCR's "words" in
#: upscaled speckle reach 77 %, annotation it reads properly 85-96 %.
LEGIBLE_CONFIDENCE = 80.0
#: A word on a flat background with high-contrast strokes is text at any confidence: OCR reads real
#: annotation poorly at small sizes ("630P63!" at 30 %), while its "words" in tissue lack one or the
#: other. Measured on pydicom's ultrasound examples: real words have >= 40 % of the box within
#: _FLAT_TOLERANCE grey levels of its most common level and >= 13 % at _INK_CONTRAST levels from it;
#: words read into tissue stay under 7 % ink wherever the background is that flat.
FLAT_FRACTION = 0.4
INK_FRACTION = 0.1
#: ...and no taller than this (pixels): a "word" 85 px high read at 9 % is an arm at the edge of an MR
#: slice, not a caption; larger type is read with high confidence anyway.
MAX_STROKE_HEIGHT = 40
_FLAT_TOLERANCE = 12
_INK_CONTRAST = 64
#: OCR is run on the image upscaled so its longer side reaches about this many pixels (at most 3x):
#: tesseract misses text under ~10 px cap height, which is common in 640x480 ultrasound banners.
OCR_TARGET_SIZE = 1280
MAX_UPSCALE = 3
#: Rounds of read-and-black-out; a legible word still read in the last one is quarantined.
MAX_OCR_PASSES = 4
# Multi-frame images: a text box whose pixels change between frames means the text is not static.
_DYNAMIC_TEXT_TOLERANCE = 32  # grey levels: JPEG noise between frames stays well below
_DYNAMIC_TEXT_FRACTION = 0.25  # of a text box's pixels changed in another frame: the text is not static


@dataclass(frozen=True)
class PixelRisk:
    """What the header says about the payload.

    ``kind``: ``"none"`` (no pixel data), ``"image"``, ``"document"`` (an encapsulated PDF/CDA/STL/OBJ/MTL
    or other non-image payload) or ``"video"``. ``reasons`` names why the object is at risk, in words
    taken from the standard (never a value about the patient). ``recognizable``: the picture may show a
    face (Recognizable Visual Features YES, or a photograph that does not say NO): it cannot be cleaned.
    """

    at_risk: bool
    kind: str
    reasons: tuple[str, ...] = ()
    recognizable: bool = False


@dataclass(frozen=True)
class PixelOutcome:
    """What :func:`clean_pixels` did: ``changed`` pixels, by ``method``, in ``boxes`` (frame coordinates).

    ``method`` is ``"none"``, ``"regions:<rule>[,<rule>...]"``, ``"ocr"`` or ``"regions:<rules>+ocr"``
    ("ocr" is reported when OCR ran, even if it found nothing to black out).
    """

    changed: bool
    method: str
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class OcrWord:
    """One word read by an OCR engine: its text, confidence (0-100) and box in the image it was given."""

    text: str
    confidence: float
    box: Box


class OcrEngine(Protocol):
    """An OCR engine: words found in an 8-bit greyscale image (rows x columns)."""

    def words(self, image: np.ndarray) -> list[OcrWord]: ...


class OcrError(ImagebankError):
    """The OCR engine failed (crashed, timed out, missing language data)."""


# ------------------------------------------------------------------------------------------ assessment
def assess(ds: Dataset) -> PixelRisk:
    """Whether ``ds``'s payload may carry identity, from its header alone (no pixel is decoded).

    PS3.15 E.3.3 (Clean Pixel Data Option): identifying text may be burned into the pixels, and the
    standard leaves it to the de-identifier to find out where. The header evidence used, strongest first:
    Burned In Annotation (0028,0301) YES and Recognizable Visual Features (0028,0302) YES (both General
    Image Module, PS3.3 C.7.6.1, Table C.7-9); a document or video payload; a capture or photograph SOP
    Class; a modality that draws text into its images (:data:`RISKY_MODALITIES`); an Image Type value
    meaning a screen capture (:data:`RISKY_IMAGE_TYPE_VALUES`, PS3.3 C.7.6.1.1.2). Burned In Annotation NO
    does not clear any of the others: it is written by the device, which knows nothing of later captures.
    """
    sop_class = str(ds.get("SOPClassUID", "") or "")
    transfer_syntax = _transfer_syntax(ds)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    image_type = [str(v).strip().upper() for v in _values(ds.get("ImageType"))]
    reasons: list[str] = []

    if sop_class in DOCUMENT_SOP_CLASSES or "EncapsulatedDocument" in ds:
        return PixelRisk(True, "document", ("encapsulated document",))
    if sop_class in VIDEO_SOP_CLASSES or transfer_syntax in VIDEO_TRANSFER_SYNTAXES:
        return PixelRisk(True, "video", ("video",))
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        return PixelRisk(False, "none")

    if _code_string(ds, "BurnedInAnnotation") == "YES":
        reasons.append("Burned In Annotation is YES")
    recognizable = False
    features = _code_string(ds, "RecognizableVisualFeatures")
    if features == "YES":
        reasons.append("Recognizable Visual Features is YES")
        recognizable = True
    elif features != "NO" and (sop_class in _PHOTOGRAPH_SOP_CLASSES or modality in _PHOTOGRAPH_MODALITIES):
        reasons.append("photograph without Recognizable Visual Features NO")
        recognizable = True
    if sop_class in RISKY_SOP_CLASSES:
        reasons.append(f"{RISKY_SOP_CLASSES[sop_class]} SOP Class")
    if modality in RISKY_MODALITIES:
        reasons.append(f"modality {modality}")
    if modality == "SM" and len(image_type) >= 3 and image_type[2] in _SM_LABEL_TYPES:
        reasons.append(f"slide microscopy {image_type[2].lower()} image")
    screen = sorted({v for v in image_type if v.replace(" ", "").replace("_", "") in RISKY_IMAGE_TYPE_VALUES})
    if screen:
        reasons.append("Image Type " + "/".join(screen))
    return PixelRisk(bool(reasons), "image", tuple(reasons), recognizable)


# ------------------------------------------------------------------------------------------ region rules
@dataclass(frozen=True)
class RegionRule:
    """Boxes to black out in every image of one device (and, optionally, one matrix size).

    ``manufacturer`` and ``model`` are regular expressions matched case-insensitively against the *whole*
    Manufacturer (0008,0070) and Manufacturer's Model Name (0008,1090), surrounding spaces ignored: whole
    matches keep "GE" from matching "VERGE"; write ``"GE .*"`` for a prefix, ``".*"`` for any, and escape
    dots (``"G\\.E\\. Medical Systems"``). ``rows``/``columns`` None match any size. ``regions`` are
    ``(x0, y0, x1, y1)`` pixel boxes, half-open like Python slices (``(0, 0, 640, 60)`` is the top 60
    rows of a 640-wide image), clipped to the image.
    """

    manufacturer: str
    model: str
    regions: tuple[Box, ...]
    name: str
    rows: int | None = None
    columns: int | None = None
    _manufacturer_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _model_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for label, pattern in (("manufacturer", self.manufacturer), ("model", self.model)):
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise ConfigError(f"pixel region rule {self.name!r}: {label} is not a valid regular "
                                  f"expression ({exc})") from None
            object.__setattr__(self, f"_{label}_re", compiled)
        if not self.regions:
            raise ConfigError(f"pixel region rule {self.name!r}: regions is empty")
        for box in self.regions:
            if len(box) != 4 or not all(type(v) is int and v >= 0 for v in box) \
                    or box[2] <= box[0] or box[3] <= box[1]:
                raise ConfigError(f"pixel region rule {self.name!r}: region {list(box)} is not "
                                  "[x0, y0, x1, y1] with 0 <= x0 < x1 and 0 <= y0 < y1")

    def matches(self, ds: Dataset) -> bool:
        manufacturer = str(ds.get("Manufacturer", "") or "").strip()
        model = str(ds.get("ManufacturerModelName", "") or "").strip()
        return (self._manufacturer_re.fullmatch(manufacturer) is not None
                and self._model_re.fullmatch(model) is not None
                and (self.rows is None or self.rows == _int(ds.get("Rows")))
                and (self.columns is None or self.columns == _int(ds.get("Columns"))))


_RULE_KEYS = {"name", "manufacturer", "model", "rows", "columns", "regions", "comment"}


def load_rules(path: str | Path) -> list[RegionRule]:
    """Region rules from a JSON file: ``{"rules": [{"name", "manufacturer", "model", "regions", ...}]}``.

    Optional keys per rule: ``rows``, ``columns``, ``comment`` (where the coordinates come from: every
    rule should say). Raises :class:`~imagebank.errors.ConfigError` naming the file, rule and field.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pixel region rules {path}: cannot read ({exc})") from None
    rules_data = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules_data, list):
        raise ConfigError(f"pixel region rules {path}: expected an object with a 'rules' list")
    rules = []
    for index, item in enumerate(rules_data):
        where = f"pixel region rules {path}, rule {index}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected an object")
        unknown = set(item) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for key in ("name", "manufacturer", "model"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ConfigError(f"{where}: '{key}' must be a non-empty string")
        for key in ("rows", "columns"):
            if item.get(key) is not None and (not isinstance(item[key], int) or item[key] <= 0):
                raise ConfigError(f"{where}: '{key}' must be a positive integer or null")
        regions = item.get("regions")
        if not isinstance(regions, list) or not all(isinstance(r, list) for r in regions):
            raise ConfigError(f"{where}: 'regions' must be a list of [x0, y0, x1, y1] lists")
        rules.append(RegionRule(manufacturer=item["manufacturer"], model=item["model"],
                                regions=cast(tuple[Box, ...], tuple(tuple(r) for r in regions)),
                                name=item["name"], rows=item.get("rows"), columns=item.get("columns")))
    return rules


# ------------------------------------------------------------------------------------------ cleaning
def clean_pixels(ds: Dataset, *, rules: Sequence[RegionRule], ocr: OcrEngine | None,
                 known: KnownIdentifiers | None = None) -> PixelOutcome:
    """Black out burned-in text in ``ds``'s pixels, in place, or raise :class:`Quarantined`.

    Objects :func:`assess` finds not at risk are returned untouched (not even decoded). Documents and
    video raise ``pixel-document``/``pixel-video``, possible faces ``pixel-recognizable``. An at-risk image
    gets every matching rule's regions blacked out, then, if ``ocr`` is given, every word OCR reads
    (with a margin), and is read again until nothing legible remains (``pixel-text`` after
    :data:`MAX_OCR_PASSES` rounds). With neither a matching rule nor OCR it raises ``pixel-risk``, as it
    does when the header declares burned-in annotation that no rule covers and OCR cannot find. Pixel
    data that cannot be decoded raises ``pixel-unreadable``.

    Multi-frame images: OCR reads the first, middle and last frames and the union of what it finds is
    blacked out on every frame. That rests on burned-in text being static (a cine loop's banner does not
    move); it is checked twice -- the text boxes must look the same in every frame, and the confirming
    read also covers the frames at a quarter and three quarters -- and the image is quarantined when
    either check fails.

    Cleaned pixels are written back uncompressed (Explicit VR Little Endian) with Bits Allocated/Stored
    unchanged; colour decoded from YBR is stored as RGB. Burned In Annotation is set to NO, and the Icon
    Image Sequence, a thumbnail of the uncleaned pixels, is removed. ``known`` (this patient's names, IDs
    and dates) makes any word matching one of them text whatever its confidence.

    The caller records the Clean Pixel Data Option (PS3.15 E.3.3, CID 7050 code 113101) when this returns.
    """
    risk = assess(ds)
    if risk.kind == "document":
        raise Quarantined("pixel-document", "encapsulated document: its content cannot be cleaned here")
    if risk.kind == "video":
        raise Quarantined("pixel-video", "video: no cleaner exists for video pixel data")
    if not risk.at_risk:
        return PixelOutcome(False, "none")
    if risk.recognizable:
        raise Quarantined("pixel-recognizable", "the image may show a face (" + "; ".join(risk.reasons) + "); "
                          "faces cannot be removed, set Recognizable Visual Features to NO after review")
    declared = _code_string(ds, "BurnedInAnnotation") == "YES"
    matching = [rule for rule in rules if rule.matches(ds)]
    if not matching and ocr is None:
        raise Quarantined("pixel-risk", f"pixel data may hold burned-in identity ({'; '.join(risk.reasons)}): "
                          f"configure a region rule for {_device(ds)} or install tesseract-ocr")

    image = _decode(ds)
    boxes: list[Box] = []
    for rule in matching:
        for region in rule.regions:
            clipped = _clip(region, image.rows, image.columns)
            if clipped is not None:
                boxes.append(clipped)
    image.black_out(boxes)
    method = "regions:" + ",".join(rule.name for rule in matching) if matching else ""

    if ocr is not None:
        ocr_boxes = _clean_text(image, ocr, _identifier_tokens(known) if known is not None else frozenset())
        boxes.extend(ocr_boxes)
        method = f"{method}+ocr" if method else "ocr"
        if declared and not matching and not ocr_boxes:
            raise Quarantined("pixel-risk", f"Burned In Annotation is YES but OCR finds no text: configure a "
                              f"region rule for {_device(ds)}")
    if boxes:
        image.store(ds)
    ds.BurnedInAnnotation = "NO"
    if "IconImageSequence" in ds:
        del ds.IconImageSequence
    return PixelOutcome(bool(boxes), method, tuple(boxes))


# ------------------------------------------------------------------------------------------ OCR logic
def ocr_views(gray: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The images OCR reads for one 8-bit greyscale frame, each with its upscale factor.

    Two readings catch more than one: the frame as it is, and upscaled (to about
    :data:`OCR_TARGET_SIZE`) and inverted, since tesseract is trained on dark text on light paper while
    annotation is usually light on dark. Measured on pydicom's ultrasound examples, each reading finds
    words the other misses.
    """
    rows, columns = gray.shape
    scale = max(1, min(MAX_UPSCALE, math.ceil(OCR_TARGET_SIZE / max(rows, columns, 1))))
    inverted = Image.fromarray(255 - gray)
    if scale > 1:
        inverted = inverted.resize((columns * scale, rows * scale), Image.Resampling.LANCZOS)
    return [(gray, 1), (np.asarray(inverted), scale)]


def text_boxes(words: Iterable[OcrWord], gray: np.ndarray, scale: int,
               identifiers: frozenset[str] = frozenset()) -> list[Box]:
    """The boxes (frame coordinates, margin added) of the ``words`` that are text rather than texture.

    OCR "reads" speckle and tissue as short words at low confidence; blacking those out would punch holes
    in the image, and a confirming read would find new ones every time. A word counts as text when it has
    a letter or digit and either matches one of the patient's ``identifiers``, or was read with
    :data:`HIGH_CONFIDENCE` and has two letters or digits, or looks like strokes on a flat background
    (:data:`FLAT_FRACTION`, :data:`INK_FRACTION`) whatever its confidence.
    """
    return [box for box, _ in _text_words(words, gray, scale, identifiers)]


def _text_words(words: Iterable[OcrWord], gray: np.ndarray, scale: int,
                identifiers: frozenset[str]) -> list[tuple[Box, bool]]:
    """See :func:`text_boxes`; each box comes with whether its word is legible -- one of the patient's
    identifiers, or three letters or digits drawn as strokes on a flat background or read with
    :data:`LEGIBLE_CONFIDENCE` -- which is what the last confirming read must not find."""
    rows, columns = gray.shape
    found = []
    for word in words:
        alnum = sum(ch.isalnum() for ch in word.text)
        if not alnum:
            continue
        x0, y0, x1, y1 = word.box
        box = _clip((x0 // scale, y0 // scale, -(-x1 // scale), -(-y1 // scale)), rows, columns)
        if box is None:
            continue
        identifier = _matches_identifier(word.text, identifiers)
        strokes = box[3] - box[1] <= MAX_STROKE_HEIGHT and _looks_like_text(gray, box)
        if not (identifier or strokes or (word.confidence >= HIGH_CONFIDENCE and alnum >= 2)):
            continue
        margin = max(2, (box[3] - box[1]) // 3)
        widened = _clip((box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin), rows, columns)
        if widened is not None:
            found.append((widened, identifier or (alnum >= 3 and (strokes or word.confidence >= LEGIBLE_CONFIDENCE))))
    return found


def _clean_text(image: _Image, ocr: OcrEngine, identifiers: frozenset[str]) -> list[Box]:
    """Read, black out, read again; return the boxes blacked out. See :func:`clean_pixels`.

    A blacked-out box often uncovers its neighbours to OCR (a line it first read as one word is now read
    from the next word on), so cleaning takes a few rounds; only the last round quarantines, and only for
    a legible word: fragments of one or two characters left beside a black box are blacked out too but
    cannot identify anyone.
    """
    frames = image.frames
    first_read = sorted({0, frames // 2, frames - 1})
    confirm_read = sorted({*first_read, frames // 4, (3 * frames) // 4})
    cleaned: list[Box] = []
    for round_ in range(MAX_OCR_PASSES):
        found: list[tuple[int, Box, bool]] = []
        for index in first_read if round_ == 0 else confirm_read:
            gray = image.gray(index)
            for view, scale in ocr_views(gray):
                try:
                    words = ocr.words(view)
                except OcrError as exc:
                    raise Quarantined("pixel-ocr", f"OCR failed on an at-risk image: {exc}") from None
                found.extend((index, box, legible) for box, legible in _text_words(words, gray, scale, identifiers))
        if not found:
            break
        if round_ == MAX_OCR_PASSES - 1 and any(legible for _, _, legible in found):
            raise Quarantined("pixel-text", f"OCR still reads text after {MAX_OCR_PASSES - 1} rounds of "
                              "blacking out: review the image or configure a region rule")
        if round_ == 0 and frames > 1:
            _check_static(image, [(index, box) for index, box, _ in found])
        boxes = [box for _, box, _ in found]
        image.black_out(boxes)
        cleaned.extend(boxes)
    return cleaned


def _check_static(image: _Image, found: list[tuple[int, Box]]) -> None:
    """Quarantine when a text box on one frame holds something else on another: the text is not static.

    Only boxes on a flat background are compared (text on the black around a cine sector should be pixel
    for pixel the same in every frame); boxes over moving tissue are expected to change.
    """
    grays: dict[int, np.ndarray] = {}
    for index, box in found:
        if index not in grays:
            grays[index] = image.gray(index)
        if not _looks_like_text(grays[index], box):
            continue
        x0, y0, x1, y1 = box
        reference = grays[index][y0:y1, x0:x1].astype(np.int16)
        for other in range(image.frames):
            if other not in grays:
                grays[other] = image.gray(other)
            changed = np.abs(grays[other][y0:y1, x0:x1].astype(np.int16) - reference) > _DYNAMIC_TEXT_TOLERANCE
            if changed.mean() > _DYNAMIC_TEXT_FRACTION:
                raise Quarantined("pixel-text", "burned-in text differs between frames, so reading a sample of "
                                  "frames cannot prove every frame clean")


def _looks_like_text(gray: np.ndarray, box: Box) -> bool:
    """Strokes on a flat background: see :data:`FLAT_FRACTION` and :data:`INK_FRACTION`."""
    x0, y0, x1, y1 = box
    region = gray[y0:y1, x0:x1]
    if region.size == 0:
        return False
    mode = int(np.argmax(np.bincount(region.ravel(), minlength=256)))
    distance = np.abs(region.astype(np.int16) - mode)
    return (float((distance <= _FLAT_TOLERANCE).mean()) >= FLAT_FRACTION
            and float((distance >= _INK_CONTRAST).mean()) >= INK_FRACTION)


def _alnum(text: str) -> str:
    return "".join(ch for ch in normalize(text) if ch.isalnum())


def _identifier_tokens(known: KnownIdentifiers) -> frozenset[str]:
    """The patient's identifiers as OCR would print them: letters and digits only, lower case."""
    tokens = {_alnum(s) for s in known.strings()}
    for date in known.dates:
        y, m, d = f"{date.year:04d}", f"{date.month:02d}", f"{date.day:02d}"
        tokens.update({y + m + d, m + d + y, d + m + y, m + d + y[2:], d + m + y[2:]})
    return frozenset(t for t in tokens if len(t) >= 3)


def _matches_identifier(text: str, identifiers: frozenset[str]) -> bool:
    word = _alnum(text)
    if len(word) < 3 or not identifiers:
        return False
    return any(word == token or (len(word) >= 4 and (word in token or token in word)) for token in identifiers)


# ------------------------------------------------------------------------------------------ pixel access
class _Image:
    """Decoded pixel data as (frames, rows, columns, samples), with what is needed to write it back."""

    def __init__(self, ds: Dataset, array: np.ndarray, photometric: str, keyword: str) -> None:
        self.ds = ds
        self.keyword = keyword
        self.photometric = photometric
        self.rows = _int(ds.get("Rows"))
        self.columns = _int(ds.get("Columns"))
        self.samples = _int(ds.get("SamplesPerPixel")) or 1
        self.frames = max(1, _int(ds.get("NumberOfFrames")) or 1)
        self.array = np.array(array).reshape(self.frames, self.rows, self.columns, self.samples)
        self.fill = self._black()

    def _black(self) -> Any:
        """The stored value that displays as black: PS3.3 C.7.6.3.1.2 (Photometric Interpretation)."""
        signed = self.array.dtype.kind == "i"
        if self.photometric == "MONOCHROME1":  # minimum is white
            bits = _int(self.ds.get("BitsStored")) or self.array.dtype.itemsize * 8
            return self.array.max() if signed or self.array.dtype.kind == "f" else (1 << bits) - 1
        if self.photometric == "PALETTE COLOR":
            return self._darkest_palette_entry()
        if self.samples == 1 and (signed or self.array.dtype.kind == "f"):
            return min(self.array.min(), 0)
        return 0

    def _darkest_palette_entry(self) -> int:
        descriptor = list(self.ds.RedPaletteColorLookupTableDescriptor)
        entries = descriptor[0] or 65536
        first = descriptor[1]
        indices = np.arange(first, first + entries).astype(self.array.dtype)
        rgb = apply_color_lut(indices, self.ds).astype(np.float64)
        return int(indices[int(np.argmin(rgb @ np.array([0.299, 0.587, 0.114])))])

    def black_out(self, boxes: Iterable[Box]) -> None:
        for x0, y0, x1, y1 in boxes:
            self.array[:, y0:y1, x0:x1, :] = self.fill

    def gray(self, index: int) -> np.ndarray:
        """Frame ``index`` as 8-bit greyscale the way a viewer would first show it (for OCR only)."""
        frame = self.array[index]
        if self.photometric == "PALETTE COLOR":
            rgb = apply_color_lut(frame[..., 0], self.ds).astype(np.float64)
            return _to_uint8(rgb @ np.array([0.299, 0.587, 0.114]))
        if self.samples == 3:
            return _to_uint8(frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
        values = frame[..., 0].astype(np.float64)
        values = values * _float(self.ds.get("RescaleSlope"), 1.0) + _float(self.ds.get("RescaleIntercept"), 0.0)
        center = _float(_first(self.ds.get("WindowCenter")), math.nan)
        width = _float(_first(self.ds.get("WindowWidth")), math.nan)
        if math.isfinite(center) and math.isfinite(width) and width >= 1:
            # PS3.3 C.11.2.1.2.1: the LINEAR VOI function.
            gray = np.clip((values - (center - 0.5)) / max(width - 1, 1) + 0.5, 0, 1) * 255
        else:
            gray = _to_uint8(values).astype(np.float64)
        if self.photometric == "MONOCHROME1":
            gray = 255 - gray
        return gray.astype(np.uint8)

    def store(self, ds: Dataset) -> None:
        """Write the pixels back uncompressed, in the dataset's own layout (see :func:`clean_pixels`)."""
        original = _transfer_syntax(ds)
        bits_allocated = _int(ds.get("BitsAllocated"))
        if self.keyword == "PixelData" and bits_allocated == 1:
            data = pack_bits(self.array.ravel())
            vr = "OB"
        elif self.keyword == "PixelData":
            data = self.array.astype(self.array.dtype.newbyteorder("<"), copy=False).tobytes()
            vr = "OB" if bits_allocated <= 8 else "OW"
        else:
            data = self.array.astype("<f4" if self.keyword == "FloatPixelData" else "<f8").tobytes()
            vr = "OF" if self.keyword == "FloatPixelData" else "OD"
        if len(data) % 2:
            data += b"\x00"
        del ds[self.keyword]
        ds.add_new(self.keyword, vr, data)
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in ds:
                del ds[keyword]
        ds.PhotometricInterpretation = self.photometric
        if self.samples > 1:
            ds.PlanarConfiguration = 0
        if getattr(ds, "file_meta", None) is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        # PS3.3 C.7.6.1.1.5: once lossy compressed, always flagged, even when stored uncompressed.
        lossy_method = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1",
                        JPEGLSNearLossless: "ISO_14495_1"}.get(original) if original else None
        if lossy_method and "LossyImageCompression" not in ds:
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionMethod = lossy_method


def _decode(ds: Dataset) -> _Image:
    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    transfer_syntax = _transfer_syntax(ds)
    if transfer_syntax is None:
        raise Quarantined("pixel-unreadable", "no Transfer Syntax UID: the pixel data cannot be decoded")
    try:
        options: dict[str, Any] = {"as_rgb": True}  # YBR is converted: the cleaned copy is stored as RGB
        array, meta = get_decoder(transfer_syntax).as_array(ds, **options)
        return _Image(ds, array, str(meta.get("photometric_interpretation") or ds.PhotometricInterpretation),
                      keyword)
    except Quarantined:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure: the pixels cannot be proven clean
        raise Quarantined("pixel-unreadable", f"the pixel data cannot be decoded ({type(exc).__name__})") from None


# ------------------------------------------------------------------------------------------ tesseract
class TesseractOcr:
    """The ``tesseract`` program (Debian: ``tesseract-ocr``, English data in ``tesseract-ocr-eng``).

    Each call writes the image as PNG to tesseract's standard input and reads word boxes from its TSV
    output; no file is written. Page segmentation mode 11 ("sparse text") looks for words anywhere, in no
    order, which is what annotation scattered around an image is. ``OMP_THREAD_LIMIT=1``: tesseract's
    OpenMP threads make small images slower, and the de-identification workers are parallel already.
    """

    def __init__(self, executable: str, *, language: str = "eng", timeout: float = 120.0) -> None:
        self.executable = executable
        self.language = language
        self.timeout = timeout

    def words(self, image: np.ndarray) -> list[OcrWord]:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
        command = [self.executable, "stdin", "stdout", "-l", self.language, "--psm", "11", "--dpi", "70", "tsv"]
        try:
            result = subprocess.run(  # nosec B603 - fixed arguments, no shell
                command, input=buffer.getvalue(), capture_output=True, timeout=self.timeout, check=False,
                env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OcrError(f"tesseract did not run ({type(exc).__name__})") from None
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OcrError(f"tesseract exited with status {result.returncode}: {detail[-1] if detail else ''}")
        return list(parse_tsv(result.stdout.decode("utf-8", "replace")))


def parse_tsv(text: str) -> Iterator[OcrWord]:
    """Words (level 5 rows with text) of tesseract's TSV output."""
    for line in text.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 12 or parts[0] != "5" or not parts[11].strip():
            continue
        left, top, width, height = (int(p) for p in parts[6:10])
        yield OcrWord(parts[11].strip(), float(parts[10]), (left, top, left + width, top + height))


def find_ocr(executable: str = "tesseract", *, language: str = "eng") -> TesseractOcr | None:
    """The tesseract engine if the program and its ``language`` data are installed, else None."""
    path = shutil.which(executable)
    if path is None:
        return None
    try:
        result = subprocess.run([path, "--list-langs"], capture_output=True, timeout=30,  # nosec B603
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    languages = result.stdout.decode("utf-8", "replace").split()
    if result.returncode != 0 or language not in languages:
        return None
    return TesseractOcr(path, language=language)


# ------------------------------------------------------------------------------------------ helpers
def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(value)) if value else None


def _device(ds: Dataset) -> str:
    manufacturer = str(ds.get("Manufacturer", "") or "").strip() or "(no Manufacturer)"
    model = str(ds.get("ManufacturerModelName", "") or "").strip() or "(no Manufacturer's Model Name)"
    return f"{manufacturer} / {model} ({_int(ds.get('Columns'))}x{_int(ds.get('Rows'))})"


def _code_string(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def _first(value: object) -> object:
    values = _values(value)
    return values[0] if values else None


def _int(value: object) -> int:
    try:
        return int(str(value)) if value not in (None, "") else 0
    except ValueError:
        return 0


def _float(value: object, default: float) -> float:
    try:
        return float(str(value)) if value not in (None, "") else default
    except ValueError:
        return default


def _to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _clip(box: Sequence[int], rows: int, columns: int) -> Box | None:
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, x0), min(columns, x1)
    y0, y1 = max(0, y0), min(rows, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
