"""Generate synthcxr, the synthetic chest-radiograph grounding dataset (procedural PA images, boxed findings, phrases).

Every image is a procedural posteroanterior chest radiograph: body, two lung fields with vessel markings, mediastinum
and heart (to the image right), diaphragm domes, posterior ribs, clavicles, film grain and a random exposure. One
finding is drawn (a second one on some images): nodule, mass, pleural effusion, pneumothorax, consolidation,
cardiomegaly or atelectasis, each with the box that bounds what was drawn and a phrase naming finding, side, zone, size.

Left and right are the PATIENT's (radiological convention): the patient's right lung is on the IMAGE LEFT. Zones are
thirds of the lung's height. Output is deterministic: image ``i`` depends only on ``(seed, i)``, so any number of
``--workers`` writes byte-identical files.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from pfmvg_plugin.data.splits import parse_ratios
from pfmvg_plugin.data.store import dataset_dir, write_dataset
from pfmvg_plugin.progress import progress

NAME = "synthcxr"
MIN_SIZE = 64

CATEGORIES = {
    "nodule": "Nodule",
    "mass": "Mass",
    "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "cardiomegaly": "Cardiomegaly",
    "atelectasis": "Atelectasis",
}
"""Finding kind -> canonical category name written to records."""

FINDING_WEIGHTS = {
    "nodule": 0.18, "mass": 0.12, "effusion": 0.16, "pneumothorax": 0.14,
    "consolidation": 0.16, "cardiomegaly": 0.12, "atelectasis": 0.12,
}
SECOND_FINDING_P = 0.3
ZONES = ("upper", "middle", "lower")
SIDES = ("right", "left")
_BOX_THRESHOLD = 0.2  # a pixel belongs to a finding's box where its drawn alpha reaches this
_ZONE_MARGIN = 0.06  # keep box centres this share of the lung height away from zone borders

PHRASES = {
    "nodule": ("{size} nodule in the {side} {zone} zone", "{size} {side} {zone} zone nodule",
               "{size} pulmonary nodule in the {side} {zone} zone",
               "{size} nodule in the {zone} zone of the {side} lung"),
    "mass": ("{size} mass in the {side} {zone} zone", "{size} {side} {zone} zone mass",
             "{size} lobulated mass in the {zone} zone of the {side} lung",
             "{size} pulmonary mass in the {side} {zone} zone"),
    "effusion": ("{side} pleural effusion", "{size} {side} pleural effusion", "{size} {side}-sided pleural effusion",
                 "{side} pleural effusion blunting the costophrenic angle"),
    "pneumothorax": ("{size} {side} {zone} pneumothorax", "{side} {zone} pneumothorax",
                     "{size} {zone} pneumothorax on the {side}"),
    "consolidation": ("consolidation in the {side} {zone} zone", "{side} {zone} zone consolidation",
                      "patchy airspace opacity in the {side} {zone} zone",
                      "airspace consolidation in the {zone} zone of the {side} lung"),
    "cardiomegaly": ("cardiomegaly", "enlarged cardiac silhouette", "the heart is enlarged", "cardiac enlargement",
                     "enlarged heart"),
    "atelectasis": ("atelectasis in the {side} {zone} zone", "plate-like atelectasis in the {side} {zone} zone",
                    "{side} {zone} zone atelectasis", "linear atelectasis in the {zone} zone of the {side} lung"),
}
"""Phrase templates per finding; one is picked per finding from the image's generator."""


# ---------------------------------------------------------------------------------------------------------------------
# geometry helpers (normalised coordinates: x, y in [0, 1] of the image, y down)

Window = tuple[slice, slice]
"""Rows and columns of a rectangular part of the image; shapes are only computed inside their window."""


@lru_cache(maxsize=8)
def coordinate_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(X, Y)`` in [0, 1], float32, shape ``(size, size)``; computed once per size."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    xs, ys = np.meshgrid(c, c)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def window(size: int, x0: float, y0: float, x1: float, y1: float) -> Window:
    """The pixels covering the normalised rectangle ``[x0, x1] x [y0, y1]``, clipped to the image, never empty."""
    c0 = min(max(int(math.floor(x0 * size)), 0), size - 1)
    r0 = min(max(int(math.floor(y0 * size)), 0), size - 1)
    c1 = max(min(int(math.ceil(x1 * size)), size), c0 + 1)
    r1 = max(min(int(math.ceil(y1 * size)), size), r0 + 1)
    return slice(r0, r1), slice(c0, c1)


def grid_in(size: int, win: Window) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = coordinate_grid(size)
    return xs[win], ys[win]


def paste(size: int, win: Window, part: np.ndarray) -> np.ndarray:
    """A full-size float32 mask that is ``part`` inside ``win`` and 0 elsewhere."""
    full = np.zeros((size, size), dtype=np.float32)
    full[win] = part
    return full


