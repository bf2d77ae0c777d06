"""The report-generation lmms-eval tasks (iuxray_report, mimiccxr_report, their PeFoMed 50-word variants; group
med_report).

Docs come from datasets written by the real converters (``pfmvg data prepare iuxray|mimiccxr_reports``) from small
R2Gen-layout files. The corpus metrics computed in the aggregation are checked against pycocoevalcap's pure-Python
scorers (Bleu, Rouge, Cider) on the same tokens. The real CLI run lives in test_lmms_vqa_task.py (one run for both
kinds of task); its report half is checked here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from helpers_data import write_images

from pfmvg_plugin.cli.main import main as pfmvg
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import generate_synthcxr, generate_synthcxr_reports
from pfmvg_plugin.lmms import grounding_task, state, task_data
from pfmvg_plugin.lmms import report_task as rt
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER
from pfmvg_plugin.lmms.hook import tasks_dir
from pfmvg_plugin.metrics.text import score_reports, tokenize
from pfmvg_plugin.prompts import CONVENTIONS, build_prompt

TASKS = {"iuxray_report": ("iuxray", None), "iuxray_report_50w": ("iuxray", 50),
         "mimiccxr_report": ("mimiccxr_reports", None), "mimiccxr_report_50w": ("mimiccxr_reports", 50),
         "synthcxr_report": ("synthcxr_reports", None)}
SMALL_SYNTHCXR = {"n": 24, "size": 64}
RECORD_KEYS = {"id", "dataset_dir", "image", "images", "reference", "prediction", "reference_normalized",
               "prediction_normalized", "reference_words", "prediction_words", "max_words", "rouge_l", "status",
               "error", "convention", "source", "split"}
LONG = ("PA and lateral views of the chest were obtained. The heart size is mildly enlarged, stable since the prior "
        "examination. There is a small left pleural effusion with adjacent basilar atelectasis. No focal "
        "consolidation is seen in the right lung. There is no pneumothorax. Degenerative changes of the thoracic "
        "spine are noted. Surgical clips project over the right upper quadrant of the abdomen.")
#: (id, report) of the IU-Xray test studies; every study has a frontal (0.png) and a lateral (1.png) view.
IU_TEST = [
    ("CXR1_IM-0001", "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear."),
    ("CXR2_IM-0652", "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries. Clear lungs. "
                     "Inferior XXXX XXXX XXXX."),
    ("CXR4_IM-2050", "There are diffuse bilateral interstitial and alveolar opacities consistent with chronic "
                     "obstructive lung disease and bullous emphysema. There are irregular opacities in the left "
                     "lung apex, that could represent a cavitary lesion in the left lung apex. There are streaky "
                     "opacities in the right upper lobe, XXXX scarring. The cardiomediastinal silhouette is normal "
                     "in size and contour. There is no pneumothorax or large pleural effusion."),
    ("CXR5_IM-2117", LONG),
    ("CXR6_IM-2192", "No acute cardiopulmonary abnormality. The lungs are clear; no pleural effusion (2.5 cm "
                     "granuloma unchanged)."),
]
#: Predictions for IU_TEST: exact, close, partial, generation error, empty-ish.
IU_PRED = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Mild cardiomegaly. Sternotomy wires. The lungs are clear.",
    "There are diffuse bilateral interstitial opacities consistent with emphysema. The cardiomediastinal silhouette is "
    "normal. There is no pneumothorax.",
    GENERATION_ERROR_MARKER + " RuntimeError: CUDA out of memory",
    "no acute cardiopulmonary abnormality",
]


@pytest.fixture(autouse=True)
def clean_state():
    state.reset()
    yield
    state.reset()


# ---- release files -> prepared datasets ---------------------------------------------------------------------------
def prepare_iuxray(release: Path, out: Path) -> Path:
    """R2Gen's iu_xray/{annotation.json, images/} with IU_TEST as the test list, prepared into ``out``."""
    views = {f"{rid}/{v}.png": (32 + 8 * v, 32) for rid, _ in IU_TEST for v in (0, 1)}
    views["CXR9_IM-0009/0.png"] = (16, 16)
    images = write_images(release / "iu_xray" / "images", views)
    ann = release / "iu_xray" / "annotation.json"
    ann.write_text(json.dumps({
        "train": [{"id": "CXR9_IM-0009", "report": "Normal chest.", "image_path": ["CXR9_IM-0009/0.png"],
                   "split": "train"}],
        "val": [],
        "test": [{"id": rid, "report": report, "image_path": [f"{rid}/0.png", f"{rid}/1.png"], "split": "test"}
                 for rid, report in IU_TEST],
    }))
    assert pfmvg(["data", "prepare", "iuxray", "--annotations", str(ann), "--images", str(images),
                  "--out", str(out)]) == 0
    return out


