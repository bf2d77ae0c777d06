"""The grounding tasks: scoring per convention, aggregations, docs, missing data, synthcxr on demand, real lmms-eval.

Scoring is checked against IoUs computed independently with ``torchvision.ops.box_iou``. Two real CLI runs: the
missing-data message with ``pfmvg_llava`` and an end-to-end run with a scripted model (results.json, samples log).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pfmvg_plugin.data.synth import generate_synthcxr
from pfmvg_plugin.lmms import grounding_task as gt
from pfmvg_plugin.lmms import state
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER
from pfmvg_plugin.lmms.hook import tasks_dir
from pfmvg_plugin.metrics import aggregate
from pfmvg_plugin.prompts import CONVENTIONS, convention_codec

W, H = 400, 500
GT_BOX = [100.0, 50.0, 300.0, 250.0]
SHIFTED = (140.0, 50.0, 340.0, 250.0)  # exactly representable in every convention but qwen25vl (resized input)
RECORD_KEYS = {"id", "dataset_dir", "image", "width", "height", "phrase", "category", "gt_boxes", "pred_boxes", "iou",
               "dice", "parsed", "status", "convention", "mode", "answer"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_NO_PROGRESS": "1"}
TASK_SOURCES = {"mscxr_grounding": ("mscxr", "test"), "mscxr_grounding_val": ("mscxr", "val"),
                "chestxray8_grounding": ("chestxray8", "test"), "vindr_grounding": ("vindr", "test"),
                "synthcxr_grounding": ("synthcxr", "test"), "slake_grounding": ("slake_grounding", "test")}


FAKE_DIR = "/data/mscxr"


def _doc(category="Edema", source="mscxr", boxes=None, **extra):
    return {"id": f"d-{category}", "source": source, "split": "test", "image": "a.png", "width": W, "height": H,
            "phrase": "left basilar opacity", "category": category, "boxes": boxes or [GT_BOX],
            "dataset_dir": FAKE_DIR, **extra}


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Fresh run state; the scoring tests' docs point at a dataset that is not on disk (FAKE_DIR): their image
    counts as readable. Docs of real prepared datasets are checked as in a run."""
    real = gt.task_data.image_problem
    monkeypatch.setattr(gt.task_data, "image_problem",
                        lambda doc, image=None: None if doc.get("dataset_dir") == FAKE_DIR else real(doc, image))
    state.reset()
    yield
    state.reset()


def _tv_iou(a, b) -> float:
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor([list(a)], dtype=torch.float64), torch.tensor([list(b)], dtype=torch.float64)))


def _score(doc, answer, convention):
    state.note_prompt_convention(convention)
    return gt.process_results(doc, [answer])


# ---- scoring ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_ground_truth_written_in_each_convention_scores_acc_1(convention):
    answer = convention_codec(convention).encode([tuple(GT_BOX)], (W, H))
    out = _score(_doc(), answer, convention)
    record = out[gt.SAMPLE_KEY]
    assert record["parsed"] and record["status"] == "ok" and record["convention"] == convention
    assert gt.acc_at_0_5([out["acc@0.5"]]) == 1.0
    assert gt.acc_at_0_5([out["acc@0.5/Edema"]]) == 1.0
    _assert_within_grid(convention, record["pred_boxes"][0], GT_BOX)
    assert record["iou"] == pytest.approx(_tv_iou(record["pred_boxes"][0], GT_BOX), abs=1e-9)


def _assert_within_grid(convention, got, want):
    """Each coordinate within the error the format's grid allows (2 decimals, percent, 1/1000, 32 x 32 patches, ...)."""
    ex, ey = convention_codec(convention).max_error((W, H))
    assert all(abs(g - w) <= e + 1e-9 for g, w, e in zip(got, want, (ex, ey, ex, ey))), (convention, got, want)


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_shifted_box_scores_the_independent_iou(convention):
    answer = convention_codec(convention).encode([SHIFTED], (W, H))
    out = _score(_doc(), answer, convention)
    assert _tv_iou(SHIFTED, GT_BOX) == pytest.approx(2 / 3)
    pred = out[gt.SAMPLE_KEY]["pred_boxes"][0]
    _assert_within_grid(convention, pred, SHIFTED)  # exact where the format can write SHIFTED exactly
    expected = _tv_iou(pred, GT_BOX)  # the independent IoU of the box the answer says
    assert out[gt.SAMPLE_KEY]["iou"] == pytest.approx(expected, abs=1e-9)
    assert gt.miou([out["miou"]]) == pytest.approx(expected, abs=1e-9)
    assert gt.acc_at_0_5([out["acc@0.5"]]) == 1.0 and gt.acc_at_0_1([out["acc@0.1"]]) == 1.0
    assert gt.mdice([out["mdice"]]) == pytest.approx(2 * expected / (1 + expected), abs=1e-9)


def test_several_gt_boxes_are_scored_in_max_mode_and_say_so():
    doc = _doc(boxes=[[0.0, 0.0, 50.0, 50.0], GT_BOX])
    out = _score(doc, "[0.35, 0.10, 0.85, 0.50]", "llava")
    assert out[gt.SAMPLE_KEY]["iou"] == pytest.approx(_tv_iou(SHIFTED, GT_BOX))
    assert out[gt.SAMPLE_KEY]["mode"] == "max" == out["multibox_mode"]
    assert gt.one_label([out["multibox_mode"]] * 3) == "max"