def _inside(f: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of ``f < 0`` with a linear edge ``edge`` wide (1 inside, 0 outside)."""
    out = f * (-1.0 / edge)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _blend(img: np.ndarray, value, alpha: np.ndarray) -> np.ndarray:
    return img + alpha * (value - img)


def mask_box(alpha: np.ndarray, threshold: float = _BOX_THRESHOLD, win: Window | None = None) -> list[float] | None:
    """Pixel box ``[x1, y1, x2, y2]`` (exclusive right/bottom) of ``alpha >= threshold``; None when empty.

    ``alpha`` may be the part of an image inside ``win``; the box is then in whole-image pixels.
    """
    hit = alpha >= threshold
    cols, rows = np.flatnonzero(hit.any(axis=0)), np.flatnonzero(hit.any(axis=1))
    if cols.size == 0:
        return None
    dr, dc = (win[0].start, win[1].start) if win is not None else (0, 0)
    return [float(cols[0] + dc), float(rows[0] + dr), float(cols[-1] + 1 + dc), float(rows[-1] + 1 + dr)]


def zone_of(y: float, lung_box: list[float]) -> str:
    """Upper/middle/lower third of the lung's height that the pixel row ``y`` falls in."""
    frac = (y - lung_box[1]) / (lung_box[3] - lung_box[1])
    return ZONES[min(2, max(0, int(frac * 3)))]


def _zone_ok(y: float, lung_box: list[float], zone: str | None = None) -> bool:
    """``y`` lies in ``zone`` (if given), inside the lung's height and away from the borders between zones."""
    frac = (y - lung_box[1]) / (lung_box[3] - lung_box[1])
    if not 0.0 <= frac <= 1.0 or min(abs(frac - 1 / 3), abs(frac - 2 / 3)) < _ZONE_MARGIN:
        return False
    return zone is None or zone_of(y, lung_box) == zone


# ---------------------------------------------------------------------------------------------------------------------
# anatomy


@dataclass(frozen=True)
class Lung:
    """One lung field: a superellipse, taller above its widest point, cut from below by a diaphragm dome."""

    side: str
    sgn: int  # +1: the lung lies on the image right (patient's left); -1: image left (patient's right)
    cx: float
    cy: float
    ax: float
    ay_top: float
    ay_bot: float
    dome_top: float
    dome_cx: float
    dome_k: float

    def bounds(self) -> tuple[float, float, float, float]:
        """Normalised rectangle holding the lung (and a little margin)."""
        bottom = min(self.cy + self.ay_bot, self.dome_top + 1.25 * self.dome_k)
        return self.cx - self.ax - 0.01, self.cy - self.ay_top - 0.01, self.cx + self.ax + 0.01, bottom + 0.03

    def polar(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised coordinates; ``u > 0`` points laterally, ``v < 0`` up; the border is ``|u|³ + |v|³ = 1``."""
        u = (xs - self.cx) * (self.sgn / self.ax)
        v = (ys - self.cy) / np.where(ys < self.cy, self.ay_top, self.ay_bot)
        return u, v

    def diaphragm(self, xs: np.ndarray) -> np.ndarray:
        t = (xs - self.dome_cx) * (1.0 / self.ax)
        return self.dome_top + self.dome_k * t * t

    def mask(self, xs: np.ndarray, ys: np.ndarray, edge: float, below: float = 0.0) -> np.ndarray:
        """Soft lung mask; ``below`` lets it reach that far under the diaphragm."""
        u, v = self.polar(xs, ys)
        au, av = np.abs(u), np.abs(v)
        shape = (au * au * au + av * av * av - 1.0) * (self.ax / 3.0)
        return _inside(np.maximum(shape, ys - self.diaphragm(xs) - below), edge)


@dataclass(frozen=True)
class Anatomy:
    """Per-image anatomy and exposure parameters (all random draws of the normal radiograph)."""

    mid: float
    scale: float
    dy: float
    lungs: dict
    heart: tuple[float, float, float, float, float]  # cx, cy, long and short semi-axis, tilt (radians, apex down-right)
    knob: tuple[float, float, float]
    clavicle_y: float
    rib_y0: float
    rib_spacing: float
    soft: float
    lung_tone: float
    heart_tone: float
    vessel_gain: float
    vessel_waves: tuple
    rib_gain: float
    gain: float
    offset: float
    gamma: float
    grain: float

    def enlarged_heart(self, factor: float) -> Anatomy:
        hx, hy, ha, hb, tilt = self.heart
        grow = factor - 1.0
        return replace(self, heart=(hx + 0.45 * ha * grow, hy + 0.2 * hb * grow, ha * factor, hb * (1.0 + 0.6 * grow),
                                    tilt))


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a normal chest: small jitter of scale, position, shapes, tissue tones and exposure."""
    s = float(rng.uniform(0.93, 1.04))
    mid = 0.5 + float(rng.uniform(-0.025, 0.025))
    dy = float(rng.uniform(-0.025, 0.03))
    lungs = {}
    for side, sgn in (("right", -1), ("left", 1)):
        ax = 0.17 * s * float(rng.uniform(0.95, 1.05))
        cx = mid + sgn * 0.205 * s * float(rng.uniform(0.97, 1.03))
        top = 0.09 + dy + float(rng.uniform(-0.01, 0.015))
        cy = 0.62 + dy
        dome_top = 0.69 + dy + (0.025 if side == "left" else 0.0) + float(rng.uniform(-0.02, 0.02))
        lungs[side] = Lung(side=side, sgn=sgn, cx=cx, cy=cy, ax=ax, ay_top=cy - top, ay_bot=0.3 * s,
                           dome_top=dome_top, dome_cx=cx - sgn * 0.1 * ax, dome_k=float(rng.uniform(0.045, 0.06)))
    heart = (mid + 0.055 * s, 0.655 + dy + float(rng.uniform(-0.01, 0.01)),
             0.165 * s * float(rng.uniform(0.94, 1.06)), 0.112 * s * float(rng.uniform(0.95, 1.05)),
             float(rng.uniform(0.15, 0.35)))
    waves = tuple((float(rng.uniform(9.0, 16.0)), float(rng.uniform(-25.0, 25.0)), float(rng.uniform(0, 2 * math.pi)))
                  for _ in range(3))
    return Anatomy(
        mid=mid, scale=s, dy=dy, lungs=lungs, heart=heart,
        knob=(mid + 0.065 * s, 0.29 + dy, 0.036 * s),
        clavicle_y=0.175 + dy + float(rng.uniform(-0.015, 0.015)),
        rib_y0=0.085 + dy + float(rng.uniform(-0.01, 0.01)),
        rib_spacing=0.068 * s * float(rng.uniform(0.95, 1.05)),
        soft=float(rng.uniform(0.44, 0.52)),
        lung_tone=float(rng.uniform(0.17, 0.24)),
        heart_tone=float(rng.uniform(0.70, 0.78)),
        vessel_gain=float(rng.uniform(0.08, 0.12)),
        vessel_waves=waves,
        rib_gain=float(rng.uniform(0.08, 0.12)),
        gain=float(rng.uniform(0.85, 1.15)),
        offset=float(rng.uniform(-0.05, 0.05)),
        gamma=float(rng.uniform(0.85, 1.15)),
        grain=float(rng.uniform(0.012, 0.022)),
    )


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Band-limited noise: a coarse normal field (``cells`` across) upsampled bicubically to ``shape`` (rows, cols)."""
    rows, cols = shape
    coarse = rng.standard_normal((max(2, cells * rows // max(rows, cols)), max(2, cells * cols // max(rows, cols))),
                                 dtype=np.float32)
    return np.asarray(Image.fromarray(coarse).resize((cols, rows), Image.Resampling.BICUBIC))


@dataclass
class Textures:
    """Random fields of one image, drawn before any finding so that a finding-free render shares them."""

    low: np.ndarray
    fine: np.ndarray
    grain: np.ndarray


def sample_textures(rng: np.random.Generator, size: int) -> Textures:
    low = smooth_noise(rng, (size, size), 6)
    fine = np.clip(1.0 - np.abs(smooth_noise(rng, (size, size), 40)) * 2.5, 0.0, 1.0)
    grain = rng.random((size, size), dtype=np.float32)  # uniform grain (cheaper than normal; looks the same)
    grain -= 0.5
    grain *= 2.0 * math.sqrt(3.0)  # unit variance
    return Textures(low=low, fine=fine * fine, grain=grain)


@dataclass
class Masks:
    """Soft masks of the anatomy of one image (full-size float32, 1 inside) and the windows that hold them."""

    body: np.ndarray
    lungs: dict
    visible_lungs: dict
    lung_boxes: dict
    heart: np.ndarray
    mediastinum: np.ndarray
    abdomen: np.ndarray
    windows: dict


def _heart_part(heart: tuple, xs: np.ndarray, ys: np.ndarray, edge: float) -> np.ndarray:
    hx, hy, ha, hb, tilt = heart
    c, s = math.cos(tilt), math.sin(tilt)
    along = ((xs - hx) * c + (ys - hy) * s) * (1.0 / ha)
    across = (-(xs - hx) * s + (ys - hy) * c) * (1.0 / hb)
    return _inside((along * along + across * across - 1.0) * (hb / 2.0), edge)


def anatomy_masks(anat: Anatomy, size: int) -> Masks:
    """Body, lungs (whole and as seen beside the mediastinum), heart, mediastinum and abdomen of ``anat``."""
    xs, ys = coordinate_grid(size)
    edge = 1.5 / size
    s, mid = anat.scale, anat.mid
    bu, bv = (xs - mid) * (1.0 / (0.475 * s)), (ys - 0.64) * (1.0 / 0.74)
    bu, bv = bu * bu, bv * bv
    body = _inside((bu * bu + bv * bv - 1.0) * 0.25, 0.03)
    windows = {}
    lungs = {}
    for side, lung in anat.lungs.items():
        win = windows[side] = window(size, *lung.bounds())
        lungs[side] = paste(size, win, lung.mask(*grid_in(size, win), edge))
    hx, hy, ha, hb, _ = anat.heart
    kx, ky, kr = anat.knob
    win = windows["mediastinum"] = window(size, min(hx - ha, mid - 0.1), 0.0, max(hx + ha, kx + kr, mid + 0.1), hy + ha)
    wx, wy = grid_in(size, win)
    heart_part = _heart_part(anat.heart, wx, wy, edge)
    heart = paste(size, win, heart_part)
    half_width = 0.055 * s + 0.02 * s * np.clip((wy - 0.12) * 4.0, 0.0, 1.0)
    floor = 0.5 * (anat.lungs["right"].dome_top + anat.lungs["left"].dome_top) + 0.04
    band = _inside(np.abs(wx - mid) - half_width, edge) * _inside(wy - floor, 0.05)
    knob = _inside(np.sqrt((wx - kx) ** 2 + (wy - ky) ** 2) - kr, edge)
    mediastinum = paste(size, win, np.maximum(np.maximum(band, knob), heart_part))
    right, left = anat.lungs["right"], anat.lungs["left"]
    win = windows["abdomen"] = window(size, 0.0, min(right.dome_top, left.dome_top) - 0.02, 1.0, 1.0)
    wx, wy = grid_in(size, win)
    w = np.clip((wx - mid) * (1.0 / 0.12) + 0.5, 0.0, 1.0)
    w = w * w * (3.0 - 2.0 * w)  # the domes meet in a smooth saddle under the heart
    dia = right.diaphragm(wx) * (1.0 - w) + left.diaphragm(wx) * w
    abdomen = paste(size, win, _inside(dia - wy, edge) * body[win])
    visible = {side: paste(size, windows[side], lungs[side][windows[side]] * (1.0 - mediastinum[windows[side]]))
               for side in lungs}
    boxes = {side: mask_box(visible[side][windows[side]], 0.5, windows[side]) for side in lungs}
    r0 = min(windows[side][0].start for side in lungs)
    r1 = max(windows[side][0].stop for side in lungs)
    windows["lungs"] = (slice(r0, r1), slice(windows["right"][1].start, windows["left"][1].stop))
    return Masks(body=body, lungs=lungs, visible_lungs=visible, lung_boxes=boxes, heart=heart,
                 mediastinum=mediastinum, abdomen=abdomen, windows=windows)


# ---------------------------------------------------------------------------------------------------------------------
# findings


@dataclass
class Finding:
    """A drawn finding: its kind, place, phrase, box and the layers that draw it."""

    kind: str
    side: str | None
    zone: str | None
    size: str | None
    phrase: str = ""
    box: list[float] | None = None
    layers: list = field(default_factory=list)
    """``(op, window, alpha, value)``: ``blend`` towards value or ``add`` value*alpha under the bones; ``line`` adds
    over them."""

    @property
    def category(self) -> str:
        return CATEGORIES[self.kind]

    def meta(self, lung_boxes: dict) -> dict:
        meta = {"finding": self.kind, "side": self.side, "zone": self.zone, "size": self.size}
        if self.side:
            meta["lung_box"] = lung_boxes[self.side]
        return meta


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def phrase_for(rng: np.random.Generator, f: Finding) -> str:
    """One of the finding's phrase templates, filled in (``middle`` may be written ``mid``)."""
    zone = f.zone
    if zone == "middle":
        zone = _pick(rng, ("middle", "mid"))
    text = _pick(rng, PHRASES[f.kind]).format(side=f.side, zone=zone, size=f.size or "")
    return " ".join(text.split())


def _sample_point(rng, masks: Masks, side: str, size: int, radius: float, zone: str | None,
                  tries: int = 60) -> tuple[float, float] | None:
    """A point of the visible ``side`` lung, ``radius`` away from its border, in ``zone`` (normalised coordinates)."""
    box = masks.lung_boxes[side]
    vis = masks.visible_lungs[side]
    ring = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)]
    for _ in range(tries):
        x = float(rng.uniform(box[0], box[2])) / size
        y = float(rng.uniform(box[1], box[3])) / size
        if not _zone_ok(y * size, box, zone):
            continue
        pts = [(x, y)] + [(x + radius * c, y + radius * s) for c, s in ring]
        if all(0 <= px < 1 and 0 <= py < 1 and vis[int(py * size), int(px * size)] > 0.6 for px, py in pts):
            return x, y
    return None


