"""Tiny datasets and models for tests and benchmarks of the training recipe (seconds on a CPU).

:func:`write_toy_grounding` writes a prepared grounding dataset of small non-square images, each with one bright
rectangle exactly at its box; :data:`TEST_TINY_LLAVA` are :func:`~pfmvg_plugin.models.tiny_llava.build_tiny_llava`
arguments for a model small enough for many DeepSpeed runs per test session.
"""

from __future__ import annotations

import random
from pathlib import Path

from pfmvg_plugin.data.schema import grounding_record
from pfmvg_plugin.data.store import write_dataset

#: ``build_tiny_llava`` arguments: 32-px images, 8-px patches (16 image tokens), 64-wide 2-layer Llama.
TEST_TINY_LLAVA = {"image_size": 32, "patch_size": 8, "vision_hidden_size": 32, "vision_layers": 2,
                   "text_hidden_size": 64, "text_layers": 2, "num_attention_heads": 4, "vocab_size": 1024}

_PHRASES = ("small nodule in the {side} upper zone", "{side} pleural effusion",
            "consolidation in the {side} lower zone", "{side} apical pneumothorax", "mass in the {side} middle zone")


def write_toy_grounding(out_dir: str | Path, n: int = 16, seed: int = 0, sizes=((48, 40), (40, 48), (44, 44)),
                        split: str = "train", name: str = "toy") -> Path:
    """A prepared dataset (``dataset.json`` + ``<split>.jsonl`` + PNGs) of ``n`` grounding records."""
    from PIL import Image, ImageDraw

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        bw, bh = rng.randint(6, w // 2), rng.randint(6, h // 2)
        x1, y1 = rng.randint(0, w - bw), rng.randint(0, h - bh)
        box = [float(x1), float(y1), float(x1 + bw), float(y1 + bh)]
        img = Image.new("L", (w, h), color=rng.randint(20, 60))
        ImageDraw.Draw(img).rectangle([x1, y1, x1 + bw - 1, y1 + bh - 1], fill=230)
        rel = f"images/img{i:04d}.png"
        img.save(out / rel)
        side = "left" if (x1 + bw / 2) > w / 2 else "right"  # patient's left is the image right
        phrase = rng.choice(_PHRASES).format(side=side)
        records.append(grounding_record(record_id=f"{name}-{i:04d}", source=name, split=split, image=rel, width=w,
                                        height=h, phrase=phrase, boxes=[box], category=None, meta={}))
    write_dataset(out, name, records, image_root=out)
    return out


def write_toy_text(out_dir: str | Path, task: str = "report", n: int = 8, name: str = "toytext",
                   size=(40, 40)) -> Path:
    """A prepared ``report`` (or ``vqa``) dataset on blank images, for caption/VQA stages."""
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rel = f"images/t{i:04d}.png"
        Image.new("L", size, color=40 + 10 * (i % 5)).save(out / rel)
        base = {"id": f"{name}-{i:04d}", "task": task, "source": name, "split": "train", "image": rel,
                "width": size[0], "height": size[1], "meta": {}}
        if task == "report":
            base["report"] = "The lungs are clear. No pleural effusion." if i % 2 else "Small left pleural effusion."
        else:
            base.update(question="Is there a pleural effusion?", answer="yes" if i % 2 else "no", answer_type="closed")
        records.append(base)
    write_dataset(out, name, records, image_root=out)
    return out


def ensure_tiny_llava(out_dir: str | Path, **overrides) -> Path:
    """Build the test-sized tiny LLaVA into ``out_dir`` unless it is already there."""
    out = Path(out_dir)
    if not (out / "config.json").is_file():
        from pfmvg_plugin.models.tiny_llava import build_tiny_llava

        build_tiny_llava(out, **{**TEST_TINY_LLAVA, **overrides})
    return out


def toy_config(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, deepspeed=None, **sections):
    """A validated :class:`~pfmvg_plugin.training.config.Config` for tiny runs; ``sections`` update the defaults
    section by section (``train={"max_steps": 3}``)."""
    from pfmvg_plugin.training.config import config_from_dict

    data = {
        "model": {"backbone": "llava", "path": str(model_dir)},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "data": {"datasets": [{"path": str(data_dir), "split": "train"}]},
        "train": {"output_dir": str(out_dir), "max_steps": 3, "micro_batch_size": 2, "lr": 1e-3, "seed": 0,
                  "lr_scheduler": "constant", "auto_resume": False},
        "deepspeed": deepspeed,
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **values}
        else:
            data[name] = values
    return config_from_dict(data)
