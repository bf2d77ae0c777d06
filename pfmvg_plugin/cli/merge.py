"""``pfmvg merge``: fold a trained LoRA adapter into its base model (a standalone ``transformers`` checkpoint).

Only argparse here; torch, transformers and peft are imported when the merge runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_EPILOG = """\
The merged directory holds safetensors weights, the processor and pfmvg_training.json (prompt convention, box codec,
image resize), so it is scored exactly like base + adapter, with no PEFT at inference:
  lmms-eval --model pfmvg_llava --model_args pretrained=OUT --tasks mscxr_grounding
  lmms-eval --model pfmvg_minigptv2 --model_args pretrained=OUT --tasks mscxr_grounding

example:
  pfmvg merge --base demo_out/runs/stage1_pretrain/model --adapter demo_out/runs/stage2_lora/adapter \\
      --out demo_out/merged
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("merge", help="merge a LoRA adapter into its base model (LLaVA, MiniGPT-v2, Qwen2(.5)-VL)",
                            description="Merge a PEFT LoRA adapter (and its trained projector) into the base model "
                                        "and write a standalone checkpoint.",
                            epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True,
                   help="base model directory (or hub id) the adapter was trained on (`base_model` in the "
                        "adapter's pfmvg_training.json)")
    p.add_argument("--adapter", type=Path, required=True, help="PEFT adapter directory written by a training run")
    p.add_argument("--out", type=Path, required=True, help="output directory for the merged model")
    p.add_argument("--backbone", choices=("llava", "minigptv2"), default=None,
                   help="model family (default: the adapter's training record, else detected from --base)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype to merge and save in (default float32; bfloat16 halves the size)")
    p.add_argument("--max-shard-size", default="4GB", help="largest safetensors shard (default 4GB)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty --out")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.training.merge import merge_adapter

    summary = merge_adapter(args.base, args.adapter, args.out, backbone=args.backbone, dtype=args.dtype,
                            max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    return {**summary, "out": str(args.out)}
