"""End to end through the real `lmms-eval` command line: a tiny LLaVA built from config, our `pfmvg_llava` model
(with and without a PEFT adapter), our tasks found with no --include_path, on synthcxr and on an MS-CXR-format
release prepared by `pfmvg data prepare mscxr`; then `pfmvg report` on the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("lmms_eval")

from pfmvg_plugin.cli.main import main as pfmvg  # noqa: E402
from pfmvg_plugin.data.export import export_mscxr_csv  # noqa: E402
from pfmvg_plugin.data.store import PreparedDataset  # noqa: E402
from pfmvg_plugin.data.synth import generate_synthcxr  # noqa: E402
from pfmvg_plugin.models import build_tiny_llava  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.lowest]
LIMIT = 6
TASKS = ("synthcxr_grounding", "mscxr_grounding")
RECORD_KEYS = {"id", "dataset_dir", "image", "width", "height", "phrase", "category", "gt_boxes", "pred_boxes", "iou",
               "dice", "parsed", "status", "convention", "mode", "answer"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data_root = root / "data"
    generate_synthcxr(data_root / "synthcxr", n=40, seed=3)
    # an MS-CXR release stand-in: the synthetic records written in the real CSV layout, prepared by the converter
    synth = PreparedDataset(data_root / "synthcxr")
    csv_path = root / "release" / "MS_CXR_Local_Alignment_v1.1.0.csv"
    export_mscxr_csv([r for s in ("train", "val", "test") for r in synth.records(s)], csv_path)
    assert pfmvg(["data", "prepare", "mscxr", "--annotations", str(csv_path), "--images", str(synth.image_root),
                  "--out", str(data_root / "mscxr")]) == 0
    model_dir = build_tiny_llava(root / "tiny_llava")
    adapter_dir = _adapter(model_dir, root / "adapter")
    return root, data_root, model_dir, adapter_dir


def _adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter on the language model's attention with weights large enough to change greedy answers."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                             target_modules=r".*language_model.*\.(q_proj|v_proj)")
    wrapped = peft.get_peft_model(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    wrapped.save_pretrained(out)
    return out


def _lmms_eval(args: list[str], data_root: Path, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "lmms-eval"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(data_root),
           "LMMS_EVAL_DATASETS_CACHE": str(cwd / "hf_cache"), "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1"}
    env.pop("PFMVG_NO_TASK_HOOK", None)
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def _run(setup, name: str, model_args: str) -> dict:
    root, data_root, _, _ = setup
    out_dir = root / name
    proc = _lmms_eval(["--model", "pfmvg_llava", "--model_args", model_args, "--tasks", ",".join(TASKS),
                       "--batch_size", "4", "--limit", str(LIMIT), "--output_path", str(out_dir), "--log_samples"],
                      data_root, root)
    text = proc.stdout + proc.stderr
    results_files = list(out_dir.rglob("*_results.json"))
    assert results_files, text[-4000:]  # lmms-eval exits 0 even when evaluation failed: check the files
    results = json.loads(results_files[0].read_text())
    samples = {}
    for task in TASKS:
        (path,) = out_dir.rglob(f"*_samples_{task}.jsonl")
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return {"dir": out_dir, "results": results, "samples": samples, "stdout": proc.stdout}


@pytest.fixture(scope="module")
def base_run(setup):
    return _run(setup, "base", f"pretrained={setup[2]}")


@pytest.fixture(scope="module")
def adapter_run(setup):
    return _run(setup, "adapter", f"pretrained={setup[2]},adapter={setup[3]},box_format=minigptv2")


def _records(run: dict, task: str) -> list[dict]:
    return [line["grounding_sample"] for line in sorted(run["samples"][task], key=lambda x: x["doc_id"])]


def test_results_and_samples_files(setup, base_run):
    _, data_root, _, _ = setup
    for task in TASKS:
        res = base_run["results"]["results"][task]
        for key in ("acc@0.1", "acc@0.3", "acc@0.5", "miou", "mdice", "parse_failure_rate", "generation_error_rate"):
            value = res[f"{key},none"]
            assert value is not None and 0.0 <= value <= 1.0, (task, key, value)
        assert res["multibox_mode,none"] == "max" and res["prompt_convention,none"] == "llava"
        assert res["generation_error_rate,none"] == 0.0
        records = _records(base_run, task)
        dataset = task.split("_")[0]
        assert len(records) == min(LIMIT, len(PreparedDataset(data_root / dataset).records("test")))
        for rec in records:
            assert set(rec) >= RECORD_KEYS
            assert Path(rec["dataset_dir"]) == (data_root / dataset).resolve()
            assert rec["convention"] == "llava" and rec["status"] != "generation_error"
            assert isinstance(rec["answer"], str) and rec["answer"]  # a random model answers something
        assert f"|{task}" in base_run["stdout"]


def test_adapter_changes_answers_and_format_follows_the_model(base_run, adapter_run):
    for task in TASKS:
        res = adapter_run["results"]["results"][task]
        assert res["prompt_convention,none"] == "minigptv2"
        base, tuned = _records(base_run, task), _records(adapter_run, task)
        assert [r["id"] for r in base] == [r["id"] for r in tuned]
        assert all(r["convention"] == "minigptv2" for r in tuned)
        assert [r["answer"] for r in base] != [r["answer"] for r in tuned]
    config = adapter_run["results"]["config"]
    assert "adapter=" in str(config.get("model_args"))


def test_report_on_the_run(base_run, tmp_path):
    assert pfmvg(["report", str(base_run["dir"]), "--out", str(tmp_path / "report"), "--n-bootstrap", "50"]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    for task in TASKS:
        assert task in html
    assert list((tmp_path / "report").rglob("*.png"))
