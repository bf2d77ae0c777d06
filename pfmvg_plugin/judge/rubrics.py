"""PeFoMed-style 5-point Likert rubrics for an LLM judge, and a robust parser of the judge's reply.

PeFoMed (He et al., 2024) rated generated radiology reports 1-5 against the reference report (by humans and by
GPT-4) and summarised them by the weighted average ``sum(k * n_k) / N``. The rubrics below spell out every anchor of
the scale and ask for one line of JSON; :func:`parse_rating` still accepts the usual deviations (code fences,
``<think>`` blocks, ``Rating: 4/5``, a bare digit) and rejects ambiguous or out-of-range answers instead of guessing.

A rubric's identity for caching is ``(name, version, sha256 of its text)``: editing the text invalidates cached
ratings even when the version string is not bumped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

SCALE = (1, 2, 3, 4, 5)
#: The reason kept from a reply, at most this many characters.
REASON_CHARS = 300

_ANSWER_FORMAT = (
    "Answer with exactly one line of JSON and nothing else, in this form:\n"
    '{"rating": <an integer from 1 to 5>, "reason": "<one short sentence, at most 25 words>"}'
)


@dataclass(frozen=True)
class Rubric:
    """A judging rubric: a system prompt with the scale anchors and a user template with ``{placeholders}``.

    ``task`` is the kind of lmms-eval task whose samples it grades (``report`` or ``vqa``; None: any, as for rubric
    files): samples of another kind are refused unless the user forces it.
    """

    name: str
    version: str
    system: str
    template: str
    needs_question: bool = False
    task: str | None = None

    @property
    def sha256(self) -> str:
        """Hash of the rubric text (system prompt + template): part of every cache key."""
        return hashlib.sha256(f"{self.system}\x00{self.template}".encode()).hexdigest()

    def messages(self, prediction: str, reference: str, question: str | None = None) -> list[dict]:
        """The chat messages that ask for one rating."""
        user = self.template.format(prediction=prediction, reference=reference,
                                    question=question if question else "(not given)")
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


REPORT = Rubric(
    name="report",
    version="1",
    system=(
        "You are an experienced radiologist grading an automatically generated radiology report against the "
        "reference report written by a radiologist for the same study. Judge clinical content, not wording, style, "
        "length or the order of sentences: which findings are present or absent, their location and laterality "
        "(left/right), their size or severity, devices, and the overall impression (normal or abnormal, main "
        "diagnosis). Do not reward text that is merely fluent; a hallucinated finding counts as an error.\n\n"
        "Rate on this 5-point scale:\n"
        "5 = Clinically equivalent: every key finding and the impression agree with the reference (presence, "
        "absence, location, laterality, severity); differences are only in wording or order.\n"
        "4 = Mostly correct: the key findings and the impression agree; a minor finding is missed or added, or a "
        "detail is slightly off, with no consequence for patient management.\n"
        "3 = Partly correct: some key findings agree, but at least one clinically relevant finding is missed, "
        "hallucinated or misdescribed (for example the wrong side or a clearly different severity).\n"
        "2 = Mostly incorrect: most key findings are missing or wrong, or the report calls an abnormal study normal "
        "(or the reverse), although a few statements agree.\n"
        "1 = Incorrect: contradicts the reference on the main findings, is unrelated to it, or is empty or not a "
        "report.\n\n" + _ANSWER_FORMAT
    ),
    template=(
        "Reference report:\n<<<\n{reference}\n>>>\n\n"
        "Generated report:\n<<<\n{prediction}\n>>>\n\n"
        "Rate the generated report from 1 to 5 against the reference report."
    ),
    task="report",
)

VQA = Rubric(
    name="vqa",
    version="1",
    system=(
        "You are a medical expert grading a model's answer to a question about a medical image against the "
        "reference answer. You do not see the image: the reference answer is correct by definition. Judge meaning, "
        "not wording: synonyms, abbreviations, singular/plural and extra correct detail are fine; a wrong or "
        "contradicting detail is not.\n\n"
        "Rate on this 5-point scale:\n"
        "5 = Correct: the answer means the same as the reference.\n"
        "4 = Correct but imprecise: the essential answer is right, with a minor omission or less specific "
        "wording (for example the right organ but a vaguer location, or one of two listed items).\n"
        "3 = Partly correct: part of the answer is right and part is wrong or missing.\n"
        "2 = Mostly incorrect: the answer is on the right topic but its main content is wrong.\n"
        "1 = Incorrect: the answer contradicts the reference (for example yes against no), is unrelated, refuses "
        "to answer, or is empty.\n"
        "For yes/no (closed) questions only 5 (same answer) or 1 (different answer) are allowed.\n\n"
        + _ANSWER_FORMAT
    ),
    template=(
        "Question: {question}\n"
        "Reference answer: {reference}\n"
        "Model answer: {prediction}\n\n"
        "Rate the model answer from 1 to 5 against the reference answer."
    ),
    needs_question=True,
    task="vqa",
)

RUBRICS: dict[str, Rubric] = {r.name: r for r in (REPORT, VQA)}


def get_rubric(name: str) -> Rubric:
    """The rubric called ``name`` (``report`` or ``vqa``)."""
    try:
        return RUBRICS[name]
    except KeyError:
        raise ValueError(f"unknown rubric {name!r}; choose one of {', '.join(RUBRICS)}") from None


#: Fields of a rubric file (YAML or JSON); ``system`` and ``template`` are required.
RUBRIC_FILE_KEYS = ("name", "version", "system", "template", "needs_question", "answer_format")
_PLACEHOLDER_RE = re.compile(r"{([^{}]*)}")


def load_rubric_file(path: str | Path) -> Rubric:
    """A custom rubric from a YAML or JSON file: ``system`` (scale anchors), ``template`` (the user message with
    ``{prediction}``, ``{reference}`` and optionally ``{question}``); ``name`` (default: the file stem),
    ``version`` (default ``"1"``), ``needs_question`` (default: whether the template uses ``{question}``) and
    ``answer_format`` (default true: append the one-line JSON answer instruction to the system prompt)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the rubric file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a rubric file is a mapping with keys {', '.join(RUBRIC_FILE_KEYS)}")
    unknown = sorted(set(data) - set(RUBRIC_FILE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(RUBRIC_FILE_KEYS)}")
    for key in ("system", "template"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{path}: '{key}' must be a non-empty string")
    template = data["template"]
    fields = set(_PLACEHOLDER_RE.findall(template.replace("{{", "").replace("}}", "")))
    bad = sorted(fields - {"prediction", "reference", "question"})
    if bad:
        raise ValueError(f"{path}: template placeholder(s) {', '.join('{' + b + '}' for b in bad)} are not "
                         "known; use {prediction}, {reference} and {question} (write {{ }} for literal braces)")
    missing = sorted({"prediction", "reference"} - fields)
    if missing:
        raise ValueError(f"{path}: the template must contain {' and '.join('{' + m + '}' for m in missing)}")
    system = data["system"].rstrip()
    if data.get("answer_format", True):
        system = f"{system}\n\n{_ANSWER_FORMAT}"
    return Rubric(name=str(data.get("name") or path.stem), version=str(data.get("version", "1")), system=system,
                  template=template, needs_question=bool(data.get("needs_question", "question" in fields)))


# ---- parsing ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedRating:
    """A parsed judge reply: ``rating`` is None when the reply holds no unambiguous rating (``error`` says why)."""

    rating: int | None
    reason: str
    error: str | None = None


_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z]*")
_KEYS = ("rating", "score", "grade")
_REASON_KEYS = ("reason", "explanation", "rationale", "justification")
_LABELLED_RE = re.compile(r"\b(?:rating|score|grade)\b[\s\"'*]*[:=][\s\"'*]*(\d+(?:\.\d+)?)(?![\d.]*\d)", re.IGNORECASE)
_BARE_RE = re.compile(r"^\s*(\d+(?:\.0+)?)\s*(?:/\s*5)?\s*\.?\s*$")


def _as_rating(value: object) -> int | None:
    """An integer on the scale from a JSON value (``4``, ``4.0``, ``"4"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        m = _BARE_RE.match(value)
        if not m:
            return None
        value = float(m[1])
    if isinstance(value, (int, float)) and float(value).is_integer() and int(value) in SCALE:
        return int(value)
    return None


def _json_objects(text: str) -> list[dict]:
    """Every JSON object that can be decoded starting at some ``{`` of ``text`` (outermost first)."""
    decoder = json.JSONDecoder()
    found, pos = [], text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        pos = text.find("{", end)
    return found


def _lower_keys(obj: dict) -> dict:
    return {str(k).strip().lower(): v for k, v in obj.items()}


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def parse_rating(reply: object) -> ParsedRating:
    """Read a 1-5 rating (and a short reason) from a judge's reply; never raises.

    Tried in order: a JSON object with ``rating`` (or ``score``/``grade``); a labelled number (``Rating: 4``,
    ``**Score:** 4/5``); a bare number (``4``, ``4/5``). Several different ratings, a value off the 1-5 scale or a
    non-integer (``3.5``) give ``rating=None`` with the reason in ``error``.
    """
    if not isinstance(reply, str) or not reply.strip():
        return ParsedRating(None, "", "empty reply")
    text = _FENCE_RE.sub("", _THINK_RE.sub("", reply)).strip()
    objects = [_lower_keys(o) for o in _json_objects(text)]
    for obj in objects:
        key = next((k for k in _KEYS if k in obj), None)
        if key is None:
            continue
        rating = _as_rating(obj[key])
        reason = next((obj[k] for k in _REASON_KEYS if isinstance(obj.get(k), str)), "")
        if rating is None:
            return ParsedRating(None, _clip(reason), f"{key} {obj[key]!r} is not an integer from 1 to 5")
        return ParsedRating(rating, _clip(reason))
    labelled = _LABELLED_RE.findall(text)
    if labelled:
        values = {_as_rating(v) for v in labelled}
        if len(values) > 1:
            return ParsedRating(None, _clip(text), f"several different ratings: {', '.join(sorted(set(labelled)))}")
        rating = values.pop()
        if rating is None:
            return ParsedRating(None, _clip(text), f"rating {labelled[0]} is not an integer from 1 to 5")
        return ParsedRating(rating, _clip(_LABELLED_RE.sub("", text).strip(" .:-*\n")))
    bare = _BARE_RE.match(text)
    if bare:
        rating = _as_rating(bare[1])
        if rating is None:
            return ParsedRating(None, "", f"rating {bare[1]} is not an integer from 1 to 5")
        return ParsedRating(rating, "")
    return ParsedRating(None, _clip(text), "no rating found in the reply")
