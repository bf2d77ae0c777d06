"""lmms-eval's own model classes are asked and scored in the box language each family really speaks.

A stand-in registered under each family's ``--model`` name answers the ground truth written *from the family's
documented format* (shared/FAMILIES.md: its tokens, fences and chatter), on non-square images with asymmetric boxes,
through the real ``lmms-eval`` command line: Acc@0.5 = 1.0. The same answers read in another family's format are a
parse failure or a miss, never a hit on a wrong box; Gemini's y-first boxes read x-first are a miss.
"""

from __future__ import annotations

import math
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


def deepseekvl2(box, size):
    w, h = size
    x1, y1, x2, y2 = (round(v / s * 999) for v, s in zip(box, (w, h, w, h)))
    return f"<|ref|>{PHRASE}<|/ref|><|det|>[[{x1}, {y1}, {x2}, {y2}]]<|/det|>"


def paligemma(box, size):
    w, h = size
    y1, x1, y2, x2 = (round(box[1] / h * 1023), round(box[0] / w * 1023), round(box[3] / h * 1023),
                      round(box[2] / w * 1023))
    return f"<loc{y1:04d}><loc{x1:04d}><loc{y2:04d}><loc{x2:04d}> {PHRASE}"


def florence2(box, size):
    w, h = size
    bins = [min(999, math.floor(v / s * 1000)) for v, s in zip(box, (w, h, w, h))]
    return PHRASE + "".join(f"<loc_{b}>" for b in bins)


def kosmos2(box, size):
    """transformers' Kosmos-2 ``coordinate_to_patch_index`` on a 32 x 32 grid."""
    w, h = size
    n = 32
    ul = math.floor(box[0] / w * n) + math.floor(box[1] / h * n) * n
    lr = math.ceil(box[2] / w * n - 1) + math.ceil(box[3] / h * n - 1) * n
    return f"<grounding><phrase> {PHRASE}</phrase><object><patch_index_{ul:04d}><patch_index_{lr:04d}></object>"


