"""synthcxr rendering: compose anatomy, findings, bones, texture and exposure into one radiograph."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pfmvg_plugin.data.synth.anatomy import Anatomy, Masks, Textures, anatomy_masks, sample_anatomy, sample_textures
from pfmvg_plugin.data.synth.findings import Finding, overlap, place_finding, sample_kinds
from pfmvg_plugin.data.synth.raster import blend, coordinate_grid, grid_in, inside, window
from pfmvg_plugin.data.synth.vocab import MIN_SIZE


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
    img = blend(img, anat.soft + 0.03 * tex.low + 0.06 * np.abs(xs - mid), masks.body)
    # lungs: air with vessels fanning out from the hila, denser towards the bases
    win = masks.windows["lungs"]
    wx, wy = xs[win], ys[win]
    lung_any = np.maximum(masks.lungs["right"][win], masks.lungs["left"][win])
    hila = np.exp(-(((np.abs(wx - mid) - 0.085 * anat.scale) ** 2 + (wy - 0.465 - anat.dy) ** 2) * (1.0 / 0.045 ** 2)))
    lung_img = (anat.lung_tone + 0.1 * np.clip((wy - 0.2) * (1 / 0.6), 0.0, 1.0) + 0.02 * tex.low[win]
                + anat.vessel_gain * _vessels(anat, wx, wy) + 0.035 * tex.fine[win] + 0.09 * hila)
    img[win] = blend(img[win], lung_img, lung_any)
    win = masks.windows["abdomen"]
    lung_any = np.maximum(masks.lungs["right"][win], masks.lungs["left"][win])
    img[win] = blend(img[win], anat.heart_tone - 0.07 + 0.02 * tex.low[win], masks.abdomen[win] * (1.0 - lung_any))
    bubble = anat.lungs["left"]
    wx, wy = xs[win], ys[win]
    gas = inside(np.sqrt(((wx - bubble.cx) / 0.055) ** 2 + ((wy - bubble.dome_top - 0.07) / 0.03) ** 2) - 1.0, 0.6)
    img[win] = blend(img[win], anat.soft - 0.02, 0.6 * gas)
    # mediastinum and heart (its lower border hidden below the diaphragm), trachea
    win = masks.windows["mediastinum"]
    above_diaphragm = masks.mediastinum[win] * (1.0 - masks.abdomen[win])
    img[win] = blend(img[win], anat.heart_tone + 0.02 * tex.low[win], above_diaphragm)
    wx, wy = xs[win], ys[win]
    img[win] -= 0.16 * inside(np.abs(wx - mid) - 0.013 * anat.scale, 2.0 / size) * inside(wy - (0.33 + anat.dy), 0.02)
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
            img[win] = blend(img[win], value, alpha)
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
    ribs = wave2 * wave2 * wave * inside(-t, 0.3) * inside(t - 9.6, 0.3)
    cage = inside(np.sqrt(((xs - mid) * (1.0 / (0.36 * s))) ** 2 + ((ys - 0.5 - anat.dy) * (1.0 / 0.45)) ** 2) - 1.0,
                   0.08)
    img[win] += anat.rib_gain * ribs * cage * (0.45 + 0.55 * inside(0.02 - d, 0.06))
    # clavicles: from the manubrium out and up to the shoulders
    win = window(size, mid - 0.36 * s, anat.clavicle_y - 0.1, mid + 0.36 * s, anat.clavicle_y + 0.03)
    xs, ys = grid_in(size, win)
    d = np.abs(xs - mid) * (1.0 / s)
    cy = anat.clavicle_y - 0.28 * d + 0.3 * d * d
    clav = np.sqrt(np.clip(1.0 - np.abs(ys - cy) * (1.0 / (0.019 * s)), 0.0, 1.0))
    img[win] += 0.18 * clav * inside(0.035 - d, 0.01) * inside(d - 0.33, 0.02)
    # spine: vertebral bodies stacked behind the mediastinum
    win = window(size, mid - 0.045 * s, 0.0, mid + 0.045 * s, 1.0)
    xs, ys = grid_in(size, win)
    spine = inside(np.abs(xs - mid) - 0.032 * s, 0.006) * (0.6 + 0.4 * np.cos(ys * (2 * math.pi / (0.052 * s))))
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
            if f is not None and not any(overlap(f.box, g.box, 2.0) for g in findings):
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