def _nodule(rng, anat: Anatomy, masks: Masks, size: int, side: str, zone: str, big: bool) -> Finding | None:
    """Nodule: a small sphere's projection; mass: a larger lobulated blob with a flat top."""
    size_word = _pick(rng, ("small", "large"))
    ranges = {(False, "small"): (0.014, 0.019), (False, "large"): (0.024, 0.031),
              (True, "small"): (0.042, 0.052), (True, "large"): (0.062, 0.078)}
    r = float(rng.uniform(*ranges[big, size_word]))
    p = _sample_point(rng, masks, side, size, r * (0.7 if big else 1.3), zone)
    if p is None:
        return None
    win = window(size, p[0] - 1.25 * r, p[1] - 1.25 * r, p[0] + 1.25 * r, p[1] + 1.25 * r)
    xs, ys = grid_in(size, win)
    dx, dy = xs - p[0], ys - p[1]
    d = np.sqrt(dx * dx + dy * dy)
    if big:
        theta = np.arctan2(dy, dx)
        a, b = float(rng.uniform(0.06, 0.13)), float(rng.uniform(0.03, 0.07))
        ph1, ph2 = (float(v) for v in rng.uniform(0, 2 * math.pi, 2))
        rr = r * (1.0 + a * np.sin(3 * theta + ph1) + b * np.sin(5 * theta + ph2))
        alpha = np.clip((1.0 - d / rr) / 0.3, 0.0, 1.0) ** 0.7
        value = float(rng.uniform(0.26, 0.34))
    else:
        alpha = np.sqrt(np.clip(1.0 - (d * (1.0 / r)) ** 2, 0.0, 1.0))
        value = float(rng.uniform(0.24, 0.32))
    f = Finding("mass" if big else "nodule", side, zone, size_word, layers=[("add", win, alpha, value)])
    f.box = mask_box(alpha, win=win)
    return f