def test_garbage_scores_zero_and_counts_as_parse_failure():
    out = _score(_doc(), "I am unable to locate that finding.", "llava")
    record = out[gt.SAMPLE_KEY]
    assert (record["iou"], record["parsed"], record["status"], record["pred_boxes"]) == (0.0, False, "no_box", [])
    assert gt.parse_failure_rate([out["parse_failure_rate"]]) == 1.0
    assert gt.generation_error_rate([out["generation_error_rate"]]) == 0.0
    assert gt.acc_at_0_1([out["acc@0.1"]]) == 0.0


def test_generation_error_marker_is_counted_apart_from_parse_failures():
    out = _score(_doc(), GENERATION_ERROR_MARKER + " RuntimeError: CUDA out of memory", "llava")
    record = out[gt.SAMPLE_KEY]
    assert (record["iou"], record["parsed"], record["status"]) == (0.0, False, "generation_error")
    assert record["answer"].startswith(GENERATION_ERROR_MARKER)
    assert gt.generation_error_rate([out["generation_error_rate"]]) == 1.0
    assert gt.parse_failure_rate([out["parse_failure_rate"]]) == 0.0


def test_aggregations_over_a_mixed_run():
    docs = [_doc("Edema"), _doc("Edema"), _doc("Pneumonia"), _doc("Pneumonia"), _doc("Pneumonia")]
    answers = ["[0.25, 0.10, 0.75, 0.50]", "[0.35, 0.10, 0.85, 0.50]", "no idea",
               GENERATION_ERROR_MARKER + " boom", "[0.25, 0.10, 0.75, 0.50]"]
    outs = [_score(d, a, "llava") for d, a in zip(docs, answers)]

    def column(key):
        return [o[key] for o in outs]

    shifted = _tv_iou(SHIFTED, GT_BOX)
    assert gt.acc_at_0_5(column("acc@0.5")) == pytest.approx(3 / 5)
    assert gt.acc_at_0_3(column("acc@0.3")) == pytest.approx(3 / 5)
    assert gt.miou(column("miou")) == pytest.approx((1 + shifted + 1) / 5)
    assert gt.parse_failure_rate(column("parse_failure_rate")) == pytest.approx(1 / 5)
    assert gt.generation_error_rate(column("generation_error_rate")) == pytest.approx(1 / 5)
    # per category: one value per doc, None for docs of other categories
    assert column("acc@0.5/Edema")[2:] == [None, None, None]
    assert gt.miou(column("miou/Edema")) == pytest.approx((1 + shifted) / 2)
    assert gt.acc_at_0_5(column("acc@0.5/Pneumonia")) == pytest.approx(1 / 3)
    assert gt.acc_at_0_5(column("acc@0.5/Cardiomegaly")) is None  # no docs: N/A in the table
    # the same numbers as metrics.aggregate on the full per-sample records
    records = column(gt.SAMPLE_KEY)
    full = aggregate([{**r, "pred_box": None} for r in records], categories=[r["category"] for r in records],
                     n_bootstrap=0)
    assert full["per_category"]["Edema"]["miou"] == pytest.approx(gt.miou(column("miou/Edema")))
    assert full["parse_failures"] == {"no_box": 1} and full["generation_errors"] == 1
    assert gt.one_label(column("prompt_convention")) == "llava"


def test_vindr_classes_outside_the_list_go_to_the_other_bucket():
    out = _score(_doc("Rib fracture", source="vindr"), "[0.25, 0.10, 0.75, 0.50]", "llava")
    assert gt.acc_at_0_5([out[f"acc@0.5/{gt.OTHER_CATEGORIES}"]]) == 1.0
    assert out["acc@0.5/Atelectasis"] is None


@pytest.mark.parametrize("answer", [None, 42, ["[0.25, 0.10, 0.75, 0.50]"], "", "[nan, 0.1, 0.2, 0.3]", "x" * 10_000])
def test_process_results_never_raises_on_model_output(answer):
    out = _score(_doc(), answer, "llava")
    assert set(out[gt.SAMPLE_KEY]) >= RECORD_KEYS
    assert len(out[gt.SAMPLE_KEY]["answer"]) <= gt.ANSWER_CHARS


def test_process_results_never_raises_on_bad_ground_truth():
    out = _score(_doc(boxes=[[float("nan"), 0, 1, 1]]), "[0.25, 0.10, 0.75, 0.50]", "llava")
    assert out[gt.SAMPLE_KEY]["status"] == gt.SCORING_ERROR and out[gt.SAMPLE_KEY]["iou"] == 0.0
    assert gt.parse_failure_rate([out["parse_failure_rate"]]) == 1.0


def test_aggregations_never_raise():
    assert gt.miou([{"iou": 1.0}]) is None  # malformed item: logged, None
    assert gt.miou([]) is None and gt.one_label([]) is None


