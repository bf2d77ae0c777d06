"""Report-generation training with and without ``data.group_by_length``: padding and useful tokens per second.

Radiology reports vary in length (IU-Xray findings run from ~10 to over 100 words), so a micro-batch of random reports
is padded to its longest one and a large share of the step is spent on padding. This writes a report dataset with
lengths drawn from a log-normal (median ``--median-words``, sentences from a pool of radiology findings), then trains
the tiny LLaVA with LoRA through the real recipe (:func:`pfmvg_plugin.training.trainer.train`) once per setting, each
in its own fresh process. Reported: the padded share of the tokens the model processed (computed from the same epoch
order the trainer uses), the median step time and the real (non-padding) tokens per second from the training log.

    .venv/bin/python bench/bench_group_by_length.py
    .venv/bin/python bench/bench_group_by_length.py --batch 8 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from isolated import emit, run_isolated, work_dir  # bench/isolated.py (the script's own folder is on sys.path)

SENTENCES = (
    "The heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
    "There is no focal airspace consolidation.", "No pleural effusion or pneumothorax is seen.",
    "There is a small left pleural effusion.", "Mild blunting of the right costophrenic angle is noted.",
    "Patchy opacity in the right lower lobe may represent atelectasis or pneumonia.",
    "Degenerative changes of the thoracic spine are present.", "The pulmonary vasculature is normal.",
    "A calcified granuloma is seen in the left upper lobe.", "Surgical clips project over the right upper quadrant.",
    "The lungs are hyperexpanded, consistent with emphysema.", "No acute bony abnormality is identified.",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", type=int, default=400, help="reports in the dataset (default 400)")
    p.add_argument("--median-words", type=float, default=35.0, help="median report length in words (default 35)")
    p.add_argument("--batch", type=int, default=8, help="micro batch size (default 8)")
    p.add_argument("--steps", type=int, default=40, help="timed optimizer steps (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--workdir", type=Path, default=None, help="keep model, data and runs here (default: a temp dir)")
    p.add_argument("--one", choices=("plain", "grouped"), help=argparse.SUPPRESS)  # internal: one run, print JSON
    return p.parse_args(argv)


def write_reports(root: Path, n: int, median_words: float) -> Path:
    """A prepared ``report`` dataset of ``n`` reports on one blank image, log-normal lengths."""
    import numpy as np
    from PIL import Image

    from pfmvg_plugin.data.store import write_dataset

    if (root / "dataset.json").is_file():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("L", (64, 64), 40).save(root / "images" / "blank.png")
    rng = np.random.default_rng(0)
    words_per_sentence = sum(len(s.split()) for s in SENTENCES) / len(SENTENCES)
    records = []
    for i in range(n):
        words = float(np.clip(rng.lognormal(np.log(median_words), 0.6), 8, 150))
        picks = rng.choice(len(SENTENCES), size=max(1, round(words / words_per_sentence)))
        records.append({"id": f"rep-{i:04d}", "task": "report", "source": "benchreports", "split": "train",
                        "image": "images/blank.png", "width": 64, "height": 64, "meta": {},
                        "report": " ".join(SENTENCES[j] for j in picks)})
    write_dataset(root, "benchreports", records, image_root=root)
    return root


def config(work: Path, grouped: bool, args):
    from pfmvg_plugin.training.toy import toy_config

    steps = args.warmup + args.steps
    return toy_config(work / "tiny_llava", work / "reports", work / f"run_{'grouped' if grouped else 'plain'}",
                      lora={"r": 16, "alpha": 32, "dropout": 0.0,
                            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"]},
                      data={"group_by_length": grouped},
                      train={"max_steps": steps, "micro_batch_size": args.batch, "log_steps": 1})


def padded_share(work: Path, grouped: bool, args) -> float:
    """Padding tokens / all tokens over the steps the run takes (the trainer's epoch order, one rank)."""
    from transformers import AutoProcessor

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.data import TrainingData

    cfg = config(work, grouped, args)
    backbone = get_family("llava")
    backbone.attach(None, AutoProcessor.from_pretrained(work / "tiny_llava"))
    data = TrainingData(cfg.data, backbone, seed=cfg.train.seed)
    order = data.step_order(0, args.batch)
    pad = total = 0
    for step in range(args.warmup + args.steps):
        keys = order[step * args.batch:(step + 1) * args.batch]
        mask = backbone.collate([data.example(0, 0, int(s), int(r)) for s, r in keys])["attention_mask"]
        pad, total = pad + int((mask == 0).sum()), total + mask.numel()
    return pad / total


def run_one(work: Path, grouped: bool, args) -> dict:
    import torch

    from pfmvg_plugin.training.trainer import train

    torch.set_num_threads(1)
    res = train(config(work, grouped, args), resume=False)
    rows = [json.loads(line) for line in (res.output_dir / "train_log.jsonl").read_text().splitlines()]
    timed = rows[args.warmup:]
    return {"step_ms": 1000 * statistics.median(args.batch / r["samples_per_s"] for r in timed),
            "real_tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed), "final_loss": rows[-1]["loss"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PFMVG_NO_PROGRESS", "1")
    if args.one:
        emit(run_one(args.workdir, args.one == "grouped", args))
        return 0
    with work_dir(args.workdir) as args.workdir:
        return compare(args)


def compare(args) -> int:
    """Both settings in their own processes, then the table."""
    from pfmvg_plugin.training.toy import ensure_tiny_llava

    ensure_tiny_llava(args.workdir / "tiny_llava", image_size=64, patch_size=8)
    write_reports(args.workdir / "reports", args.reports, args.median_words)
    results = {}
    for name in ("plain", "grouped"):
        result = run_isolated(__file__, [
            "--one", name, "--workdir", str(args.workdir), "--batch", str(args.batch), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--reports", str(args.reports)], threads=1)
        if "error" in result:
            return 1
        results[name] = {**result, "padded_share": padded_share(args.workdir, name == "grouped", args)}
    print(f"tiny LLaVA 64 px (64 image tokens) + LoRA r16, {args.reports} reports (median {args.median_words:g} "
          f"words, log-normal), micro batch {args.batch}, 1 rank, 1 thread, median of {args.steps} steps after "
          f"{args.warmup}")
    print(f"{'data.group_by_length':22} {'padded share':>12} {'step ms':>8} {'real tokens/s':>14} {'x plain':>8}")
    base = results["plain"]["real_tokens_per_s"]
    for name, r in results.items():
        print(f"{str(name == 'grouped').lower():22} {r['padded_share']:12.1%} {r['step_ms']:8.1f} "
              f"{r['real_tokens_per_s']:14.0f} {r['real_tokens_per_s'] / base:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
