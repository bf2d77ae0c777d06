"""Dense detection pretraining of a LLaVA-family vision tower on box-annotated images.

A grounding fine-tune starts from a vision encoder that already tells what is where: CLIP / EVA for LLaVA and
MiniGPT-v2, a radiograph encoder (a detector backbone trained on VinDr-CXR or ChestX-ray8 boxes, say) in medical
work. A tiny model built from config has no such encoder; this stage gives it one. The tower's patch tokens (the ones
the projector hands to the language model) feed throw-away linear heads trained on:

- ``cover``: per patch and category, whether a box of that category overlaps the patch (BCE);
- ``centre``: per patch and category, whether the patch holds a box's centre (BCE, positives x10: one patch per box);
- ``corners``: at each centre patch, the box corners relative to the model input (L1, x5);
- ``presence`` and ``box``: per category, from the mean of the tokens (BCE, and L1 x5 where present).

Only the vision tower changes; the language model and projector are written back as they were. Images and boxes go
through the recipe's own data pipeline (:class:`~pfmvg_plugin.training.data.TrainingData`: the same checks,
box-consistent resize and pixel cache), so the tower sees exactly what grounding training will show it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from pfmvg_plugin.families import get_family
from pfmvg_plugin.progress import progress
from pfmvg_plugin.training.config import Config, DataConfig, expand_path
from pfmvg_plugin.training.data import TrainingData
from pfmvg_plugin.training.model import resolve_model_path

log = logging.getLogger(__name__)

RECORD = "pfmvg_vision_pretrain.json"
CENTRE_POS_WEIGHT = 10.0
BOX_WEIGHT = 5.0


@dataclass
class DenseTargets:
    """Per-image training targets on a ``grid x grid`` patch layout for ``len(categories)`` categories."""

    categories: list[str]
    grid: int
    pixels: torch.Tensor  # (N, C, H, W) model-ready images
    cover: torch.Tensor  # (N, P, K)
    centre: torch.Tensor  # (N, P, K)
    corners: torch.Tensor  # (N, P, 4) box at its centre patch, relative to the model input
    centre_mask: torch.Tensor  # (N, P)
    present: torch.Tensor  # (N, K)
    boxes: torch.Tensor  # (N, K, 4)


def dense_targets(data: TrainingData, grid: int, categories: list[str] | None = None) -> DenseTargets:
    """One entry per distinct image of ``data``'s grounding records (all boxes of the image's records).
    ``categories``: the category order to use (held-out data scored with the training heads); boxes of other
    categories are left out. Default: every category of ``data``, sorted."""
    per_image: dict[tuple[int, str], list[tuple[int, dict]]] = defaultdict(list)
    for s, src in enumerate(data.sources):
        for i, rec in enumerate(src.records):
            if src.task == "refer":
                per_image[(s, rec["image"])].append((i, rec))
    if not per_image:
        raise ValueError("vision pretraining needs grounding records (task: refer) with boxes; the datasets have none")
    if categories is None:
        categories = sorted({str(rec.get("category") or "finding") for recs in per_image.values() for _, rec in recs})
    k_of = {c: k for k, c in enumerate(categories)}
    n, p, k = len(per_image), grid * grid, len(categories)
    cover, centre = torch.zeros(n, p, k), torch.zeros(n, p, k)
    corners, centre_mask = torch.zeros(n, p, 4), torch.zeros(n, p)
    present, boxes = torch.zeros(n, k), torch.zeros(n, k, 4)
    width, height = data.transform.size
    pixels = []
    for row, ((s, _), recs) in enumerate(progress(per_image.items(), desc="dense targets", total=n, unit="img")):
        pixels.append(data.pixels(s, recs[0][0]))
        for _, rec in recs:
            c = k_of.get(str(rec.get("category") or "finding"))
            if c is None:
                continue
            for box in rec["boxes"]:
                x1, y1, x2, y2 = data.transform.map_box(box, (rec["width"], rec["height"]))
                rel = torch.tensor([x1 / width, y1 / height, x2 / width, y2 / height]).clamp(0.0, 1.0)
                cols = range(int(rel[0] * grid), min(grid, math.ceil(rel[2] * grid)))
                rows = range(int(rel[1] * grid), min(grid, math.ceil(rel[3] * grid)))
                for gy in rows:
                    for gx in cols:
                        cover[row, gy * grid + gx, c] = 1.0
                cx = min(grid - 1, int((rel[0] + rel[2]) / 2 * grid))
                cy = min(grid - 1, int((rel[1] + rel[3]) / 2 * grid))
                centre[row, cy * grid + cx, c] = 1.0
                corners[row, cy * grid + cx] = rel
                centre_mask[row, cy * grid + cx] = 1.0
                present[row, c] = 1.0
                boxes[row, c] = rel
    return DenseTargets(categories, grid, torch.stack(pixels), cover, centre, corners, centre_mask, present, boxes)


def patch_tokens(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tower's patch tokens as the LLaVA model hands them to its projector: ``vision_feature_layer``'s
    hidden states, the CLS token dropped under the ``default`` select strategy."""
    cfg = model.config
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    layer = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, int) else cfg.vision_feature_layer[-1]
    tokens = out.hidden_states[layer]
    return tokens[:, 1:] if cfg.vision_feature_select_strategy == "default" else tokens