def test_per_sample_record_layout():
    out = _score(_doc(), "[0.25, 0.10, 0.75, 0.50]", "llava")
    record = out[gt.SAMPLE_KEY]
    assert set(record) >= RECORD_KEYS
    assert record["gt_boxes"] == [GT_BOX] and record["pred_boxes"] == [GT_BOX]
    assert json.loads(json.dumps(out)) == out  # plain JSON all the way
    # only one value is the full record (pfmvg report finds it by its iou and gt_boxes keys)
    assert [k for k, v in out.items() if isinstance(v, dict) and {"iou", "gt_boxes"} <= set(v)] == [gt.SAMPLE_KEY]


# ---- prompts ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "model", "expected"), [
    (None, None, "llava"),
    ({"convention": "llava"}, None, "llava"),
    ({"convention": "api"}, None, "api"),
    ({"convention": "model"}, "minigptv2", "minigptv2"),
    ({"convention": "model"}, None, "llava"),
])
def test_doc_to_text_uses_and_records_the_convention(kwargs, model, expected):
    state.set_model_convention(model)
    text = gt.doc_to_text(_doc(), kwargs)
    assert "left basilar opacity" in text
    assert state.prompt_convention(_doc()) == expected
    assert gt.doc_to_target(_doc()) == convention_codec(expected).encode([tuple(GT_BOX)], (W, H))


# ---- the task YAMLs ----------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: ("!function", loader.construct_scalar(node)))


def _yaml(name: str) -> dict:
    return yaml.load((tasks_dir() / "grounding" / name).read_text(), Loader=_Loader)


@pytest.mark.parametrize("task", sorted(TASK_SOURCES))
def test_task_yamls_declare_exactly_the_keys_process_results_aggregates(task):
    import importlib.util

    config = _yaml(f"{task}.yaml")
    source, split = TASK_SOURCES[task]
    assert config["task"] == task
    names = [m["metric"] for m in config["metric_list"]]
    assert names == gt.metric_names(source)
    spec = importlib.util.spec_from_file_location("utils", tasks_dir() / "grounding" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    for metric in config["metric_list"]:
        tag, ref = metric["aggregation"]
        assert tag == "!function" and callable(getattr(utils, ref.removeprefix("utils.")))
    category = gt.CATEGORIES_BY_SOURCE.get(source, ("Liver",))[0]  # SLAKE's labels are open-ended: no category rows
    out = _score(_doc(category, source=source), "[0.25, 0.10, 0.75, 0.50]", "llava")
    assert set(out) - {gt.SAMPLE_KEY} == set(names)
    lmms_split = "test" if split == "test" else "validation"
    assert config[f"{lmms_split}_split"] == lmms_split
    assert config["dataset_kwargs"] == {"data_files": {lmms_split: "stub.jsonl"}}
    assert config["process_docs"] == ("!function", f"utils.{source}_{split}_docs")


def test_pad_frame_decodes_in_the_padded_square_and_needs_llava_floats():
    doc = _doc()
    gt.doc_to_text(doc, {"convention": "llava", "frame": "pad"})
    assert state.frame(doc) == "pad" and state.answer_codec(task=doc).name == "llava"
    assert state.answer_codec(task=doc).pad_to_square
    side = max(W, H)
    ox, oy = (side - W) / 2, (side - H) / 2
    (box,) = state.answer_codec(task=doc).decode("[0.3, 0.2, 0.6, 0.7]", (W, H)).boxes
    assert box == pytest.approx((0.3 * side - ox, 0.2 * side - oy, 0.6 * side - ox, 0.7 * side - oy))
    with pytest.raises(ValueError, match="frame 'pad' needs boxes normalised to the padded square"):
        gt.doc_to_text(doc, {"convention": "minigptv2", "frame": "pad"})


def test_template_generation_settings_and_model_conventions():
    config = _yaml("_default_template_grounding_yaml")
    assert config["output_type"] == "generate_until"
    gen = config["generation_kwargs"]
    assert gen["max_new_tokens"] == 64 and gen["do_sample"] is False and gen["temperature"] == 0
    assert gen["until"] == ["\n\n"]
    conventions = {model: kw["convention"] for model, kw in config["lmms_eval_specific_kwargs"].items()}
    assert conventions["default"] == conventions["llava_hf"] == "llava"
    assert conventions["gpt4v"] == conventions["claude"] == "api"
    assert conventions["openai_compatible"] == conventions["openai"] == conventions["vllm"] == "served"
    assert conventions["pfmvg_llava"] == conventions["pfmvg_minigptv2"] == "model"
    frames = {model: kw.get("frame") for model, kw in config["lmms_eval_specific_kwargs"].items()}
    # the LLaVA-1.5 classes (llava_hf's processor crops; the original repo's class pads itself) see the padded square
    assert frames == {**{model: None for model in frames}, "llava_hf": "pad", "llava": "pad"}
    group = _yaml("med_grounding.yaml")
    assert group["group"] == "med_grounding"
    assert set(group["task"]) == set(TASK_SOURCES) - {"mscxr_grounding_val"}


# ---- docs and data -------------------------------------------------------------------------------------------------
@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(root))
    return root


