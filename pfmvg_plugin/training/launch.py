"""Fine-tune a LLaVA-family or MiniGPT-v2 backbone with LoRA (PEFT) under DeepSpeed ZeRO or plain torch.

Launch it any of these ways (one entry, the library reads the launcher's environment)::

    pfmvg train --config tiny_synthcxr                                     # one process, no launcher
    torchrun --nproc_per_node 2 -m pfmvg_plugin.training --config tiny_synthcxr
    deepspeed --num_gpus 8 --module pfmvg_plugin.training --config llava_mscxr
    deepspeed --hostfile hostfile --num_nodes 2 --num_gpus 8 \\
        --module pfmvg_plugin.training --config llava_mscxr                 # multi-node
    accelerate launch -m pfmvg_plugin.training --config tiny_synthcxr
    python recipes/finetune_lora.py --config recipes/configs/tiny_synthcxr.yaml   # from a clone: the same entry
    # on a CPU-only machine: deepspeed --num_gpus 2 (DS_ACCELERATOR=cpu, gloo, OMP_NUM_THREADS per rank)

``--config`` takes a YAML path or the name of a shipped config (``pfmvg train --list-configs``); ``deepspeed=NAME``
names a shipped DeepSpeed JSON (``zero2``, ``zero3``, ``zero2_offload``, ``zero3_offload``) or a path.
``key=value`` arguments override config fields (``train.lr=1e-4 data.num_workers=4 deepspeed=zero3``). A run
continues from the newest checkpoint in its output directory automatically (``train.auto_resume``); ``--resume``
insists on it, ``--no-resume`` starts over. The adapter lands in ``<output_dir>/adapter``:
``PeftModel.from_pretrained(base, DIR)`` or ``lmms-eval --model pfmvg_llava --model_args pretrained=BASE,adapter=DIR``.
"""

from __future__ import annotations

import argparse
import sys

from pfmvg_plugin.training.recipes import find_config, shipped_configs


def build_parser(prog: str = "pfmvg train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML path or shipped config name (see --list-configs)")
    p.add_argument("--list-configs", action="store_true", help="print the shipped configs and exit")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_true", default=None,
                       help="continue from the newest checkpoint in train.output_dir")
    group.add_argument("--no-resume", dest="resume", action="store_false", help="ignore existing checkpoints")
    p.add_argument("--deepspeed", default=None,
                   help="DeepSpeed JSON (path or shipped name) overriding the config's `deepspeed` (\"none\": plain "
                        "torch)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4")
    return p


def main(argv: list[str] | None = None, prog: str = "pfmvg train") -> int:
    """Parse, load the config, train. Config and data errors are one line on stderr and exit status 2."""
    args = build_parser(prog).parse_intermixed_args(argv)
    if args.list_configs:
        for name, path in shipped_configs().items():
            print(f"{name}\t{path}")
        return 0
    if not args.config:
        print(f"{prog}: error: --config is required (a YAML path or one of: {', '.join(shipped_configs())})",
              file=sys.stderr)
        return 2
    from pfmvg_plugin.training.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.deepspeed is not None:
        overrides.append(f"deepspeed={args.deepspeed}")  # `none` is read as plain torch, as in the YAML
    try:
        cfg = load_config(find_config(args.config), overrides)
        from pfmvg_plugin.training import dist
        from pfmvg_plugin.training.data import BadRecordError
        from pfmvg_plugin.training.trainer import train

        try:
            train(cfg, resume=args.resume, local_rank=args.local_rank)
        except BadRecordError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        dist.shutdown()
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
