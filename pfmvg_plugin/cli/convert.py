"""``pfmvg convert …``: turn released checkpoints into our model directories and PEFT adapters.

Only argparse here; torch, transformers and peft are imported when a conversion runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_MINIGPTV2_EPILOG = """\
The three inputs, as their projects release them:
  --llama  Llama-2-7b-chat-hf (https://huggingface.co/meta-llama/Llama-2-7b-chat-hf, after accepting Meta's licence)
  --eva    eva_vit_g.pth (LAVIS/BLIP-2: https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth)
  --ckpt   a MiniGPT-v2 checkpoint (github.com/Vision-CAIR/MiniGPT-4, e.g. minigptv2_checkpoint.pth) or a PeFoMed one
           (github.com/jinlHe/PeFoMed); optional (without it: base model only, llama_proj freshly initialised)

Writes OUT/model (load with MiniGPTv2ForConditionalGeneration.from_pretrained or
`lmms-eval --model pfmvg_minigptv2 --model_args pretrained=OUT/model,adapter=OUT/adapter`), OUT/adapter (a PEFT LoRA
adapter with llama_proj as modules_to_save; `lora.init_adapter: OUT/adapter` continues training from it) and
OUT/pfmvg_conversion.json (what was kept, dropped and why). Pickles are opened with torch.load(weights_only=True);
one that needs full unpickling is refused unless you pass --trust-pickle.

example:
  pfmvg convert minigptv2 --llama ~/models/Llama-2-7b-chat-hf --eva ~/models/eva_vit_g.pth \\
      --ckpt ~/models/minigptv2_checkpoint.pth --out ~/models/minigptv2-hf
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="convert released checkpoints (MiniGPT-v2 / PeFoMed)",
                                  description="Convert released checkpoints into transformers model directories "
                                              "and PEFT adapters.")
    sub = convert.add_subparsers(dest="convert_command", metavar="MODEL", required=True)
    p = sub.add_parser("minigptv2", help="MiniGPT-v2 / PeFoMed / PFMVG: LLaMA-2 dir + eva_vit_g.pth + checkpoint",
                       description="Build a MiniGPTv2ForConditionalGeneration directory from Llama-2-7b-chat-hf and "
                                   "eva_vit_g.pth, and turn a MiniGPT-v2 / PeFoMed training checkpoint (LoRA + "
                                   "llama_proj) into a standard PEFT adapter.",
                       epilog=_MINIGPTV2_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama", type=Path, required=True, help="Hugging Face LLaMA-2 directory (Llama-2-7b-chat-hf)")
    p.add_argument("--eva", type=Path, required=True, help="eva_vit_g.pth (EVA ViT-g/14 state dict)")
    p.add_argument("--ckpt", type=Path, default=None,
                   help="MiniGPT-v2 or PeFoMed checkpoint .pth (its ['model'] holds llama_proj and LoRA)")
    p.add_argument("--out", type=Path, required=True, help="output directory (gets model/ and adapter/)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="storage dtype of the written weights (default float16, as released; load in bf16 for "
                        "training)")
    p.add_argument("--image-size", type=int, default=448, help="model input size in pixels (default 448)")
    p.add_argument("--vision-layers", type=int, default=None,
                   help="EVA blocks to keep (default: all but the last, i.e. 39 of 40 as MiniGPT-v2)")
    p.add_argument("--vision-heads", type=int, default=None, help="EVA attention heads (default: width / 88)")
    p.add_argument("--lora-alpha", type=float, default=None,
                   help="LoRA alpha (default: the checkpoint's config, else 16 as MiniGPT-v2 / PeFoMed)")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout for further training (0.05)")
    p.add_argument("--image-token-id", type=int, default=None,
                   help="token id used as the image placeholder (default: <unk>, 0 for Llama-2)")
    p.add_argument("--shard-size", default="4GB", help="largest safetensors shard (default 4GB)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of .pth/.bin files that torch.load(weights_only=True) refuses "
                        "(only for files you trust: a pickle can run code)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.set_defaults(handler=_run_minigptv2)


def _run_minigptv2(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.models.minigptv2.convert import convert_minigptv2

    result = convert_minigptv2(
        args.llama, args.eva, args.out, args.ckpt, dtype=args.dtype, image_size=args.image_size,
        vision_layers=args.vision_layers, vision_heads=args.vision_heads, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, image_token_id=args.image_token_id, trust_pickle=args.trust_pickle,
        shard_size=args.shard_size, overwrite=args.overwrite)
    return result.to_dict()
