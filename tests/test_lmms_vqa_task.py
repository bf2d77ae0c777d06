"""The Med-VQA lmms-eval tasks (pfmvg_vqarad, pfmvg_slake, pfmvg_pathvqa; group med_vqa).

Docs come from datasets written by the real converters (``pfmvg data prepare ...``) from small files in the release
layouts; aggregated numbers are checked against :func:`pfmvg_plugin.metrics.vqa.score_vqa`. One real CLI run (no
--include_path, a scripted model) covers the VQA and the report tasks together: results.json and the samples log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers_data import write_images

from pfmvg_plugin.cli.main import main as pfmvg
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import generate_synthcxr, generate_synthcxr_vqa
from pfmvg_plugin.lmms import grounding_task, state, task_data
from pfmvg_plugin.lmms import vqa_task as vt
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER
from pfmvg_plugin.lmms.hook import tasks_dir
from pfmvg_plugin.metrics.vqa import normalize_answer, score_vqa
from pfmvg_plugin.prompts import CONVENTIONS, build_prompt

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_NO_PROGRESS": "1"}
TASKS = {"pfmvg_vqarad": "vqarad", "pfmvg_slake": "slake", "pfmvg_pathvqa": "pathvqa", "synthcxr_vqa": "synthcxr_vqa"}
SMALL_SYNTHCXR = {"n": 24, "size": 64}
RECORD_KEYS = {"id", "dataset_dir", "image", "question", "answer", "answer_type", "question_type", "prediction",
               "prediction_normalized", "answer_normalized", "correct", "recall", "status", "error", "convention",
               "source", "split"}


@pytest.fixture(autouse=True)
def clean_state():
    state.reset()
    yield
    state.reset()


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# ---- release files -> prepared datasets ---------------------------------------------------------------------------
def _rad(qid, image, question, answer, answer_type, phrase_type="test_freeform", question_type="PRES"):
    """One question of 'VQA_RAD Dataset Public.json', with the release's keys."""
    return {"qid": qid, "phrase_type": phrase_type, "qid_linked_id": None, "image_case_url": "https://medpix.nlm.nih.gov",
            "image_name": image, "image_organ": "CHEST", "evaluation": "given", "question": question,
            "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL",
            "question_type": question_type, "answer": answer, "answer_type": answer_type}


#: (question, answer, answer_type) of the VQA-RAD test questions, with a prediction and its expected outcome.
RAD_TEST = [
    ("Is there a pneumothorax?", "Yes", "CLOSED", "Yes, there is a pneumothorax.", True),
    ("Is the heart enlarged?", "No", "CLOSED", "yes and no", False),
    ("Which side is the effusion on?", "Left", "CLOSED", "left", True),
    ("How many nodules are seen?", "2", "OPEN", "Two.", True),
    ("Where is the lesion?", "Left temporal lobe", "OPEN", "The left temporal lobe", True),
    ("What organ is abnormal?", "right lung lower lobe", "OPEN", "lower lobe of the right lung", False),
    ("What is the modality?", "x-ray", "OPEN", "MRI", False),
    ("Is this a PA film?", "yes", "CLOSED", GENERATION_ERROR_MARKER + " RuntimeError: CUDA out of memory", False),
]


