"""Real-looking synthetic anatomy per modality (geometric phantoms, smooth texture, mild noise).

Each drawing returns a float image in the modality's natural unit (Hounsfield units for CT,
arbitrary signal for MR, attenuation-like intensity for projection X-ray and mammography); the DICOM
writer converts it to stored pixel values. Shapes follow the body region and slice position so a
series scrolls like a real one: lungs grow and shrink, the skull closes towards the vertex, etc.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Image = np.ndarray


class Canvas:
    """A float32 image with coordinates normalised to [-1, 1] (x right, y down)."""

    def __init__(self, rows: int, cols: int, fill: float) -> None:
        self.img = np.full((rows, cols), fill, dtype=np.float32)
        self.rows, self.cols = rows, cols
        self._y = np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
        self._x = np.linspace(-1, 1, cols, dtype=np.float32)[None, :]

    def _box(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        r0 = max(0, int((cy - r + 1) / 2 * self.rows) - 1)
        r1 = min(self.rows, int((cy + r + 1) / 2 * self.rows) + 2)
        c0 = max(0, int((cx - r + 1) / 2 * self.cols) - 1)
        c1 = min(self.cols, int((cx + r + 1) / 2 * self.cols) + 2)
        return slice(r0, r1), slice(c0, c1)

    def _inside(self, box: tuple[slice, slice], cx: float, cy: float, a: float, b: float,
                angle: float) -> np.ndarray:
        x = self._x[:, box[1]] - cx
        y = self._y[box[0], :] - cy
        cos, sin = math.cos(angle), math.sin(angle)
        xr, yr = x * cos + y * sin, -x * sin + y * cos
        return (xr / max(a, 1e-6)) ** 2 + (yr / max(b, 1e-6)) ** 2 <= 1.0

    def ellipse_mask(self, cx: float, cy: float, a: float, b: float,
                     angle: float = 0.0) -> tuple[tuple[slice, slice], np.ndarray]:
        box = self._box(cx, cy, max(a, b))
        return box, self._inside(box, cx, cy, a, b, angle)

    def ellipse(self, cx: float, cy: float, a: float, b: float, value: float, angle: float = 0.0,
                add: bool = False) -> None:
        if a <= 0 or b <= 0:
            return
        box, mask = self.ellipse_mask(cx, cy, a, b, angle)
        region = self.img[box]
        if add:
            region[mask] += value
        else:
            region[mask] = value

    def ring(self, cx: float, cy: float, a: float, b: float, thickness: float, value: float) -> None:
        box, outer = self.ellipse_mask(cx, cy, a, b)
        inner = self._inside(box, cx, cy, a - thickness, b - thickness, 0.0)
        self.img[box][outer & ~inner] = value


def _smooth(img: Image, passes: int = 2, k: int = 3) -> Image:
    """Separable box blur repeated (approximates a Gaussian) to soften edges like a real PSF."""
    out = img
    for _ in range(passes):
        pad = np.pad(out, k, mode="edge")
        c = np.cumsum(pad, axis=0, dtype=np.float32)
        out = (c[2 * k:, :] - c[:-2 * k, :])[:, k:-k] / (2 * k)
        pad = np.pad(out, k, mode="edge")
        c = np.cumsum(pad, axis=1, dtype=np.float32)
        out = (c[:, 2 * k:] - c[:, :-2 * k])[k:-k, :] / (2 * k)
        out = out[: img.shape[0], : img.shape[1]]
    return out.astype(np.float32)


def _texture(rng: np.random.Generator, rows: int, cols: int, scale: int) -> Image:
    """Smooth random field in [-1, 1] (tissue heterogeneity, glandular patterns)."""
    small = rng.standard_normal((max(2, rows // scale), max(2, cols // scale))).astype(np.float32)
    big = np.kron(small, np.ones((scale, scale), dtype=np.float32))[:rows, :cols]
    if big.shape != (rows, cols):
        big = np.pad(big, ((0, rows - big.shape[0]), (0, cols - big.shape[1])), mode="edge")
    big = _smooth(big, passes=3, k=max(1, scale // 2))
    return big / (np.abs(big).max() + 1e-6)


# --------------------------------------------------------------------------- CT (HU)

def ct_chest(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    c = Canvas(rows, cols, -1000.0)
    c.ellipse(0, 0.05, 0.86, 0.62, -100)  # subcutaneous fat
    c.ellipse(0, 0.05, 0.80, 0.56, 40)  # muscle / soft tissue
    lung = 0.30 + 0.08 * math.sin(math.pi * z)
    for side in (-1, 1):
        c.ellipse(side * 0.36, 0.0, lung, 0.42 * (0.8 + 0.2 * math.sin(math.pi * z)), -850, angle=side * 0.15)
    heart = 0.22 * max(0.0, math.sin(math.pi * min(1.0, z * 1.3)))
    c.ellipse(0.08, 0.05, heart, heart * 0.85, 40, angle=0.5)
    c.ellipse(-0.04, -0.18, 0.06, 0.06, 45)  # aorta
    c.ellipse(0, 0.42, 0.09, 0.08, 250)  # vertebral body
    c.ring(0, 0.42, 0.09, 0.08, 0.015, 700)
    c.ellipse(0, 0.55, 0.035, 0.04, 0)  # spinal canal
    for k in range(7):  # ribs around the thorax
        t = -math.pi / 2 + (k + 0.5) * math.pi / 7 + 0.1 * z
        for side in (-1, 1):
            c.ellipse(side * 0.74 * math.cos(t), 0.05 + 0.5 * math.sin(t), 0.03, 0.018, 650)
    vessels = rng.uniform(-1, 1, (40, 2))
    for vx, vy in vessels:  # pulmonary vessels: small bright dots inside the lungs
        x, y = np.sign(vx) * (0.2 + abs(vx) * 0.3), vy * 0.3
        c.ellipse(x, y, 0.008, 0.008, -100, add=False)
    if lesion and 0.4 < z < 0.6:
        c.ellipse(0.42, -0.1, 0.03, 0.03, 30)  # pulmonary nodule
    c.ellipse(0, 0.82, 0.95, 0.02, 200)  # table
    img = _smooth(c.img, 1, 1) + 15 * _texture(rng, rows, cols, 16)
    return img + rng.normal(0, 12, img.shape).astype(np.float32)


def ct_abdomen(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    c = Canvas(rows, cols, -1000.0)
    c.ellipse(0, 0.05, 0.88, 0.66, -100)
    c.ellipse(0, 0.05, 0.80, 0.58, 45)
    liver = 0.36 * max(0.2, 1 - z)
    c.ellipse(-0.35, -0.05, liver, liver * 0.9, 110)  # enhancing liver (patient right = image left)
    c.ellipse(0.42, -0.12, 0.16 * max(0.2, 1 - z), 0.12, 120)  # spleen
    for side in (-1, 1):  # kidneys with cortex
        c.ellipse(side * 0.32, 0.22, 0.1, 0.14, 180, angle=side * 0.4)
        c.ellipse(side * 0.32, 0.22, 0.04, 0.07, 40, angle=side * 0.4)
    c.ellipse(0.02, 0.18, 0.05, 0.05, 170)  # aorta (contrast)
    c.ellipse(-0.1, 0.18, 0.06, 0.05, 140)  # IVC
    c.ellipse(0, 0.42, 0.1, 0.09, 250)
    c.ring(0, 0.42, 0.1, 0.09, 0.015, 700)
    for _ in range(6):  # bowel loops with gas
        x, y = rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.2) + 0.1
        c.ellipse(x, y, 0.06, 0.05, 30)
        c.ellipse(x, y, 0.03, 0.025, -900)
    if lesion:
        c.ellipse(-0.2, 0.0, 0.08, 0.04, 80, angle=0.7)  # thickened bowel wall
    img = _smooth(c.img, 1, 1) + 10 * _texture(rng, rows, cols, 16)
    return img + rng.normal(0, 10, img.shape).astype(np.float32)


def ct_head(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    c = Canvas(rows, cols, -1000.0)
    s = math.sqrt(max(0.05, 1 - (z - 0.35) ** 2 / 0.45))
    c.ellipse(0, 0, 0.72 * s, 0.88 * s, 1200)  # skull
    c.ellipse(0, 0, 0.66 * s, 0.82 * s, 38)  # grey matter
    c.ellipse(0, 0, 0.55 * s, 0.70 * s, 28)  # white matter
    if 0.3 < z < 0.7:
        for side in (-1, 1):
            c.ellipse(side * 0.1, -0.05, 0.05, 0.22, 8, angle=side * 0.2)  # lateral ventricles
    c.ellipse(0, 0, 0.01, 0.8 * s, 15)  # falx
    img = _smooth(c.img, 1, 1) + 2 * _texture(rng, rows, cols, 8)
    return img + rng.normal(0, 3, img.shape).astype(np.float32)


def ct_spine(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    c = Canvas(rows, cols, -1000.0)
    c.ellipse(0, 0, 0.55, 0.5, 50)  # neck soft tissue
    c.ellipse(0, -0.28, 0.07, 0.09, -950)  # airway
    disc = (z * 7) % 1.0 < 0.2
    c.ellipse(0, 0.02, 0.16, 0.13, 80 if disc else 300)  # vertebral body or disc
    if not disc:
        c.ring(0, 0.02, 0.16, 0.13, 0.02, 900)
    c.ellipse(0, 0.22, 0.07, 0.06, 0)  # canal
    for side in (-1, 1):
        c.ellipse(side * 0.12, 0.27, 0.05, 0.09, 800, angle=side * 0.6)  # laminae
    c.ellipse(0, 0.38, 0.03, 0.06, 800)  # spinous process
    if lesion and 0.45 < z < 0.55:
        c.ellipse(0.05, 0.02, 0.004, 0.12, -50, angle=0.9)  # fracture line
    img = _smooth(c.img, 1, 1) + 8 * _texture(rng, rows, cols, 8)
    return img + rng.normal(0, 10, img.shape).astype(np.float32)


# --------------------------------------------------------------------------- MR (signal)

_MR_CONTRAST = {  # tissue -> signal per sequence
    "T1": {"csf": 150, "gm": 500, "wm": 700, "fat": 900, "lesion": 400, "muscle": 400, "bone": 60, "fluid": 150},
    "T2": {"csf": 1100, "gm": 650, "wm": 450, "fat": 700, "lesion": 900, "muscle": 300, "bone": 60, "fluid": 1200},
    "FLAIR": {"csf": 80, "gm": 600, "wm": 450, "fat": 600, "lesion": 1100, "muscle": 300, "bone": 60, "fluid": 80},
    "DWI": {"csf": 60, "gm": 300, "wm": 250, "fat": 50, "lesion": 900, "muscle": 200, "bone": 30, "fluid": 50},
    "ADC": {"csf": 1500, "gm": 800, "wm": 700, "fat": 100, "lesion": 400, "muscle": 900, "bone": 30, "fluid": 1600},
}


def mr_brain(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    t = _MR_CONTRAST.get(variant, _MR_CONTRAST["T1"])
    c = Canvas(rows, cols, 0.0)
    s = math.sqrt(max(0.05, 1 - (z - 0.4) ** 2 / 0.5))
    c.ellipse(0, 0, 0.78 * s, 0.92 * s, t["fat"])  # scalp
    c.ellipse(0, 0, 0.72 * s, 0.86 * s, t["bone"])  # skull
    c.ellipse(0, 0, 0.68 * s, 0.82 * s, t["csf"])
    c.ellipse(0, 0, 0.65 * s, 0.79 * s, t["gm"])
    c.ellipse(0, 0, 0.52 * s, 0.66 * s, t["wm"])
    if 0.3 < z < 0.7:
        for side in (-1, 1):
            c.ellipse(side * 0.1, -0.05, 0.06, 0.24, t["csf"], angle=side * 0.2)
    if lesion:  # periventricular white-matter lesions (MS) / focal lesion
        for _ in range(5):
            c.ellipse(rng.uniform(-0.35, 0.35), rng.uniform(-0.4, 0.4), 0.03, 0.05, t["lesion"], rng.uniform(0, 3))
    img = _smooth(c.img, 1, 1) * (1 + 0.08 * _texture(rng, rows, cols, 8))
    return img + np.abs(rng.normal(0, 12, img.shape)).astype(np.float32)  # Rician-like floor


def mr_prostate(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    t = _MR_CONTRAST.get(variant, _MR_CONTRAST["T2"])
    c = Canvas(rows, cols, 0.0)
    c.ellipse(0, 0, 0.9, 0.6, t["fat"])
    c.ellipse(0, 0.05, 0.75, 0.5, t["muscle"])
    for side in (-1, 1):
        c.ellipse(side * 0.55, 0.05, 0.14, 0.14, t["bone"])  # femoral heads
    c.ellipse(0, 0.42, 0.12, 0.05, t["fat"])  # rectum wall region
    c.ellipse(0, 0.42, 0.06, 0.025, t["bone"])
    size = 0.2 * math.sin(math.pi * min(max(z, 0.05), 0.95))
    c.ellipse(0, 0.12, size, size * 0.8, t["gm"])  # transition zone
    c.ellipse(0, 0.2, size * 1.1, size * 0.55, t["fluid"] * 0.8)  # peripheral zone (T2 bright)
    if z < 0.3:
        c.ellipse(0, -0.25, 0.25, 0.18, t["fluid"])  # bladder
    if lesion and 0.35 < z < 0.65:
        c.ellipse(0.08, 0.24, 0.05, 0.035, t["lesion"] if variant in ("DWI", "ADC") else 250)
    img = _smooth(c.img, 1, 1) * (1 + 0.1 * _texture(rng, rows, cols, 6))
    return img + np.abs(rng.normal(0, 10, img.shape)).astype(np.float32)


def mr_spine(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    """Sagittal lumbar spine: a column of vertebral bodies and discs, the canal and the cord."""
    t = _MR_CONTRAST.get(variant, _MR_CONTRAST["T1"])
    c = Canvas(rows, cols, 0.0)
    c.ellipse(0.1, 0, 0.9, 1.2, t["fat"])
    c.ellipse(0.15, 0, 0.75, 1.2, t["muscle"])
    off = abs(z - 0.5) * 0.3
    for k in range(6):
        y = -0.85 + k * 0.32
        c.ellipse(-0.15, y, 0.2 - off, 0.12, t["fat"] * 0.8)  # vertebral body (marrow)
        c.ellipse(-0.15, y + 0.16, 0.19 - off, 0.035, t["fluid"] * (0.6 if k != 4 or not lesion else 0.2))
    c.ellipse(0.12, 0, 0.06 * (1 - off), 1.2, t["csf"])  # thecal sac
    c.ellipse(0.12, -0.3, 0.025 * (1 - off), 0.7, t["wm"])  # conus / cord
    img = _smooth(c.img, 1, 1) * (1 + 0.08 * _texture(rng, rows, cols, 6))
    return img + np.abs(rng.normal(0, 10, img.shape)).astype(np.float32)


# ---------------------------------------------------------------- projection X-ray

def xr_chest(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    """Attenuation map (high = dense); the writer maps it to MONOCHROME1/2 as the modality does."""
    c = Canvas(rows, cols, 0.0)
    lateral = variant == "LAT"
    c.ellipse(0, 0.1, 0.55 if lateral else 0.85, 0.95, 0.45)  # soft tissue
    if lateral:
        c.ellipse(0, 0.0, 0.4, 0.6, 0.2)
        c.ellipse(0.35, 0.05, 0.07, 0.7, 0.85)  # spine
        c.ellipse(-0.1, 0.25, 0.22, 0.25, 0.5)  # heart
    else:
        for side in (-1, 1):
            c.ellipse(side * 0.33, -0.05, 0.25, 0.55, 0.15)  # lungs
            c.ellipse(side * 0.3, -0.62, 0.3, 0.03, 0.8, angle=side * -0.25)  # clavicles
            for k in range(9):  # posterior ribs: thin arcs
                y = -0.5 + k * 0.11
                c.ellipse(side * 0.33, y, 0.28, 0.018, 0.55, angle=side * 0.35)
        c.ellipse(0.08, 0.22, 0.24, 0.22, 0.55)  # cardiac silhouette
        c.ellipse(0, 0.0, 0.05, 0.95, 0.75)  # spine
        if lesion:
            c.ellipse(0.38, -0.15, 0.04, 0.04, 0.45)
    img = _smooth(c.img, 2, 2) + 0.03 * _texture(rng, rows, cols, 16)
    return img + rng.normal(0, 0.01, img.shape).astype(np.float32)


def mg(rows: int, cols: int, z: float, rng: np.random.Generator, variant: str, lesion: bool) -> Image:
    """A breast against the chest wall (left edge), glandular texture, pectoralis in MLO."""
    side, view = (variant.split() + ["CC"])[:2] if variant else ("R", "CC")
    c = Canvas(rows, cols, 0.0)
    c.ellipse(-1.0, 0.0, 1.55, 0.9, 0.35)  # breast outline from the chest wall
    if view == "MLO":
        box, mask = c.ellipse_mask(-1.0, -1.0, 0.6, 1.3, 0.3)
        c.img[box][mask] = 0.7
    glands = np.clip(_texture(rng, rows, cols, 24), 0, None)
    gland_box, gland_mask = c.ellipse_mask(-0.7, 0.0, 1.0, 0.6)
    c.img[gland_box][gland_mask] += 0.35 * glands[gland_box][gland_mask]
    if lesion:
        c.ellipse(0.1, 0.1, 0.04, 0.04, 0.85)  # spiculated-looking mass (simplified)
        for _ in range(8):
            c.ellipse(rng.uniform(0.0, 0.2), rng.uniform(0.0, 0.2), 0.003, 0.003, 1.0)  # microcalcifications
    img = _smooth(c.img, 1, 1) + rng.normal(0, 0.01, c.img.shape).astype(np.float32)
    return img[:, ::-1] if side == "L" else img  # left breast: chest wall on the right of the image


PHANTOMS: dict[str, Callable[[int, int, float, np.random.Generator, str, bool], Image]] = {
    "ct_chest": ct_chest, "ct_abdomen": ct_abdomen, "ct_head": ct_head, "ct_spine": ct_spine,
    "mr_brain": mr_brain, "mr_prostate": mr_prostate, "mr_spine": mr_spine,
    "xr_chest": xr_chest, "mg": mg,
}