def prepare_mimic(release: Path, out: Path) -> Path:
    """R2Gen's mimic_cxr/annotation.json over a MIMIC-CXR-JPG root holding files/p10/..., prepared into ``out``."""
    rels = [f"p10/p1000003{i}/s5041426{i}/{i:08d}-bde0afdd-112c0b34-7bc16630-4e384014.jpg" for i in range(3)]
    root = write_images(release / "mimic-cxr-jpg", {f"files/{rel}": (24, 20) for rel in rels})
    ann = release / "mimic_cxr" / "annotation.json"
    ann.parent.mkdir(parents=True)
    items = [{"id": Path(rel).stem, "study_id": 50414260 + i, "subject_id": 10000030 + i, "report": report,
              "image_path": [rel], "split": "test"} for i, (rel, (_, report)) in enumerate(zip(rels, IU_TEST))]
    ann.write_text(json.dumps({"train": [], "val": [], "test": items}))
    assert pfmvg(["data", "prepare", "mimiccxr_reports", "--annotations", str(ann), "--images", str(root),
                  "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("reports")
    prepare_iuxray(base / "release", base / "data" / "iuxray")
    prepare_mimic(base / "release", base / "data" / "mimiccxr_reports")
    generate_synthcxr(base / "data" / "synthcxr", **SMALL_SYNTHCXR)
    generate_synthcxr_reports(base / "data" / "synthcxr", base / "data" / "synthcxr_reports")
    return base / "data"


@pytest.fixture
def prepared(data_root, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(data_root))
    return data_root


# ---- docs, prompts, images ----------------------------------------------------------------------------------------
def test_docs_of_each_dataset(prepared):
    docs = rt.load_docs("iuxray", "test")
    assert [(d["id"], d["report"]) for d in docs] == [(f"iuxray-{rid}", report) for rid, report in IU_TEST]
    first = docs[0]
    assert set(first) == {"id", "source", "split", "image", "images", "report", "max_words", "dataset_dir"}
    assert first["images"] == ["CXR1_IM-0001/0.png", "CXR1_IM-0001/1.png"] and first["image"] == first["images"][0]
    assert first["max_words"] is None and first["dataset_dir"] == str((prepared / "iuxray").resolve())
    (image,) = rt.doc_to_visual(first)  # the first view only
    assert image.mode == "RGB" and image.size == (32, 32)
    assert rt.doc_to_target(first) == IU_TEST[0][1]
    assert {d["max_words"] for d in rt.load_docs("iuxray", "test", max_words=50)} == {50}
    mimic = rt.load_docs("mimiccxr_reports", "test")
    assert len(mimic) == 3 and mimic[0]["image"].startswith("files/p10/p10000030/")
    assert rt.doc_to_visual(mimic[0])[0].size == (24, 20)
    dataset = rt.process_docs(None, "iuxray", "test", max_words=50)  # through Arrow as plain columns
    assert dataset.num_rows == len(IU_TEST) and dataset[0]["images"] == first["images"]
    assert dataset[0]["max_words"] == 50 and rt.process_docs(None, "iuxray", "test")[0]["max_words"] is None
    with pytest.raises(ValueError, match="max_words"):
        rt.load_docs("iuxray", "test", max_words=0)


def test_synthcxr_reports_are_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(tmp_path))
    monkeypatch.setattr(grounding_task, "SYNTHCXR_KWARGS", SMALL_SYNTHCXR)
    docs = rt.load_docs("synthcxr_reports", "test")
    target = tmp_path / "synthcxr_reports"
    assert (target / "dataset.json").is_file() and (tmp_path / "synthcxr" / "dataset.json").is_file()
    assert not list(tmp_path.glob(".synthcxr_reports.*"))  # no temporary folder left
    records = PreparedDataset(target).records("test")
    assert [(d["id"], d["report"]) for d in docs] == [(r["id"], r["report"]) for r in records] and docs
    assert all("heart" in d["report"] for d in docs)
    (image,) = rt.doc_to_visual(docs[0])  # the images stay in synthcxr
    assert image.mode == "RGB" and image.size == (64, 64)
    stamp = (target / "dataset.json").stat().st_mtime_ns
    assert rt.load_docs("synthcxr_reports", "test") == docs
    assert (target / "dataset.json").stat().st_mtime_ns == stamp  # not built twice


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_prompt_follows_the_convention(convention):
    assert rt.doc_to_text({"id": "x"}, {"convention": convention}) == build_prompt("report", convention)
    assert state.prompt_convention({"id": "x"}) == convention


def test_missing_data_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(tmp_path))
    for name, command in (("iuxray", "pfmvg data prepare iuxray --annotations <iu_xray/annotation.json>"),
                          ("mimiccxr_reports", "pfmvg data prepare mimiccxr_reports --annotations")):
        with pytest.raises(rt.DataNotPreparedError, match=command) as info:
            rt.load_docs(name, "test")
        assert str(tmp_path / name) in str(info.value)
    docs = rt.process_docs(None, "iuxray", "test", max_words=50)
    assert len(docs) == 1 and docs[0]["id"] == task_data.ERROR_DOC_ID
    for fn in (rt.doc_to_text, rt.doc_to_visual, rt.doc_to_target):
        with pytest.raises(rt.DataNotPreparedError, match="pfmvg data prepare iuxray"):
            fn(docs[0])


