"""lmms-eval's own model classes are asked and scored in the box language each family really speaks.

A stand-in registered under each family's ``--model`` name answers the ground truth written *from the family's
documented format* (shared/FAMILIES.md: its tokens, fences and chatter), on non-square images with asymmetric boxes,
through the real ``lmms-eval`` command line: Acc@0.5 = 1.0. The same answers read in another family's format are a
parse failure or a miss, never a hit on a wrong box; Gemini's y-first boxes read x-first are a miss.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers_eval import lmms_eval_as, task_results

from pfmvg_plugin.codecs import get_codec
from pfmvg_plugin.geometry import box_iou
from pfmvg_plugin.prompts import get_prompts

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(300, 200), (200, 300), (250, 400), (420, 260)]
PHRASE = "bright finding"


def _permille(box, size):
    w, h = size
    return [round(box[0] / w * 1000), round(box[1] / h * 1000), round(box[2] / w * 1000), round(box[3] / h * 1000)]


# Answers as each family writes them (FAMILIES.md), built here from the box and image size, not by our codecs.
def qwen3vl(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f'```json\n[\n  {{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "{PHRASE}"}}\n]\n```'


def internvl(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f"<ref>{PHRASE}</ref><box>[[{x1}, {y1}, {x2}, {y2}]]</box>"


def minicpmv(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f"The {PHRASE} is here: <ref>{PHRASE}</ref><box>{x1} {y1} {x2} {y2}</box>"


def glm4v(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f"The {PHRASE} is located at <|begin_of_box|>[{x1},{y1},{x2},{y2}]<|end_of_box|>."


def gemini(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f'```json\n[\n  {{"box_2d": [{y1}, {x1}, {y2}, {x2}], "label": "{PHRASE}"}}\n]\n```'


def llava(box, size):
    w, h = size
    return f"[{box[0] / w:.2f}, {box[1] / h:.2f}, {box[2] / w:.2f}, {box[3] / h:.2f}]"


#: --model name -> (expected convention, answer writer)
FAMILIES = {
    "qwen3_vl": ("qwen3vl", qwen3vl),
    "internvl3": ("internvl", internvl),
    "minicpm_v": ("minicpmv", minicpmv),
    "glm4v": ("glm4v", glm4v),
    "gemini": ("gemini", gemini),
    "llava_onevision": ("llava", llava),
}
#: every lmms-eval 0.7 name of these families (FAMILIES.md) -> the convention the task asks it in
ALIASES = {
    "qwen3_vl": "qwen3vl", "qwen3_5": "qwen3vl", "internvl": "internvl", "internvl2": "internvl",
    "internvl3": "internvl", "internvl3_5": "internvl", "internvl_hf": "internvl", "minicpm_v": "minicpmv",
    "minicpm_o": "minicpmv", "glm4v": "glm4v", "gemini": "gemini", "gemini_api": "gemini",
    "llava_onevision": "llava", "llava_onevision1_5": "llava", "llava_onevision2": "llava", "llava": "llava",
    "llava_hf": "llava", "qwen2_vl": "qwen2vl", "qwen2_5_vl": "qwen25vl",
}


def _boxes():
    """One asymmetric box per image, away from the centre and the diagonal, so an axis swap moves it."""
    return [(round(0.10 * w), round(0.55 * h), round(0.45 * w), round(0.90 * h)) for w, h in SIZES]


def test_every_lmms_eval_name_of_a_family_is_asked_in_its_language():
    template = ROOT / "tasks" / "grounding" / "_default_template_grounding_yaml"
    text = "\n".join(line for line in template.read_text().splitlines() if "!function" not in line)
    kwargs = yaml.safe_load(text)["lmms_eval_specific_kwargs"]
    assert {name: kwargs[name]["convention"] for name in ALIASES} == ALIASES
    for name, convention in ALIASES.items():  # each asks with its family's official prompt
        assert get_prompts(convention).refer, name


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_documented_answers_decode_to_the_box_and_other_languages_never_hit(name):
    convention, write = FAMILIES[name]
    own = get_codec(get_prompts(convention).codec)
    others = {get_prompts(c).codec for c, _ in FAMILIES.values()} - {own.name}
    for box, size in zip(_boxes(), SIZES):
        answer = write(box, size)
        decoded = own.decode(answer, size)
        assert decoded.ok and box_iou(decoded.boxes[0], box) > 0.95, (name, answer, decoded)
        for other in others:
            read = get_codec(other).decode(answer, size)
            same_numbers = read.ok and box_iou(read.boxes[0], box) > 0.95
            assert not read.ok or box_iou(read.boxes[0], box) < 0.5 or same_numbers, (name, other, answer)
            if same_numbers:  # only a format that writes the same numbers the same way may read it
                assert {own.name, other} <= {"internvl", "minicpmv", "glm4v", "ferret", "cogvlm", "qwen3vl"}, other


def test_gemini_read_x_first_is_a_miss():
    """Gemini writes y first: read as x-first 0-1000, an asymmetric box on a non-square image lands elsewhere."""
    for box, size in zip(_boxes(), SIZES):
        answer = gemini(box, size).replace("box_2d", "bbox_2d")
        swapped = get_codec("qwen3vl").decode(answer, size)
        assert swapped.ok and box_iou(swapped.boxes[0], box) < 0.5


STAND_IN = '''
"""Stands in for lmms-eval's model of one family (registered under its --model name): answers the ground truth
written in that family's documented format."""
import importlib.util
import os

