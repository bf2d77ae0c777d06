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
    convert = commands.add_parser("convert", help="convert released checkpoints (MiniGPT-v2 / PeFoMed, LLaVA / "
                                                  "LLaVA-Med)",
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
    _add_llava(sub)


_LLAVA_EPILOG = """\
Inputs, as the original LLaVA repository and LLaVA-Med release them:
  --ckpt          liuhaotian/llava-v1.5-7b (LlavaLlamaForCausalLM) or microsoft/llava-med-v1.5-mistral-7b
                  (LlavaMistralForCausalLM): config.json, safetensors shards + index or pytorch_model*.bin,
                  tokenizer.model
  --vision-tower  the CLIP the checkpoint names in mm_vision_tower (openai/clip-vit-large-patch14-336), needed when
                  the checkpoint carries no model.vision_tower.* tensors (LLaVA-1.5 does not; LLaVA-Med does)

Writes a transformers LlavaForConditionalGeneration folder (AutoModelForImageTextToText loads it) with a processor
that pads to a square with the CLIP-mean colour at 336 px as the original, the checkpoint's own chat template
(vicuna_v1 / mistral_instruct), llava_original/ (the original config and tokenizer files, for `pfmvg export llava`)
and pfmvg_conversion.json (every key read, renamed, dropped and missing; a token-level check of the prompt).
Score it: lmms-eval --model pfmvg_llava --model_args pretrained=OUT --tasks mscxr_grounding

example:
  pfmvg convert llava --ckpt ~/models/llava-med-v1.5-mistral-7b --out ~/models/llava-med-hf
  pfmvg convert llava --ckpt ~/models/llava-v1.5-7b --vision-tower ~/models/clip-vit-large-patch14-336 \\
      --out ~/models/llava-v1.5-7b-hf
"""

_LLAVA_LORA_EPILOG = """\
Input: the folder LLaVA's train.py writes for a LoRA run (adapter_config.json, adapter_model.bin|safetensors,
non_lora_trainables.bin with the projector). Output: a PEFT adapter over the converted base (the projector as
modules_to_save) with pfmvg_training.json (llava prompts, llava_pad boxes, pad resize):
  lmms-eval --model pfmvg_llava --model_args pretrained=BASE,adapter=OUT --tasks mscxr_grounding

example:
  pfmvg convert llava-lora --lora ~/runs/llava-v1.5-7b-lora --base ~/models/llava-v1.5-7b-hf --out ~/adapters/mine
"""


def _add_llava(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llava", help="original LLaVA-1.5 / LLaVA-Med v1.5 checkpoint -> transformers LLaVA",
                       description="Convert an original LLaVA-1.5 (LlavaLlamaForCausalLM) or LLaVA-Med v1.5 "
                                   "(LlavaMistralForCausalLM) checkpoint into a transformers "
                                   "LlavaForConditionalGeneration "
                                   "folder with the original preprocessing and conversation template.",
                       epilog=_LLAVA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="original checkpoint folder (config.json + weights)")
    p.add_argument("--vision-tower", type=Path, default=None,
                   help="CLIP folder (openai/clip-vit-large-patch14-336) when the checkpoint has no vision weights")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                   help="storage dtype of the written weights (default float16, as released)")
    p.add_argument("--shard-size", default="2GB",
                   help="largest safetensors shard (default 2GB; the conversion holds about one shard in memory)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of .bin files that torch.load(weights_only=True) refuses (only for "
                        "files you trust: a pickle can run code)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.set_defaults(handler=_run_llava)

    q = sub.add_parser("llava-lora", help="LLaVA's own LoRA output -> PEFT adapter over a converted base",
                       description="Convert the LoRA output of LLaVA's train.py into a standard PEFT adapter over a "
                                   "base converted with `pfmvg convert llava`.",
                       epilog=_LLAVA_LORA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--lora", type=Path, required=True, help="LLaVA LoRA output folder")
    q.add_argument("--base", type=Path, required=True, help="the converted base model folder")
    q.add_argument("--out", type=Path, required=True, help="output adapter folder")
    q.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of refused .bin files")
    q.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    q.set_defaults(handler=_run_llava_lora)


def _run_llava(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.models.llava_original.convert import convert_llava

    return convert_llava(args.ckpt, args.out, vision_tower=args.vision_tower, dtype=args.dtype,
                         trust_pickle=args.trust_pickle, shard_size=args.shard_size,
                         overwrite=args.overwrite).summary()


def _run_llava_lora(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.models.llava_original.convert import convert_llava_lora

    result = convert_llava_lora(args.lora, args.base, args.out, trust_pickle=args.trust_pickle,
                                overwrite=args.overwrite)
    return {k: v for k, v in result.items() if k != "keys"}


def _run_minigptv2(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.models.minigptv2.convert import convert_minigptv2

    result = convert_minigptv2(
        args.llama, args.eva, args.out, args.ckpt, dtype=args.dtype, image_size=args.image_size,
        vision_layers=args.vision_layers, vision_heads=args.vision_heads, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, image_token_id=args.image_token_id, trust_pickle=args.trust_pickle,
        shard_size=args.shard_size, overwrite=args.overwrite)
    return result.to_dict()
