"""LLM-as-judge Likert ratings of generated reports and VQA answers (PeFoMed's evaluation), for any
OpenAI-compatible chat-completions endpoint.

Modules: :mod:`.rubrics` (the 5-point rubrics and the reply parser), :mod:`.samples` (reading lmms-eval
``--log_samples`` / plain JSONL), :mod:`.client` (httpx client with retries; httpx is imported lazily, the ``[judge]``
extra), :mod:`.cache` (on-disk cache), :mod:`.run` (concurrency, outputs, the weighted average).
"""

from pfmvg_plugin.judge.rubrics import RUBRICS, ParsedRating, Rubric, get_rubric, load_rubric_file, parse_rating

__all__ = ["RUBRICS", "ParsedRating", "Rubric", "get_rubric", "load_rubric_file", "parse_rating"]