from lmms_eval.api.model import lmms

spec = importlib.util.spec_from_file_location("languages", os.environ["PFMVG_LANGUAGES"])
languages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(languages)
WRITE = languages.FAMILIES[os.environ.get("PFMVG_WRITER") or os.environ["PFMVG_FAMILY"]][1]


class StandIn(lmms):
    is_simple = True

    def __init__(self, **kwargs):
        super().__init__()

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert languages.PHRASE in ctx
            answers.append(WRITE(doc["boxes"][0], (doc["width"], doc["height"])))
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError
'''



def _dataset(root: Path) -> None:
    import numpy as np
    from PIL import Image

    from pfmvg_plugin.data.schema import grounding_record
    from pfmvg_plugin.data.store import write_dataset

    (root / "images").mkdir(parents=True)
    records = []
    for i, ((w, h), box) in enumerate(zip(SIZES, _boxes())):
        Image.fromarray(np.full((h, w), 30, dtype=np.uint8), mode="L").save(root / "images" / f"{i}.png")
        records.append(grounding_record(record_id=f"f{i}", source="synthcxr", split="test", image=f"{i}.png",
                                        width=w, height=h, phrase=PHRASE, boxes=[list(box)], category="Mass",
                                        meta={}))
    write_dataset(root, "synthcxr", records, root / "images")


def _cli(tmp_path, name: str, task: str, writer: str | None = None) -> dict:
    """One real lmms-eval run of the stand-in registered as ``--model name``; the task's results."""
    pytest.importorskip("lmms_eval")
    _dataset(tmp_path / "data" / "synthcxr")
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(tmp_path / "data"),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"),
           "PYTHONPATH": os.pathsep.join((str(tmp_path), str(Path(__file__).parent))), "PFMVG_FAMILY": name,
           "PFMVG_WRITER": writer or "", "PFMVG_LANGUAGES": __file__}
    out = lmms_eval_as(name, "stand_in.StandIn", ["--force_simple", "--tasks", task, "--output_path",
                                                   str(tmp_path / "out")], tmp_path, env)
    return task_results(tmp_path / "out", task, out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_scores_its_own_answers_through_the_cli(name, tmp_path):
    results = _cli(tmp_path, name, "synthcxr_grounding")
    assert results["prompt_convention,none"] == FAMILIES[name][0]
    assert results["n_scored,none"] == len(SIZES) and results["parse_failure_rate,none"] == 0.0
    assert results["format/ok,none"] == 1.0 and results["format/no_box,none"] == 0.0
    assert results["acc@0.5,none"] == 1.0, results


@pytest.mark.slow
def test_the_uniform_protocol_asks_every_model_for_floats(tmp_path):
    """``*_grounding_uniform``: Gemini is asked for 0-1 floats like everyone else; answering in them scores 1.0, while
    its native box_2d answers are counted as format failures there (not misread)."""
    results = _cli(tmp_path / "floats", "gemini", "synthcxr_grounding_uniform", writer="llava_onevision")
    assert results["prompt_convention,none"] == "api" and results["acc@0.5,none"] == 1.0, results
    native = _cli(tmp_path / "native", "gemini", "synthcxr_grounding_uniform")
    assert native["acc@0.5,none"] == 0.0 and native["format/ok,none"] < 1.0, native
