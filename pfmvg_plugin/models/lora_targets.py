"""PEFT ``target_modules`` regexes that put LoRA on a multimodal model's language model only."""

from __future__ import annotations

import re
from collections.abc import Sequence


def language_model_regex(names: Sequence[str], scope: str = r"language_model") -> str:
    """``.*language_model\\..*\\.(q_proj|v_proj)`` style regex for PEFT (full match against module names).

    Works with both module layouts of transformers' multimodal models (``model.language_model.layers.N...`` in v5,
    ``language_model.model.layers.N...`` in v4), and never matches the vision tower's own ``q_proj`` / ``mlp``.
    """
    alternatives = "|".join(re.escape(n) for n in names)
    return rf".*{scope}\..*\.({alternatives})"