def test_missing_data_is_a_clear_error_naming_the_command(data_root):
    with pytest.raises(gt.DataNotPreparedError) as info:
        gt.load_docs("mscxr", "test")
    message = str(info.value)
    assert "`pfmvg data prepare mscxr --annotations <MS_CXR_Local_Alignment_v1.1.0.csv> --images " in message
    assert str(data_root / "mscxr") in message and "PFMVG_DATA_ROOT" in message
    # the lmms-eval path: process_docs never raises, doc_to_text raises that message at task construction
    docs = gt.process_docs(None, "mscxr", "test")
    assert len(docs) == 1 and docs[0]["id"] == gt.ERROR_DOC_ID
    with pytest.raises(gt.DataNotPreparedError, match="pfmvg data prepare mscxr"):
        gt.doc_to_text(docs[0], {"convention": "llava"})
    for name, command in (("chestxray8", "pfmvg data prepare chestxray8 --bbox-csv"),
                          ("vindr", "pfmvg data prepare vindr --annotations")):
        with pytest.raises(gt.DataNotPreparedError, match=command):
            gt.load_docs(name, "test")


def test_a_doc_without_its_image_is_left_out_and_counted_never_a_zero(data_root, capsys):
    """A prepared dataset whose image went missing after preparation: that doc is reported apart, not scored."""
    generate_synthcxr(data_root / "synthcxr", n=24, size=64)
    docs = gt.load_docs("synthcxr", "test")
    assert len(docs) >= 2
    gone = Path(docs[0]["dataset_dir"]) / "images" / docs[0]["image"]
    gone = gone if gone.is_file() else next(Path(docs[0]["dataset_dir"]).rglob(Path(docs[0]["image"]).name))
    gone.unlink()
    state.note_prompt_convention("llava")
    codec = convention_codec("llava")
    # the readable docs answered with their exact ground truth; the model could not open the missing image
    answers = [codec.encode([tuple(b) for b in d["boxes"]], (d["width"], d["height"])) for d in docs]
    answers[0] = f"{GENERATION_ERROR_MARKER} FileNotFoundError: {gone}"
    outs = [gt.process_results(d, [a]) for d, a in zip(docs, answers)]
    record = outs[0][gt.SAMPLE_KEY]
    assert record["status"] == gt.IMAGE_ERROR and "image missing" in record["error"] and record["iou"] is None
    assert all(outs[0][name] is None for name in gt.HEADLINE_METRICS)
    assert gt.acc_at_0_5([o["acc@0.5"] for o in outs]) == 1.0
    assert gt.parse_failure_rate([o["parse_failure_rate"] for o in outs]) == 0.0
    assert gt.n_scored([o["n_scored"] for o in outs]) == len(docs) - 1
    capsys.readouterr()
    assert gt.image_errors([o["image_errors"] for o in outs]) == 1
    err = capsys.readouterr().err
    assert f"1 of {len(docs)} docs of synthcxr had no readable image" in err and str(gone) in err
    assert f"over the other {len(docs) - 1} docs (n_scored)" in err
    for metric in gt.CATEGORY_METRICS:  # per-category keys skip it too
        assert all(v is None for k, v in outs[0].items() if k.startswith(metric + "/"))


def test_slake_grounding_task_scores_a_prepared_release(data_root):
    """slake_grounding: `pfmvg data prepare slake_grounding` output under the data root, scored by the task."""
    from helpers_data import write_images

    from pfmvg_plugin.cli.main import main as pfmvg

    root = data_root.parent / "Slake1.0"
    write_images(root / "imgs", {"xmlab2/source.jpg": (80, 60), "xmlab5/source.jpg": (60, 90)})
    question = {"img_id": 2, "img_name": "xmlab2/source.jpg", "question": "Is the liver healthy?", "answer": "Yes",
                "q_lang": "en", "location": "Abdomen", "modality": "CT", "answer_type": "CLOSED", "base_type": "vqa",
                "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": 20}
    (root / "test.json").write_text(json.dumps([question, {**question, "img_id": 5, "img_name": "xmlab5/source.jpg",
                                                           "qid": 21}]))
    detections = [{"Liver": [10, 5, 30, 20]}, {"Spleen": [50, 5, 9, 9]}]
    (root / "imgs/xmlab2/detection.json").write_text(json.dumps(detections))
    (root / "imgs/xmlab5/detection.json").write_text(json.dumps([{"Brain Edema": [5, 40, 20, 30]}]))
    assert pfmvg(["data", "prepare", "slake_grounding", "--root", str(root)]) == 0
    assert gt.data_problem("slake_grounding", "test") is None
    docs = gt.load_docs("slake_grounding", "test")
    assert sorted(d["phrase"] for d in docs) == ["Brain Edema", "Liver", "Spleen"]
    state.note_prompt_convention("llava")
    codec = convention_codec("llava")
    outs = [gt.process_results(d, [codec.encode([tuple(b) for b in d["boxes"]], (d["width"], d["height"]))])
            for d in docs]
    assert gt.acc_at_0_5([o["acc@0.5"] for o in outs]) == 1.0 and gt.n_scored([o["n_scored"] for o in outs]) == 3


def test_missing_split_names_the_splits_there(data_root):
    generate_synthcxr(data_root / "mscxr", n=6, size=64)  # any prepared dataset will do
    (data_root / "mscxr" / "test.jsonl").unlink(missing_ok=True)
    with pytest.raises(gt.DataNotPreparedError, match=r"it has the splits: .*train"):
        gt.load_docs("mscxr", "test")


