"""synthcxr anatomy: lungs, heart, mediastinum, diaphragm and their masks, sampled per image."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from pfmvg_plugin.data.synth.raster import coordinate_grid, grid_in, inside, mask_box, paste, window


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
        return inside(np.maximum(shape, ys - self.diaphragm(xs) - below), edge)


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
    return inside((along * along + across * across - 1.0) * (hb / 2.0), edge)


def anatomy_masks(anat: Anatomy, size: int) -> Masks:
    """Body, lungs (whole and as seen beside the mediastinum), heart, mediastinum and abdomen of ``anat``."""
    xs, ys = coordinate_grid(size)
    edge = 1.5 / size
    s, mid = anat.scale, anat.mid
    bu, bv = (xs - mid) * (1.0 / (0.475 * s)), (ys - 0.64) * (1.0 / 0.74)
    bu, bv = bu * bu, bv * bv
    body = inside((bu * bu + bv * bv - 1.0) * 0.25, 0.03)
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
    band = inside(np.abs(wx - mid) - half_width, edge) * inside(wy - floor, 0.05)
    knob = inside(np.sqrt((wx - kx) ** 2 + (wy - ky) ** 2) - kr, edge)
    mediastinum = paste(size, win, np.maximum(np.maximum(band, knob), heart_part))
    right, left = anat.lungs["right"], anat.lungs["left"]
    win = windows["abdomen"] = window(size, 0.0, min(right.dome_top, left.dome_top) - 0.02, 1.0, 1.0)
    wx, wy = grid_in(size, win)
    w = np.clip((wx - mid) * (1.0 / 0.12) + 0.5, 0.0, 1.0)
    w = w * w * (3.0 - 2.0 * w)  # the domes meet in a smooth saddle under the heart
    dia = right.diaphragm(wx) * (1.0 - w) + left.diaphragm(wx) * w
    abdomen = paste(size, win, inside(dia - wy, edge) * body[win])
    visible = {side: paste(size, windows[side], lungs[side][windows[side]] * (1.0 - mediastinum[windows[side]]))
               for side in lungs}
    boxes = {side: mask_box(visible[side][windows[side]], 0.5, windows[side]) for side in lungs}
    r0 = min(windows[side][0].start for side in lungs)
    r1 = max(windows[side][0].stop for side in lungs)
    windows["lungs"] = (slice(r0, r1), slice(windows["right"][1].start, windows["left"][1].stop))
    return Masks(body=body, lungs=lungs, visible_lungs=visible, lung_boxes=boxes, heart=heart,
                 mediastinum=mediastinum, abdomen=abdomen, windows=windows)