def _effusion(rng, anat: Anatomy, masks: Masks, size: int, side: str) -> Finding | None:
    """Fluid filling the lung base up to a meniscus that rises laterally, blunting the costophrenic angle."""
    lung, box = anat.lungs[side], masks.lung_boxes[side]
    size_word = _pick(rng, ("small", "moderate", "large"))
    level_frac = {"small": (0.13, 0.19), "moderate": (0.24, 0.33), "large": (0.40, 0.50)}[size_word]
    height = (box[3] - box[1]) / size
    level = box[3] / size - float(rng.uniform(*level_frac)) * height
    win = window(size, *lung.bounds())
    xs, ys = grid_in(size, win)
    lateral = np.clip((xs - lung.cx) * (0.5 * lung.sgn / lung.ax) + 0.5, 0.0, 1.0)  # 0 medial .. 1 lateral
    meniscus = level - float(rng.uniform(0.035, 0.06)) * lateral * lateral
    fluid = np.clip((ys - meniscus) * (1.0 / 0.035), 0.0, 1.0)
    # drawn just past the lung's soft lower edge so no seam shows; boxed where it lies over the lung
    edge = 1.5 / size
    reach = lung.mask(xs, ys, edge, below=edge) * (1.0 - masks.mediastinum[win])
    value = anat.heart_tone - 0.07 - float(rng.uniform(0.0, 0.04))  # fluid: as dense as the soft tissue below
    f = Finding("effusion", side, "lower", size_word, layers=[("blend", win, fluid * reach, value)])
    f.box = mask_box(fluid * masks.visible_lungs[side][win], win=win)
    return f


