"""A doc whose image cannot be read at evaluation is reported apart (its own count, a line at the end) and left out
of every metric, which say over how many docs they were computed: never a silent zero. VQA and report tasks here;
the grounding task in tests/test_lmms_grounding_task.py; the real `lmms-eval` CLI at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import generate_synthcxr
from pfmvg_plugin.lmms import report_task as rt
from pfmvg_plugin.lmms import state
from pfmvg_plugin.lmms import vqa_task as vt
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    generate_synthcxr(root / "synthcxr", n=24, size=64)
    monkeypatch.setenv("PFMVG_DATA_ROOT", str(root))
    state.reset()
    yield root
    state.reset()


def _remove_image(doc: dict) -> Path:
    path = PreparedDataset(doc["dataset_dir"]).image_path({"image": doc["image"]})
    path.unlink()
    return path


def test_vqa_doc_without_image_is_counted_apart(data_root, capsys):
    docs = vt.load_docs("synthcxr_vqa", "test")
    gone = _remove_image(docs[0])
    affected = [d for d in docs if d["image"] == docs[0]["image"]]  # several questions share one image
    state.note_prompt_convention("llava")
    answers = [d["answer"] for d in docs]
    answers[0] = f"{GENERATION_ERROR_MARKER} FileNotFoundError: {gone}"
    outs = [vt.process_results(d, [a]) for d, a in zip(docs, answers)]
    assert outs[0][vt.SAMPLE_KEY]["status"] == vt.IMAGE_ERROR and all(outs[0][k] is None for k in vt.SCORE_METRICS)
    assert vt.overall_acc([o["overall_acc"] for o in outs]) == 1.0  # every readable doc answered right
    assert vt.AGGREGATIONS["n_scored"]([o["n_scored"] for o in outs]) == len(docs) - len(affected)
    capsys.readouterr()
    assert vt.AGGREGATIONS["image_errors"]([o["image_errors"] for o in outs]) == len(affected)
    assert f"{len(affected)} of {len(docs)} docs of synthcxr_vqa had no readable image" in capsys.readouterr().err
    assert set(outs[0]) == {vt.SAMPLE_KEY, *vt.METRICS}


def test_report_doc_without_image_is_counted_apart(data_root):
    docs = rt.load_docs("synthcxr_reports", "test")
    _remove_image(docs[0])
    state.note_prompt_convention("llava")
    outs = [rt.process_results(d, [d["report"]]) for d in docs]
    assert outs[0][rt.SAMPLE_KEY]["status"] == rt.IMAGE_ERROR and outs[0]["bleu4"] is None
    assert set(outs[0]) == {rt.SAMPLE_KEY, *rt.METRICS}
    assert rt.AGGREGATIONS["n_scored"]([o["n_scored"] for o in outs]) == len(docs) - 1
    assert rt.AGGREGATIONS["image_errors"]([o["image_errors"] for o in outs]) == 1
    perfect = rt.AGGREGATIONS["bleu4"]([o["bleu4"] for o in outs])
    assert perfect == pytest.approx(1.0)  # the readable docs' exact reports: no zero for the missing one


@pytest.mark.slow
def test_lmms_eval_reports_a_missing_image_apart(tmp_path):
    """Through the real CLI: one synthcxr test image deleted after preparation."""
    pytest.importorskip("lmms_eval")
    pytest.importorskip("torch")
    from pfmvg_plugin.models import build_tiny_llava

    root = tmp_path / "data"
    generate_synthcxr(root / "synthcxr", n=24, size=64)
    dataset = PreparedDataset(root / "synthcxr")
    first = sorted(dataset.records("test"), key=lambda r: r["id"])
    gone = dataset.image_path(first[0])
    gone.unlink()
    n_docs = len(first)
    model = build_tiny_llava(tmp_path / "tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(root),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "lmms-eval"), "--model", "pfmvg_llava",
                           "--model_args", f"pretrained={model}", "--tasks", "synthcxr_grounding", "--batch_size", "4",
                           "--output_path", str(tmp_path / "out"), "--log_samples"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    res = json.loads(results_file.read_text())["results"]["synthcxr_grounding"]
    assert res["image_errors,none"] == 1 and res["n_scored,none"] == n_docs - 1, res
    assert res["generation_error_rate,none"] == 0.0  # the failed generation is not counted against the model
    assert f"1 of {n_docs} docs of synthcxr had no readable image" in proc.stderr
    (samples,) = (tmp_path / "out").rglob("*_samples_synthcxr_grounding.jsonl")
    statuses = [json.loads(line)["grounding_sample"]["status"] for line in samples.read_text().splitlines()]
    assert statuses.count("image_error") == 1
