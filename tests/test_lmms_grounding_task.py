"""The grounding tasks: scoring per convention, aggregations, docs, missing data, synthcxr on demand, real lmms-eval.

Scoring is checked against IoUs computed independently with ``torchvision.ops.box_iou``. Two real CLI runs: the
missing-data message with ``pfmvg_llava`` and an end-to-end run with a scripted model (results.json, samples log).
"""

from __future__ import annotations

import json
import math
import os
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
                "synthcxr_grounding": ("synthcxr", "test")}


def _doc(category="Edema", source="mscxr", boxes=None, **extra):
    return {"id": f"d-{category}", "source": source, "split": "test", "image": "a.png", "width": W, "height": H,
            "phrase": "left basilar opacity", "category": category, "boxes": boxes or [GT_BOX],
            "dataset_dir": "/data/mscxr", **extra}


@pytest.fixture(autouse=True)
def clean_state():
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
    assert record["iou"] > 0.95  # codecs round (2 decimals, integer percent, smart-resized pixels)
    assert record["iou"] == pytest.approx(_tv_iou(record["pred_boxes"][0], GT_BOX), abs=1e-9)


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_shifted_box_scores_the_independent_iou(convention):
    answer = convention_codec(convention).encode([SHIFTED], (W, H))
    out = _score(_doc(), answer, convention)
    expected = _tv_iou(SHIFTED, GT_BOX)
    assert expected == pytest.approx(2 / 3)
    tolerance = 0.02 if convention == "qwen25vl" else 1e-6
    assert out[gt.SAMPLE_KEY]["iou"] == pytest.approx(expected, abs=tolerance)
    assert gt.miou([out["miou"]]) == pytest.approx(expected, abs=tolerance)
    assert gt.acc_at_0_5([out["acc@0.5"]]) == 1.0 and gt.acc_at_0_1([out["acc@0.1"]]) == 1.0
    assert gt.mdice([out["mdice"]]) == pytest.approx(2 * expected / (1 + expected), abs=tolerance)


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
    assert state.prompt_convention() == expected
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
    out = _score(_doc(gt.CATEGORIES_BY_SOURCE[source][0], source=source), "[0.25, 0.10, 0.75, 0.50]", "llava")
    assert set(out) - {gt.SAMPLE_KEY} == set(names)
    lmms_split = "test" if split == "test" else "validation"
    assert config[f"{lmms_split}_split"] == lmms_split
    assert config["dataset_kwargs"] == {"data_files": {lmms_split: "stub.jsonl"}}
    assert config["process_docs"] == ("!function", f"utils.{source}_{split}_docs")


def test_template_generation_settings_and_model_conventions():
    config = _yaml("_default_template_grounding_yaml")
    assert config["output_type"] == "generate_until"
    gen = config["generation_kwargs"]
    assert gen["max_new_tokens"] == 64 and gen["do_sample"] is False and gen["temperature"] == 0
    assert gen["until"] == ["\n\n"]
    conventions = {model: kw["convention"] for model, kw in config["lmms_eval_specific_kwargs"].items()}
    assert conventions["default"] == conventions["llava_hf"] == "llava"
    assert conventions["openai_compatible"] == conventions["gpt4v"] == conventions["openai"] == "api"
    assert conventions["pfmvg_llava"] == conventions["pfmvg_minigptv2"] == "model"
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
    assert state.prompt_convention() == expected
    assert task.doc_to_visual(doc)[0].mode == "RGB"


def _lmms_eval_script() -> str:
    script = Path(sys.executable).parent / "lmms-eval"
    if not script.exists():
        pytest.skip("lmms-eval console script not installed")
    return str(script)


def test_cli_missing_data_fails_at_once_with_the_command(tmp_path, data_root):
    pytest.importorskip("lmms_eval")
    from pfmvg_plugin.models.tiny_llava import build_tiny_llava

    model_dir = build_tiny_llava(tmp_path / "tiny_llava")
    env = {**os.environ, **OFFLINE, "PFMVG_DATA_ROOT": str(data_root),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    start = time.monotonic()
    out = subprocess.run([_lmms_eval_script(), "--model", "pfmvg_llava", "--model_args", f"pretrained={model_dir}",
                          "--tasks", "mscxr_grounding", "--output_path", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    elapsed = time.monotonic() - start
    text = out.stdout + out.stderr
    final = [line for line in text.splitlines() if "Error during evaluation" in line]
    assert final, text[-3000:]
    assert "pfmvg data prepare mscxr --annotations <MS_CXR_Local_Alignment_v1.1.0.csv>" in final[0]
    assert str(data_root / "mscxr") in final[0]
    assert "RetryError" not in text and "Unable to find" not in text  # no datasets error, no 5 retries
    assert not list((tmp_path / "out").rglob("*_results.json"))
    assert elapsed < 120


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
            codec = convention_codec(state.prompt_convention())
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