class DenseHeads(nn.Module):
    """Linear heads on the patch tokens (cover, centre, corners) and on their mean (presence, box)."""

    def __init__(self, width: int, n_categories: int) -> None:
        super().__init__()
        self.k = n_categories
        self.patch = nn.Linear(width, 2 * n_categories + 4)
        self.pooled = nn.Linear(width, 5 * n_categories)

    def losses(self, tokens: torch.Tensor, t: DenseTargets, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.k
        out = self.patch(tokens)
        mask = t.centre_mask[idx]
        corner_l1 = (out[..., 2 * k:].sigmoid() - t.corners[idx]).abs().sum(-1)
        pooled = self.pooled(tokens.mean(1)).view(-1, k, 5)
        present = t.present[idx]
        box_l1 = (pooled[..., 1:].sigmoid() - t.boxes[idx]).abs().sum(-1)
        return {
            "cover": F.binary_cross_entropy_with_logits(out[..., :k], t.cover[idx]),
            "centre": F.binary_cross_entropy_with_logits(out[..., k:2 * k], t.centre[idx],
                                                         pos_weight=torch.tensor(CENTRE_POS_WEIGHT)),
            "corners": (corner_l1 * mask).sum() / mask.sum().clamp(min=1.0),
            "presence": F.binary_cross_entropy_with_logits(pooled[..., 0], present),
            "box": (box_l1 * present).sum() / present.sum().clamp(min=1.0),
        }


def loss_total(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return (parts["cover"] + parts["centre"] + BOX_WEIGHT * parts["corners"] + parts["presence"]
            + BOX_WEIGHT * parts["box"])


def centre_hit_rate(model, heads: DenseHeads, t: DenseTargets, batch_size: int = 64) -> float:
    """Share of boxes whose category's highest-scoring centre patch is the true centre patch."""
    hits = total = 0
    with torch.no_grad():
        for start in range(0, len(t.pixels), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(t.pixels)))
            scores = heads.patch(patch_tokens(model, t.pixels[idx]))[..., heads.k:2 * heads.k]  # (B, P, K)
            best = scores.argmax(1)  # (B, K)
            truth = t.centre[idx]  # (B, P, K)
            present = t.present[idx].bool()
            hits += int(truth.gather(1, best.unsqueeze(1)).squeeze(1)[present].sum())
            total += int(present.sum())
    return hits / max(1, total)


def pretrain_vision_tower(cfg: Config, *, val_data: DataConfig | None = None) -> dict:
    """Train the vision tower of ``cfg.model.path`` (``tiny-llava`` builds it) on ``cfg.data``'s grounding records
    for ``cfg.train.max_steps`` steps of ``micro_batch_size`` images (AdamW at ``lr``, linear warm-up over
    ``warmup_ratio``, cosine to 0) and write the whole model to ``<output_dir>/model``. ``val_data``: held-out
    grounding data scored with :func:`centre_hit_rate` at the end. Returns the summary it writes to
    ``<output_dir>/model/pfmvg_vision_pretrain.json``."""
    tc = cfg.train
    if not tc.max_steps:
        raise ValueError("train.max_steps is required for vision pretraining")
    torch.manual_seed(tc.seed)
    out = Path(expand_path(tc.output_dir))
    backbone = get_family(cfg.model.backbone)
    if backbone.name != "llava":
        raise ValueError(f"vision pretraining supports the llava backbone, not {backbone.name!r}")
    model_path = resolve_model_path(cfg, is_main=True)
    model, processor = backbone.load(model_path, torch.float32)
    grid = int(round(math.sqrt(model.config.image_seq_length)))
    targets = dense_targets(TrainingData(cfg.data, backbone, seed=tc.seed, config_dir=cfg.config_dir), grid)
    held_out = None
    if val_data is not None:
        held_out = dense_targets(TrainingData(val_data, backbone, seed=tc.seed, config_dir=cfg.config_dir), grid,
                                 targets.categories)
    tower = model.model.vision_tower
    heads = DenseHeads(tower.config.hidden_size, len(targets.categories))
    params = [*tower.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.0)
    warmup = max(1, int(tc.warmup_ratio * tc.max_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / tc.max_steps)))
    generator = torch.Generator().manual_seed(tc.seed)
    n_images = len(targets.pixels)
    log.info("vision pretraining: %d images, %d categories, %dx%d patches, %d steps of %d", n_images,
             len(targets.categories), grid, grid, tc.max_steps, tc.micro_batch_size)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (out / "train_log.jsonl").open("w") as log_file:
        tower.train()
        for step in progress(range(1, tc.max_steps + 1), desc="vision pretraining", total=tc.max_steps, unit="step"):
            idx = torch.randint(n_images, (min(tc.micro_batch_size, n_images),), generator=generator)
            parts = heads.losses(patch_tokens(model, targets.pixels[idx]), targets, idx)
            loss = loss_total(parts)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
            optimizer.step()
            schedule.step()
            if step % tc.log_steps == 0 or step == tc.max_steps:
                row = {"step": step, "loss": round(loss.item(), 5), **{k: round(v.item(), 5) for k, v in parts.items()},
                       "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 1)}
                log_file.write(json.dumps(row) + "\n")
                log.info("step %d loss %.4f (%s)", step, row["loss"],
                         ", ".join(f"{k} {row[k]:.4f}" for k in parts))
    tower.eval()
    summary = {
        "objective": "dense detection (cover, centre, corners, presence, box)",
        "base_model": model_path, "images": n_images, "categories": targets.categories, "grid": grid,
        "steps": tc.max_steps, "batch": tc.micro_batch_size, "lr": tc.lr, "seed": tc.seed,
        "final_loss": {k: round(v.item(), 5) for k, v in parts.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if held_out is not None:
        summary["val_centre_hit_rate"] = round(centre_hit_rate(model, heads, held_out), 4)
        summary["chance_centre_hit_rate"] = round(1.0 / grid**2, 4)
    model_dir = out / "model"
    model.save_pretrained(str(model_dir), safe_serialization=True)
    processor.save_pretrained(str(model_dir))
    (model_dir / RECORD).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
