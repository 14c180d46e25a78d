"""Rendered images and thumbnails (PS3.18 8.3.5 and 10.4.1.1.3): pixel data -> PNG or JPEG.

The grayscale pipeline of PS3.4 Annex N: Modality LUT (Rescale Slope/Intercept or LUT), then the VOI
(the ``window`` parameter, else the instance's window or VOI LUT, else the frame's own range), then
MONOCHROME1 inverted so that white is high. Colour images (RGB, YBR decoded to RGB, palette colour) are
sent as colour. Pure: takes a PS3.10 file's bytes, returns the encoded image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


class CannotRender(ValueError):
    """The instance has no image to render, or the parameters are invalid; the text says which."""


class NoSuchFrame(CannotRender):
    """The instance has no frame of the requested number (a missing resource, not a refusal)."""


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    #: ``(center, width, function)`` from ``window=``; ``None``: the instance's own VOI.
    window: tuple[float, float, str] | None = None
    #: ``(width, height)`` to fit inside, keeping the aspect ratio; ``None``: full size.
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_window(text: str | None) -> tuple[float, float, str] | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise CannotRender(f"window={text!r}: expected center,width[,function]") from None
    function = (parts[2] if len(parts) > 2 else "linear").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise CannotRender(f"window function {parts[2]!r} is not linear, linear_exact or sigmoid")
    if width <= 0:
        raise CannotRender("window width must be positive")
    return center, width, function


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        width, height = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise CannotRender(f"viewport={text!r}: expected width,height") from None
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise CannotRender("viewport sizes must be between 1 and 8192")
    return width, height


def parse_quality(text: str | None) -> int:
    if not text:
        return 90
    try:
        quality = int(text)
    except ValueError:
        raise CannotRender(f"quality={text!r}: expected an integer 1-100") from None
    if not 1 <= quality <= 100:
        raise CannotRender("quality must be between 1 and 100")
    return quality


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = max(high - low, 1e-6)
    return (np.clip((values - low) / span, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


#: Integer frames whose stored values span at most this many are rendered through a lookup table.
_LUT_MAX_RANGE = 1 << 20


def _grayscale(ds: pydicom.Dataset, frame: np.ndarray, options: RenderOptions) -> np.ndarray:
    """PS3.4 N.2 grayscale pipeline (Modality LUT, VOI, MONOCHROME1 inversion) to 8-bit display values.

    Every step is a function of the stored value alone, so an integer frame is rendered by running the
    pipeline once over the values between its smallest and largest (a few thousand for CT) and looking each
    pixel up in that table: the same pixels as running it over the whole frame, at a fraction of the cost.
    Where a step looks at the frame as a whole (the auto-range without a window uses the frame's extremes),
    the table is used only when the transform is linear (Rescale Slope/Intercept), which keeps the extremes
    at the frame's own smallest and largest stored values.
    """
    if frame.dtype.kind in "iu" and frame.size and "ModalityLUTSequence" not in ds:
        low, high = int(frame.min()), int(frame.max())
        has_window = options.window is not None or ("WindowCenter" in ds and "WindowWidth" in ds)
        if high - low < _LUT_MAX_RANGE and (has_window or "VOILUTSequence" not in ds):
            domain = np.arange(low, high + 1, dtype=np.int64).astype(frame.dtype)
            table = _grayscale_values(ds, domain, options)
            # np.take, not table[...]: the same pixels in half the time (0.23 against 0.5 ms for 512 x 512).
            return np.take(table, np.subtract(frame, low, dtype=np.int64 if low < 0 else frame.dtype))
    return _grayscale_values(ds, frame, options)


def _grayscale_values(ds: pydicom.Dataset, frame: np.ndarray, options: RenderOptions) -> np.ndarray:
    values = apply_modality_lut(frame, ds).astype(np.float64)
    window = options.window
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper() or "LINEAR"
        window = (float(np.atleast_1d(ds.WindowCenter)[0]), float(np.atleast_1d(ds.WindowWidth)[0]), function)
    if window is not None and window[1] > 0:
        center, width, function = window
        if function == "SIGMOID":  # PS3.3 C.11.2.1.3.1
            image = (255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))).astype(np.uint8)
        elif function == "LINEAR_EXACT":  # PS3.3 C.11.2.1.3.2
            image = _to_uint8(values, center - width / 2, center + width / 2)
        else:  # PS3.3 C.11.2.1.2.1 linear
            image = _to_uint8(values, center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2)
    elif "VOILUTSequence" in ds:
        voi = apply_voi_lut(values, ds, index=0).astype(np.float64)
        image = _to_uint8(voi, float(voi.min()), float(voi.max()))
    else:
        image = _to_uint8(values, float(values.min()), float(values.max()))
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        image = 255 - image
    return image


def _no_such_frame(frame_number: int, count: int) -> NoSuchFrame:
    return NoSuchFrame(f"frame {frame_number} does not exist: the instance has {count} frame(s)")


def _why_not(data: bytes, frame_number: int, error: Exception) -> CannotRender:
    """Why frame ``frame_number`` of ``data`` could not be decoded (pixel_array fills ``ds_out`` only when it
    succeeds, so the header is read again here, on the error path alone)."""
    ds: pydicom.Dataset
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - an unreadable header: no image either
        ds = pydicom.Dataset()
    if "Rows" not in ds or "Columns" not in ds:
        return CannotRender("the instance has no image to render")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame_number <= count:
        return _no_such_frame(frame_number, count)
    return CannotRender(f"the pixel data cannot be decoded ({type(error).__name__})")


def render(data: bytes, frame_number: int, options: RenderOptions) -> bytes:
    """Frame ``frame_number`` (1-based) of the PS3.10 file ``data`` as PNG or JPEG bytes."""
    if options.media_type not in MEDIA_TYPES:
        raise CannotRender(f"cannot render as {options.media_type}; ask for image/jpeg or image/png")
    # One pass over the file: pixel_array reads the header up to Pixel Data anyway and, when it succeeds, puts
    # the group 0028 elements it read into ``ds``: all that this pipeline looks at (the Image Pixel, Modality
    # LUT, VOI LUT and Palette Color Lookup Table modules, PS3.3 C.7.6.3, C.11.1, C.11.2, C.7.9). Reading the
    # header first as well took 0.5 of the 3 ms that rendering a CT slice took.
    ds = pydicom.Dataset()
    try:
        if frame_number < 1:
            raise IndexError(frame_number)  # index -1 would be the last frame
        frame = pixel_array(io.BytesIO(data), index=frame_number - 1, ds_out=ds)
    except Exception as exc:  # noqa: BLE001 - codec errors come in many types
        raise _why_not(data, frame_number, exc) from exc
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if frame_number > count:  # a decoder that did not look at Number of Frames
        raise _no_such_frame(frame_number, count)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        image = apply_color_lut(frame, ds)
        if image.dtype != np.uint8:
            image = (image >> 8).astype(np.uint8) if image.max() > 255 else image.astype(np.uint8)
        mode = "RGB"
    elif frame.ndim == 3:  # RGB (pydicom converts YBR to RGB when decoding)
        image = frame if frame.dtype == np.uint8 else _to_uint8(frame.astype(np.float64), 0, float(frame.max()))
        mode = "RGB"
    else:
        image = _grayscale(ds, frame, options)
        mode = "L"
    picture = Image.fromarray(np.ascontiguousarray(image), mode=mode)
    if options.viewport is not None:
        picture.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if MEDIA_TYPES[options.media_type] == "JPEG":
        picture.save(out, format="JPEG", quality=options.quality)
    else:
        picture.save(out, format="PNG", compress_level=1)
    return out.getvalue()