def test_synthcxr_is_generated_on_first_use(data_root, monkeypatch):
    monkeypatch.setattr(gt, "SYNTHCXR_KWARGS", {"n": 24, "size": 64})
    docs = gt.load_docs("synthcxr", "test")
    target = data_root / "synthcxr"
    assert (target / "dataset.json").is_file() and docs
    assert sorted(p.name for p in data_root.iterdir()) == [".synthcxr.lock", "synthcxr"]  # no temp folder left
    doc = docs[0]
    assert set(doc) == {"id", "source", "split", "image", "width", "height", "phrase", "category", "boxes",
                        "dataset_dir"}
    assert doc["dataset_dir"] == str(target.resolve()) and doc["split"] == "test"
    assert all(isinstance(v, float) for box in doc["boxes"] for v in box)
    (image,) = gt.doc_to_visual(doc)
    assert image.mode == "RGB" and image.size == (doc["width"], doc["height"])
    stamp = (target / "dataset.json").stat().st_mtime_ns
    assert gt.load_docs("synthcxr", "test") == docs
    assert (target / "dataset.json").stat().st_mtime_ns == stamp  # not generated twice
    # the docs go through Arrow as plain columns
    dataset = gt.process_docs(None, "synthcxr", "test")
    assert dataset.num_rows == len(docs) and dataset[0]["boxes"] == doc["boxes"]


