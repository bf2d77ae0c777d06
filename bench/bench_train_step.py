"""Step time of the LoRA recipe: bare torch vs DeepSpeed ZeRO-2 vs ZeRO-3 on the same tiny LLaVA and batches.

``*_compile`` engines add ``model.torch_compile`` (regional compile of each layer; compile time is in the warm-up).

Each engine runs in its own fresh process (so peak RSS is per engine) through the real recipe code
(:func:`pfmvg_plugin.training.trainer.train`: data loading, forward, backward, optimizer step, logging), on one rank.
The step time is the median of the per-step wall times the training log records after ``--warmup`` steps.

    .venv/bin/python bench/bench_train_step.py                 # defaults: the demo-sized tiny LLaVA, batch 4
    .venv/bin/python bench/bench_train_step.py --steps 60 --batch 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

from isolated import emit, run_isolated, work_dir  # bench/isolated.py (the script's own folder is on sys.path)

#: name -> (DeepSpeed JSON or None, model.torch_compile)
ENGINES = {"torch": (None, False), "zero2": ("zero2.json", False), "zero3": ("zero3.json", False),
           "torch_compile": (None, True), "zero2_compile": ("zero2.json", True)}
DS_DIR = Path(__file__).resolve().parents[1] / "recipes" / "ds"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="timed optimizer steps per engine (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--batch", type=int, default=4, help="micro batch size (default 4)")
    p.add_argument("--image-size", type=int, default=64, help="tiny LLaVA input size (default 64: 64 image tokens)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16, q/k/v/o + MLP projections)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--engines", default="torch,zero2,zero3",
                   help=f"comma-separated subset of {','.join(ENGINES)} (default torch,zero2,zero3)")
    p.add_argument("--workdir", type=Path, default=None, help="keep model, data and runs here (default: a temp dir)")
    p.add_argument("--one", choices=list(ENGINES), help=argparse.SUPPRESS)  # internal: run one engine, print JSON
    return p.parse_args(argv)


def prepare(work: Path, args) -> tuple[Path, Path]:
    from pfmvg_plugin.models.tiny_llava import build_tiny_llava
    from pfmvg_plugin.training.toy import write_toy_grounding

    model, data = work / "tiny_llava", work / "toy"
    if not (model / "config.json").is_file():
        build_tiny_llava(model, image_size=args.image_size, patch_size=8)
    if not (data / "dataset.json").is_file():
        write_toy_grounding(data, n=64, sizes=((256, 240), (240, 256), (256, 256)))
    return model, data


def run_one(engine: str, work: Path, args) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    from pfmvg_plugin.training.toy import toy_config
    from pfmvg_plugin.training.trainer import train

    model, data = prepare(work, args)
    out = work / f"run_{engine}"
    ds_name, compile_ = ENGINES[engine]
    cfg = toy_config(model, data, out, deepspeed=str(DS_DIR / ds_name) if ds_name else None,
                     model={"torch_compile": compile_},
                     lora={"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.05,
                           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]},
                     train={"max_steps": args.warmup + args.steps, "micro_batch_size": args.batch,
                            "auto_resume": False},
                     data={"epoch_size": (args.warmup + args.steps) * args.batch})
    res = train(cfg, resume=False)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    times = [args.batch / r["samples_per_s"] for r in rows[args.warmup:]]
    tokens = [r["tokens_per_s"] for r in rows[args.warmup:]]
    return {
        "engine": engine,
        "step_ms": 1000 * statistics.median(times),
        "step_ms_p90": 1000 * sorted(times)[int(0.9 * (len(times) - 1))],
        "tokens_per_s": statistics.median(tokens),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable": res.summary.get("engine"),
        "final_loss": rows[-1]["loss"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PFMVG_NO_PROGRESS", "1")
    if args.one:
        emit(run_one(args.one, args.workdir, args))
        return 0
    with work_dir(args.workdir) as args.workdir:
        return compare(args)


def compare(args) -> int:
    """Every engine in its own process, then the table."""
    prepare(args.workdir, args)
    load_before = os.getloadavg()
    results = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        result = run_isolated(__file__, [
            "--one", engine, "--workdir", str(args.workdir), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--image-size", str(args.image_size), "--lora-r", str(args.lora_r),
            "--threads", str(args.threads)], threads=args.threads)
        if "error" in result:
            return 1
        results.append(result)
    load_after = os.getloadavg()
    base = next((r for r in results if r["engine"] == "torch"), results[0])
    print(f"tiny LLaVA {args.image_size}px ({(args.image_size // 8) ** 2} image tokens), LoRA r={args.lora_r} on "
          f"q/k/v/o/gate/up/down + projector, micro batch {args.batch}, 1 rank, {args.threads} thread(s), fp32, "
          f"median of {args.steps} steps after {args.warmup}")
    print(f"{'engine':13} {'step ms':>9} {'p90 ms':>8} {'tokens/s':>9} {'x bare':>7} {'peak RSS MiB':>13} {'loss':>7}")
    for r in results:
        print(f"{r['engine']:13} {r['step_ms']:9.1f} {r['step_ms_p90']:8.1f} {r['tokens_per_s']:9.0f} "
              f"{r['step_ms'] / base['step_ms']:7.2f} {r['peak_rss_mib']:13.0f} {r['final_loss']:7.4f}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); {os.cpu_count()} CPUs; "
          f"{platform.processor() or platform.machine()}; python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