# ---- scoring -------------------------------------------------------------------------------------------------------
def _run(docs, answers, convention="llava"):
    state.note_prompt_convention(convention)
    return [rt.process_results(d, [a]) for d, a in zip(docs, answers)]


def _agg(outs, key):
    return rt.AGGREGATIONS[key]([o[key] for o in outs])


def _coco(hyps: list[str], refs: list[str], max_words: int | None) -> dict:
    """pycocoevalcap's pure-Python scorers on our tokens (joined by spaces: they split on spaces)."""
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
    Rouge = pytest.importorskip("pycocoevalcap.rouge.rouge").Rouge
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    res = {i: [" ".join(tokenize(h, max_words=max_words))] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(tokenize(r, max_words=max_words))] for i, r in enumerate(refs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu1": bleu[0], "bleu2": bleu[1], "bleu3": bleu[2], "bleu4": bleu[3], "rouge_l": rouge,
            "cider_d": cider}


@pytest.mark.parametrize("max_words", [None, 50, 8])
def test_corpus_metrics_equal_pycocoevalcap(prepared, max_words):
    docs = rt.load_docs("iuxray", "test", max_words=max_words)
    outs = _run(docs, IU_PRED)
    # pycocoevalcap gets the generation error as an empty report, as our scoring does
    hyps = ["" if p.startswith(GENERATION_ERROR_MARKER) else p for p in IU_PRED]
    coco = _coco(hyps, [r for _, r in IU_TEST], max_words)
    for key, value in coco.items():
        assert _agg(outs, key) == pytest.approx(value, abs=1e-9 if key != "cider_d" else 1e-6, rel=0), key
    assert 0 < coco["bleu4"] < coco["bleu1"] < 1 and coco["cider_d"] > 0.3  # neither trivial nor hopeless
    lib = score_reports(hyps, [r for _, r in IU_TEST], max_words=max_words)
    assert _agg(outs, "meteor_simple") == pytest.approx(lib["meteor"]) and 0 < lib["meteor"] < 1
    assert _agg(outs, "generation_error_rate") == pytest.approx(1 / 5)
    assert _agg(outs, "max_words") == ("none" if max_words is None else str(max_words))
    assert _agg(outs, "prompt_convention") == "llava"