def qwen2vl(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f"<|object_ref_start|>{PHRASE}<|object_ref_end|><|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def cogvlm(box, size):
    values = (min(999, v) for v in _permille(box, size))  # three digits: 1.0 is written as 999
    return f"The {PHRASE} is at [[{','.join(f'{v:03d}' for v in values)}]]."


def ferret(box, size):
    x1, y1, x2, y2 = _permille(box, size)
    return f"{PHRASE} [{x1}, {y1}, {x2}, {y2}]"


def shikra(box, size):
    """Shikra pads every image to a centred square first: its floats are relative to that square."""
    w, h = size
    side = max(w, h)
    ox, oy = (side - w) // 2, (side - h) // 2
    x1, y1, x2, y2 = ((box[0] + ox) / side, (box[1] + oy) / side, (box[2] + ox) / side, (box[3] + oy) / side)
    return f"Answer: [{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f}]."


def molmo(box, size):
    """Molmo points at the box centre, in percent of the image."""
    w, h = size
    x, y = (box[0] + box[2]) / 2 / w * 100, (box[1] + box[3]) / 2 / h * 100
    return f'<point x="{x:.1f}" y="{y:.1f}" alt="{PHRASE}">{PHRASE}</point>'


#: --model name -> (expected convention, answer writer)
FAMILIES = {
    "qwen3_vl": ("qwen3vl", qwen3vl),
    "internvl3": ("internvl", internvl),
    "minicpm_v": ("minicpmv", minicpmv),
    "glm4v": ("glm4v", glm4v),
    "gemini": ("gemini", gemini),
    "llava_onevision": ("llava", llava),
    "qwen2_vl": ("qwen2vl", qwen2vl),
}
#: served model name (behind a generic backend: these families have no lmms-eval class) -> (convention, writer)
SERVED = {
    "deepseek-ai/deepseek-vl2-small": ("deepseekvl2", deepseekvl2),
    "google/paligemma2-3b-mix-448": ("paligemma", paligemma),
    "microsoft/Florence-2-large": ("florence2", florence2),
    "microsoft/kosmos-2-patch14-224": ("kosmos2", kosmos2),
    "THUDM/cogvlm-grounding-generalist-hf": ("cogvlm", cogvlm),
    "apple/ferret-7b": ("ferret", ferret),
    "shikras/shikra-7b": ("shikra", shikra),
}
#: points, not boxes: the pointing tasks only
POINTERS = {"allenai/Molmo-7B-D-0924": molmo}
#: every lmms-eval 0.7 name of these families (FAMILIES.md) -> the convention the task asks it in
ALIASES = {
    "qwen3_vl": "qwen3vl", "qwen3_5": "qwen3vl", "internvl": "internvl", "internvl2": "internvl",
    "internvl3": "internvl", "internvl3_5": "internvl", "internvl_hf": "internvl", "minicpm_v": "minicpmv",
    "minicpm_o": "minicpmv", "glm4v": "glm4v", "gemini": "gemini", "gemini_api": "gemini",
    "llava_onevision": "llava", "llava_onevision1_5": "llava", "llava_onevision2": "llava", "llava": "llava",
    "llava_hf": "llava", "qwen2_vl": "qwen2vl", "qwen2_5_vl": "qwen25vl",
    # generic backends: decided by the model they serve (pfmvg_plugin.lmms.served)
    "vllm": "served", "vllm_generate": "served", "sglang": "served", "huggingface": "served", "openai": "served",
    "openai_compatible": "served", "litellm": "served", "gpt4v": "api", "claude": "api",
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
        assert convention == "served" or get_prompts(convention).refer, name


@pytest.mark.parametrize(("served", "convention"), [
    ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen25vl"), ("Qwen/Qwen2-VL-2B-Instruct", "qwen2vl"),
    ("Qwen/Qwen3-VL-8B-Instruct", "qwen3vl"), ("OpenGVLab/InternVL3-8B", "internvl"),
    ("openbmb/MiniCPM-V-2_6", "minicpmv"), ("zai-org/GLM-4.5V", "glm4v"), ("gemini-2.5-pro", "gemini"),
    ("llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava"), ("gpt-4o", "api"), ("claude-3-5-sonnet", "api"),
    ("my-own-radiology-model", "api"),
])
def test_a_generic_backend_is_asked_in_the_language_of_the_model_it_serves(served, convention, capsys):
    from pfmvg_plugin.lmms.served import served_convention

    assert served_convention({"model": served}) == convention
    assert served_convention({"model_version": served}) == convention
    said = capsys.readouterr().err
    assert ("no box language known" in said) == (served == "my-own-radiology-model")


@pytest.mark.parametrize(("kwargs", "served", "protocol"), [
    ({"convention": "qwen25vl"}, None, "native"),
    ({"convention": "api", "protocol": "uniform"}, None, "uniform"),  # the *_grounding_uniform variants
    ({"convention": "served"}, "Qwen/Qwen2.5-VL-7B-Instruct", "native"),
    ({"convention": "served"}, "my-own-radiology-model", "uniform"),  # unknown: asked the uniform prompt
])
def test_the_results_say_which_protocol_asked(kwargs, served, protocol, monkeypatch):
    from pfmvg_plugin.lmms import grounding_task, state, task_data

    monkeypatch.setattr(task_data, "cli_model_args", lambda: {"model": served} if served else {})
    state.reset()
    try:
        doc = {"id": "d", "phrase": PHRASE, "width": 100, "height": 80, "boxes": [[10, 10, 50, 40]],
               "source": "synthcxr", "pfmvg_task": "t"}
        grounding_task.doc_to_text(doc, kwargs)
        assert state.protocol(doc) == protocol
        assert grounding_task.process_results(doc, ["nothing"])["protocol"] == protocol
        with pytest.raises(ValueError, match="unknown protocol"):
            grounding_task.doc_to_text(doc, {**kwargs, "protocol": "mixed"})
    finally:
        state.reset()


def test_the_environment_override_wins_for_every_model(monkeypatch):
    from pfmvg_plugin.lmms import state

    monkeypatch.setenv(state.OVERRIDE_ENV, "internvl")
    assert state.resolve_convention({"convention": "llava"}) == "internvl"
    monkeypatch.setenv(state.OVERRIDE_ENV, "nonsense")
    with pytest.raises(ValueError, match="unknown prompt convention"):
        state.resolve_convention({})


LANGUAGES = {**FAMILIES, **SERVED}


#: Formats with the same syntax whose numbers differ only by frame: LLaVA's 0-1 floats of the image and Shikra's of the
#: padded square are both "[x1, y1, x2, y2]" floats, so no reader can tell them apart from the text. This is why the
#: format is decided per model, never guessed from the answer.
SAME_SYNTAX = {"llava": {"shikra"}, "shikra": {"llava"}}


@pytest.mark.parametrize("name", sorted(LANGUAGES))
def test_documented_answers_decode_to_the_box_and_other_languages_never_hit(name):
    convention, write = LANGUAGES[name]
    own = get_codec(get_prompts(convention).codec)
    others = {get_prompts(c).codec for c, _ in LANGUAGES.values()} - {own.name}
    for box, size in zip(_boxes(), SIZES):
        answer = write(box, size)
        decoded = own.decode(answer, size)
        ex, ey = own.max_error(size)  # the format's grid: exact to within its step
        assert decoded.ok and all(abs(a - b) <= e + 1e-9 for a, b, e in zip(decoded.boxes[0], box, (ex, ey, ex, ey))), (
            name, answer, decoded)
        for other in others - SAME_SYNTAX.get(own.name, set()):
            read = get_codec(other).decode(answer, size)
            same_numbers = read.ok and box_iou(read.boxes[0], box) > 0.95
            assert not read.ok or box_iou(read.boxes[0], box) < 0.5 or same_numbers, (name, other, answer)
            if same_numbers:  # only a format that writes the same numbers the same way may read it
                assert {own.name, other} <= {"internvl", "minicpmv", "glm4v", "ferret", "cogvlm", "qwen3vl",
                                             "deepseekvl2"}, other


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

from scripted_model import ScriptedModel

spec = importlib.util.spec_from_file_location("languages", os.environ["PFMVG_LANGUAGES"])
languages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(languages)
WRITER = os.environ.get("PFMVG_WRITER") or os.environ["PFMVG_FAMILY"]
WRITE = languages.POINTERS.get(WRITER) or languages.LANGUAGES[WRITER][1]


class StandIn(ScriptedModel):
    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert languages.PHRASE in ctx
            answers.append(WRITE(doc["boxes"][0], (doc["width"], doc["height"])))
        return answers
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


def _cli(tmp_path, name: str, task: str, writer: str | None = None, model_args: str | None = None) -> dict:
    """One real lmms-eval run of the stand-in registered as ``--model name``; the task's results."""
    pytest.importorskip("lmms_eval")
    _dataset(tmp_path / "data" / "synthcxr")
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(tmp_path / "data"),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"),
           "PYTHONPATH": os.pathsep.join((str(tmp_path), str(Path(__file__).parent))), "PFMVG_FAMILY": name,
           "PFMVG_WRITER": writer or "", "PFMVG_LANGUAGES": __file__}
    args = ["--force_simple", "--tasks", task, "--output_path", str(tmp_path / "out"),
            *(["--model_args", model_args] if model_args else [])]
    out = lmms_eval_as(name, "stand_in.StandIn", args, tmp_path, env)
    return task_results(tmp_path / "out", task, out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_scores_its_own_answers_through_the_cli(name, tmp_path):
    results = _cli(tmp_path, name, "synthcxr_grounding")
    assert results["prompt_convention,none"] == FAMILIES[name][0] and results["protocol,none"] == "native"
    assert results["n_scored,none"] == len(SIZES) and results["parse_failure_rate,none"] == 0.0
    assert results["format/ok,none"] == 1.0 and results["format/no_box,none"] == 0.0
    assert results["acc@0.5,none"] == 1.0, results


@pytest.mark.slow
@pytest.mark.parametrize("served", ["Qwen/Qwen3-VL-8B-Instruct", *sorted(SERVED)])
def test_a_model_served_by_vllm_is_asked_and_scored_in_its_format(served, tmp_path):
    """Also the families lmms-eval has no class for (DeepSeek-VL2, PaliGemma's y-first 0-1023 tokens, Florence-2's
    bins, Kosmos-2's patch grid): answers in their documented formats score Acc@0.5 = 1.0."""
    writer = served if served in SERVED else "qwen3_vl"
    results = _cli(tmp_path, "vllm", "synthcxr_grounding", writer=writer, model_args=f"model={served}")
    expected = SERVED[served][0] if served in SERVED else "qwen3vl"
    assert results["prompt_convention,none"] == expected and results["acc@0.5,none"] == 1.0, results
    assert results["protocol,none"] == "native"


@pytest.mark.slow
def test_the_uniform_protocol_asks_every_model_for_floats(tmp_path):
    """``*_grounding_uniform``: Gemini is asked for 0-1 floats like everyone else; answering in them scores 1.0, while
    its native box_2d answers are counted as format failures there (not misread)."""
    results = _cli(tmp_path / "floats", "gemini", "synthcxr_grounding_uniform", writer="llava_onevision")
    assert results["prompt_convention,none"] == "api" and results["acc@0.5,none"] == 1.0, results
    assert results["protocol,none"] == "uniform"
    native = _cli(tmp_path / "native", "gemini", "synthcxr_grounding_uniform")
    assert native["acc@0.5,none"] == 0.0 and native["format/ok,none"] < 1.0, native


# ---- points: Molmo on the pointing tasks -------------------------------------------------------------------------
def test_points_are_scored_as_points():
    from pfmvg_plugin.lmms import pointing_task
    from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER

    (w, h), box = SIZES[0], _boxes()[0]
    doc = {"id": "p", "phrase": PHRASE, "width": w, "height": h, "boxes": [list(box)]}
    cases = {
        molmo(box, (w, h)): (True, "ok"),
        f'<point x="{(box[2] + 5) / w * 100:.1f}" y="{box[1] / h * 100:.1f}">x</point>': (False, "ok"),  # right of it
        llava(box, (w, h)): (False, "no_box"),  # a box is not a point
        GENERATION_ERROR_MARKER + " RuntimeError: boom": (False, "generation_error"),
    }
    for answer, (hit, status) in cases.items():
        record = pointing_task.process_results(doc, [answer])["pointing_sample"]
        assert (record["hit"], record["status"]) == (hit, status), answer
        if record["points"]:  # independent check: the point against the box edges
            x, y = record["points"][0]
            assert hit == (box[0] <= x <= box[2] and box[1] <= y <= box[3])
    items = [pointing_task.process_results(doc, [a])["point_hit"] for a in cases]
    assert pointing_task.point_hit_rate(items) == 0.25
    assert pointing_task.parse_failure_rate(items) == 0.25
    assert pointing_task.generation_error_rate(items) == 0.25


@pytest.mark.slow
def test_molmo_served_by_vllm_points_through_the_cli(tmp_path):
    results = _cli(tmp_path, "vllm", "synthcxr_pointing", writer="allenai/Molmo-7B-D-0924",
                   model_args="model=allenai/Molmo-7B-D-0924")
    assert results["n_scored,none"] == len(SIZES) and results["point_hit,none"] == 1.0, results
    assert results["parse_failure_rate,none"] == 0.0
