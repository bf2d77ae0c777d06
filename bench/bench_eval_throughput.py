"""Evaluation throughput: our ``pfmvg_llava`` (batched) vs lmms-eval's built-in ``llava_hf`` on the same checkpoint.

Both models are driven in-process exactly as the lmms-eval evaluator drives a simple model: ``generate_until`` on
the same ``Instance`` objects (args ``(ctx, gen_kwargs, doc_to_visual, doc_id, task, split)``), the same synthcxr
radiographs and LLaVA grounding prompts, the same generation settings (greedy, ``max_new_tokens``), the same
thread count. Warm-up calls are excluded; the timed rounds alternate between the models (the order rotates every
round) and the median is reported. All must return the same answers (checked), so the comparison is like for like.
``pfmvg_llava_b1`` (our class at batch 1) separates what batching buys from per-request overhead.

Threads: on the 2-core VM a model this small runs *slower and erratically* with 2 intra-op threads (the second
OpenMP thread mostly spins; wall time for the same work varied 0.25-5.7 s between runs), so the default is
``--threads 1`` for both models; ``--threads 2`` measures the other setting.

::

    python bench/bench_eval_throughput.py                 # builds the tiny LLaVA checkpoint in a temp dir
    python bench/bench_eval_throughput.py --checkpoint DIR --samples 64 --batch-size 8 --max-new-tokens 16
    python bench/bench_eval_throughput.py --checkpoint W/llava_7b --device cuda --dtype bfloat16 --batch-size 16
        # GPU: the random 7B checkpoint of `bench_gpu_llava7b.py --workdir W` (three copies in memory, ~42 GiB);
        # in bf16 a padded batch may round a few answers differently from batch 1, which the output then says
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PFMVG_NO_PROGRESS", "1")

TASK, SPLIT = "synthcxr_bench", "test"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", help="LLaVA checkpoint directory (default: build the tiny one in a temp dir)")
    p.add_argument("--samples", type=int, default=48, help="requests per timed round (default 48)")
    p.add_argument("--batch-size", type=int, default=8, help="pfmvg_llava batch size (default 8; llava_hf: 1)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="greedy tokens per answer (default 16)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per model, alternating (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both models (default 1)")
    p.add_argument("--device", default="cpu", help="device of all three models (default cpu; cuda for a GPU)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weights and compute dtype (default float32)")
    return p.parse_args(argv)


def import_llava_hf():
    """lmms-eval's simple ``llava_hf`` class; it imports ``decord`` at module level (video only)."""
    note = "decord installed"
    try:
        import decord  # noqa: F401
    except ImportError:
        # Image tasks never touch decord; a stub lets the module import. Said in the output.
        stub = types.ModuleType("decord")
        stub.VideoReader = None
        stub.cpu = None
        sys.modules["decord"] = stub
        note = "decord NOT installed: a stub module was inserted (only video inputs would use it)"
    from lmms_eval.models.simple.llava_hf import LlavaHf

    return LlavaHf, note


def make_docs(n: int) -> list[dict]:
    from pfmvg_plugin.data.synth import image_rng, render_case

    docs = []
    for i in range(n):
        image, findings, _ = render_case(image_rng(0, i), size=256)
        docs.append({"image": image, "phrase": findings[0].phrase})
    return docs


