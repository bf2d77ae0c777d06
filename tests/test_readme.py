"""README's commands run as written: the quickstart block, command by command, in an empty folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")
pytest.importorskip("torch")
pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> list[str]:
    """The shell commands of the first ```bash block after ``heading`` (continuations joined, comments dropped)."""
    text = README.read_text()
    after = text[text.index(heading):]
    body = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def test_quickstart_runs_as_written(tmp_path):
    commands = _block("## Quickstart")
    assert commands[0].startswith("make install")  # the install line: this venv is what it makes
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PFMVG_DATA_ROOT": str(tmp_path / "d"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1",
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    for command in commands[1:]:
        out = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert list((tmp_path / "runs").rglob("*_results.json"))
    assert (tmp_path / "runs" / "pfmvg_report" / "index.html").is_file()


def test_llava_hf_cpu_line_runs_on_a_tiny_checkpoint(tmp_path):
    """README's CPU line for lmms-eval's own llava_hf (decord from [eval], the CPU model_args), on a tiny model."""
    from pfmvg_plugin.models.tiny_llava import build_tiny_llava

    (line,) = [c for c in _block("## Benchmark a model on Med-VQA") if "llava_hf" in c and "device=cpu" in c]
    model = build_tiny_llava(tmp_path / "tiny")
    line = line.replace("pretrained=llava-hf/llava-1.5-7b-hf", f"pretrained={model}")
    argv = [*line.split()[1:], "--limit", "2", "--output_path", str(tmp_path / "runs")]
    env = {**os.environ, "PFMVG_DATA_ROOT": str(tmp_path / "d"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1", "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    out = subprocess.run([str(Path(sys.executable).parent / "lmms-eval"), *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    (results,) = (tmp_path / "runs").rglob("*_results.json")
    assert out.returncode == 0
    tasks = set(json.loads(results.read_text())["results"])
    assert {"synthcxr_vqa", "synthcxr_report"} <= tasks, out.stderr[-3000:]
