"""Instruction templates per task family and backbone convention.

Each convention names the box codec its prompts ask for, so a prompt, the training target written for it and the
scoring of the model's answer all use one format. Training draws from a paraphrase pool with a seeded RNG;
evaluation always uses the pool's first template.

Conventions:
- ``minigptv2``: MiniGPT-v2 / PeFoMed / PFMVG task identifiers (``[refer]``, ``[vqa]``, ``[caption]``, ``[report]``).
- ``llava``: LLaVA-1.5 style, stating the normalised ``[x1, y1, x2, y2]`` format explicitly.
- ``api``: for API models (GPT-4V and other OpenAI-compatible endpoints): explicit normalised floats, no tokens.
- ``qwen2vl`` / ``qwen25vl``: Qwen-style grounding requests.
- ``internvl``, ``minicpmv``, ``cogvlm``, ``glm4v``, ``gemini``, ``qwen3vl``, ``shikra``, ``ferret``: each family's own
  grounding prompt, answered in its native box format (the codec of the same name, whose docstring names the source);
- ``deepseekvl2``, ``paligemma`` (y first), ``florence2``, ``kosmos2``: the same for the families whose box languages
  quantise coarsely (999 steps, 1023 steps, bin centres, a 32x32 patch grid); their answers are scored with the
  error their grid allows (the codec's ``max_error``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pfmvg_plugin.codecs import BoxCodec, get_codec

TASK_FAMILIES = ("refer", "vqa", "caption", "report")


@dataclass(frozen=True)
class PromptSet:
    """The templates of one convention; ``{phrase}`` / ``{question}`` / ``{box_format}`` are filled in."""

    convention: str
    codec: str
    refer: tuple[str, ...]
    vqa: tuple[str, ...]
    caption: tuple[str, ...]
    report: tuple[str, ...]

    def pool(self, family: str) -> tuple[str, ...]:
        if family not in TASK_FAMILIES:
            raise ValueError(f"unknown task family {family!r}; expected one of {TASK_FAMILIES}")
        return getattr(self, family)


_MINIGPTV2 = PromptSet(
    convention="minigptv2",
    codec="minigptv2",
    # MiniGPT-v2's refer template and its five training paraphrases.
    refer=(
        "[refer] give me the location of {phrase}",
        "[refer] where is {phrase} ?",
        "[refer] from this image, tell me the location of {phrase}",
        "[refer] the location of {phrase} is",
        "[refer] could you tell me the location for {phrase} ?",
        "[refer] where can I locate the {phrase} ?",
    ),
    vqa=(
        "[vqa] Based on the image, respond to this question with a short answer: {question}",
        "[vqa] {question}",
    ),
    caption=(
        "[caption] Briefly describe this medical image.",
        "[caption] A short description of the image:",
        "[caption] Write a short caption for this image.",
        "[caption] What does this image show? Answer in one sentence.",
    ),
    report=(
        "[report] Write the findings of a radiology report for this chest X-ray.",
        "[report] Describe the findings in this chest radiograph as a radiologist would.",
        "[report] Generate a radiology report for this image.",
    ),
)

_LLAVA_REFER = (
    "Please provide the bounding box coordinate of the region this sentence describes: {phrase}. {box_format}",
    "Where is {phrase} in this chest X-ray? {box_format}",
    "Locate {phrase} in the image. {box_format}",
    "Give the bounding box of {phrase}. {box_format}",
)
_LLAVA_VQA = (
    "{question}\nAnswer the question using a single word or phrase.",
    "{question}\nAnswer briefly.",
)
_PLAIN_CAPTION = (
    "Briefly describe this medical image.",
    "Write a short caption for this image.",
)
_PLAIN_REPORT = (
    "Write the findings section of a radiology report for this chest X-ray.",
    "Describe the findings in this chest radiograph as a radiologist would.",
)

_LLAVA = PromptSet("llava", "llava", _LLAVA_REFER, _LLAVA_VQA, _PLAIN_CAPTION, _PLAIN_REPORT)
_API = PromptSet(
    "api",
    "llava",
    (
        "This is a chest radiograph. Find the region described as: \"{phrase}\". Reply with only its bounding box as "
        "[x1, y1, x2, y2], where x1, y1 is the top-left and x2, y2 the bottom-right corner, each a decimal number "
        "between 0 and 1 relative to the image width (x) and height (y). Do not refuse; give your best estimate.",
    ),
    _LLAVA_VQA,
    _PLAIN_CAPTION,
    _PLAIN_REPORT,
)
_QWEN2VL = PromptSet(
    "qwen2vl",
    "qwen2vl",
    ("Find <|object_ref_start|>{phrase}<|object_ref_end|> in the image and output its bounding box.",),
    _LLAVA_VQA,
    _PLAIN_CAPTION,
    _PLAIN_REPORT,
)
_QWEN25VL = PromptSet(
    "qwen25vl",
    "qwen25vl",
    ("Locate {phrase} in the image and output its bbox coordinates in JSON format.",),
    _LLAVA_VQA,
    _PLAIN_CAPTION,
    _PLAIN_REPORT,
)



def _family(convention: str, refer: str) -> PromptSet:
    """A family's official grounding prompt, answered in its native box codec (named like the convention)."""
    return PromptSet(convention, convention, (refer,), _LLAVA_VQA, _PLAIN_CAPTION, _PLAIN_REPORT)


