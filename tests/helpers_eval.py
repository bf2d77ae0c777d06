"""Helpers shared by the evaluation tests: what a model class hands to ``generate``, and the real lmms-eval CLI with a
stand-in model registered under a chosen ``--model`` name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TASK, SPLIT = "pixels", "test"

RUN_AS = '''
import sys
from lmms_eval.models import MODEL_REGISTRY_V2
from lmms_eval.models.registry_v2 import ModelManifest
MODEL_REGISTRY_V2.register_manifest(ModelManifest(model_id=sys.argv[1], simple_class_path=sys.argv[2]), overwrite=True)
from lmms_eval.__main__ import cli_evaluate
sys.argv = ["lmms-eval", "--model", sys.argv[1], *sys.argv[3:]]
cli_evaluate()
'''


def inputs_to_generate(model_class, model_dir, image, **model_args) -> dict:
    """The keyword arguments ``model_class`` (one of our lmms-eval models) passes to ``generate`` for one request
    with ``image``: what the model is really shown."""
    import torch
    from lmms_eval.api.instance import Instance

    lm = model_class(pretrained=str(model_dir), max_new_tokens=1, **model_args)
    lm.task_dict = {TASK: {SPLIT: [{"image": image}]}}
    seen: dict = {}

    def generate(**kwargs):
        seen.update(kwargs)
        return torch.cat([kwargs["input_ids"], kwargs["input_ids"][:, :1]], dim=1)

    lm._model.generate = generate
    request = Instance(request_type="generate_until",
                       arguments=("cardiomegaly", {"max_new_tokens": 1}, lambda doc: [doc["image"]], 0, TASK, SPLIT),
                       idx=0, metadata={"task": TASK, "doc_id": 0, "repeats": 1})
    lm.generate_until([request])
    return seen


def lmms_eval_as(model_id: str, class_path: str, args: list[str], cwd: Path, env: dict,
                 timeout: int = 300) -> subprocess.CompletedProcess:
    """``lmms-eval --model model_id ARGS`` with ``class_path`` (importable from ``env['PYTHONPATH']``) registered
    under ``model_id``, replacing lmms-eval's own class of that name."""
    return subprocess.run([sys.executable, "-c", RUN_AS, model_id, class_path, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def task_results(out_dir: Path, task: str, proc: subprocess.CompletedProcess) -> dict:
    """The results of ``task`` in the one ``*_results.json`` under ``out_dir`` (lmms-eval exits 0 on failures)."""
    results_files = list(Path(out_dir).rglob("*_results.json"))
    assert len(results_files) == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(results_files[0].read_text())["results"][task]
