"""Pixel-data cleaning throughput (issue: pixel data risk and cleaning, imagebank.deid.pixels).

Builds N synthetic 640x480 ultrasound images in memory (smoothed speckle sector, a name/MRN/date banner
in Pillow's built-in font, Manufacturer "Imagebank Synthetic" so the shipped region rule applies) and
times :func:`assess` + :func:`clean_pixels` on them, single process:

- region rule only (no OCR)
- OCR only (tesseract, no rule)
- region rule + OCR
- a 10-frame cine loop with OCR (frames are sampled, not all read)

and prints images/s and milliseconds per image. OCR rows are left out when tesseract (Debian:
tesseract-ocr) is not installed. Prints figures only; it asserts nothing about time.

    python benchmarks/deid_pixels.py [--images 200]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, generate_uid

from imagebank.deid.pixels import DEFAULT_RULES_PATH, assess, clean_pixels, find_ocr, load_rules

ROWS, COLUMNS = 480, 640


def ultrasound_frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.rayleigh(45, (ROWS, COLUMNS)).clip(0, 255).astype(np.uint8))
    texture = np.asarray(noise.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float64) * 1.6
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS]
    sector = (np.abs(np.arctan2(xx - COLUMNS / 2, yy + 60)) < 0.6) & (np.hypot(xx - COLUMNS / 2, yy + 60) > 140) \
        & (np.hypot(xx - COLUMNS / 2, yy + 60) < 520)
    image = Image.fromarray(np.where(sector, texture.clip(0, 200), 0).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=16)
    draw.text((12, 8), f"DOE^JOHN{seed % 97}", fill=255, font=font)
    draw.text((12, 32), f"MRN {12345678 + seed}", fill=255, font=font)
    draw.text((500, 8), "2024-03-15", fill=255, font=font)
    return np.asarray(image)


def ultrasound(seed: int, frames: int = 1) -> Dataset:
    pixels = np.stack([ultrasound_frame(seed * 100 + i) for i in range(frames)]) if frames > 1 \
        else ultrasound_frame(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.Manufacturer = "Imagebank Synthetic"
    ds.ManufacturerModelName = "SYNTH-US"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def measure(label: str, datasets: list[Dataset], clean: Callable[[Dataset], object]) -> tuple[str, int, float]:
    started = time.perf_counter()
    for ds in datasets:
        if assess(ds).at_risk:
            clean(ds)
    return label, len(datasets), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    rules = load_rules(DEFAULT_RULES_PATH)
    ocr = find_ocr()
    n = args.images
    print(f"building {n} synthetic ultrasound images (640x480, 8-bit) ...", flush=True)
    batches = [[ultrasound(seed) for seed in range(n)] for _ in range(3 if ocr else 1)]
    rows = [measure("region rule, no OCR", batches[0], lambda ds: clean_pixels(ds, rules=rules, ocr=None))]
    if ocr is None:
        print("tesseract not installed (apt-get install tesseract-ocr): OCR rows left out")
    else:
        rows.append(measure("OCR only", batches[1], lambda ds: clean_pixels(ds, rules=[], ocr=ocr)))
        rows.append(measure("region rule + OCR", batches[2], lambda ds: clean_pixels(ds, rules=rules, ocr=ocr)))
        cines = [ultrasound(seed, frames=10) for seed in range(max(1, n // 20))]
        rows.append(measure("OCR only, 10-frame cine", cines, lambda ds: clean_pixels(ds, rules=[], ocr=ocr)))
    print()
    print(f"{'case':<26} {'objects':>8} {'objects/s':>10} {'ms/object':>10}")
    for label, count, seconds in rows:
        print(f"{label:<26} {count:>8} {count / seconds:>10.1f} {1000 * seconds / count:>10.1f}")


if __name__ == "__main__":
    main()
