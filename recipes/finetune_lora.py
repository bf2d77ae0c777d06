"""Fine-tune a LLaVA-family or MiniGPT-v2 backbone with LoRA (PEFT) under DeepSpeed ZeRO or plain torch.

The readable entry of a clone; installed, the same entry is ``pfmvg train`` and ``python -m pfmvg_plugin.training``
(``pfmvg train --help`` lists every way to launch it)::

    python recipes/finetune_lora.py --config recipes/configs/tiny_synthcxr.yaml          # one process, no launcher
    torchrun --nproc_per_node 2 recipes/finetune_lora.py --config recipes/configs/tiny_synthcxr.yaml
    deepspeed --num_gpus 8 recipes/finetune_lora.py --config recipes/configs/llava_mscxr.yaml
    deepspeed --hostfile hostfile --num_nodes 2 --num_gpus 8 \\
        recipes/finetune_lora.py --config recipes/configs/llava_mscxr.yaml                # multi-node

``key=value`` arguments override config fields (``train.lr=1e-4 data.num_workers=4 deepspeed=recipes/ds/zero3.json``).
"""

from __future__ import annotations

import sys

from pfmvg_plugin.training.launch import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(prog="finetune_lora.py"))
