"""GPU step time, tokens/s, MFU and peak memory of the LoRA recipe on a LLaVA-1.5-7B-shaped model (random weights).

No checkpoint can be downloaded, so the script writes one: the real LLaVA-1.5-7B shapes (CLIP ViT-L/14 at 336 px,
576 image tokens, 2-layer GELU projector, Llama-2-7B: 32 layers x 4096, MLP 11008, vocabulary 32064) with random bf16
weights, saved as safetensors next to the tokenizer/processor of the tiny LLaVA builder. Each engine then trains in its
own process through the real recipe (:func:`pfmvg_plugin.training.trainer.train`: data loading, PEFT wiring,
DeepSpeed, logging) on synthetic radiograph-sized grounding images, with the LoRA settings of
``recipes/configs/llava_mscxr.yaml`` (r 64, alpha 16, q/k/v/o/gate/up/down; projector trained; vision tower frozen).

MFU counts the FLOPs the model needs, not what the hardware runs (no credit for recomputation under gradient
checkpointing), against the dense bf16 peak (``--peak-tflops``, H100 SXM: 989.4):

- language model, per token: forward ``2 N + A``, backward ``2 N + 2 A`` (the base weights are frozen: activation
  gradients only, no weight gradients) and ``6 N_lora`` for the adapters; ``N`` = decoder Linear weights + LM head,
  ``A = 2 L h s`` causal attention scores and mixing at sequence length ``s``;
- vision tower, per image: forward only, ``2 N_vis`` per patch token + ``4 L h s^2`` attention (no gradient reaches it);
- projector, per image token: ``6 N_proj`` (trained).

Throughput levers are compared side by side with ``--variants``: each variant is a ``+``-joined set of options
(``liger``: Liger kernels; ``compile``: regional ``torch.compile``; ``nodropout``: LoRA dropout 0, so PEFT skips the
dropout op), ``base`` none; every engine runs every variant and the table gives each step time as a ratio to the
engine's first variant. The first-step loss column checks that a lever does not change the maths.

    python bench/bench_gpu_llava7b.py                            # zero2 (bf16) and zero3_offload on the GPU
    python bench/bench_gpu_llava7b.py --engines zero2 --variants base,liger,compile,liger+compile+nodropout
    python bench/bench_gpu_llava7b.py --size tiny --steps 3      # CPU smoke run of the same code path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

from isolated import emit, run_isolated, work_dir  # bench/isolated.py (the script's own folder is on sys.path)

DS_DIR = Path(__file__).resolve().parents[1] / "recipes" / "ds"
#: name -> (DeepSpeed JSON, gradient checkpointing)
ENGINES = {"torch": (None, False), "zero2": ("zero2.json", False), "zero2_gc": ("zero2.json", True),
           "zero3": ("zero3.json", True), "zero3_offload": ("zero3_offload.json", True)}
#: LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf config.json)
SHAPES = {
    "7b": {"vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768},
           "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}},
    "tiny": {"vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "image_size": 56, "patch_size": 14, "projection_dim": 64},
             "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 4, "vocab_size": 4096, "max_position_embeddings": 1024,
                      "rms_norm_eps": 1e-5}},
}
#: variant option -> config sections it sets (merged over the run's own)
OPTIONS = {"liger": {"model": {"use_liger_kernel": True}}, "compile": {"model": {"torch_compile": True}},
           "nodropout": {"lora": {"dropout": 0.0}}}
LORA = {"r": 64, "alpha": 16, "dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SHAPES), default="7b", help="model shapes (default 7b; tiny: CPU smoke)")
    p.add_argument("--engines", default="zero2,zero3_offload", help=f"comma-separated subset of {','.join(ENGINES)}")
    p.add_argument("--batch", type=int, default=8, help="micro batch size per GPU (default 8)")
    p.add_argument("--offload-batch", type=int, default=4, help="micro batch of the *_offload engines (default 4)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--lora-targets", default=",".join(LORA["target_modules"]),
                   help="LoRA target modules (default: all linear layers, as recipes/configs/llava_mscxr.yaml; "
                        "q_proj,v_proj is the PFMVG/MiniGPT-v2 choice)")
    p.add_argument("--lora-dropout", type=float, default=LORA["dropout"], help="LoRA dropout (default 0.05)")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers (default 0)")
    p.add_argument("--peak-tflops", type=float, default=989.4, help="dense bf16 peak for MFU (default H100 SXM)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint and runs here (default: temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--variants", default="base",
                   help=f"comma-separated throughput variants, each a '+'-joined subset of {','.join(OPTIONS)} or "
                        "'base' (default base)")
    p.add_argument("--one", choices=list(ENGINES), help=argparse.SUPPRESS)  # internal: one engine, print JSON
    p.add_argument("--variant", default="base", help=argparse.SUPPRESS)  # internal: the variant of --one
    args = p.parse_args(argv)
    for variant in [args.variant, *args.variants.split(",")]:
        unknown = set(variant_options(variant)) - set(OPTIONS)
        if unknown:
            p.error(f"unknown variant option(s) {sorted(unknown)} in {variant!r}; choose from {', '.join(OPTIONS)}")
    return args


def variant_options(variant: str) -> list[str]:
    """``liger+compile`` -> ``["liger", "compile"]``; ``base`` -> ``[]``."""
    return [o for o in variant.strip().split("+") if o and o != "base"]


def build_checkpoint(work: Path, size: str) -> Path:
    """Random-weight LLaVA of ``size`` shapes saved as safetensors with a working tokenizer and processor."""
    import torch
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    from pfmvg_plugin.models.tiny_llava import build_tiny_llava

    out = work / f"llava_{size}"
    if (out / "config.json").is_file():
        return out
    shapes = SHAPES[size]
    proc_dir = build_tiny_llava(work / "processor_src", image_size=shapes["vision"]["image_size"],
                                patch_size=shapes["vision"]["patch_size"])
    config = AutoConfig.from_pretrained(proc_dir)
    for key, value in shapes["vision"].items():
        setattr(config.vision_config, key, value)
    for key, value in shapes["text"].items():
        setattr(config.text_config, key, value)
    # transformers 5 stores head_dim explicitly: the tiny config's value would shrink q/k/v/o to 32 heads x 32
    config.text_config.head_dim = shapes["text"]["hidden_size"] // shapes["text"]["num_attention_heads"]
    config.vision_feature_layer, config.projector_hidden_act = -2, "gelu"
    config.image_seq_length = (shapes["vision"]["image_size"] // shapes["vision"]["patch_size"]) ** 2
    config.text_config.initializer_range = config.initializer_range = 0.02
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    check_shapes(model, size)
    model.save_pretrained(out, safe_serialization=True)
    AutoProcessor.from_pretrained(proc_dir).save_pretrained(out)
    del model
    shutil.rmtree(proc_dir)
    return out


def check_shapes(model, size: str) -> None:
    """Fail unless the decoder's Linear weights have the sizes the FLOP count assumes."""
    t = SHAPES[size]["text"]
    h, f, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    linear = sum(p.numel() for n, p in model.named_parameters()
                 if "language_model" in n and n.endswith("proj.weight"))
    if linear != layers * (4 * h * h + 3 * h * f):
        raise RuntimeError(f"decoder Linear weights {linear:,} != {layers * (4 * h * h + 3 * h * f):,} assumed")


