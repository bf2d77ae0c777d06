"""Fine-tuning recipes: PEFT (LoRA / DoRA / QLoRA) on the model families of :mod:`pfmvg_plugin.families`, under
DeepSpeed ZeRO or plain torch.

Modules (torch is imported only by the ones that need it; :mod:`.config` is light):

- :mod:`.config` — the YAML schema, validation that names the bad key, ``key=value`` overrides
- :mod:`.model` — PEFT wiring (language-model-only LoRA regex, projector saved with the adapter, frozen vision tower)
- :mod:`.data` — mixtures of prepared datasets, prompts and targets through the scoring codecs, resumable order
- :mod:`.engine` — bare-torch and DeepSpeed engines, DeepSpeed config resolution
- :mod:`.checkpoint` — checkpoints, RNG state, adapters (ZeRO-3 gathered)
- :mod:`.trainer` — :func:`~.trainer.train`
- :mod:`.dist` — launcher environment (python / torchrun / deepspeed), process groups
- :mod:`.toy` — tiny datasets and model sizes for tests and benchmarks
"""

from __future__ import annotations

__all__ = ["Config", "ConfigError", "load_config", "train"]


def __getattr__(name: str):
    if name in ("Config", "ConfigError", "load_config"):
        from pfmvg_plugin.training import config

        return getattr(config, name)
    if name == "train":
        from pfmvg_plugin.training.trainer import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
