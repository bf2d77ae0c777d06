"""synthshapes: generic referring-expression grounding data (named shapes on a noisy background).

The stand-in for the general-domain grounding corpora (RefCOCO, Visual Genome) that MiniGPT-v2 and LLaVA learn to
point with before anyone fine-tunes them on radiographs. A model trained from scratch on synthcxr alone does not learn
to read box coordinates off its image tokens within a CPU budget (``docs/demo_learning.md``); one pretrained on these
images first does, and then learns the radiographic findings. ``make demo`` uses it as its first stage.

Each grayscale image holds one shape, or two of different kinds: a filled rectangle, ellipse or triangle, or a
ring, 8 to 110 px across on a 256-px image, brighter than a dark, smoothly varying, grainy background. The phrase
names the shape (``the large ellipse``), the box bounds what was drawn. Records use the canonical grounding schema,
so the training recipe, the lmms-eval task and the baselines read them like any other grounding dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pfmvg_plugin.data.splits import parse_ratios
from pfmvg_plugin.data.store import dataset_dir
from pfmvg_plugin.data.synth.anatomy import smooth_noise
from pfmvg_plugin.data.synth.dataset import add_arguments as synthcxr_arguments
from pfmvg_plugin.data.synth.dataset import write_synthetic
from pfmvg_plugin.data.synth.raster import grid_in, inside, mask_box, window
from pfmvg_plugin.data.synth.vocab import MIN_SIZE

NAME = "synthshapes"
SHAPES = ("rectangle", "ellipse", "triangle", "ring")
TWO_SHAPES_P = 0.4
_PHRASES = ("the {size} {shape}", "{size} {shape}", "the {shape}", "a {size} {shape}")


def _alpha(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, rx: float, ry: float,
           edge: float) -> np.ndarray:
    """Soft coverage (0..1) of ``shape`` centred at ``(cx, cy)`` with half-extents ``rx, ry`` (normalised units)."""
    u, v = (xs - cx) / rx, (ys - cy) / ry
    e = edge / min(rx, ry)
    if shape == "rectangle":
        return inside(np.maximum(np.abs(u), np.abs(v)) - 1.0, e)
    if shape == "ellipse":
        return inside(np.sqrt(u * u + v * v) - 1.0, e)
    if shape == "ring":
        r = np.sqrt(u * u + v * v)
        return inside(r - 1.0, e) * inside(0.55 - r, e)
    if shape == "triangle":  # apex up, base at the bottom
        return inside(np.maximum(v - 1.0, np.abs(u) - 0.5 * (v + 1.0)), e)
    raise ValueError(f"unknown shape {shape!r}")


def render_shapes(rng: np.random.Generator, size: int = 256) -> tuple[Image.Image, list[dict]]:
    """One image and its shapes (``{"shape", "size", "phrase", "box"}``, box in pixels, exclusive right/bottom)."""
    if size < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE} pixels, got {size}")
    base = float(rng.uniform(0.08, 0.3))
    img = base + 0.08 * smooth_noise(rng, (size, size), 4).astype(np.float32)
    kinds = list(rng.choice(SHAPES, size=2 if rng.random() < TWO_SHAPES_P else 1, replace=False))
    shapes: list[dict] = []
    boxes: list[list[float]] = []
    for kind in kinds:
        for _ in range(30):
            rx, ry = (float(v) for v in rng.uniform(4.0, 55.0, 2) / 256)  # half-extents: 4-55 px at 256 px
            if kind in ("ellipse", "ring") and rng.random() < 0.5:
                ry = rx  # circles too
            cx, cy = float(rng.uniform(rx, 1 - rx)), float(rng.uniform(ry, 1 - ry))
            win = window(size, cx - rx - 2 / size, cy - ry - 2 / size, cx + rx + 2 / size, cy + ry + 2 / size)
            alpha = _alpha(str(kind), *grid_in(size, win), cx, cy, rx, ry, 1.0 / size)
            box = mask_box(alpha, 0.5, win)
            if box is None or any(box[0] - 4 < b[2] and b[0] - 4 < box[2] and box[1] - 4 < b[3] and b[1] - 4 < box[3]
                                  for b in boxes):
                continue
            img[win] += float(rng.uniform(0.25, 0.6)) * alpha
            area = (box[2] - box[0]) * (box[3] - box[1])
            size_word = "small" if area < (0.12 * size) ** 2 else "large"
            template = _PHRASES[int(rng.integers(len(_PHRASES)))]
            shapes.append({"shape": str(kind), "size": size_word, "box": box,
                           "phrase": template.format(size=size_word, shape=kind)})
            boxes.append(box)
            break
    if not shapes:  # pragma: no cover - a 8-px shape always fits somewhere in an empty image
        raise RuntimeError("synthshapes: could not place any shape")
    img += 0.03 * rng.standard_normal((size, size)).astype(np.float32)
    pixels = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(pixels), shapes


def _make_image(job: tuple[int, int, int, str, str]) -> list[dict]:
    index, seed, size, split, out_dir = job
    image, shapes = render_shapes(np.random.default_rng([seed, index, 0x5A9E]), size)
    image.save(Path(out_dir) / "images" / f"{index:06d}.png", format="PNG", compress_level=1)
    return [{
        "id": f"{NAME}-{index:06d}-{k}", "task": "grounding", "source": NAME, "split": split,
        "image": f"images/{index:06d}.png", "width": size, "height": size, "phrase": s["phrase"],
        "boxes": [s["box"]], "category": s["shape"], "meta": {"shape": s["shape"], "size": s["size"]},
    } for k, s in enumerate(shapes)]


def generate_synthshapes(out_dir: str | Path, n: int = 3000, size: int = 256, seed: int = 0,
                         ratios=(0.8, 0.1, 0.1), workers: int = 1) -> dict:
    """Write ``n`` images under ``out_dir/images`` and their records as dataset ``synthshapes``; returns the summary."""
    return write_synthetic(out_dir, NAME, _make_image, n=n, size=size, seed=seed, ratios=ratios, workers=workers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    synthcxr_arguments(parser, name=NAME, n=3000)


def run_cli(args: argparse.Namespace) -> dict:
    return generate_synthshapes(dataset_dir(NAME, args.out), n=args.n, size=args.size, seed=args.seed,
                                ratios=parse_ratios(args.split_ratios), workers=args.workers)
