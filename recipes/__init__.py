"""The recipe files, shipped in the wheel as ``pfmvg_plugin.recipes``: training configs (``configs/*.yaml``, by name:
``pfmvg train --config tiny_synthcxr``), DeepSpeed JSONs (``ds/*.json``, by name: ``deepspeed=zero2``) and the
readable launch scripts."""
