"""synthcxr findings: where each kind is placed, how it is drawn, its box and its phrase."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pfmvg_plugin.data.synth.anatomy import Anatomy, Masks, smooth_noise
from pfmvg_plugin.data.synth.raster import grid_in, inside, mask_box, window, zone_ok
from pfmvg_plugin.data.synth.vocab import CATEGORIES, FINDING_WEIGHTS, PHRASES, SECOND_FINDING_P, SIDES, ZONES


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
        if not zone_ok(y * size, box, zone):
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
    ell = inside(np.sqrt(((xs - p[0]) / rx) ** 2 + ((ys - p[1]) / ry) ** 2) - 1.0, 0.25)
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
        if not zone_ok(cy, masks.lung_boxes[f.side], f.zone):
            return None
    f.phrase = phrase_for(rng, f)
    return f


def overlap(a: list[float], b: list[float], gap: float) -> bool:
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
