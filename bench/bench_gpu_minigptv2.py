"""GPU training-step benchmark of the MiniGPT-v2 7B LoRA recipe (PFMVG / PeFoMed) with random weights.

Builds the real MiniGPT-v2 shapes -- EVA ViT-g/14 at 448 px (39 blocks, width 1408), 4-token grouping to 256 image
tokens of 5632, ``llama_proj`` 5632 -> 4096, LLaMA-2-7B (32 x 4096, MLP 11008, vocabulary 32000) -- directly on the
GPU in bf16 (nothing is downloaded), wraps it as the papers train it (LoRA r 64 / alpha 16 / dropout 0.05 on the
LLaMA's q_proj and v_proj, ``llama_proj`` trainable, EVA and LLaMA frozen), and times full optimizer steps on a batch
of B random 448 px images with ~64 text tokens each (sequence = 256 image + 64 text tokens; loss on the last 16).

Engines: DeepSpeed ZeRO-2 bf16 with a client ``torch.optim.AdamW`` (no JIT-built optimizer op), single GPU over NCCL;
or, where DeepSpeed is not installed (``--engine auto`` falls back), plain torch: bf16 base weights, fp32 trainable
weights, bf16 autocast, fused AdamW. The engine used is in the output.

MFU counts the FLOPs the model needs (no credit for recomputation under gradient checkpointing) against the dense
bf16 peak (``--peak-tflops``, H100 SXM: 989):

- language model, per token of the sequence (image tokens included): forward ``2 N + A``, backward ``2 N + 2 A``
  (its weights are frozen: activation gradients only, no weight gradients), plus ``6 N_lora`` for the adapters;
  ``N`` = decoder Linear weights + LM head, ``A = 2 L d s`` (causal attention scores and mixing, layers L, width d,
  sequence s);
- vision tower, per image: forward only (frozen, under no_grad), ``2 N_vis`` per token (1025 with the class token)
  plus ``4 L_v d_v s_v`` non-causal attention;
- ``llama_proj``, per image token: ``6 N_proj`` (trained: forward, input and weight gradients).

    python bench/bench_gpu_minigptv2.py                        # 7B on the GPU, ZeRO-2 (or torch), batch 4
    python bench/bench_gpu_minigptv2.py --batch 8 --gradient-checkpointing
    python bench/bench_gpu_minigptv2.py --liger --compile --lora-dropout 0   # the throughput levers of the recipe
    python bench/bench_gpu_minigptv2.py --tiny --steps 2       # CPU smoke run of the same code path

Prints one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

TEXT_TOKENS = 64
ANSWER_TOKENS = 16


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random model on the CPU (smoke test of the code path)")
    p.add_argument("--engine", choices=("auto", "deepspeed", "torch"), default="auto",
                   help="auto: DeepSpeed ZeRO-2 if importable, else plain torch")
    p.add_argument("--batch", type=int, default=4, help="images (samples) per step (default 4)")
    p.add_argument("--text-tokens", type=int, default=TEXT_TOKENS, help="text tokens per sample (default 64)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint the LLaMA decoder layers")
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (default 0.05, the papers'; 0 skips "
                   "the dropout op)")
    p.add_argument("--liger", action="store_true", help="Liger kernels on the LLaMA (model.use_liger_kernel; CUDA)")
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the EVA and LLaMA blocks "
                   "(model.torch_compile)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100 SXM: 989)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_config(tiny: bool):
    from pfmvg_plugin.models.minigptv2.configuration import (
        EvaVisionConfig,
        MiniGPTv2Config,
        llama2_7b_text_config,
        minigptv2_7b_config,
    )

    if not tiny:
        return minigptv2_7b_config()
    vision = EvaVisionConfig(image_size=56, patch_size=14, hidden_size=88, num_hidden_layers=2, num_attention_heads=1,
                             intermediate_size=384)
    text = llama2_7b_text_config(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    return MiniGPTv2Config(vision_config=vision, text_config=text, image_token_index=0)


def build_model(config, device, dtype, lora_r: int, lora_dropout: float = 0.05, liger: bool = False):
    """Random weights straight on ``device`` in ``dtype`` (no CPU staging); Liger kernels if asked; the papers' PEFT
    wrapping."""
    import torch
    from peft import LoraConfig, get_peft_model

    from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MiniGPTv2ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.config.text_config.use_cache = False
    model.requires_grad_(False)
    if liger:
        from pfmvg_plugin.training.speed import apply_liger_kernels

        apply_liger_kernels(model)
    lora = LoraConfig(r=lora_r, lora_alpha=16, lora_dropout=lora_dropout, bias="none", modules_to_save=["llama_proj"],
                      target_modules=r".*language_model\..*\.(q_proj|v_proj)")  # the LLaMA only
    return get_peft_model(model, lora)


def make_batch(config, batch: int, text_tokens: int, device, dtype, seed: int) -> dict:
    """BOS + 5 prompt tokens + 256 image placeholders + the rest of the text; loss on the last 16 tokens."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_img = config.num_image_tokens
    vocab = config.text_config.vocab_size
    head = 6
    text = torch.randint(3, vocab, (batch, text_tokens), generator=gen)
    text[:, 0] = 1  # <s>
    ids = torch.cat([text[:, :head], torch.full((batch, n_img), config.image_token_index), text[:, head:]], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "pixel_values": pixels.to(device=device, dtype=dtype)}