def test_the_50_word_cut_applies_to_both_texts_and_only_when_asked(prepared):
    full = rt.load_docs("iuxray", "test")
    cut = rt.load_docs("iuxray", "test", max_words=50)
    long_id = next(i for i, (_, r) in enumerate(IU_TEST) if r is LONG)
    answer = LONG + " " + LONG  # twice as long as the reference
    record_full = _run([full[long_id]], [answer])[0][rt.SAMPLE_KEY]
    record_cut = _run([cut[long_id]], [answer])[0][rt.SAMPLE_KEY]
    assert len(tokenize(LONG)) > 50
    assert (record_full["reference_words"], record_full["prediction_words"]) == (len(tokenize(LONG)),
                                                                                 2 * len(tokenize(LONG)))
    assert (record_cut["reference_words"], record_cut["prediction_words"]) == (50, 50)
    assert record_cut["reference_normalized"] == " ".join(tokenize(LONG)[:50]) == record_cut["prediction_normalized"]
    assert record_cut["rouge_l"] == pytest.approx(1.0) and record_full["rouge_l"] < 0.9
    assert record_full["reference"] == LONG and record_full["max_words"] is None and record_cut["max_words"] == 50
    outs_full, outs_cut = _run(full, IU_PRED), _run(cut, IU_PRED)
    assert _agg(outs_full, "bleu1") != _agg(outs_cut, "bleu1")


def test_normalisation_is_lowercase_and_word_tokens():
    doc = {"id": "r", "report": "The Heart is NORMAL. No effusion; x-ray of 2.5 cm nodule."}
    record = _run([doc], ["HEART normal, no EFFUSION!"])[0][rt.SAMPLE_KEY]
    assert record["reference_normalized"] == "the heart is normal no effusion x-ray of 2.5 cm nodule"
    assert record["prediction_normalized"] == "heart normal no effusion"


def test_generation_error_is_an_empty_report_counted_apart():
    doc = {"id": "r", "report": "The lungs are clear."}
    outs = _run([doc, doc], [GENERATION_ERROR_MARKER + " OSError: boom", "The lungs are clear."])
    record = outs[0][rt.SAMPLE_KEY]
    assert record["status"] == "generation_error" and record["prediction"].startswith(GENERATION_ERROR_MARKER)
    assert record["prediction_normalized"] == "" and record["rouge_l"] == 0.0
    assert outs[0]["bleu1"]["prediction"] == ""  # scored as an empty report
    assert _agg(outs, "generation_error_rate") == 0.5
    assert _agg(outs, "rouge_l") == pytest.approx(0.5)


@pytest.mark.parametrize("answer", [None, 42, ["The lungs are clear."], [], "", "word " * 5000])
def test_process_results_never_raises_on_model_output(answer):
    out = _run([{"id": "r", "report": "The lungs are clear."}], [answer])[0]
    assert set(out[rt.SAMPLE_KEY]) == RECORD_KEYS and out[rt.SAMPLE_KEY]["status"] == "ok"
    assert len(out[rt.SAMPLE_KEY]["prediction"]) <= rt.ANSWER_CHARS
    assert json.loads(json.dumps(out)) == out
    assert rt.rouge_l([out["rouge_l"]]) is not None


def test_bad_docs_and_aggregations_never_raise(capsys):
    out = _run([{"id": "r", "report": "clear", "max_words": "fifty"}], ["clear"])[0]
    assert out[rt.SAMPLE_KEY]["status"] == "scoring_error" and "ValueError" in out[rt.SAMPLE_KEY]["error"]
    assert rt.bleu1([]) is None and rt.generation_error_rate([]) is None and rt.one_label([]) is None
    mixed = [{"prediction": "a", "reference": "a", "max_words": None}, {"prediction": "a", "reference": "a",
                                                                       "max_words": 50}]
    assert rt.cider_d(mixed) is None
    assert "disagree on max_words" in capsys.readouterr().err


def test_every_aggregated_key_has_one_value_per_doc():
    out = _run([{"id": "r", "report": "The lungs are clear."}], ["Clear lungs."])[0]
    assert set(out) == {rt.SAMPLE_KEY, *rt.METRICS}
    assert out["cider_d"] == {"id": "r", "prediction": "Clear lungs.", "reference": "The lungs are clear.",
                              "max_words": None, "status": "ok"}
    assert out["max_words"] == "none" and out["prompt_convention"] == "llava"