# Official phrase -> box prompts (InternVL evaluate_grounding.py, CogVLM and GLM-V READMEs, Vertex AI docs, Qwen3-VL
# ODinW-13 evaluation, Shikra REC.json, Ferret model_refcoco.py, DeepSeek-VL2 README, PaliGemma and Florence-2 docs,
# transformers' Kosmos-2 docs).
_INTERNVL_REFER = (
    "Please provide the bounding box coordinate of the region this sentence describes: <ref>{phrase}</ref>"
)
_FAMILIES = (
    _family("internvl", _INTERNVL_REFER),
    _family("minicpmv", _INTERNVL_REFER),  # MiniCPM-V is prompted as InternVL is
    _family("cogvlm", "Can you point out {phrase} in the image and provide the bounding boxes of their location?"),
    _family("glm4v", "Help me to locate {phrase} in the image and give me its bounding boxes."),
    _family(
        "gemini",
        "Detect {phrase} in the image. Output a JSON list of bounding boxes where each entry contains the 2D bounding "
        'box in the key "box_2d" and the text label in the key "label". The box_2d should be [ymin, xmin, ymax, xmax] '
        "normalized to 0-1000.",
    ),
    _family("qwen3vl", "Locate {phrase} in the image. Report bbox coordinates in JSON format."),
    _family("shikra", "Where is {phrase} in the image? answer in [x0,y0,x1,y1] format."),
    _family("ferret", "What is the location of {phrase} in the image?"),
    # coarse grids: a box is written to within 1/999 (DeepSeek-VL2), 1/1023 (PaliGemma), one of 1000 bins (Florence-2)
    # or one of 32 x 32 patches (Kosmos-2) of the image side
    _family("deepseekvl2", "<|ref|>{phrase}<|/ref|>."),  # the model's chat template puts "<image>\n" before it
    _family("paligemma", "detect {phrase}"),  # the processor appends the "\n" the prompt ends with
    _family("florence2", "<CAPTION_TO_PHRASE_GROUNDING>{phrase}"),
    _family("kosmos2", "<grounding><phrase> {phrase}</phrase>"),
)

CONVENTIONS: dict[str, PromptSet] = {
    p.convention: p for p in (_MINIGPTV2, _LLAVA, _API, _QWEN2VL, _QWEN25VL, *_FAMILIES)
}

def get_prompts(convention: str) -> PromptSet:
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(f"unknown prompt convention {convention!r}; choose one of {', '.join(CONVENTIONS)}") from None


def convention_codec(convention: str, **options) -> BoxCodec:
    """The box codec a convention's prompts ask the model to answer in."""
    return get_codec(get_prompts(convention).codec, **options)


def build_prompt(
    family: str,
    convention: str,
    *,
    phrase: str | None = None,
    question: str | None = None,
    rng: random.Random | None = None,
    codec: BoxCodec | None = None,
) -> str:
    """Fill a template of ``family`` for ``convention``.

    With ``rng`` a template is drawn from the training paraphrase pool; without it the fixed evaluation template
    is used. ``codec`` overrides the format sentence of conventions that state it (default: the convention's codec).
    """
    prompts = get_prompts(convention)
    pool = prompts.pool(family)
    template = rng.choice(pool) if rng is not None else pool[0]
    if family == "refer" and not phrase:
        raise ValueError("a refer prompt needs a phrase")
    if family == "vqa" and not question:
        raise ValueError("a vqa prompt needs a question")
    box_format = (codec or get_codec(prompts.codec)).describe() if "{box_format}" in template else ""
    return template.format(phrase=phrase or "", question=question or "", box_format=box_format).strip()