def count_flops(size: str, seq_len: float, lora_params: int) -> float:
    """Model FLOPs of one training sample (see the module docstring)."""
    v, t = SHAPES[size]["vision"], SHAPES[size]["text"]
    h, f, layers, vocab = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["vocab_size"]
    n_lm = layers * (4 * h * h + 3 * h * f) + h * vocab
    attn = 2 * layers * h * seq_len
    lm = seq_len * ((2 * n_lm + attn) + (2 * n_lm + 2 * attn)) + 6 * lora_params * seq_len
    hv, lv = v["hidden_size"], v["num_hidden_layers"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    n_vis = lv * (4 * hv * hv + 2 * hv * v["intermediate_size"])
    vision = 2 * n_vis * (patches + 1) + 4 * lv * hv * (patches + 1) ** 2
    n_proj = hv * h + h * h
    return lm + vision + 6 * n_proj * patches


def run_one(engine: str, work: Path, args) -> dict:
    import torch

    from pfmvg_plugin.training.toy import toy_config, write_toy_grounding
    from pfmvg_plugin.training.trainer import train

    ds_name, checkpointing = ENGINES[engine]
    batch = args.offload_batch if engine.endswith("offload") else args.batch
    steps = args.warmup + args.steps
    data = work / "toy"
    if not (data / "dataset.json").is_file():
        write_toy_grounding(data, n=64, sizes=((512, 480), (480, 512), (512, 512)))
    out = work / f"run_{engine}_{args.variant}"
    shutil.rmtree(out, ignore_errors=True)
    sections = {"lora": {**LORA, "target_modules": args.lora_targets.split(","), "dropout": args.lora_dropout},
                "model": {"gradient_checkpointing": checkpointing, "attn_implementation": "sdpa"}}
    for option in variant_options(args.variant):
        for section, values in OPTIONS[option].items():
            sections[section] = {**sections[section], **values}
    lora = sections["lora"]
    cfg = toy_config(work / f"llava_{args.size}", data, out, deepspeed=str(DS_DIR / ds_name) if ds_name else None,
                     lora=lora, model=sections["model"],
                     train={"max_steps": steps, "micro_batch_size": batch, "lr": 2e-4, "log_steps": 1,
                            "precision": "bf16" if torch.cuda.is_available() else "fp32", "auto_resume": False},
                     data={"epoch_size": steps * batch, "max_length": 1024, "num_workers": args.num_workers})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res = train(cfg, resume=False)
    model = res.engine.module
    def numel(p):  # ZeRO-3 leaves an empty placeholder; ds_numel is the full size
        return p.ds_numel if hasattr(p, "ds_numel") else p.numel()

    lora_params = sum(numel(p) for n, p in model.named_parameters() if "lora_" in n)
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    timed = rows[args.warmup:]
    step_s = statistics.median(batch / r["samples_per_s"] for r in timed)
    tokens_s = statistics.median(r["tokens_per_s"] for r in timed)
    seq_len = tokens_s * step_s / batch
    flops = count_flops(args.size, seq_len, lora_params) * batch / step_s
    return {
        "engine": engine, "variant": args.variant, "ds_config": ds_name, "lora_targets": lora["target_modules"],
        "lora_dropout": lora["dropout"],
        "lora_params": lora_params, "num_workers": args.num_workers, "gradient_checkpointing": checkpointing,
        "micro_batch": batch,
        "step_s": step_s, "tokens_per_s": tokens_s, "seq_len": seq_len, "tflops": flops / 1e12,
        "mfu": flops / (args.peak_tflops * 1e12),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "trainable_params": trainable, "first_loss": rows[0]["loss"], "final_loss": rows[-1]["loss"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PFMVG_NO_PROGRESS", "1")
    if args.one:
        emit(run_one(args.one, args.workdir, args))
        return 0
    with work_dir(args.workdir, "pfmvg_gpu_bench_") as args.workdir:
        return compare(args)


def compare(args) -> int:
    """Every engine x variant in its own process, then the table."""
    build_checkpoint(args.workdir, args.size)
    results = []
    jobs = [(e.strip(), v.strip()) for e in args.engines.split(",") if e.strip()
            for v in args.variants.split(",") if v.strip()]
    for engine, variant in jobs:
        result = run_isolated(__file__, [
            "--one", engine, "--variant", variant, "--workdir", str(args.workdir), "--size", args.size,
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
            "--offload-batch", str(args.offload_batch), "--peak-tflops", str(args.peak_tflops),
            "--lora-targets", args.lora_targets, "--lora-dropout", str(args.lora_dropout),
            "--num-workers", str(args.num_workers)])
        results.append({"engine": engine, "variant": variant, **result})
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"LLaVA-1.5-{args.size} shapes, random weights, LoRA r={LORA['r']} on {args.lora_targets} (dropout "
          f"{args.lora_dropout}) + projector, {args.num_workers} loader workers, "
          f"median of {args.steps} steps after {args.warmup}; {device}; torch {torch.__version__}")
    print(f"{'engine':14} {'variant':24} {'batch':>5} {'GC':>3} {'step s':>7} {'speed-up':>8} {'tokens/s':>9} "
          f"{'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9} {'loss 1st':>8} {'last':>7}")
    first_step: dict[str, float] = {}  # engine -> step time of its first variant
    for r in results:
        if "error" in r:
            print(f"{r['engine']:14} {r['variant']:24} failed")
            continue
        r["speedup"] = first_step.setdefault(r["engine"], r["step_s"]) / r["step_s"]
        peak = f"{r['peak_gpu_gib']:9.1f}" if r["peak_gpu_gib"] is not None else f"{'-':>9}"
        gc = "yes" if r["gradient_checkpointing"] else "no"
        print(f"{r['engine']:14} {r['variant']:24} {r['micro_batch']:5d} {gc:>3} {r['step_s']:7.3f} "
              f"{r['speedup']:7.2f}x {r['tokens_per_s']:9.0f} {r['tflops']:8.1f} {r['mfu']:6.1%} "
              f"{peak} {r['first_loss']:8.4f} {r['final_loss']:7.3f}")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "results": results}, indent=2))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
