"""`make demo`: the main job end to end on the embedded synthetic data, offline, on a CPU.

1. synthesise chest radiographs with boxed findings (synthcxr), a separate set of them for stages 0 and 1b
   (synthcxr_pretrain: the next seed, train split only) and named shapes (synthshapes) into ``<out>/data``
   (``$PFMVG_DATA_ROOT`` of every step);
2. score the image-blind baselines on the test split (the bar a model must clear to show it reads the image);
3. stage 0, VISION PRETRAINING, which stands in for a pretrained vision encoder: build a tiny LLaVA from config and
   train its vision tower with a dense detection objective on synthcxr_pretrain
   (``recipes/pretrain_vision.py --config recipes/configs/demo_vision.yaml``);
4. stage 1, PRETRAINING, which stands in for the pretrained MLLM PFMVG starts from (no offline CPU demo has one):
   a. fine-tune ALL of the model on synthshapes, generic grounding data that teaches it to point at what a phrase
      names (``recipes/configs/demo_shapes.yaml``);
   b. fine-tune ALL of it on radiograph grounding: the synthcxr train split + synthcxr_pretrain
      (``recipes/configs/demo_pretrain.yaml``);
5. stage 2, PFMVG: LoRA on the language model + the projector, vision tower frozen, DeepSpeed ZeRO-2
   (``recipes/finetune_lora.py --config recipes/configs/demo_lora.yaml``);
6. score the stage-1 model and the stage-1 model + LoRA adapter with the real ``lmms-eval`` CLI
   (``--model pfmvg_llava --tasks synthcxr_grounding``) and print them next to the baselines;
7. ``pfmvg report`` on the fine-tuned run: HTML page with box overlays.

Everything it writes is under ``--out``; ``demo_results.json`` holds the numbers and the time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pfmvg_plugin.baselines import BASELINES, PriorBaseline
from pfmvg_plugin.codecs import get_codec
from pfmvg_plugin.data.store import DATA_ROOT_ENV, PreparedDataset
from pfmvg_plugin.data.synth import generate_synthcxr
from pfmvg_plugin.data.synth.shapes import generate_synthshapes
from pfmvg_plugin.metrics import aggregate, score_text
from pfmvg_plugin.training.config import load_config

RECIPES = Path(__file__).resolve().parent
VISION_CONFIG = RECIPES / "configs" / "demo_vision.yaml"
SHAPES_CONFIG = RECIPES / "configs" / "demo_shapes.yaml"
PRETRAIN_CONFIG = RECIPES / "configs" / "demo_pretrain.yaml"
LORA_CONFIG = RECIPES / "configs" / "demo_lora.yaml"
TASK = "synthcxr_grounding"
CONVENTION = "minigptv2"  # prompts "[refer] ..." and answers {<x1><y1><x2><y2>}, as in the demo configs
METRICS = ("acc@0.1", "acc@0.3", "acc@0.5", "miou")


@dataclass(frozen=True)
class Stage:
    """One ``recipes/finetune_lora.py`` stage of the demo: clock key, run directory, YAML and its ``--*-steps``."""

    key: str
    run: str
    config: Path
    steps: str
    text: str


TRAINING_STAGES = (
    Stage("stage1a", "stage1a_shapes", SHAPES_CONFIG, "shapes_steps",
          "stage 1a, PRETRAINING on generic grounding: the stage-0 model, FULL fine-tune (vision tower + projector + "
          "language model) on synthshapes, DeepSpeed ZeRO-2"),
    Stage("stage1", "stage1_pretrain", PRETRAIN_CONFIG, "pretrain_steps",
          "stage 1b, PRETRAINING on radiographs: the stage-1a model, FULL fine-tune on the synthcxr train split + "
          "synthcxr_pretrain, DeepSpeed ZeRO-2"),
    Stage("stage2", "stage2_lora", LORA_CONFIG, "lora_steps",
          "stage 2, PFMVG: LoRA on the language model + projector (vision tower frozen), DeepSpeed ZeRO-2, starting "
          "from the stage-1 model"),
)

#: ``--quick``: a smoke run of every step (minutes -> seconds); the numbers mean nothing.
QUICK = {"n": 48, "vision_steps": 5, "shapes_steps": 6, "pretrain_steps": 12, "lora_steps": 6, "batch_size": 4,
         "limit": 8}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    p.add_argument("--n", type=int, default=None, help="synthetic images (default 3000; train/val/test 80/10/10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--vision-steps", type=int, default=None,
                   help="stage-0 (vision pretraining) steps (default: the YAML's)")
    p.add_argument("--shapes-steps", type=int, default=None,
                   help="stage-1a (synthshapes) optimizer steps (default: the YAML's)")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="stage-1b (synthcxr) optimizer steps (default: the YAML's)")
    p.add_argument("--lora-steps", type=int, default=None, help="stage-2 optimizer steps (default: the YAML's)")
    p.add_argument("--batch-size", type=int, default=None, help="micro batch of every stage (default: the YAMLs')")
    p.add_argument("--limit", type=int, default=None, help="score only the first N test queries (lmms-eval --limit)")
    p.add_argument("--ranks", type=int, default=default_ranks(),
                   help="training processes (default: 2 on a machine with 2 or more cores, else 1; >1 runs the "
                        "`deepspeed` launcher with that many CPU ranks); the YAMLs' global batch (micro batch x "
                        "grad_accum) is kept by dividing grad_accum among the ranks")
    p.add_argument("--quick", action="store_true",
                   help="smoke test of every step in a few minutes "
                        f"({', '.join(f'{k}={v}' for k, v in QUICK.items())}); explicit flags win")
    args = p.parse_args(argv)
    defaults = {"n": 3000, "vision_steps": None, "shapes_steps": None, "pretrain_steps": None, "lora_steps": None,
                "batch_size": None, "limit": None}
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.n < 10:
        p.error("--n must be at least 10 (the test split needs images)")
    if args.ranks < 1:
        p.error("--ranks must be at least 1")
    return args


def default_ranks() -> int:
    """One training process per core, up to two (the demo's data-parallel setting)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


class Clock:
    """Wall time of each step, printed as it ends."""

    def __init__(self, total: int) -> None:
        self.total, self.start, self.times, self.step = total, time.perf_counter(), {}, 0

    def begin(self, name: str, text: str) -> None:
        self.step += 1
        self.name, self.t0 = name, time.perf_counter()
        print(f"\n[{self.step}/{self.total}] {text}", flush=True)

    def end(self) -> None:
        self.times[self.name] = round(time.perf_counter() - self.t0, 1)
        since = time.perf_counter() - self.start
        print(f"      ({self.times[self.name]:.0f} s; {since:.0f} s since the start)", flush=True)

    @property
    def elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def child_env(data_root: Path) -> dict:
    env = {**os.environ, DATA_ROOT_ENV: str(data_root.resolve()), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("DS_ACCELERATOR", "cpu" if not _cuda() else env.get("DS_ACCELERATOR", "cuda"))
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny matrices: one thread per process is the fastest and the steadiest
    env.pop("PFMVG_NO_TASK_HOOK", None)
    return env


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run(cmd: list[str], env: dict, log: Path) -> None:
    """Run a command, streaming its output to the terminal and to ``log``; stop the demo if it fails."""
    print("      $ " + " ".join(str(c) for c in cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = -1
    with log.open("w") as f, subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            f.write(line)
            text = line.strip()
            progress = _TQDM.match(text)
            if progress:  # the training bar, every 10%
                if int(progress["pct"]) // 10 > shown:
                    shown = int(progress["pct"]) // 10
                    print(f"      {text[:120]}", flush=True)
            elif text.startswith(("[pfmvg.train]", "[pfmvg.vision]", "Traceback", "error:")):
                print("      " + text[:150], flush=True)
    if proc.returncode:
        sys.exit(f"demo: the command above failed (exit {proc.returncode}); full output in {log}")


_TQDM = re.compile(r"^train:\s+(?P<pct>\d+)%")


def train_command(args: argparse.Namespace, config: Path, out_dir: Path, steps: int | None,
                  *extra: str) -> list[str]:
    """``recipes/finetune_lora.py`` on ``config`` with the demo's overrides, under ``deepspeed`` for several ranks."""
    overrides = [*extra, f"train.output_dir={out_dir.resolve()}"]
    if steps is not None:
        overrides.append(f"train.max_steps={steps}")
    if args.batch_size is not None:
        overrides.append(f"train.micro_batch_size={args.batch_size}")
    if args.quick:
        overrides += ["train.log_steps=2", "train.warmup_ratio=0.0"]
    script = RECIPES / "finetune_lora.py"
    if args.ranks == 1:
        return [sys.executable, script, "--config", config, "--no-resume", *overrides]
    accum = load_config(config).train.grad_accum
    if accum % args.ranks == 0:  # the ranks share the accumulation: the same global batch as one process
        overrides.append(f"train.grad_accum={accum // args.ranks}")
    else:
        print(f"      note: {config.name} accumulates {accum} micro batches; with {args.ranks} ranks the global "
              f"batch is {args.ranks}x the YAML's", flush=True)
    from pfmvg_plugin.training.dist import free_port

    # CPU ranks over gloo; no shared-memory allreduce op (its JIT build costs a minute)
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
    return [launcher, "--num_gpus", str(args.ranks), "--master_port", str(free_port()), script, "--config", config,
            "--no-resume", *overrides, "train.cpu_shm_comm=off"]


def vision_command(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """``recipes/pretrain_vision.py`` on the stage-0 YAML (one process), scored on the synthcxr val split."""
    overrides = [f"train.output_dir={out_dir.resolve()}"]
    if args.vision_steps is not None:
        overrides.append(f"train.max_steps={args.vision_steps}")
    if args.quick:
        overrides += ["train.log_steps=1", "train.micro_batch_size=4"]
    return [sys.executable, RECIPES / "pretrain_vision.py", "--config", VISION_CONFIG, "--val", "synthcxr:val",
            *overrides]


def score_baselines(ds: PreparedDataset, limit: int | None) -> dict[str, dict]:
    """Image-blind baselines on the test split, each answer written and read back through the demo's box codec."""
    train, test = ds.records("train"), ds.records("test")[:limit]
    codec = get_codec(CONVENTION)
    results = {}
    for kind in BASELINES:
        model = PriorBaseline(kind).fit(train)
        scores = [score_text(codec.encode(model.predict(r), (r["width"], r["height"])), r["boxes"],
                             (r["width"], r["height"]), codec) for r in test]
        results[kind] = aggregate(scores, [r["category"] for r in test])
    return results


def lmms_eval(model_args: str, out_dir: Path, env: dict, limit: int | None, log: Path) -> dict:
    """One ``lmms-eval`` CLI run; returns the task's results (lmms-eval exits 0 even when a task failed)."""
    exe = Path(sys.executable).parent / "lmms-eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lmms_eval"]
    cmd += ["--model", "pfmvg_llava", "--model_args", model_args, "--tasks", TASK, "--batch_size", "32",
            "--output_path", str(out_dir), "--log_samples"]
    if limit:
        cmd += ["--limit", str(limit)]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    run(cmd, env, log)
    found = sorted(out_dir.rglob("*_results.json"))
    if not found:
        sys.exit(f"demo: lmms-eval wrote no results file under {out_dir}; see {log}")
    res = json.loads(found[-1].read_text())["results"][TASK]
    res = {k.split(",")[0]: v for k, v in res.items() if k.endswith(",none")}
    print(f"      -> Acc@0.5 {res['acc@0.5']:.3f}  mIoU {res['miou']:.3f}  parse failures "
          f"{res['parse_failure_rate']:.3f}  ({found[-1]})", flush=True)
    return res


def print_table(rows: list[tuple[str, dict]], n: int) -> None:
    print(f"\n{'synthcxr test, n=' + str(n):62} {'Acc@0.1':>8} {'Acc@0.3':>8} {'Acc@0.5':>8} {'mIoU':>6}")
    for name, res in rows:
        print(f"{name:62} " + " ".join(f"{res[m]:{8 if m != 'miou' else 6}.3f}" for m in METRICS))


def print_categories(prior: dict, models: list[tuple[str, dict]]) -> None:
    """Acc@0.5 per finding next to the phrase prior: where a model matches the prior, it did not read the image."""
    cats = sorted(prior.get("per_category", {}))
    if not cats:
        return
    print(f"\n{'Acc@0.5 by finding':22} {'n':>4} {'phrase_prior':>13}" + "".join(f" {name:>13}" for name, _ in models))
    for cat in cats:
        row = prior["per_category"][cat]
        cells = "".join(f" {res.get(f'acc@0.5/{cat}', float('nan')):13.3f}" for _, res in models)
        print(f"{cat:22} {row['n']:4d} {row['acc@0.5']:13.3f}{cells}")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    data_root = out / "data"
    env = child_env(data_root)
    os.environ[DATA_ROOT_ENV] = env[DATA_ROOT_ENV]
    clock = Clock(8)
    runs = out / "runs"
    stage0 = runs / "stage0_vision"
    run_dirs = {stage.key: runs / stage.run for stage in TRAINING_STAGES}
    stage1, stage2 = run_dirs["stage1"], run_dirs["stage2"]

    clock.begin("data", f"synthesising {args.n} chest radiographs with boxed findings -> {data_root / 'synthcxr'}, "
                        f"{args.n} more for pretraining -> {data_root / 'synthcxr_pretrain'}, and {args.n} "
                        f"images of named shapes -> {data_root / 'synthshapes'}")
    workers = min(2, os.cpu_count() or 1)
    for name in ("synthcxr", "synthcxr_pretrain", "synthshapes"):
        if (data_root / name).exists():
            shutil.rmtree(data_root / name)
    summary = generate_synthcxr(data_root / "synthcxr", n=args.n, seed=args.seed, workers=workers)
    generate_synthcxr(data_root / "synthcxr_pretrain", n=args.n, seed=args.seed + 1, ratios=(1.0, 0.0, 0.0),
                      workers=workers)
    generate_synthshapes(data_root / "synthshapes", n=args.n, seed=args.seed, workers=workers)
    ds = PreparedDataset(data_root / "synthcxr")
    print(f"      synthcxr splits: {summary.get('splits')}")
    clock.end()

    clock.begin("baselines", "image-blind baselines on the test split (they never look at the image)")
    baselines = score_baselines(ds, args.limit)
    for kind, res in baselines.items():
        print(f"      {kind:15} Acc@0.5 {res['acc@0.5']:.3f}  mIoU {res['miou']:.3f}")
    clock.end()

    clock.begin("stage0", "stage 0, VISION PRETRAINING: tiny LLaVA built from config, its vision tower trained with a "
                          "dense detection objective on synthcxr_pretrain (one process, plain torch)")
    run(vision_command(args, stage0), {**env, "OMP_NUM_THREADS": str(min(2, os.cpu_count() or 1))},
        runs / "stage0_vision.log")
    clock.end()

    previous = stage0 / "model"
    for stage in TRAINING_STAGES:  # each starts from the model the one before wrote
        clock.begin(stage.key, stage.text)
        start_from = f"model.path={previous.resolve()}"
        run_dir = run_dirs[stage.key]
        run(train_command(args, stage.config, run_dir, getattr(args, stage.steps), start_from), env,
            runs / f"{stage.run}.log")
        clock.end()
        previous = run_dir / "model"

    clock.begin("lmms_eval", f"scoring with the lmms-eval CLI on {TASK} (before and after the LoRA stage)")
    evals = out / "eval"
    base_args = f"pretrained={(stage1 / 'model').resolve()},box_format={CONVENTION}"
    before = lmms_eval(base_args, evals / "stage1", env, args.limit, evals / "stage1.log")
    after = lmms_eval(f"{base_args},adapter={(stage2 / 'adapter').resolve()}", evals / "stage2_lora", env,
                      args.limit, evals / "stage2_lora.log")
    clock.end()

    clock.begin("report", f"box overlays of the fine-tuned model: pfmvg report {evals / 'stage2_lora'}")
    report = run_report(evals / "stage2_lora", env, evals / "report.log")
    clock.end()

    rows = [(f"{kind} (image-blind baseline)", res) for kind, res in baselines.items()]
    rows += [("stage 1: pretrained (stages 0, 1a, 1b), no adapter", before),
             ("stage 2: + LoRA adapter (PFMVG recipe)  <- fine-tuned", after)]
    n_test = len(ds.records("test")[: args.limit])
    print_table(rows, n_test)
    print_categories(baselines["phrase_prior"], [("stage 1", before), ("stage 2", after)])
    best_blind = max(baselines, key=lambda k: baselines[k]["acc@0.5"])
    print(f"\nfine-tuned Acc@0.5 {after['acc@0.5']:.3f} vs {baselines[best_blind]['acc@0.5']:.3f} for the best "
          f"image-blind baseline ({best_blind}); parse failures {after['parse_failure_rate']:.3f}")
    print(f"report: {report}   total wall time {clock.elapsed:.0f} s")
    results = {"n_images": args.n, "n_test": n_test, "quick": args.quick, "baselines": baselines,
               "stage1_pretrained": before, "stage2_lora": after, "report": str(report),
               "seconds": {**clock.times, "total": clock.elapsed}}
    (out / "demo_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


def run_report(run_dir: Path, env: dict, log: Path) -> Path:
    run([sys.executable, "-m", "pfmvg_plugin.cli.main", "report", str(run_dir), "--n-bootstrap", "200"], env, log)
    return run_dir / "pfmvg_report" / "index.html"


if __name__ == "__main__":
    sys.exit(main())
