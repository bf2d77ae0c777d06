"""synthcxr dataset writing and its command line (`pfmvg data synth`)."""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pfmvg_plugin.data.splits import parse_ratios
from pfmvg_plugin.data.store import dataset_dir, write_dataset
from pfmvg_plugin.data.synth.anatomy import Masks
from pfmvg_plugin.data.synth.findings import Finding
from pfmvg_plugin.data.synth.render import image_rng, render_case
from pfmvg_plugin.data.synth.vocab import MIN_SIZE, NAME
from pfmvg_plugin.progress import progress


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
    return write_synthetic(out_dir, NAME, _make_image, n=n, size=size, seed=seed, ratios=ratios, workers=workers)


def write_synthetic(out_dir: str | Path, name: str, make_image: Callable[[tuple], list[dict]], *, n: int, size: int,
                    seed: int, ratios=(0.8, 0.1, 0.1), workers: int = 1) -> dict:
    """Render ``n`` images with ``make_image((index, seed, size, split, out_dir)) -> records`` (a module-level
    function, so worker processes can run it) and write the records as dataset ``name``; returns the summary."""
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
        for recs in progress(map(make_image, jobs), desc=name, total=n, unit="img"):
            records.extend(recs)
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            for recs in progress(pool.imap(make_image, jobs, chunksize=16), desc=name, total=n, unit="img"):
                records.extend(recs)
    generator = {"n": n, "size": size, "seed": seed, "ratios": [float(r) for r in ratios]}
    return write_dataset(out_dir, name, records, image_root=out_dir, extra={"generator": generator})


# ---------------------------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser, name: str = NAME, n: int = 1200) -> None:
    parser.add_argument("--n", type=int, default=n, help=f"number of images (default {n})")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default $PFMVG_DATA_ROOT/{name})")
    parser.add_argument("--split-ratios", default="0.8,0.1,0.1",
                        help="train,val,test shares of the images (default 0.8,0.1,0.1)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes; output is identical (default 1)")


def run_cli(args: argparse.Namespace) -> dict:
    return generate_synthcxr(dataset_dir(NAME, args.out), n=args.n, size=args.size, seed=args.seed,
                             ratios=parse_ratios(args.split_ratios), workers=args.workers)
