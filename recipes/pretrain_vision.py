"""Pretrain the vision tower of a LLaVA-family model on box-annotated images (dense detection objective).

Stands in for the pretrained vision encoder a grounding fine-tune starts from (CLIP / EVA, or a radiograph detector
backbone); ``make demo`` runs it as stage 0 on a separate synthetic radiograph set. One process, plain torch::

    python recipes/pretrain_vision.py --config recipes/configs/demo_vision.yaml
    python recipes/pretrain_vision.py --config recipes/configs/demo_vision.yaml --val synthcxr:val train.max_steps=500

It reads the recipe YAML format (``model``, ``data``, ``train``: ``output_dir``, ``seed``, ``max_steps``,
``micro_batch_size`` = images per step, ``lr``, ``warmup_ratio``, ``max_grad_norm``, ``log_steps``; other keys are
ignored), trains only the vision tower (plus throw-away heads) and writes the whole model, safetensors, to
``<output_dir>/model`` with ``pfmvg_vision_pretrain.json`` (losses, time, held-out centre-patch hit rate).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pretrain_vision.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (e.g. recipes/configs/demo_vision.yaml)")
    p.add_argument("--val", default=None, metavar="DATASET[:SPLIT]",
                   help="held-out grounding data to score the centre-patch hit rate on (e.g. synthcxr:val)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_steps=500")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[pfmvg.vision] %(message)s")
    from dataclasses import replace

    from pfmvg_plugin.training.config import ConfigError, DatasetSpec, load_config
    from pfmvg_plugin.training.data import BadRecordError
    from pfmvg_plugin.training.vision_pretrain import pretrain_vision_tower

    try:
        cfg = load_config(args.config, args.overrides)
        val_data = None
        if args.val:
            path, _, split = args.val.partition(":")
            val_data = replace(cfg.data, datasets=[DatasetSpec(path=path, split=split or "val", task="refer")])
        summary = pretrain_vision_tower(cfg, val_data=val_data)
    except (ConfigError, BadRecordError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