def _pneumothorax(rng, anat: Anatomy, masks: Masks, size: int, side: str) -> Finding | None:
    """Air without lung markings between the chest wall and a thin visceral pleural line, apical or lateral."""
    lung = anat.lungs[side]
    where = _pick(rng, ("apical", "lateral"))
    size_word = _pick(rng, ("small", "large"))
    depth = float(rng.uniform(0.14, 0.2) if size_word == "small" else rng.uniform(0.27, 0.36))
    win = window(size, *lung.bounds())
    xs, ys = grid_in(size, win)
    u, v = lung.polar(xs, ys)
    rho = np.cbrt(np.abs(u) ** 3 + np.abs(v) ** 3)
    theta0 = -math.pi / 2 if where == "apical" else -0.35
    spread = np.clip(np.cos(np.arctan2(v, u) - theta0), 0.0, 1.0) ** (2.0 if where == "apical" else 3.0)
    border = 1.0 - depth * spread  # the collapsed lung's edge, in lung units
    lung_part = masks.visible_lungs[side][win]
    taper = np.clip((depth * spread - 0.015) * (1.0 / 0.02), 0.0, 1.0)  # the crescent ends where it gets thin
    gap = np.clip((rho - border) / 0.015 + 0.5, 0.0, 1.0) * lung_part * taper
    line_w = 1.2 / size / lung.ay_top
    line = np.clip(1.0 - np.abs(rho - border) / line_w, 0.0, 1.0) * taper
    line = line * (lung_part > 0.5)
    dark = anat.lung_tone - float(rng.uniform(0.07, 0.1))
    f = Finding("pneumothorax", side, where, size_word,
                layers=[("blend", win, gap, dark), ("line", win, line, float(rng.uniform(0.16, 0.22)))])
    f.box = mask_box(np.maximum(gap, line), win=win)
    return f


def _consolidation(rng, anat: Anatomy, masks: Masks, size: int, side: str, zone: str) -> Finding | None:
    """Patchy airspace opacity filling part of one zone."""
    rx, ry = float(rng.uniform(0.06, 0.09)), float(rng.uniform(0.045, 0.062))
    p = _sample_point(rng, masks, side, size, 0.5 * ry, zone)
    if p is None:
        return None
    win = window(size, p[0] - rx, p[1] - ry, p[0] + rx, p[1] + ry)
    xs, ys = grid_in(size, win)
    ell = _inside(np.sqrt(((xs - p[0]) / rx) ** 2 + ((ys - p[1]) / ry) ** 2) - 1.0, 0.25)
    n_cells = max(2, round(30 * 2 * rx))
    patchy = np.clip(0.75 + 0.45 * smooth_noise(rng, ell.shape, n_cells), 0.0, 1.0)
    alpha = ell * patchy * masks.visible_lungs[side][win] * 0.85
    f = Finding("consolidation", side, zone, None, layers=[("blend", win, alpha, float(rng.uniform(0.6, 0.68)))])
    f.box = mask_box(alpha, win=win)
    return f


def _atelectasis(rng, anat: Anatomy, masks: Masks, size: int, side: str, zone: str) -> Finding | None:
    """Plate-like atelectasis: a thin, nearly horizontal band of opacity."""
    half_len, half_thick = float(rng.uniform(0.05, 0.075)), float(rng.uniform(0.009, 0.014))
    p = _sample_point(rng, masks, side, size, half_len, zone)
    if p is None:
        return None
    ang = float(rng.uniform(-0.35, 0.35))
    c, s = math.cos(ang), math.sin(ang)
    win = window(size, p[0] - half_len, p[1] - half_len, p[0] + half_len, p[1] + half_len)
    xs, ys = grid_in(size, win)
    along = (xs - p[0]) * c + (ys - p[1]) * s
    across = -(xs - p[0]) * s + (ys - p[1]) * c
    band = np.clip(1.0 - np.abs(across) / half_thick, 0.0, 1.0) ** 0.6
    taper = np.sqrt(np.clip(1.0 - (along / half_len) ** 2, 0.0, 1.0))
    alpha = band * taper * masks.visible_lungs[side][win]
    f = Finding("atelectasis", side, zone, None, layers=[("add", win, alpha, float(rng.uniform(0.24, 0.3)))])
    f.box = mask_box(alpha, win=win)
    return f


