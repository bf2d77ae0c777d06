"""Peak memory and time of ``pfmvg convert llava`` on a synthetic original-layout checkpoint of about 1 B parameters.

Writes a LLaVA-1.5-layout checkpoint (``LlavaLlamaForCausalLM``: Llama text model, CLIP ViT-L/14-336 vision tower
inside, mlp2x_gelu projector) with random float16 weights as 1 GB safetensors shards + index, then runs the real
command line in a child process and reads the child's peak RSS (``ru_maxrss``). The conversion streams tensor by
tensor into output shards, so its peak should stay near one output shard plus the interpreter: the ratio printed is
peak RSS / output size (target <= 1.3 for a 7 B model to convert on a 24 GB machine).

    .venv/bin/python bench/bench_convert_llava.py [--layers 16] [--hidden 2048] [--shard-size 4GB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_checkpoint(out: Path, *, hidden: int, layers: int, mlp: int, vocab: int, heads: int,
                     shard_bytes: int = 2**30) -> int:
    """An original-layout checkpoint with random fp16 weights; returns its parameter count."""
    import torch
    from safetensors.torch import save_file

    from pfmvg_plugin.models.llava_original.tiny import train_sentencepiece
    from pfmvg_plugin.models.tiny_llava import default_corpus

    out.mkdir(parents=True)
    v_hidden, v_layers, v_mlp, patches = 1024, 24, 4096, (336 // 14) ** 2
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden),
                                          "model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + f"self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (mlp, hidden), p + "mlp.up_proj.weight": (mlp, hidden),
                       p + "mlp.down_proj.weight": (hidden, mlp), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    shapes.update({"model.mm_projector.0.weight": (hidden, v_hidden), "model.mm_projector.0.bias": (hidden,),
                   "model.mm_projector.2.weight": (hidden, hidden), "model.mm_projector.2.bias": (hidden,)})
    v = "model.vision_tower.vision_tower.vision_model."
    shapes.update({v + "embeddings.class_embedding": (v_hidden,),
                   v + "embeddings.patch_embedding.weight": (v_hidden, 3, 14, 14),
                   v + "embeddings.position_embedding.weight": (patches + 1, v_hidden),
                   v + "pre_layrnorm.weight": (v_hidden,), v + "pre_layrnorm.bias": (v_hidden,),
                   v + "post_layernorm.weight": (v_hidden,), v + "post_layernorm.bias": (v_hidden,)})
    for i in range(v_layers):
        p = f"{v}encoder.layers.{i}."
        for n in "qkv":
            shapes.update({p + f"self_attn.{n}_proj.weight": (v_hidden, v_hidden), p + f"self_attn.{n}_proj.bias":
                           (v_hidden,)})
        shapes.update({p + "self_attn.out_proj.weight": (v_hidden, v_hidden),
                       p + "self_attn.out_proj.bias": (v_hidden,),
                       p + "layer_norm1.weight": (v_hidden,), p + "layer_norm1.bias": (v_hidden,),
                       p + "mlp.fc1.weight": (v_mlp, v_hidden), p + "mlp.fc1.bias": (v_mlp,),
                       p + "mlp.fc2.weight": (v_hidden, v_mlp), p + "mlp.fc2.bias": (v_hidden,),
                       p + "layer_norm2.weight": (v_hidden,), p + "layer_norm2.bias": (v_hidden,)})
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * int(torch.Size(shape).numel())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map, gen = {}, torch.Generator().manual_seed(0)
    for i, names in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: (torch.randn(shapes[n], generator=gen) * 0.02).half() for n in names}, str(out / fname),
                  metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 2 * total},
                                                                  "weight_map": weight_map}))
    config = {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": mlp, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": heads, "hidden_act": "silu",
              "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False, "torch_dtype": "float16",
              "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu",
              "mm_hidden_size": v_hidden, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
              "mm_patch_merge_type": "flat"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "tokenizer.model").write_bytes(train_sentencepiece(default_corpus(0), 600))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                                                           "eos_token": "</s>", "unk_token": "<unk>",
                                                           "add_bos_token": True, "legacy": False}))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--mlp", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-size", default="2GB", help="the converter's output shard size (its default: 2GB)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="pfmvg-bench-convert-"))
    try:
        ckpt, out = work / "llava-v1.5-synthetic", work / "converted"
        t0 = time.perf_counter()
        params = write_checkpoint(ckpt, hidden=args.hidden, layers=args.layers, mlp=args.mlp, vocab=args.vocab,
                                  heads=args.heads)
        print(f"synthetic checkpoint: {params / 1e9:.2f} B parameters, "
              f"{sum(f.stat().st_size for f in ckpt.glob('*.safetensors')) / 2**30:.2f} GiB "
              f"({time.perf_counter() - t0:.0f} s to write)", flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "pfmvg"), "convert", "llava", "--ckpt", str(ckpt),
                               "--out", str(out), "--shard-size", args.shard_size], capture_output=True, text=True,
                              env={**os.environ, "PFMVG_NO_PROGRESS": "1"})
        wall = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if peak <= before * 1024:
            print("warning: the conversion's peak did not exceed the checkpoint writer's; reading is a lower bound")
        size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        print(f"convert: {wall:.1f} s, peak RSS {peak / 2**30:.2f} GiB, output {size / 2**30:.2f} GiB "
              f"({len(list(out.glob('*.safetensors')))} shard(s) of <= {args.shard_size})")
        print(f"peak RSS / output size = {peak / size:.2f} (target <= 1.3)")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
