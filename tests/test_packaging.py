"""The package installs with a light core: importable without torch, every command answers --help."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.lowest


HEAVY = ("torch", "torchvision", "transformers", "peft", "deepspeed", "lmms_eval", "datasets", "accelerate")
CORE_MODULES = (
    "pfmvg_plugin",
    "pfmvg_plugin.geometry",
    "pfmvg_plugin.codecs",
    "pfmvg_plugin.prompts",
    "pfmvg_plugin.metrics",
    "pfmvg_plugin.data.schema",
    "pfmvg_plugin.data.store",
    "pfmvg_plugin.data.images",
    "pfmvg_plugin.data.fusion",
    "pfmvg_plugin.data.synth",
    "pfmvg_plugin.cli.main",
)


def test_core_imports_without_heavy_stacks():
    """Importing the core with torch & co. made unimportable must work and load none of them."""
    code = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys
        HEAVY = {HEAVY!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HEAVY:
                    raise ImportError(f"core must not import {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        for module in {CORE_MODULES!r}:
            importlib.import_module(module)
        from pfmvg_plugin.data.converters import load_converters
        assert set(load_converters()) >= {{"mscxr", "chestxray8", "vindr", "rsna"}}
        from pfmvg_plugin.cli.main import build_parser
        build_parser()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        assert not loaded, loaded
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _pfmvg() -> str:
    script = Path(sys.executable).parent / "pfmvg"
    if not script.exists():
        pytest.skip("console script not installed (run `pip install -e .`)")
    return str(script)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "prepare"],
        ["data", "prepare", "mscxr"],
        ["data", "prepare", "chestxray8"],
        ["data", "prepare", "vindr"],
        ["data", "prepare", "rsna"],
        ["data", "prepare", "vqarad"],
        ["data", "prepare", "slake"],
        ["data", "prepare", "slake_grounding"],
        ["data", "prepare", "pathvqa"],
        ["data", "prepare", "iuxray"],
        ["data", "prepare", "mimiccxr_reports"],
        ["data", "synth"],
        ["data", "validate"],
        ["report"],
        ["convert"],
        ["convert", "minigptv2"],
        ["convert", "llava"],
        ["convert", "llava-lora"],
        ["export"],
        ["export", "llava"],
        ["merge"],
        ["rate"],
        ["rate", "serve"],
        ["rate", "export"],
    ],
)
def test_every_command_has_help(argv):
    out = subprocess.run([_pfmvg(), *argv, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: pfmvg" in out.stdout


def test_unreadable_input_is_a_clear_error_not_a_traceback(tmp_path):
    missing = tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv"
    out = subprocess.run(
        [_pfmvg(), "data", "prepare", "mscxr", "--annotations", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert str(missing) in out.stderr


def test_validate_names_file_line_and_reason(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text(
        '{"id": "a", "task": "grounding", "source": "x", "split": "test", "image": "a.png", "width": 10, '
        '"height": 10, "phrase": "p", "boxes": [[0, 0, 5, 5]], "category": null}\n'
        '{"id": "b", "task": "grounding", "source": "x", "split": "test", "image": "../b.png", "width": 10, '
        '"height": 10, "phrase": "p", "boxes": [[0, 0, 50, 5]], "category": null}\n'
    )
    out = subprocess.run([_pfmvg(), "data", "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{bad}:2:" in out.stderr
    assert "outside the 10x10 image" in out.stderr and "inside the image root" in out.stderr