def test_synthcxr_generation_is_safe_across_processes(data_root):
    code = textwrap.dedent(
        """
        import sys
        from pfmvg_plugin.lmms import grounding_task as gt
        gt.SYNTHCXR_KWARGS = {"n": 16, "size": 64}
        print(len(gt.load_docs("synthcxr", "test")))
        """
    )
    env = {**os.environ, "PFMVG_DATA_ROOT": str(data_root), "PFMVG_NO_PROGRESS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert sum("generating the synthcxr dataset" in err for _, err in outputs) == 1
    assert sorted(p.name for p in data_root.iterdir()) == [".synthcxr.lock", "synthcxr"]


def test_a_non_dataset_folder_in_the_way_is_reported(data_root):
    (data_root / "synthcxr").mkdir()
    (data_root / "synthcxr" / "notes.txt").write_text("mine")
    with pytest.raises(gt.DataNotPreparedError, match="exists but is not a prepared dataset"):
        gt.load_docs("synthcxr", "test")
    docs = gt.process_docs(None, "synthcxr", "test")
    assert "exists but is not a prepared dataset" in docs[0]["error"]


# ---- real lmms-eval ----------------------------------------------------------------------------------------------
@pytest.fixture
def synth_root(data_root):
    generate_synthcxr(data_root / "synthcxr", n=40, size=64)
    return data_root


@pytest.mark.parametrize(("model", "model_convention", "expected"), [
    ("llava_hf", None, "llava"),
    ("some_new_model", None, "llava"),
    ("openai_compatible", None, "api"),
    ("gpt4v", None, "api"),
    ("pfmvg_llava", "minigptv2", "minigptv2"),
])
def test_lmms_eval_picks_the_convention_by_model_name(synth_root, model, model_convention, expected):
    pytest.importorskip("lmms_eval")
    from lmms_eval.tasks import TaskManager

    state.set_model_convention(model_convention)
    # include_defaults=False: index only our folder (fast); the hook adds nothing then
    tm = TaskManager(verbosity="ERROR", include_path=str(tasks_dir()), include_defaults=False, model_name=model)
    task = tm.load_task_or_group(["synthcxr_grounding"])["synthcxr_grounding"]
    doc = task.test_docs()[0]
    assert task.doc_to_text(doc) == gt.build_prompt("refer", expected, phrase=doc["phrase"])
    assert doc[state.TASK_KEY] == "synthcxr/test" and state.prompt_convention(doc) == expected
    assert task.doc_to_visual(doc)[0].mode == "RGB"


def _lmms_eval_script() -> str:
    script = Path(sys.executable).parent / "lmms-eval"
    if not script.exists():
        pytest.skip("lmms-eval console script not installed")
    return str(script)


def _cli(args: list[str], tmp_path: Path, data_root: Path, **env_extra) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE, "PFMVG_DATA_ROOT": str(data_root),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), **env_extra}
    env.pop("PFMVG_SKIP_UNPREPARED", None) if "PFMVG_SKIP_UNPREPARED" not in env_extra else None
    return subprocess.run([_lmms_eval_script(), *args, "--output_path", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


def test_cli_missing_data_stops_before_the_model_listing_every_dataset(tmp_path, data_root):
    """No model is loaded (the checkpoint does not exist), every unprepared dataset is named with its command, in
    one block, and lmms-eval exits non-zero; no traceback."""
    pytest.importorskip("lmms_eval")
    start = time.monotonic()
    out = _cli(["--model", "pfmvg_llava", "--model_args", "pretrained=/nonexistent/checkpoint",
                "--tasks", "mscxr_grounding,pfmvg_vqarad,iuxray_report"], tmp_path, data_root)
    elapsed = time.monotonic() - start
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "Traceback" not in text and "/nonexistent/checkpoint" not in text, text[-3000:]
    block = out.stderr[out.stderr.index("pfmvg_plugin: no model was loaded"):].splitlines()
    lines = {line.split(":")[0].strip(): line for line in block[1:4]}
    assert set(lines) == {"mscxr_grounding", "pfmvg_vqarad", "iuxray_report"}, block
    assert lines["mscxr_grounding"].startswith(
        "  mscxr_grounding: mscxr: no prepared 'test' split at " + str(data_root / "mscxr"))
    assert "pfmvg data prepare mscxr --annotations <MS_CXR_Local_Alignment_v1.1.0.csv>" in lines["mscxr_grounding"]
    assert "pfmvg data prepare vqarad" in lines["pfmvg_vqarad"]
    assert "pfmvg data prepare iuxray" in lines["iuxray_report"]
    assert "PFMVG_SKIP_UNPREPARED=1" in block[4]
    assert not (tmp_path / "out").exists()
    assert elapsed < 120


def test_cli_group_lists_all_its_unprepared_members(tmp_path, data_root):
    pytest.importorskip("lmms_eval")
    out = _cli(["--model", "pfmvg_llava", "--model_args", "pretrained=/nonexistent/checkpoint",
                "--tasks", "med_grounding"], tmp_path, data_root)
    assert out.returncode == 1, out.stderr[-3000:]
    listed = [line.split(":")[0].strip() for line in out.stderr.splitlines() if line.startswith("  ")
              and "no prepared" in line]
    # synthcxr is generated on first use
    assert listed == ["mscxr_grounding", "chestxray8_grounding", "vindr_grounding", "slake_grounding"]


def test_cli_opt_in_runs_the_prepared_members_and_says_which_were_left_out(tmp_path, data_root):
    pytest.importorskip("lmms_eval")
    from pfmvg_plugin.models.tiny_llava import build_tiny_llava

    generate_synthcxr(data_root / "synthcxr", n=24, size=64)
    model_dir = build_tiny_llava(tmp_path / "tiny_llava")
    out = _cli(["--model", "pfmvg_llava", "--model_args", f"pretrained={model_dir}", "--tasks", "med_grounding",
                "--limit", "2"], tmp_path, data_root, PFMVG_SKIP_UNPREPARED="1")
    assert "these tasks are left out: their data is not prepared" in out.stderr, out.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    assert "synthcxr_grounding" in results
    assert not {"mscxr_grounding", "chestxray8_grounding", "vindr_grounding", "slake_grounding"} & set(results)
    # a task asked for by name is still an error with the opt-in
    named = _cli(["--model", "pfmvg_llava", "--model_args", "pretrained=/nonexistent/checkpoint",
                  "--tasks", "synthcxr_grounding,mscxr_grounding"], tmp_path, data_root, PFMVG_SKIP_UNPREPARED="1")
    assert named.returncode == 1 and "mscxr_grounding: mscxr: no prepared" in named.stderr


ECHO_MODEL = '''
"""Scripted lmms-eval model: exact, shifted, garbage, generation-error answers by doc_id % 4."""
from lmms_eval.api.model import lmms

from pfmvg_plugin.lmms import state
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER
from pfmvg_plugin.prompts import convention_codec


class EchoModel(lmms):
    is_simple = True

    def __init__(self, box_format=None, **kwargs):
        super().__init__()
        state.set_model_convention(box_format)

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert doc_to_visual(doc)[0].mode == "RGB"
            assert gen_kwargs["max_new_tokens"] == 64 and gen_kwargs["until"] == ["\\n\\n"]
            codec = convention_codec(state.prompt_convention(doc))
            size = (doc["width"], doc["height"])
            x1, y1, x2, y2 = doc["boxes"][0]
            kind = doc_id % 4
            if kind == 0:
                answers.append(codec.encode([tuple(b) for b in doc["boxes"]], size))
            elif kind == 1:
                answers.append(codec.encode((x1 + (x2 - x1) / 2, y1, x2 + (x2 - x1) / 2, y2), size))
            elif kind == 2:
                answers.append("I cannot see anything here.")
            else:
                answers.append(GENERATION_ERROR_MARKER + " RuntimeError: scripted failure")
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError
'''

RUN_CLI = '''
import sys
from lmms_eval.models import MODEL_REGISTRY_V2
from lmms_eval.models.registry_v2 import ModelManifest
from pfmvg_plugin.lmms import grounding_task
grounding_task.SYNTHCXR_KWARGS = {"n": 60}
MODEL_REGISTRY_V2.register_manifest(ModelManifest(model_id="pfmvg_echo", simple_class_path="echo_model.EchoModel"))
from lmms_eval.__main__ import cli_evaluate
sys.argv = ["lmms-eval", *sys.argv[1:]]
cli_evaluate()
'''


def test_cli_end_to_end_results_and_samples_log(tmp_path, data_root):
    """The real CLI on synthcxr (generated on first use) with a scripted model: table, results.json, samples."""
    pytest.importorskip("lmms_eval")
    (tmp_path / "echo_model.py").write_text(ECHO_MODEL)
    env = {**os.environ, **OFFLINE, "PFMVG_DATA_ROOT": str(data_root), "PYTHONPATH": str(tmp_path),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    out = subprocess.run([sys.executable, "-c", RUN_CLI, "--model", "pfmvg_echo",
                          "--tasks", "synthcxr_grounding", "--output_path", str(tmp_path / "out"), "--log_samples"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    (samples_file,) = (tmp_path / "out").rglob("*_samples_synthcxr_grounding.jsonl")
    results = json.loads(results_file.read_text())["results"]["synthcxr_grounding"]
    lines = [json.loads(line) for line in samples_file.read_text().splitlines()]
    records = [line[gt.SAMPLE_KEY] for line in sorted(lines, key=lambda x: x["doc_id"])]
    n = len(records)
    assert n == len(gt.load_docs("synthcxr", "test")) >= 4

    # per-sample records: exactly the documented keys, the scripted outcome per doc
    for doc_id, record in enumerate(records):
        assert set(record) >= RECORD_KEYS
        assert record["convention"] == "llava" and record["mode"] == "max"  # `default` kwargs: not a listed model
        assert Path(record["dataset_dir"]) == (data_root / "synthcxr").resolve()
        kind = doc_id % 4
        assert record["status"] == ("ok", "ok", "no_box", "generation_error")[kind]
        if kind in (0, 1):  # the GT box, or shifted by half its width; both rounded to 2 decimals by the codec
            best = max(_tv_iou(record["pred_boxes"][0], g) for g in record["gt_boxes"])
            assert record["iou"] == pytest.approx(best)
    # headline numbers in results.json = metrics.aggregate over the logged records
    full = aggregate([{**r, "pred_box": None} for r in records], n_bootstrap=0)
    for key in ("acc@0.1", "acc@0.3", "acc@0.5", "miou", "mdice"):
        assert results[f"{key},none"] == pytest.approx(full[key]), key
    assert results["parse_failure_rate,none"] == pytest.approx(sum(i % 4 == 2 for i in range(n)) / n)
    assert results["generation_error_rate,none"] == pytest.approx(sum(i % 4 == 3 for i in range(n)) / n)
    assert results["multibox_mode,none"] == "max" and results["prompt_convention,none"] == "llava"
    for category in gt.CATEGORIES_BY_SOURCE["synthcxr"]:
        mine = [r["iou"] for r in records if r["category"] == category]
        value = results[f"miou/{category},none"]
        assert (value is None) if not mine else value == pytest.approx(sum(mine) / len(mine)), category
    # the samples log: one full record per line, compact scores elsewhere
    first = lines[0]
    assert [k for k, v in first.items() if isinstance(v, dict) and {"iou", "gt_boxes"} <= set(v)] == [gt.SAMPLE_KEY]
    assert set(first["acc@0.5"]) == {"iou", "dice", "parsed", "status", "mode"}
    # the printed table: one row per scalar, readable widths
    table = [line for line in out.stdout.splitlines() if line.startswith("|synthcxr_grounding")]
    assert any("|acc@0.5 " in row for row in table) and any("|multibox_mode" in row and "max" in row for row in table)
    assert max(len(row) for row in table) < 120
    assert not math.isnan(results["miou,none"])


PROMPT_READER = '''
"""Scripted model: answers the ground truth in the format its PROMPT asks for (MiniGPT-v2's [refer] or LLaVA floats),
reading nothing of our run state."""
from lmms_eval.api.model import lmms

from pfmvg_plugin.prompts import convention_codec


class PromptReader(lmms):
    is_simple = True

    def __init__(self, **kwargs):
        super().__init__()

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            codec = convention_codec("minigptv2" if "[refer]" in ctx else "llava")
            answers.append(codec.encode([tuple(b) for b in doc["boxes"]], (doc["width"], doc["height"])))
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError
'''


def test_two_tasks_of_different_conventions_in_one_run_each_decode_their_own(tmp_path, data_root):
    """A user's task variant asking in MiniGPT-v2's format beside ours (LLaVA floats), one lmms-eval run: each task's
    answers are decoded in the format its own prompts asked for (the last prompt rendered used to win for both)."""
    pytest.importorskip("lmms_eval")
    generate_synthcxr(data_root / "synthcxr", n=40, size=64)
    variant = tmp_path / "variant"
    variant.mkdir()
    grounding = tasks_dir() / "grounding"
    for name in ("_default_template_grounding_yaml", "stub.jsonl"):
        shutil.copy(grounding / name, variant / name)
    utils = (grounding / "utils.py").read_text()
    (variant / "utils.py").write_text(utils + '\nsynthcxr_refer_docs = _task.docs_for("synthcxr", "test", '
                                              'name="synthcxr_refer")\n')
    ours = (grounding / "synthcxr_grounding.yaml").read_text()
    yaml_text = ours.replace("task: synthcxr_grounding", "task: synthcxr_grounding_refer").replace(
        "utils.synthcxr_test_docs", "utils.synthcxr_refer_docs")
    (variant / "synthcxr_grounding_refer.yaml").write_text(
        yaml_text + "lmms_eval_specific_kwargs:\n  default:\n    convention: minigptv2\n")
    (tmp_path / "prompt_reader.py").write_text(PROMPT_READER)
    run = RUN_CLI.replace('"pfmvg_echo", simple_class_path="echo_model.EchoModel"',
                          '"prompt_reader", simple_class_path="prompt_reader.PromptReader"')
    env = {**os.environ, **OFFLINE, "PFMVG_DATA_ROOT": str(data_root), "PYTHONPATH": str(tmp_path),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    out = subprocess.run([sys.executable, "-c", run, "--model", "prompt_reader", "--include_path", str(variant),
                          "--tasks", "synthcxr_grounding,synthcxr_grounding_refer", "--output_path",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    results_files = list((tmp_path / "out").rglob("*_results.json"))
    assert len(results_files) == 1, out.stdout[-2000:] + out.stderr[-4000:]
    results = json.loads(results_files[0].read_text())["results"]
    assert results["synthcxr_grounding"]["prompt_convention,none"] == "llava"
    assert results["synthcxr_grounding_refer"]["prompt_convention,none"] == "minigptv2"
    for task in ("synthcxr_grounding", "synthcxr_grounding_refer"):
        assert results[task]["parse_failure_rate,none"] == 0.0, (task, results[task])
        assert results[task]["acc@0.5,none"] == 1.0, (task, results[task])


PIXEL_READER = '''
"""Stands in for lmms-eval's llava_hf (registered under that name): hands the task's visuals to a CLIP image
processor configured like LLaVA-1.5's release (short side resized, centre crop), finds the bright rectangle in the
pixels it gets, and answers where it is in LLaVA-1.5's 0-1 floats of THAT input, as the real model would."""
import numpy as np
from lmms_eval.api.model import lmms
from transformers import CLIPImageProcessor

SIDE = 64
RELEASE = {"do_resize": True, "size": {"shortest_edge": SIDE}, "resample": 3, "do_center_crop": True,
           "crop_size": {"height": SIDE, "width": SIDE}, "do_rescale": True, "rescale_factor": 1 / 255,
           "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
           "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}


class PixelReader(lmms):
    is_simple = True

    def __init__(self, **kwargs):
        super().__init__()
        self.processor = CLIPImageProcessor(**RELEASE)

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            (image,) = doc_to_visual(self.task_dict[task][split][doc_id])
            pixels = self.processor(image, return_tensors="np")["pixel_values"][0].mean(axis=0)
            ys, xs = np.nonzero(pixels > 1.0)
            if not len(xs):
                answers.append("I see no finding.")
                continue
            h, w = pixels.shape
            x1, y1, x2, y2 = xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h
            answers.append(f"[{x1:.2f}, {y1:.2f}, {x2:.2f}, {y2:.2f}]")
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError
'''


def _bright_box_dataset(root: Path, sizes: list[tuple[int, int]]) -> None:
    """synthcxr stand-in: dark non-square radiographs with one bright, asymmetric box near an edge the crop cuts."""
    import numpy as np
    from PIL import Image

    from pfmvg_plugin.data.schema import grounding_record
    from pfmvg_plugin.data.store import write_dataset

    (root / "images").mkdir(parents=True)
    records = []
    for i, (w, h) in enumerate(sizes):
        portrait = h > w
        box = [0.15 * w, 0.78 * h, 0.55 * w, 0.95 * h] if portrait else [0.80 * w, 0.10 * h, 0.97 * w, 0.60 * h]
        pixels = np.full((h, w), 20, dtype=np.uint8)
        x1, y1, x2, y2 = (round(v) for v in box)
        pixels[y1:y2, x1:x2] = 250
        Image.fromarray(pixels, mode="L").save(root / "images" / f"{i}.png")
        records.append(grounding_record(record_id=f"b{i}", source="synthcxr", split="test", image=f"{i}.png",
                                        width=w, height=h, phrase="bright finding", boxes=[[x1, y1, x2, y2]],
                                        category="Mass", meta={}))
    write_dataset(root, "synthcxr", records, root / "images")


def test_llava_hf_sees_the_whole_image_and_is_decoded_in_its_padded_frame(tmp_path, data_root):
    """Black box: a model that reads the box off the pixels it receives, behind LLaVA-1.5's released centre-crop
    processor, scores Acc@0.5 = 1.0 on portrait and landscape images through the real CLI (cropped and decoded as the
    whole image, it scored 0)."""
    pytest.importorskip("lmms_eval")
    pytest.importorskip("transformers")
    _bright_box_dataset(data_root / "synthcxr", [(100, 150), (150, 100), (90, 160), (160, 120)])
    (tmp_path / "pixel_reader.py").write_text(PIXEL_READER)
    run = RUN_CLI.replace('ModelManifest(model_id="pfmvg_echo", simple_class_path="echo_model.EchoModel")',
                          'ModelManifest(model_id="llava_hf", simple_class_path="pixel_reader.PixelReader"), '
                          'overwrite=True')
    env = {**os.environ, **OFFLINE, "PFMVG_DATA_ROOT": str(data_root), "PYTHONPATH": str(tmp_path),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    # --force_simple: the stand-in is a simple model; lmms-eval's chat llava_hf takes its images through the same
    # task.doc_to_visual (ConfigurableMessagesTask.doc_to_messages), so both see the padded image
    out = subprocess.run([sys.executable, "-c", run, "--model", "llava_hf", "--force_simple", "--tasks",
                          "synthcxr_grounding", "--output_path", str(tmp_path / "out"), "--log_samples"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    results_files = list((tmp_path / "out").rglob("*_results.json"))
    assert len(results_files) == 1, out.stdout[-2000:] + out.stderr[-4000:]
    results = json.loads(results_files[0].read_text())["results"]["synthcxr_grounding"]
    assert results["n_scored,none"] == 4 and results["parse_failure_rate,none"] == 0.0
    assert results["acc@0.5,none"] == 1.0, results