def _cardiomegaly(masks: Masks) -> Finding:
    """The enlarged heart is drawn with the anatomy; its box bounds the heart down to the diaphragm."""
    f = Finding("cardiomegaly", None, None, None)
    f.box = mask_box(masks.heart * (1.0 - masks.abdomen), 0.5)
    return f


def place_finding(rng: np.random.Generator, kind: str, anat: Anatomy, masks: Masks, size: int) -> Finding | None:
    """Draw place and size of one finding of ``kind``; None when no valid place was found."""
    side = _pick(rng, SIDES)
    if kind == "cardiomegaly":
        f = _cardiomegaly(masks)
    elif kind in ("nodule", "mass"):
        f = _nodule(rng, anat, masks, size, side, _pick(rng, ZONES), big=kind == "mass")
    elif kind == "effusion":
        f = _effusion(rng, anat, masks, size, side)
    elif kind == "pneumothorax":
        f = _pneumothorax(rng, anat, masks, size, side)
    elif kind == "consolidation":
        f = _consolidation(rng, anat, masks, size, side, _pick(rng, ZONES))
    elif kind == "atelectasis":
        f = _atelectasis(rng, anat, masks, size, side, _pick(rng, ("middle", "lower")))
    else:
        raise ValueError(f"unknown finding kind {kind!r}")
    if f is None or f.box is None:
        return None
    if f.zone in ZONES and f.kind != "effusion":  # the phrase's zone must be the zone of what was drawn
        cy = (f.box[1] + f.box[3]) / 2
        if not _zone_ok(cy, masks.lung_boxes[f.side], f.zone):
            return None
    f.phrase = phrase_for(rng, f)
    return f


def _overlap(a: list[float], b: list[float], gap: float) -> bool:
    return a[0] - gap < b[2] and b[0] - gap < a[2] and a[1] - gap < b[3] and b[1] - gap < a[3]


def sample_kinds(rng: np.random.Generator) -> list[str]:
    """One finding kind, sometimes two different ones."""
    kinds = list(FINDING_WEIGHTS)
    p = np.array([FINDING_WEIGHTS[k] for k in kinds])
    first = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    if rng.random() >= SECOND_FINDING_P:
        return [first]
    rest = [k for k in kinds if k != first]
    q = np.array([FINDING_WEIGHTS[k] for k in rest])
    return [first, rest[int(rng.choice(len(rest), p=q / q.sum()))]]


# ---------------------------------------------------------------------------------------------------------------------
# rendering


