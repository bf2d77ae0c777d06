"""``pfmvg export llava``: a converted (and fine-tuned) LLaVA back in the original LLaVA / LLaVA-Med layout.

Only argparse here; torch, transformers and peft are imported when the export runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_EPILOG = """\
Merges --adapter (if given) into --model, writes the weights under the original keys (model.layers.N.*,
model.mm_projector.{0,2}.*, model.vision_tower.vision_tower.*), the checkpoint's own config.json and tokenizer files.
The original load_pretrained_model picks its class from the folder name: --out must contain "llava", and "mistral"
for LLaVA-Med (LlavaMistralForCausalLM). Serve it with the original code, e.g.
  python -m llava.serve.cli --model-path OUT --image-file xray.png --conv-mode mistral_instruct

example:
  pfmvg export llava --model ~/models/llava-med-hf --adapter runs/llava_med_mscxr/adapter \\
      --out ~/models/llava-med-v1.5-mistral-7b-mscxr
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export models to other projects' formats (original LLaVA)",
                                 description="Write models back in the formats of the projects they came from.")
    sub = export.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    p = sub.add_parser("llava", help="merged weights in the original LLaVA / LLaVA-Med layout",
                       description="Write a model converted by `pfmvg convert llava` (plus a LoRA adapter, merged) in "
                                   "the original LLaVA / LLaVA-Med checkpoint layout.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="folder written by `pfmvg convert llava`")
    p.add_argument("--adapter", type=Path, default=None, help="PEFT adapter to merge (a training run's adapter/)")
    p.add_argument("--out", type=Path, required=True,
                   help='output folder; its name must contain "llava" (and "mistral" for LLaVA-Med)')
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None,
                   help="storage dtype (default: the original config's torch_dtype, else float16)")
    p.add_argument("--shard-size", default="2GB", help="largest safetensors shard (default 2GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.models.llava_original.export import export_llava

    return export_llava(args.model, args.out, adapter=args.adapter, dtype=args.dtype, shard_size=args.shard_size,
                        overwrite=args.overwrite)
