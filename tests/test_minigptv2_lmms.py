"""``pfmvg_minigptv2`` (lmms-eval simple model): MiniGPT-v2 prompts, batched left-padded greedy decoding equal to
one-at-a-time ``generate``, adapters and their convention, generation errors as counted markers, registration, and
one run through the real ``lmms-eval`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402
from PIL import Image  # noqa: E402

from pfmvg_plugin.lmms import state  # noqa: E402
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER  # noqa: E402
from pfmvg_plugin.prompts import build_prompt  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
TASK, SPLIT = "fake_grounding", "test"
PHRASES = ["cardiomegaly", "small right apical pneumothorax", "left lower zone atelectasis with volume loss",
           "edema", "right pleural effusion"]
GEN = {"until": ["\n\n"], "max_new_tokens": 6, "do_sample": False}


@pytest.fixture(autouse=True)
def _fresh_state():
    state.reset()
    yield
    state.reset()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from pfmvg_plugin.models.minigptv2.convert import convert_minigptv2
    from pfmvg_plugin.models.minigptv2.tiny import write_tiny_release_files

    root = tmp_path_factory.mktemp("mgpt_lmms")
    files = write_tiny_release_files(root / "release")
    return convert_minigptv2(files["llama"], files["eva"], root / "conv", files["ckpt"], dtype="float32",
                             image_size=56)


@pytest.fixture(scope="module")
def docs():
    rng = np.random.default_rng(0)
    return [{"phrase": p, "image": Image.fromarray((rng.random((60 + 8 * i, 72)) * 255).astype("uint8"), mode="L")}
            for i, p in enumerate(PHRASES)]


def visual(doc):
    return [doc["image"]]


def requests(docs, visual_fn=visual):
    return [Instance(request_type="generate_until",
                     arguments=(build_prompt("refer", "minigptv2", phrase=d["phrase"]), dict(GEN), visual_fn, i, TASK,
                                SPLIT), idx=0, metadata={"task": TASK, "doc_id": i, "repeats": 1})
            for i, d in enumerate(docs)]


def make(docs, **kwargs):
    from pfmvg_plugin.lmms.minigptv2_model import PfmvgMiniGPTv2

    model = PfmvgMiniGPTv2(**kwargs)
    model.task_dict = {TASK: {SPLIT: docs}}
    return model


def one_at_a_time(model, docs):
    answers = []
    for d in docs:
        prompt = model.processor.format_prompt(build_prompt("refer", "minigptv2", phrase=d["phrase"]))
        enc = model.processor([prompt], [d["image"]])
        with torch.no_grad():
            out = model.model.generate(**enc, max_new_tokens=6, do_sample=False)
        answers.append(model.processor.batch_decode(out[:, enc["input_ids"].shape[1]:])[0])
    return answers


def test_batched_answers_equal_single_generate_in_request_order(converted, docs):
    model = make(docs, pretrained=str(converted.model_dir), adapter=str(converted.adapter_dir), batch_size=3)
    assert model.convention == "minigptv2" and state.model_convention() == "minigptv2"  # from pfmvg_training.json
    assert model.build_prompt("[refer] where is x ?", 1) == "[INST] <Img><ImageHere></Img> [refer] where is x ? [/INST]"
    answers = model.generate_until(requests(docs))
    assert answers == one_at_a_time(model, docs)
    assert len(set(answers)) > 1 and model.generation_errors == 0
    base = make(docs, pretrained=str(converted.model_dir), batch_size=1)
    assert base.convention == "minigptv2"
    assert base.generate_until(requests(docs)) != answers  # the adapter changes the answers


def test_generation_error_is_a_counted_marker(converted, docs):
    from loguru import logger

    def flaky(doc):
        if doc["phrase"] == "edema":
            raise OSError("unreadable image")
        return [doc["image"]]

    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="DEBUG")
    try:
        model = make(docs, pretrained=str(converted.model_dir), batch_size=2)
        answers = model.generate_until(requests(docs, flaky))
    finally:
        logger.remove(sink)
    bad = [i for i, a in enumerate(answers) if a.startswith(GENERATION_ERROR_MARKER)]
    assert bad == [3] and "OSError" in answers[3] and model.generation_errors == 1
    # the shared PfmvgLlava code (load, failure, summary) speaks under this model's own name
    ours = [m for m in messages if m.startswith("pfmvg_")]
    assert len(ours) >= 3 and all(m.startswith("pfmvg_minigptv2: ") for m in ours), ours
    assert any("generation failed" in m for m in ours) and any("generation errors" in m for m in ours)
    with pytest.raises(TypeError, match="pfmvg_minigptv2: unknown model_args"):
        make(docs, pretrained=str(converted.model_dir), trust_remote_code=True)
    with pytest.raises(ValueError, match="^pfmvg_minigptv2: batch_size must be at least 1"):
        make(docs, pretrained=str(converted.model_dir), batch_size=0)


def test_registered_with_lmms_eval():
    import importlib

    from pfmvg_plugin.lmms.hook import MODEL_CLASSES

    assert MODEL_CLASSES["pfmvg_minigptv2"] == "pfmvg_plugin.lmms.minigptv2_model.PfmvgMiniGPTv2"
    for name, path in MODEL_CLASSES.items():  # each class logs and errs under the name it is registered as
        module, _, cls = path.rpartition(".")
        assert getattr(importlib.import_module(module), cls).model_id == name
    from lmms_eval.models import MODEL_REGISTRY_V2

    assert MODEL_REGISTRY_V2.get_manifest("pfmvg_minigptv2").simple_class_path == MODEL_CLASSES["pfmvg_minigptv2"]


@pytest.mark.slow
def test_real_lmms_eval_cli_run(converted, tmp_path):
    from pfmvg_plugin.data.synth import generate_synthcxr

    generate_synthcxr(tmp_path / "data" / "synthcxr", n=40, seed=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(tmp_path / "data"),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1"}
    env.pop("PFMVG_NO_TASK_HOOK", None)
    args = [str(Path(sys.executable).parent / "lmms-eval"), "--model", "pfmvg_minigptv2", "--model_args",
            f"pretrained={converted.model_dir},adapter={converted.adapter_dir}", "--tasks", "synthcxr_grounding",
            "--batch_size", "2", "--limit", "3", "--output_path", str(tmp_path / "out"), "--log_samples"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    results = list((tmp_path / "out").rglob("*_results.json"))
    assert results, (proc.stdout + proc.stderr)[-4000:]
    res = json.loads(results[0].read_text())["results"]["synthcxr_grounding"]
    assert res["prompt_convention,none"] == "minigptv2" and res["generation_error_rate,none"] == 0.0
    (samples,) = (tmp_path / "out").rglob("*_samples_synthcxr_grounding.jsonl")
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    from pfmvg_plugin.data.store import PreparedDataset

    n_test = len(PreparedDataset(tmp_path / "data" / "synthcxr").records("test"))
    assert len(lines) == min(3, n_test) and all(line["grounding_sample"]["convention"] == "minigptv2" for line in lines)