def _vessels(anat: Anatomy, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Lung markings: branching lines radiating from the hila, fading towards the periphery."""
    s, mid = anat.scale, anat.mid
    sgn = np.where(xs < mid, np.float32(-1.0), np.float32(1.0))
    dx = (xs - mid) * sgn - 0.085 * s  # > 0: lateral of the hilum
    dy = ys - (0.465 + anat.dy)
    r = np.sqrt(dx * dx + dy * dy)
    t = dy / (np.abs(dx) + np.abs(dy) + 1e-6)
    angle = np.where(dx >= 0, t, np.copysign(np.float32(2.0), dy) - t)  # "diamond angle" in (-2, 2)
    wave = sum(np.cos(k * angle + c * r + ph) for k, c, ph in anat.vessel_waves)
    ridge = np.clip(1.0 - np.abs(wave) * (1.0 / 0.45), 0.0, 1.0)
    return ridge * ridge * np.exp(r * (-1.0 / 0.2)) * np.clip(r * 20.0, 0.0, 1.0)


def compose(anat: Anatomy, masks: Masks, tex: Textures, findings: list[Finding], size: int) -> np.ndarray:
    """Paint anatomy, findings and bones into a float image (about 0..1, before exposure and grain)."""
    xs, ys = coordinate_grid(size)
    mid = anat.mid
    img = np.full((size, size), 0.05, dtype=np.float32)
    img = _blend(img, anat.soft + 0.03 * tex.low + 0.06 * np.abs(xs - mid), masks.body)
    # lungs: air with vessels fanning out from the hila, denser towards the bases
    win = masks.windows["lungs"]
    wx, wy = xs[win], ys[win]
    lung_any = np.maximum(masks.lungs["right"][win], masks.lungs["left"][win])
    hila = np.exp(-(((np.abs(wx - mid) - 0.085 * anat.scale) ** 2 + (wy - 0.465 - anat.dy) ** 2) * (1.0 / 0.045 ** 2)))
    lung_img = (anat.lung_tone + 0.1 * np.clip((wy - 0.2) * (1 / 0.6), 0.0, 1.0) + 0.02 * tex.low[win]
                + anat.vessel_gain * _vessels(anat, wx, wy) + 0.035 * tex.fine[win] + 0.09 * hila)
    img[win] = _blend(img[win], lung_img, lung_any)
    win = masks.windows["abdomen"]
    lung_any = np.maximum(masks.lungs["right"][win], masks.lungs["left"][win])
    img[win] = _blend(img[win], anat.heart_tone - 0.07 + 0.02 * tex.low[win], masks.abdomen[win] * (1.0 - lung_any))
    bubble = anat.lungs["left"]
    wx, wy = xs[win], ys[win]
    gas = _inside(np.sqrt(((wx - bubble.cx) / 0.055) ** 2 + ((wy - bubble.dome_top - 0.07) / 0.03) ** 2) - 1.0, 0.6)
    img[win] = _blend(img[win], anat.soft - 0.02, 0.6 * gas)
    # mediastinum and heart (its lower border hidden below the diaphragm), trachea
    win = masks.windows["mediastinum"]
    above_diaphragm = masks.mediastinum[win] * (1.0 - masks.abdomen[win])
    img[win] = _blend(img[win], anat.heart_tone + 0.02 * tex.low[win], above_diaphragm)
    wx, wy = xs[win], ys[win]
    img[win] -= 0.16 * _inside(np.abs(wx - mid) - 0.013 * anat.scale, 2.0 / size) * _inside(wy - (0.33 + anat.dy), 0.02)
    for f in findings:
        _apply(img, f, under_bones=True)
    _add_bones(img, anat, masks, size)
    for f in findings:
        _apply(img, f, under_bones=False)
    return img


def _apply(img: np.ndarray, f: Finding, under_bones: bool) -> None:
    """Draw the finding's ``blend``/``add`` layers (``under_bones``) or its ``line`` layers (over the bones)."""
    for op, win, alpha, value in f.layers:
        if (op == "line") == under_bones:
            continue
        if op == "blend":
            img[win] = _blend(img[win], value, alpha)
        else:
            img[win] += value * alpha


def _add_bones(img: np.ndarray, anat: Anatomy, masks: Masks, size: int) -> None:
    """Posterior ribs, clavicles and spine, added as density (drawn at half resolution: bones are smooth)."""
    if size >= 2 * MIN_SIZE:
        half = size // 2
        small = np.zeros((half, half), dtype=np.float32)
        _draw_bones(small, anat, masks.body[::2, ::2][:half, :half], half)
        img += np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))
    else:
        _draw_bones(img, anat, masks.body, size)


def _draw_bones(img: np.ndarray, anat: Anatomy, body: np.ndarray, size: int) -> None:
    s, mid = anat.scale, anat.mid
    # posterior ribs: arcs rising from the spine then falling along the lateral wall; one cosine draws all of them
    win = window(size, mid - 0.4 * s, anat.rib_y0 - 0.06, mid + 0.4 * s, 0.98)
    xs, ys = grid_in(size, win)
    d = np.abs(xs - mid) * (1.0 / s)
    t = (ys - anat.rib_y0 - (-0.6 * d + 2.3 * d * d) * s) * (1.0 / anat.rib_spacing)
    t = t * (1.0 - 0.035 * t)  # ribs spread slightly towards the bases
    wave = 0.5 + 0.5 * np.cos(t * (2 * math.pi))
    wave2 = wave * wave
    ribs = wave2 * wave2 * wave * _inside(-t, 0.3) * _inside(t - 9.6, 0.3)
    cage = _inside(np.sqrt(((xs - mid) * (1.0 / (0.36 * s))) ** 2 + ((ys - 0.5 - anat.dy) * (1.0 / 0.45)) ** 2) - 1.0,
                   0.08)
    img[win] += anat.rib_gain * ribs * cage * (0.45 + 0.55 * _inside(0.02 - d, 0.06))
    # clavicles: from the manubrium out and up to the shoulders
    win = window(size, mid - 0.36 * s, anat.clavicle_y - 0.1, mid + 0.36 * s, anat.clavicle_y + 0.03)
    xs, ys = grid_in(size, win)
    d = np.abs(xs - mid) * (1.0 / s)
    cy = anat.clavicle_y - 0.28 * d + 0.3 * d * d
    clav = np.sqrt(np.clip(1.0 - np.abs(ys - cy) * (1.0 / (0.019 * s)), 0.0, 1.0))
    img[win] += 0.18 * clav * _inside(0.035 - d, 0.01) * _inside(d - 0.33, 0.02)
    # spine: vertebral bodies stacked behind the mediastinum
    win = window(size, mid - 0.045 * s, 0.0, mid + 0.045 * s, 1.0)
    xs, ys = grid_in(size, win)
    spine = _inside(np.abs(xs - mid) - 0.032 * s, 0.006) * (0.6 + 0.4 * np.cos(ys * (2 * math.pi / (0.052 * s))))
    img[win] += 0.05 * spine * body[win]


def expose(img: np.ndarray, anat: Anatomy, tex: Textures) -> np.ndarray:
    """Film grain, then exposure (gain, offset, gamma) through a lookup table: 8-bit pixels."""
    levels = np.linspace(0.0, 1.0, 1024)
    lut = np.clip((levels - 0.5) * anat.gain + 0.5 + anat.offset, 0.0, 1.0) ** anat.gamma
    lut = (lut * 255.0 + 0.5).astype(np.uint8)
    idx = np.clip((img + anat.grain * tex.grain) * 1023.0 + 0.5, 0.0, 1023.0).astype(np.uint16)
    return lut[idx]


