"""Fine-tune a LLaVA-family backbone with LoRA (PEFT) under DeepSpeed ZeRO or plain torch.

Launch it any of these ways (one script, the library reads the launcher's environment)::

    python recipes/finetune_lora.py --config recipes/configs/tiny_synthcxr.yaml          # one process, no launcher
    torchrun --nproc_per_node 2 recipes/finetune_lora.py --config recipes/configs/tiny_synthcxr.yaml
    deepspeed --num_gpus 8 recipes/finetune_lora.py --config recipes/configs/llava_mscxr.yaml
    deepspeed --hostfile hostfile --num_nodes 2 --num_gpus 8 \\
        recipes/finetune_lora.py --config recipes/configs/llava_mscxr.yaml                # multi-node
    # on a CPU-only machine: deepspeed --num_gpus 2 (DS_ACCELERATOR=cpu, gloo, OMP_NUM_THREADS per rank)

``key=value`` arguments override config fields (``train.lr=1e-4 data.num_workers=4 deepspeed=recipes/ds/zero3.json``).
A run continues from the newest checkpoint in its output directory automatically (``train.auto_resume``);
``--resume`` insists on it, ``--no-resume`` starts over. The adapter lands in ``<output_dir>/adapter``:
``PeftModel.from_pretrained(base, DIR)`` or ``lmms-eval --model pfmvg_llava --model_args pretrained=BASE,adapter=DIR``.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune_lora.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="YAML config (see recipes/configs/)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_true", default=None,
                       help="continue from the newest checkpoint in train.output_dir")
    group.add_argument("--no-resume", dest="resume", action="store_false", help="ignore existing checkpoints")
    p.add_argument("--deepspeed", default=None,
                   help="DeepSpeed JSON overriding the config's `deepspeed` (\"none\": plain torch)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from pfmvg_plugin.training.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.deepspeed is not None:
        overrides.append(f"deepspeed={args.deepspeed}")  # `none` is read as plain torch, as in the YAML
    try:
        cfg = load_config(args.config, overrides)
        from pfmvg_plugin.training import dist
        from pfmvg_plugin.training.data import BadRecordError
        from pfmvg_plugin.training.trainer import train

        try:
            train(cfg, resume=args.resume, local_rank=args.local_rank)
        except BadRecordError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        dist.shutdown()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