# ---- the task YAMLs ----------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: ("!function", loader.construct_scalar(node)))


def _yaml(name: str) -> dict:
    return yaml.load((tasks_dir() / "report" / name).read_text(), Loader=_Loader)


def test_task_yamls_and_template(prepared):
    spec = importlib.util.spec_from_file_location("utils", tasks_dir() / "report" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    template = _yaml("_default_template_report_yaml")
    assert [m["metric"] for m in template["metric_list"]] == list(rt.METRICS)
    for metric in template["metric_list"]:
        tag, ref = metric["aggregation"]
        assert tag == "!function" and getattr(utils, ref.removeprefix("utils.")) is rt.AGGREGATIONS[metric["metric"]]
    gen = template["generation_kwargs"]
    assert gen["until"] == [] and gen["max_new_tokens"] == 256 and gen["do_sample"] is False
    conventions = {model: kw["convention"] for model, kw in template["lmms_eval_specific_kwargs"].items()}
    assert conventions["default"] == "llava" and conventions["gpt4v"] == "api" and conventions["pfmvg_llava"] == "model"
    for task, (source, max_words) in TASKS.items():
        config = _yaml(f"{task}.yaml")
        assert config["task"] == task and config["include"] == "_default_template_report_yaml"
        assert config["dataset_kwargs"] == {"data_files": {"test": "stub.jsonl"}} and config["test_split"] == "test"
        tag, ref = config["process_docs"]
        docs = getattr(utils, ref.removeprefix("utils."))(None)
        assert {d["source"] for d in docs} == {source} and {d["max_words"] for d in docs} == {max_words}
    group = _yaml("med_report.yaml")
    assert group["group"] == "med_report"
    assert group["task"] == ["iuxray_report", "mimiccxr_report", "synthcxr_report"]


def test_lmms_eval_task_manager_builds_the_task(prepared):
    pytest.importorskip("lmms_eval")
    from lmms_eval.tasks import TaskManager

    state.set_model_convention("minigptv2")
    tm = TaskManager(verbosity="ERROR", include_path=str(tasks_dir()), include_defaults=False,
                     model_name="pfmvg_llava")
    task = tm.load_task_or_group(["mimiccxr_report_50w"])["mimiccxr_report_50w"]
    docs = list(task.test_docs())
    assert len(docs) == 3 and docs[0]["max_words"] == 50
    assert task.doc_to_text(docs[0]) == build_prompt("report", "minigptv2")
    assert set(task.aggregation()) == set(rt.METRICS)


# ---- the real CLI run (made in test_lmms_vqa_task.py) ------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    pytest.importorskip("lmms_eval")
    from test_lmms_vqa_task import cli_run_once

    return cli_run_once(tmp_path_factory)


def test_cli_report_results_and_samples(cli_run):
    results, samples, stdout = cli_run
    res = results["iuxray_report_50w"]
    records = [line[rt.SAMPLE_KEY] for line in samples["iuxray_report_50w"]]
    assert [r["id"] for r in records] == [f"iuxray-{rid}" for rid, _ in IU_TEST]
    for doc_id, record in enumerate(records):
        assert set(record) == RECORD_KEYS and record["max_words"] == 50 and record["convention"] == "llava"
        assert record["images"] == [f"{IU_TEST[doc_id][0]}/0.png", f"{IU_TEST[doc_id][0]}/1.png"]
        assert record["status"] == ("generation_error" if doc_id % 4 == 3 else "ok")
    preds = ["" if r["status"] == "generation_error" else r["prediction"] for r in records]
    coco = _coco(preds, [r["reference"] for r in records], 50)
    for key, value in coco.items():
        assert res[f"{key},none"] == pytest.approx(value, abs=1e-6, rel=0), key
    lib = score_reports(preds, [r["reference"] for r in records], max_words=50)
    assert res["meteor_simple,none"] == pytest.approx(lib["meteor"])
    assert res["generation_error_rate,none"] == pytest.approx(1 / 5)
    assert res["max_words,none"] == "50" and res["prompt_convention,none"] == "llava"
    table = [line for line in stdout.splitlines() if line.startswith("|iuxray_report_50w")]
    assert any("|cider_d" in row for row in table) and max(len(row) for row in table) < 120