def render_case(rng: np.random.Generator, size: int = 256, draw_findings: bool = True
                ) -> tuple[Image.Image, list[Finding], Masks]:
    """One radiograph: grayscale image, its findings (with phrases and boxes) and anatomy masks.

    With ``draw_findings=False`` the same generator gives the same anatomy, textures and exposure without the findings
    (and with a normal heart): the reference that tests compare finding pixels against.
    """
    if size < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE} pixels, got {size}")
    anat = sample_anatomy(rng)
    tex = sample_textures(rng, size)
    kinds = sample_kinds(rng)
    enlarge = float(rng.uniform(1.32, 1.48))
    drawn = anat.enlarged_heart(enlarge) if "cardiomegaly" in kinds else anat
    masks = anatomy_masks(drawn, size)
    findings: list[Finding] = []
    for kind in sorted(kinds, key=lambda k: k != "cardiomegaly"):
        for _ in range(8):
            f = place_finding(rng, kind, drawn, masks, size)
            if f is not None and not any(_overlap(f.box, g.box, 2.0) for g in findings):
                findings.append(f)
                break
    for _ in range(200 if not findings else 0):  # every image gets a finding: fall back to a nodule
        f = place_finding(rng, "nodule", drawn, masks, size)
        if f is not None:
            findings.append(f)
            break
    if not findings:  # pragma: no cover - a nodule fits in any lung this generator draws
        raise RuntimeError("synthcxr: could not place any finding")
    if draw_findings:
        pixels = expose(compose(drawn, masks, tex, findings, size), drawn, tex)
    else:
        pixels = expose(compose(anat, anatomy_masks(anat, size), tex, [], size), anat, tex)
    return Image.fromarray(pixels), findings, masks


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: depends on ``(seed, index)`` only, so parallel output equals serial."""
    return np.random.default_rng([seed, index])



# ---------------------------------------------------------------------------------------------------------------------
# dataset


def assign_splits(n: int, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> list[str]:
    """Split of each image: exact counts from ``ratios`` (largest remainder), order shuffled by ``seed``."""
    ratios = [float(r) for r in ratios]
    total = sum(ratios)
    if len(ratios) != 3 or min(ratios) < 0 or total <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers with a positive sum, got {ratios}")
    exact = [n * r / total for r in ratios]
    counts = [int(e) for e in exact]
    for i in sorted(range(3), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    labels = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    order = np.random.default_rng([seed, n, 0x5B117]).permutation(n)
    return [labels[int(k)] for k in np.argsort(order)]


def records_for(index: int, split: str, size: int, findings: list[Finding], masks: Masks) -> list[dict]:
    """Canonical grounding records of one image, one per finding."""
    return [{
        "id": f"{NAME}-{index:06d}-{k}",
        "task": "grounding",
        "source": NAME,
        "split": split,
        "image": f"images/{index:06d}.png",
        "width": size,
        "height": size,
        "phrase": f.phrase,
        "boxes": [list(f.box)],
        "category": f.category,
        "meta": f.meta(masks.lung_boxes),
    } for k, f in enumerate(findings)]


def _make_image(job: tuple[int, int, int, str, str]) -> list[dict]:
    index, seed, size, split, out_dir = job
    image, findings, masks = render_case(image_rng(seed, index), size)
    # zlib level 1 with Huffman-only coding (strategy 2): grainy images compress as well as with LZ77, twice as fast
    image.save(Path(out_dir) / "images" / f"{index:06d}.png", format="PNG", compress_level=1, compress_type=2)
    return records_for(index, split, size, findings, masks)


def generate_synthcxr(out_dir: str | Path, n: int = 1200, size: int = 256, seed: int = 0,
                      ratios=(0.8, 0.1, 0.1), workers: int = 1) -> dict:
    """Write ``n`` images under ``out_dir/images`` and their records as dataset ``synthcxr``; returns the summary."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if size < MIN_SIZE:
        raise ValueError(f"--size must be at least {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    splits = assign_splits(n, ratios, seed)
    jobs = [(i, seed, size, splits[i], str(out_dir)) for i in range(n)]
    records: list[dict] = []
    if workers <= 1:
        for recs in progress(map(_make_image, jobs), desc="synthcxr", total=n, unit="img"):
            records.extend(recs)
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            for recs in progress(pool.imap(_make_image, jobs, chunksize=16), desc="synthcxr", total=n, unit="img"):
                records.extend(recs)
    generator = {"n": n, "size": size, "seed": seed, "ratios": [float(r) for r in ratios]}
    return write_dataset(out_dir, NAME, records, image_root=out_dir, extra={"generator": generator})


# ---------------------------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1200, help="number of images (default 1200)")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default $PFMVG_DATA_ROOT/{NAME})")
    parser.add_argument("--split-ratios", default="0.8,0.1,0.1",
                        help="train,val,test shares of the images (default 0.8,0.1,0.1)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes; output is identical (default 1)")


def run_cli(args: argparse.Namespace) -> dict:
    return generate_synthcxr(dataset_dir(NAME, args.out), n=args.n, size=args.size, seed=args.seed,
                             ratios=parse_ratios(args.split_ratios), workers=args.workers)