def count_flops(config, seq_len: int, lora_params: int) -> dict:
    """Model FLOPs per training sample (see the module docstring)."""
    t, v = config.text_config, config.vision_config
    d, layers = t.hidden_size, t.num_hidden_layers
    kv = t.num_key_value_heads * (d // t.num_attention_heads)
    n_llm = layers * (2 * d * d + 2 * d * kv + 3 * d * t.intermediate_size) + d * t.vocab_size
    attn = 2 * layers * d * seq_len
    llm = seq_len * ((2 * n_llm + attn) + (2 * n_llm + 2 * attn) + 6 * lora_params)
    s_v, d_v = v.num_patches + 1, v.hidden_size
    n_vis = v.num_hidden_layers * (4 * d_v * d_v + 2 * d_v * v.intermediate_size) + 3 * d_v * v.patch_size ** 2
    vision = s_v * (2 * n_vis + 4 * v.num_hidden_layers * d_v * s_v)
    n_proj = config.projector_in_features * d + d
    proj = config.num_image_tokens * 6 * n_proj
    return {"llm": llm, "vision": vision, "projector": proj, "total": llm + vision + proj, "n_llm": n_llm,
            "n_vision": n_vis, "n_proj": n_proj}


class TorchEngine:
    kind = "torch"

    def __init__(self, model, params, lr, device, dtype):
        import torch

        for p in params:
            p.data = p.data.float()  # fp32 trainable weights, bf16 frozen base
        self.model, self.device, self.dtype = model, device, dtype
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(params, lr=lr, **fused)

    def step(self, batch):
        import torch

        ctx = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32 else \
            contextlib.nullcontext()
        with ctx:
            loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


class DeepSpeedEngine:
    kind = "deepspeed_zero2"

    def __init__(self, model, params, lr, device, dtype, batch):
        import deepspeed
        import torch

        config = {
            "train_micro_batch_size_per_gpu": batch, "gradient_accumulation_steps": 1, "train_batch_size": batch,
            "gradient_clipping": 1.0, "bf16": {"enabled": dtype == torch.bfloat16},
            "zero_optimization": {"stage": 2, "contiguous_gradients": True, "overlap_comm": device.type == "cuda",
                                  "reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000},
            "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "wall_clock_breakdown": False,
        }
        optimizer = torch.optim.AdamW(params, lr=lr)  # client optimizer: no fused_adam / cpu_adam JIT build
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, model_parameters=params,
                                               config=config)

    def step(self, batch):
        loss = self.engine(**batch).loss
        self.engine.backward(loss)
        self.engine.step()
        return loss


def init_distributed(use_deepspeed: bool, cuda: bool) -> None:
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        from pfmvg_plugin.training.dist import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if use_deepspeed:
        from pfmvg_plugin.training import dist

        world = dist.World(rank=0, local_rank=0, world_size=1, local_world_size=1, launched=False)
        dist.init_process_group(world, use_deepspeed=True, shm_comm="off")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    engine_name = args.engine
    if engine_name == "auto":
        try:
            import deepspeed  # noqa: F401

            engine_name = "deepspeed"
        except ImportError:
            engine_name = "torch"
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    from pfmvg_plugin.training.config import ConfigError
    from pfmvg_plugin.training.speed import check_options, compile_repeated_blocks

    try:
        check_options(args.liger, args.compile, zero_stage=2)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    init_distributed(engine_name == "deepspeed", cuda)
    torch.manual_seed(args.seed)

    config = build_config(args.tiny)
    t0 = time.perf_counter()
    model = build_model(config, device, dtype, args.lora_r, args.lora_dropout, args.liger)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    lora_params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n)
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    if engine_name == "deepspeed":
        engine = DeepSpeedEngine(model, params, 1e-5, device, dtype, args.batch)
    else:
        engine = TorchEngine(model, params, 1e-5, device, dtype)
    if args.compile:
        compile_repeated_blocks(model)  # in place: the engine trains the same modules

    batch = make_batch(config, args.batch, args.text_tokens, device, dtype, args.seed)
    seq_len = batch["input_ids"].shape[1]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = engine.step(batch)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        losses.append(float(loss.detach().float()))
        if i >= args.warmup:
            times.append(elapsed)
    step_s = statistics.median(times)
    flops = count_flops(config, seq_len, lora_params)
    per_step = flops["total"] * args.batch
    result = {
        "bench": "minigptv2_lora_step", "model": "tiny" if args.tiny else "minigptv2-7b (EVA-g/14 448px + LLaMA-2-7B)",
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "engine": engine.kind, "dtype": str(dtype).replace("torch.", ""),
        "gradient_checkpointing": args.gradient_checkpointing, "batch": args.batch, "seq_len": seq_len,
        "image_tokens": config.num_image_tokens, "text_tokens": args.text_tokens, "lora_r": args.lora_r,
        "lora_dropout": args.lora_dropout, "liger": args.liger, "compile": args.compile,
        "trainable_params": trainable, "lora_params": lora_params, "total_params": total,
        "step_s_median": step_s, "step_s_all": times, "tokens_per_s": args.batch * seq_len / step_s,
        "samples_per_s": args.batch / step_s, "model_tflop_per_step": per_step / 1e12,
        "achieved_tflops": per_step / step_s / 1e12, "mfu": per_step / step_s / (args.peak_tflops * 1e12),
        "peak_tflops": args.peak_tflops,
        "flops_per_sample": {k: flops[k] for k in ("llm", "vision", "projector", "total")},
        "flop_formula": "LLM per token: fwd 2N+A, bwd 2N+2A (frozen: activation grads only) + 6*N_lora; "
                        "A=2*L*d*s; vision fwd only: 2*N_vis + 4*L_v*d_v*s_v per patch token (1025/image); "
                        "llama_proj 6*N_proj per image token",
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "build_s": build_s, "loss_first": losses[0], "loss_last": losses[-1],
        "versions": _versions(),
    }
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "deepspeed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
