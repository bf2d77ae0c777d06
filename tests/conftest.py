"""Fixtures shared across test modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread; on this 2-core VM a second OpenMP thread mostly spins and made
    the same step 2-20x slower (bench/RESULTS.md)."""
    try:
        import torch
    except ImportError:  # the core tests do not need torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny offline LLaVA checkpoint the training tests fine-tune (built once per session)."""
    from pfmvg_plugin.training.toy import ensure_tiny_llava

    return ensure_tiny_llava(tmp_path_factory.getbasetemp() / "tiny_llava")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 12-record toy grounding dataset."""
    from pfmvg_plugin.training.toy import write_toy_grounding

    return write_toy_grounding(tmp_path_factory.mktemp("toy"), n=12)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """This package's wheel, built once per session from a copy of the source (pyproject, README, the package,
    tasks/, recipes/)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pfmvg_plugin", "tasks", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp / "whl"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp / "whl").glob("*.whl")
    return wheel
