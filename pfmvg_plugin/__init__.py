"""pfmvg_plugin: medical visual grounding, Med-VQA and report generation for lmms-eval, PEFT and DeepSpeed.

The core (box geometry, codecs, prompts, metrics, canonical data, converters) imports without torch;
torch-side modules (models, training) and the lmms-eval glue import their stacks lazily.
"""

__version__ = "0.1.0"