def prepare_vqarad(release: Path, out: Path) -> Path:
    """'VQA_RAD Dataset Public.json' + image folder (RAD_TEST as the test questions), prepared into ``out``."""
    images = write_images(release / "VQA_RAD Image Folder", {"synpic100.jpg": (64, 48), "synpic200.jpg": (40, 40)})
    items = [_rad(i + 1, "synpic100.jpg" if i % 2 else "synpic200.jpg", q, a, t, question_type="POS" if i else "PRES")
             for i, (q, a, t, _, _) in enumerate(RAD_TEST)]
    items.append(_rad(99, "synpic100.jpg", "Is this a train question?", "Yes", "CLOSED", phrase_type="freeform"))
    rad_json = _write_json(release / "VQA_RAD Dataset Public.json", items)
    assert pfmvg(["data", "prepare", "vqarad", "--annotations", str(rad_json), "--images", str(images),
                  "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """$PFMVG_DATA_ROOT with vqarad, slake and pathvqa prepared by the real converters from release-shaped files."""
    base = tmp_path_factory.mktemp("vqa")
    root = base / "data"
    # VQA-RAD: the public JSON + image folder; phrase_type test_* marks the test questions
    prepare_vqarad(base, root / "vqarad")
    # SLAKE: Slake1.0/{train,validate,test}.json + imgs/xmlabN/source.jpg; bilingual, English kept
    slake = base / "Slake1.0"
    write_images(slake / "imgs", {"xmlab0/source.jpg": (50, 60), "xmlab1/source.jpg": (30, 30)})

    def sq(qid, img, question, answer, answer_type, lang="en"):
        return {"img_id": int(img[5:]), "img_name": f"{img}/source.jpg", "question": question, "answer": answer,
                "q_lang": lang, "location": "Lung", "modality": "X-Ray", "answer_type": answer_type,
                "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": qid}

    _write_json(slake / "train.json", [sq(1, "xmlab0", "Is this a CT?", "No", "CLOSED")])
    _write_json(slake / "validate.json", [sq(2, "xmlab0", "Is this an MRI?", "No", "CLOSED")])
    _write_json(slake / "test.json", [sq(10, "xmlab1", "Which organ is abnormal?", "Right Lung", "OPEN"),
                                      sq(11, "xmlab1", "Is the lung healthy?", "No", "CLOSED"),
                                      sq(12, "xmlab1", "这是什么器官?", "肺", "OPEN", lang="zh")])
    assert pfmvg(["data", "prepare", "slake", "--root", str(slake), "--out", str(root / "slake")]) == 0
    # PathVQA: one JSON per split + images/{train,test}/<name>.jpg; yes/no answers are closed
    path_images = write_images(base / "pathvqa" / "images", {"test/test_0001.jpg": (20, 24),
                                                            "train/train_0001.jpg": (20, 20)})
    test = _write_json(base / "pathvqa" / "test.json", [
        {"image": "test_0001", "question": "Is there necrosis?", "answer": "yes"},
        {"image": "test_0001", "question": "What is present?", "answer": "granuloma"}])
    train = _write_json(base / "pathvqa" / "train.json", [
        {"image": "train_0001", "question": "Is it benign?", "answer": "no"}])
    assert pfmvg(["data", "prepare", "pathvqa", "--train", str(train), "--test", str(test),
                  "--images", str(path_images), "--out", str(root / "pathvqa")]) == 0
    # synthcxr_vqa: built from a small synthcxr by the generator the task uses on first use
    generate_synthcxr(root / "synthcxr", **SMALL_SYNTHCXR)
    generate_synthcxr_vqa(root / "synthcxr", root / "synthcxr_vqa")
    return root


@pytest.fixture
def prepared(data_root, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(data_root))
    return data_root


@pytest.fixture
def empty_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(tmp_path))
    return tmp_path


# ---- docs, prompts, images ----------------------------------------------------------------------------------------
def test_docs_of_each_dataset(prepared):
    rad = vt.load_docs("vqarad", "test")
    assert [d["question"] for d in rad] == [q for q, *_ in RAD_TEST]  # train question left out
    assert set(rad[0]) == {"id", "source", "split", "image", "question", "answer", "answer_type", "question_type",
                           "dataset_dir"}
    assert rad[0]["id"] == "vqarad-1" and rad[0]["answer_type"] == "closed" and rad[3]["answer_type"] == "open"
    assert rad[0]["question_type"] == "PRES" and rad[1]["question_type"] == "POS"
    assert rad[0]["dataset_dir"] == str((prepared / "vqarad").resolve())
    (image,) = vt.doc_to_visual(rad[0])
    assert image.mode == "RGB" and image.size == (40, 40)
    slake = vt.load_docs("slake", "test")
    assert [(d["id"], d["answer"], d["answer_type"], d["question_type"]) for d in slake] == [
        ("slake-10", "Right Lung", "open", "Organ"), ("slake-11", "No", "closed", "Organ")]  # zh left out
    assert vt.doc_to_visual(slake[0])[0].size == (30, 30)
    path = vt.load_docs("pathvqa", "test")
    assert [(d["answer_type"], d["question_type"]) for d in path] == [("closed", ""), ("open", "")]
    assert vt.doc_to_visual(path[0])[0].size == (20, 24)
    assert vt.doc_to_target(path[1]) == "granuloma"
    dataset = vt.process_docs(None, "vqarad", "test")  # through Arrow as plain columns
    assert dataset.num_rows == len(RAD_TEST) and dataset[3] == rad[3]


def test_synthcxr_vqa_is_generated_on_first_use(empty_root, monkeypatch):
    monkeypatch.setattr(grounding_task, "SYNTHCXR_KWARGS", SMALL_SYNTHCXR)
    docs = vt.load_docs("synthcxr_vqa", "test")
    target = empty_root / "synthcxr_vqa"
    assert (target / "dataset.json").is_file() and (empty_root / "synthcxr" / "dataset.json").is_file()
    assert not list(empty_root.glob(".synthcxr_vqa.*"))  # no temporary folder left
    records = PreparedDataset(target).records("test")
    assert [d["id"] for d in docs] == [r["id"] for r in records] and docs
    assert {d["answer_type"] for d in docs} == {"closed", "open"}
    assert [d["question_type"] for d in docs] == [r["meta"]["family"] for r in records]
    (image,) = vt.doc_to_visual(docs[0])  # the images stay in synthcxr
    assert image.mode == "RGB" and image.size == (records[0]["width"], records[0]["height"])
    stamp = (target / "dataset.json").stat().st_mtime_ns
    assert vt.load_docs("synthcxr_vqa", "test") == docs
    assert (target / "dataset.json").stat().st_mtime_ns == stamp  # not built twice


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_prompt_follows_the_convention(convention):
    doc = {"id": "x", "question": "Is there a pneumothorax?"}
    text = vt.doc_to_text(doc, {"convention": convention})
    assert text == build_prompt("vqa", convention, question="Is there a pneumothorax?")
    assert state.prompt_convention(doc) == convention


def test_prompt_defers_to_our_model():
    state.set_model_convention("minigptv2")
    assert vt.doc_to_text({"question": "Is it normal?"}, {"convention": "model"}).startswith("[vqa] ")
    assert vt.process_results({"id": "x", "answer": "yes", "answer_type": "closed"}, ["yes"])["prompt_convention"] \
        == "minigptv2"


def test_missing_data_names_the_command(empty_root):
    for name, command in (("vqarad", "pfmvg data prepare vqarad --annotations"),
                          ("slake", "pfmvg data prepare slake --root"), ("pathvqa", "pfmvg data prepare pathvqa")):
        with pytest.raises(vt.DataNotPreparedError, match=command) as info:
            vt.load_docs(name, "test")
        assert str(empty_root / name) in str(info.value) and "PFMVG_DATA_ROOT" in str(info.value)
    docs = vt.process_docs(None, "slake", "test")  # never raises: one error row, raised where lmms-eval won't retry
    assert len(docs) == 1 and docs[0]["id"] == task_data.ERROR_DOC_ID
    for fn in (vt.doc_to_text, vt.doc_to_visual, vt.doc_to_target):
        with pytest.raises(vt.DataNotPreparedError, match="pfmvg data prepare slake --root"):
            fn(docs[0])


def test_missing_split_and_wrong_task(prepared, tmp_path, monkeypatch):
    with pytest.raises(vt.DataNotPreparedError, match=r"it has the splits: test, train"):
        vt.load_docs("vqarad", "val")
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(tmp_path))
    from pfmvg_plugin.data.synth import generate_synthcxr

    generate_synthcxr(tmp_path / "vqarad", n=6, size=64)  # a grounding dataset where VQA is expected
    with pytest.raises(vt.DataNotPreparedError, match="the split has no vqa records"):
        vt.load_docs("vqarad", "train")


def test_task_modules_import_without_heavy_stacks():
    code = ("import sys, pfmvg_plugin.lmms.vqa_task, pfmvg_plugin.lmms.report_task\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lmms_eval', 'transformers', 'datasets'))\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr


# ---- scoring -------------------------------------------------------------------------------------------------------
def _run(docs, answers, convention="llava"):
    state.note_prompt_convention(convention)
    return [vt.process_results(d, [a]) for d, a in zip(docs, answers)]


def _agg(outs, key):
    return vt.AGGREGATIONS[key]([o[key] for o in outs])


def test_scores_equal_the_metrics_library(prepared):
    docs = vt.load_docs("vqarad", "test")
    answers = [p for *_, p, _ in RAD_TEST]
    outs = _run(docs, answers)
    records = [o[vt.SAMPLE_KEY] for o in outs]
    assert [r["correct"] for r in records] == [ok for *_, ok in RAD_TEST]
    # the library on the same answers (a generation error is scored as an empty answer: wrong, recall 0)
    lib = score_vqa([("" if a.startswith(GENERATION_ERROR_MARKER) else a) for a in answers],
                    [d["answer"] for d in docs], [d["answer_type"] for d in docs], n_bootstrap=0)
    assert _agg(outs, "overall_acc") == pytest.approx(lib["overall"]) == pytest.approx(4 / 8)
    assert _agg(outs, "closed_acc") == pytest.approx(lib["closed_acc"]) == pytest.approx(2 / 4)
    assert _agg(outs, "open_exact_acc") == pytest.approx(lib["open_exact"]) == pytest.approx(2 / 4)
    assert _agg(outs, "open_recall") == pytest.approx(lib["open_recall"]) == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert (_agg(outs, "n_closed"), _agg(outs, "n_open")) == (lib["n_closed"], lib["n_open"]) == (4, 4)
    assert _agg(outs, "generation_error_rate") == pytest.approx(1 / 8)
    assert _agg(outs, "prompt_convention") == "llava"
    # the two open protocols disagree on "lower lobe of the right lung": exact 0, recall 1
    partial = records[5]
    assert (partial["correct"], partial["recall"]) == (False, 1.0)
    assert partial["prediction_normalized"] == "lower lobe of right lung"
    assert partial["answer_normalized"] == normalize_answer("right lung lower lobe") == "right lung lower lobe"


def test_generation_error_is_wrong_and_counted_apart():
    doc = {"id": "q", "question": "What?", "answer": "the liver", "answer_type": "open"}
    outs = _run([doc, doc], [GENERATION_ERROR_MARKER + " ValueError: boom", "liver"])
    record = outs[0][vt.SAMPLE_KEY]
    assert (record["status"], record["correct"], record["recall"]) == ("generation_error", False, 0.0)
    assert record["prediction"].startswith(GENERATION_ERROR_MARKER) and record["prediction_normalized"] == ""
    assert _agg(outs, "generation_error_rate") == 0.5
    assert _agg(outs, "open_exact_acc") == 0.5 and _agg(outs, "open_recall") == 0.5
    assert _agg(outs, "closed_acc") is None  # no closed question: N/A, not 0


@pytest.mark.parametrize(("answer", "correct"), [(None, False), (42, False), (["no"], True), ([], False),
                                               ("", False), ("x" * 10_000, False), ({"text": "no"}, True)])
def test_process_results_never_raises_on_model_output(answer, correct):
    out = _run([{"id": "q", "answer": "no", "answer_type": "closed"}], [answer])[0]
    assert set(out[vt.SAMPLE_KEY]) == RECORD_KEYS and out[vt.SAMPLE_KEY]["status"] == "ok"
    assert len(out[vt.SAMPLE_KEY]["prediction"]) <= vt.ANSWER_CHARS
    assert out[vt.SAMPLE_KEY]["correct"] is correct  # a non-string answer is scored as its text
    assert json.loads(json.dumps(out)) == out


def test_bad_ground_truth_is_a_scoring_error_not_a_crash():
    out = _run([{"id": "q", "answer": "yes", "answer_type": "YES/NO"}], ["yes"])[0]
    assert out[vt.SAMPLE_KEY]["status"] == "scoring_error" and "answer_type" in out[vt.SAMPLE_KEY]["error"]
    assert vt.overall_acc([out["overall_acc"]]) == 0.0
    assert vt.overall_acc([]) is None and vt.overall_acc([None, "junk"]) is None
    assert vt.closed_acc([{"answer_type": "closed"}]) is None  # malformed item: logged, None


def test_every_aggregated_key_has_one_compact_value_per_doc(prepared):
    out = _run(vt.load_docs("vqarad", "test")[:1], ["yes"])[0]
    assert set(out) == {vt.SAMPLE_KEY, *vt.METRICS}
    assert out["overall_acc"] == {"answer_type": "closed", "correct": True, "recall": None, "status": "ok"}
    # only one value is the full record
    assert [k for k, v in out.items() if isinstance(v, dict) and "question" in v] == [vt.SAMPLE_KEY]


# ---- the task YAMLs ----------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: ("!function", loader.construct_scalar(node)))


def _yaml(name: str) -> dict:
    return yaml.load((tasks_dir() / "vqa" / name).read_text(), Loader=_Loader)


def _utils():
    spec = importlib.util.spec_from_file_location("utils", tasks_dir() / "vqa" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return utils


def test_task_yamls_and_template():
    template = _yaml("_default_template_vqa_yaml")
    utils = _utils()
    assert [m["metric"] for m in template["metric_list"]] == list(vt.METRICS)
    for metric in template["metric_list"]:
        tag, ref = metric["aggregation"]
        assert tag == "!function" and getattr(utils, ref.removeprefix("utils.")) is vt.AGGREGATIONS[metric["metric"]]
    assert template["output_type"] == "generate_until" and template["generation_kwargs"]["do_sample"] is False
    conventions = {model: kw["convention"] for model, kw in template["lmms_eval_specific_kwargs"].items()}
    assert conventions["default"] == conventions["llava_hf"] == "llava"
    assert conventions["openai_compatible"] == conventions["gpt4v"] == "api"
    assert conventions["pfmvg_llava"] == "model"
    for task, source in TASKS.items():
        config = _yaml(f"{task}.yaml")
        assert config["task"] == task and config["include"] == "_default_template_vqa_yaml"
        assert config["dataset_kwargs"] == {"data_files": {"test": "stub.jsonl"}} and config["test_split"] == "test"
        tag, ref = config["process_docs"]
        assert ref == f"utils.{source}_test_docs" and callable(getattr(utils, ref.removeprefix("utils.")))
    group = _yaml("med_vqa.yaml")
    assert group["group"] == "med_vqa" and group["task"] == list(TASKS)
    assert (tasks_dir() / "vqa" / "stub.jsonl").is_file()


@pytest.mark.parametrize(("model", "model_convention", "expected"), [
    ("llava_hf", None, "llava"),
    ("gpt4v", None, "api"),
    ("pfmvg_llava", "minigptv2", "minigptv2"),
])
def test_lmms_eval_task_manager_builds_the_task(prepared, model, model_convention, expected):
    pytest.importorskip("lmms_eval")
    from lmms_eval.tasks import TaskManager

    state.set_model_convention(model_convention)
    tm = TaskManager(verbosity="ERROR", include_path=str(tasks_dir()), include_defaults=False, model_name=model)
    task = tm.load_task_or_group(["pfmvg_slake"])["pfmvg_slake"]
    docs = list(task.test_docs())
    assert [d["id"] for d in docs] == ["slake-10", "slake-11"]
    assert task.doc_to_text(docs[0]) == build_prompt("vqa", expected, question="Which organ is abnormal?")
    assert task.doc_to_visual(docs[0])[0].mode == "RGB"
    assert set(task.aggregation()) == set(vt.METRICS)


# ---- the real lmms-eval CLI: a VQA and a report task, no --include_path -----------------------------------------
SCRIPTED_MODEL = '''
"""Scripted lmms-eval model for VQA and report docs: right, partly right, wrong, generation error by doc_id % 4."""
from lmms_eval.api.model import lmms

from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER


class ScriptedModel(lmms):
    is_simple = True

    def __init__(self, **kwargs):
        super().__init__()

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert doc_to_visual(doc)[0].mode == "RGB"
            truth = doc["answer"] if "question" in doc else doc["report"]
            kind = doc_id % 4
            if kind == 0:
                answers.append(truth)
            elif kind == 1:
                words = truth.split()
                answers.append("I think: " + " ".join(words[: max(1, len(words) // 2)]))
            elif kind == 2:
                answers.append("Unremarkable.")
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
MODEL_REGISTRY_V2.register_manifest(ModelManifest(model_id="pfmvg_scripted",
                                                  simple_class_path="scripted_model.ScriptedModel"))
from lmms_eval.__main__ import cli_evaluate
sys.argv = ["lmms-eval", *sys.argv[1:]]
cli_evaluate()
'''


def run_scripted_cli(tmp_path: Path, data_root: Path, tasks: list[str]) -> tuple[dict, dict, str]:
    """``lmms-eval --model pfmvg_scripted --tasks ... --log_samples`` (our tasks found through the entry point).

    Returns (results.json's ``results``, samples per task sorted by doc_id, stdout).
    """
    (tmp_path / "scripted_model.py").write_text(SCRIPTED_MODEL)
    env = {**os.environ, **OFFLINE, "PFMVG_DATA_ROOT": str(data_root), "PYTHONPATH": str(tmp_path),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), "OMP_NUM_THREADS": "1"}
    env.pop("PFMVG_NO_TASK_HOOK", None)
    out = subprocess.run([sys.executable, "-c", RUN_CLI, "--model", "pfmvg_scripted", "--tasks", ",".join(tasks),
                          "--output_path", str(tmp_path / "out"), "--log_samples"],
                         capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    results_files = list((tmp_path / "out").rglob("*_results.json"))
    assert len(results_files) == 1, text[-3000:]  # lmms-eval exits 0 even when evaluation failed
    assert "task hook not installed" not in text
    results = json.loads(results_files[0].read_text())["results"]
    samples = {}
    for task in tasks:
        (path,) = (tmp_path / "out").rglob(f"*_samples_{task}.jsonl")
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda x: x["doc_id"])
    return results, samples, out.stdout


_CLI_RUN: dict = {}


def cli_run_once(tmp_path_factory) -> tuple[dict, dict, str]:
    """One CLI run over pfmvg_vqarad, iuxray_report_50w and synthcxr_vqa for the session (test_lmms_report_task uses
    it too)."""
    if "run" not in _CLI_RUN:
        from test_lmms_report_task import prepare_iuxray

        tmp = tmp_path_factory.mktemp("cli")
        prepare_vqarad(tmp / "release", tmp / "data" / "vqarad")
        prepare_iuxray(tmp / "release", tmp / "data" / "iuxray")
        generate_synthcxr(tmp / "data" / "synthcxr", **SMALL_SYNTHCXR)
        generate_synthcxr_vqa(tmp / "data" / "synthcxr", tmp / "data" / "synthcxr_vqa")
        _CLI_RUN["data_root"] = tmp / "data"
        _CLI_RUN["run"] = run_scripted_cli(tmp, tmp / "data", ["pfmvg_vqarad", "iuxray_report_50w", "synthcxr_vqa"])
    return _CLI_RUN["run"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    pytest.importorskip("lmms_eval")
    return cli_run_once(tmp_path_factory)


def test_cli_vqa_results_and_samples(cli_run):
    results, samples, stdout = cli_run
    data_root = _CLI_RUN["data_root"]
    res = results["pfmvg_vqarad"]
    lines = samples["pfmvg_vqarad"]
    records = [line[vt.SAMPLE_KEY] for line in lines]
    assert [r["id"] for r in records] == [f"vqarad-{i + 1}" for i in range(len(RAD_TEST))]
    for doc_id, record in enumerate(records):
        assert set(record) == RECORD_KEYS and record["convention"] == "llava"
        assert Path(record["dataset_dir"]) == (data_root / "vqarad").resolve()
        assert record["status"] == ("generation_error" if doc_id % 4 == 3 else "ok")
        if doc_id % 4 == 0:
            assert record["correct"]
    # results.json = the library's numbers on the logged predictions (generation errors as empty answers)
    preds = ["" if r["status"] == "generation_error" else r["prediction"] for r in records]
    lib = score_vqa(preds, [r["answer"] for r in records], [r["answer_type"] for r in records], n_bootstrap=0)
    assert res["overall_acc,none"] == pytest.approx(lib["overall"])
    assert res["closed_acc,none"] == pytest.approx(lib["closed_acc"])
    assert res["open_exact_acc,none"] == pytest.approx(lib["open_exact"])
    assert res["open_recall,none"] == pytest.approx(lib["open_recall"])
    assert (res["n_closed,none"], res["n_open,none"]) == (4, 4)
    assert res["generation_error_rate,none"] == pytest.approx(2 / 8)
    assert res["prompt_convention,none"] == "llava"
    assert lines[0]["target"] == "Yes" and lines[0]["input"] == build_prompt("vqa", "llava", question=RAD_TEST[0][0])
    table = [line for line in stdout.splitlines() if line.startswith("|pfmvg_vqarad")]
    assert any("|open_recall" in row for row in table) and max(len(row) for row in table) < 120


def test_cli_synthcxr_vqa(cli_run):
    results, samples, _ = cli_run
    res = results["synthcxr_vqa"]
    n_test = len(PreparedDataset(_CLI_RUN["data_root"] / "synthcxr_vqa").records("test"))
    assert len(samples["synthcxr_vqa"]) == n_test == res["n_closed,none"] + res["n_open,none"]
    assert res["n_closed,none"] > 0 and res["n_open,none"] > 0
    for key in ("overall_acc", "closed_acc", "open_exact_acc", "open_recall", "generation_error_rate"):
        assert 0.0 <= res[f"{key},none"] <= 1.0, key
