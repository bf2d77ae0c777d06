"""Training from a pip install, not the clone: the wheel ships the configs and DeepSpeed JSONs, `pfmvg train` and
`python -m pfmvg_plugin.training` find them by name, and a missing dataset is one line before the model is built.

The wheel is installed (without dependencies) into a fresh venv that sees this venv's packages through a `.pth`
line (which, unlike site-packages, does not run this venv's editable-install hook), and every command runs in an
empty folder, so nothing of the clone is in reach.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory, built_wheel):
    """(venv bin folder, environment, work folder) with the built wheel installed."""
    tmp = tmp_path_factory.mktemp("installed")
    venv = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=300)
    (purelib,) = [p for p in (venv / "lib").glob("python*/site-packages")]
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(built_wheel)], check=True, timeout=300, capture_output=True)
    work = tmp / "work"
    work.mkdir()
    env = {**os.environ, "PFMVG_DATA_ROOT": str(tmp / "data"), "OMP_NUM_THREADS": "1", "PFMVG_NO_PROGRESS": "1",
           "HF_HUB_OFFLINE": "1", "TORCH_EXTENSIONS_DIR": str(tmp / "torch_ext")}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PYTHONPATH"):
        env.pop(key, None)
    return venv / "bin", env, work


def _run(argv: list[str], installed, timeout: int = 600) -> subprocess.CompletedProcess:
    _, env, work = installed
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=work, env=env)


def test_the_wheel_is_what_runs(installed):
    bin_dir, _, _ = installed
    out = _run([str(bin_dir / "python"), "-c", "import pfmvg_plugin; print(pfmvg_plugin.__file__)"], installed)
    assert str(bin_dir.parent) in out.stdout and str(REPO) not in out.stdout, out.stdout + out.stderr
    listed = _run([str(bin_dir / "pfmvg"), "train", "--list-configs"], installed)
    names = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert {"tiny_synthcxr", "llava_mscxr", "minigptv2_mscxr", "pefomed_stage2_vqarad"} <= set(names)
    assert all(str(bin_dir.parent) in path for path in names.values())


def test_missing_dataset_is_one_line_before_the_model(installed):
    bin_dir, env, _ = installed
    start = time.monotonic()
    out = _run([str(bin_dir / "pfmvg"), "train", "--config", "tiny_synthcxr"], installed)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line.startswith("error: data.datasets: dataset 'synthcxr' not found")
    assert f"`pfmvg data synth --out {Path(env['PFMVG_DATA_ROOT']) / 'synthcxr'}`" in line
    assert time.monotonic() - start < 60


def test_pfmvg_train_and_the_launcher_module_train_from_shipped_configs(installed):
    bin_dir, _, work = installed
    made = _run([str(bin_dir / "pfmvg"), "data", "synth", "--n", "40", "--size", "64"], installed)
    assert made.returncode == 0, made.stderr
    common = ["train.max_steps=2", "train.save_steps=2", "train.log_steps=1", "train.cpu_shm_comm=off"]
    ds = _run([str(bin_dir / "pfmvg"), "train", "--config", "tiny_synthcxr", "deepspeed=zero2",
               "train.output_dir=run_ds", *common], installed)
    assert ds.returncode == 0, ds.stdout[-3000:] + ds.stderr[-3000:]
    assert "engine=deepspeed zero_stage=2" in ds.stdout
    assert (work / "run_ds" / "adapter" / "adapter_config.json").is_file()
    module = _run([str(bin_dir / "python"), "-m", "pfmvg_plugin.training", "--config", "tiny_synthcxr",
                   "--deepspeed", "none", "train.output_dir=run_torch", *common], installed)
    assert module.returncode == 0, module.stdout[-3000:] + module.stderr[-3000:]
    assert (work / "run_torch" / "adapter" / "adapter_config.json").is_file()
