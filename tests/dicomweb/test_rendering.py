"""The rendering pipeline (PS3.4 N.2) through its lookup table gives the pixels of the full-frame pipeline."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imagebank.dicomweb import rendering

OPTIONS = [rendering.RenderOptions(), rendering.RenderOptions(window=(40.0, 400.0, "LINEAR")),
           rendering.RenderOptions(window=(-600.0, 1500.0, "SIGMOID")),
           rendering.RenderOptions(window=(100.0, 1.0, "LINEAR_EXACT"))]


def _variants() -> list[tuple[str, Dataset, np.ndarray]]:
    out = []
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEGLSNearLossless_08.dcm", "rtdose_1frame.dcm", "JPEG2000.dcm"):
        path = get_testdata_file(name)
        assert path is not None, f"pydicom's test file {name} is missing"
        ds = pydicom.dcmread(path)
        frame = ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) == 1 else ds.pixel_array[0]
        header = pydicom.dcmread(path, stop_before_pixels=True)
        out.append((name, header, frame))
        bare = header.copy()
        for keyword in ("WindowCenter", "WindowWidth"):
            if keyword in bare:
                delattr(bare, keyword)
        out.append((f"{name} without window", bare, frame))
    ct = out[0][1]
    inverted = ct.copy()
    inverted.PhotometricInterpretation = "MONOCHROME1"
    out.append(("MONOCHROME1", inverted, out[0][2]))
    negative = ct.copy()
    negative.RescaleSlope, negative.RescaleIntercept = -2.5, 100
    out.append(("negative slope", negative, out[0][2]))
    voi = out[1][1].copy()  # CT without window, a VOI LUT instead (PS3.3 C.11.2)
    lut = Dataset()
    lut.LUTDescriptor = [256, -512, 16]
    lut.LUTData = [int(v) for v in np.linspace(0, 4095, 256)]
    voi.VOILUTSequence = Sequence([lut])
    out.append(("VOI LUT", voi, out[0][2]))
    modality = ct.copy()  # a Modality LUT: rendered the slow way, same pixels either way
    mlut = Dataset()
    mlut.LUTDescriptor = [1024, 0, 16]
    mlut.ModalityLUTType = "HU"
    mlut.LUTData = [int(v) for v in np.linspace(0, 2000, 1024)]
    modality.ModalityLUTSequence = Sequence([mlut])
    del modality.RescaleSlope, modality.RescaleIntercept
    out.append(("Modality LUT", modality, out[0][2]))
    return out


@pytest.mark.parametrize("label, ds, frame", _variants(), ids=lambda v: v if isinstance(v, str) else "")
def test_lookup_table_rendering_equals_the_full_frame_pipeline(label: str, ds: Dataset, frame: np.ndarray) -> None:
    for options in OPTIONS:
        fast = rendering._grayscale(ds, frame, options)
        full = rendering._grayscale_values(ds, frame, options)
        assert fast.dtype == np.uint8 and np.array_equal(fast, full), (label, options)


def test_rendered_png_of_a_ct_slice_is_the_windowed_image() -> None:
    from PIL import Image

    data = open(get_testdata_file("CT_small.dcm"), "rb").read()  # type: ignore[arg-type]
    image = Image.open(io.BytesIO(rendering.render(data, 1, rendering.RenderOptions(media_type="image/png"))))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert image.size == (ds.Columns, ds.Rows) and image.mode == "L"
    assert np.array_equal(np.asarray(image), rendering._grayscale_values(ds, ds.pixel_array, rendering.RenderOptions()))


def _ct_small() -> bytes:
    return open(get_testdata_file("CT_small.dcm"), "rb").read()  # type: ignore[arg-type]


def _saved(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize("frame", [0, 2, 16])
def test_a_frame_the_instance_lacks_is_named(frame: int) -> None:
    single = _ct_small()
    multi = open(get_testdata_file("rtdose.dcm"), "rb").read()  # type: ignore[arg-type]  # 15 frames
    data, count = (multi, 15) if frame == 16 else (single, 1)
    with pytest.raises(rendering.CannotRender, match=f"frame {frame} does not exist: the instance has {count} frame"):
        rendering.render(data, frame, rendering.RenderOptions())


def test_each_frame_of_a_multi_frame_instance_is_its_own_image() -> None:
    from PIL import Image

    data = open(get_testdata_file("rtdose.dcm"), "rb").read()  # type: ignore[arg-type]
    ds = pydicom.dcmread(io.BytesIO(data))
    for number in (1, 15):
        png = rendering.render(data, number, rendering.RenderOptions(media_type="image/png"))
        expected = rendering._grayscale_values(ds, ds.pixel_array[number - 1], rendering.RenderOptions())
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


def test_what_cannot_be_rendered_says_why() -> None:
    no_pixels = pydicom.dcmread(io.BytesIO(_ct_small()))
    del no_pixels.PixelData
    no_rows = pydicom.dcmread(io.BytesIO(_ct_small()))
    del no_rows.Rows
    short = pydicom.dcmread(io.BytesIO(_ct_small()))
    short.PixelData = short.PixelData[:1000]
    for ds, reason in [(no_pixels, "the pixel data cannot be decoded"),
                       (no_rows, "the instance has no image to render"),
                       (short, "the pixel data cannot be decoded")]:
        with pytest.raises(rendering.CannotRender, match=reason):
            rendering.render(_saved(ds), 1, rendering.RenderOptions())