def make_requests(docs: list[dict], max_new_tokens: int) -> list:
    from lmms_eval.api.instance import Instance

    from pfmvg_plugin.prompts import build_prompt

    gen = {"max_new_tokens": max_new_tokens, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    return [
        Instance(
            request_type="generate_until",
            arguments=(build_prompt("refer", "llava", phrase=d["phrase"]), dict(gen), _doc_to_visual, i, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
    ]


def _doc_to_visual(doc: dict) -> list:
    return [doc["image"]]


def timed(model, docs, max_new_tokens) -> tuple[float, list[str]]:
    requests = make_requests(docs, max_new_tokens)  # fresh: llava_hf pops `until` from the request's gen_kwargs
    with contextlib.redirect_stderr(io.StringIO()):  # llava_hf's progress bar cannot be turned off; silence both
        start = time.perf_counter()
        answers = model.generate_until(requests)
        seconds = time.perf_counter() - start
    return seconds, answers


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.threads:
        torch.set_num_threads(args.threads)

    from pfmvg_plugin.lmms.llava_model import PfmvgLlava
    from pfmvg_plugin.models.tiny_llava import build_tiny_llava

    LlavaHf, decord_note = import_llava_hf()
    tmp = None
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="pfmvg_bench_")
        ckpt = build_tiny_llava(Path(tmp.name) / "tiny_llava")

    docs = make_docs(args.samples)
    where = {"device": args.device, "dtype": args.dtype}
    ours = PfmvgLlava(pretrained=str(ckpt), batch_size=args.batch_size, **where)
    ours_b1 = PfmvgLlava(pretrained=str(ckpt), batch_size=1, **where)
    # pfmvg_llava shows images through the llava family's image function (a squash to the processor's input; the
    # processor's own resize is then a no-op); llava_hf hands them to the processor as they are. The docs hold the
    # images already at the input size, so all three see the same pixels and their answers can be compared.
    if ours.image_fn is not None:
        for doc in docs:
            doc["image"] = ours.image_fn(doc["image"].convert("RGB"))
    device_map = args.device if args.device == "cpu" or ":" in args.device else f"{args.device}:0"
    theirs = LlavaHf(pretrained=str(ckpt), batch_size=1, device_map=device_map, **where)
    models = {"pfmvg_llava": ours, "pfmvg_llava_b1": ours_b1, "llava_hf": theirs}
    for m in models.values():
        m.task_dict = {TASK: {SPLIT: docs}}

    for m in models.values():  # warm-up (excluded): first-call allocations, kernel selection, lazy imports
        timed(m, docs[: max(args.batch_size, 2)], args.max_new_tokens)

    times: dict[str, list[float]] = {k: [] for k in models}
    answers: dict[str, list[str]] = {}
    names = list(models)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            seconds, out = timed(models[name], docs, args.max_new_tokens)
            times[name].append(seconds)
            answers[name] = out

    same = answers["pfmvg_llava"] == answers["llava_hf"] == answers["pfmvg_llava_b1"]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"machine: {cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), python {platform.python_version()}; {args.device} {args.dtype}")
    print(f"checkpoint: {ckpt}" + (" (tiny LLaVA built by build_tiny_llava)" if tmp else ""))
    print(f"llava_hf: lmms_eval.models.simple.llava_hf.LlavaHf, {decord_note}")
    print(f"work: {args.samples} synthcxr grounding requests per round, greedy, max_new_tokens={args.max_new_tokens}, "
          f"{args.rounds} rounds alternating, warm-up excluded; median seconds")
    print(f"{'model':<16} {'batch':>5} {'median s':>9} {'samples/s':>10}  rounds (s)")
    rate = {}
    for name in models:
        med = statistics.median(times[name])
        rate[name] = args.samples / med
        batch = args.batch_size if name == "pfmvg_llava" else 1
        rounds = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<16} {batch:>5} {med:>9.3f} {rate[name]:>10.1f}  {rounds}")
    print(f"identical answers across the three: {same}")
    print(f"speed-up pfmvg_llava (batch {args.batch_size}) / llava_hf (batch 1): "
          f"{rate['pfmvg_llava'] / rate['llava_hf']:.2f}x")
    print(f"speed-up pfmvg_llava (batch 1) / llava_hf (batch 1): {rate['pfmvg_llava_b1'] / rate['llava_hf']:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0 if same or args.dtype != "float32" else 1  # in half precision padding may round answers apart


if __name__ == "__main__":
    sys.exit(main())
