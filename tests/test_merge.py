"""``pfmvg merge``: a trained adapter folded into its base gives a standalone checkpoint with the same logits as base +
adapter under PEFT, for the LLaVA and MiniGPT-v2 backbones; the evaluation models read its training record; bad
inputs are clear errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from helpers_training import run  # noqa: E402
from PIL import Image  # noqa: E402

from pfmvg_plugin.cli.main import main  # noqa: E402
from pfmvg_plugin.training.toy import toy_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def llava_run(tiny, toy, tmp_path_factory):
    """Two LoRA steps with the minigptv2 prompt convention, so the training record differs from the defaults."""
    return run(toy_config(tiny, toy, tmp_path_factory.mktemp("llava_run"), data={"convention": "minigptv2"},
                          train={"max_steps": 2}))


def toy_batch(tiny, toy):
    from transformers import AutoProcessor

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.config import DataConfig, DatasetSpec
    from pfmvg_plugin.training.data import TrainingData

    backbone = get_family("llava")
    backbone.attach(None, AutoProcessor.from_pretrained(tiny))
    data = TrainingData(DataConfig(datasets=[DatasetSpec(path=str(toy))]), backbone, seed=0)
    batch = backbone.collate([data.example(0, i, 0, i) for i in range(3)])
    batch.pop("labels")
    return batch


def test_merged_llava_matches_base_plus_adapter(tiny, toy, llava_run, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "merged"
    assert main(["merge", "--base", str(tiny), "--adapter", str(llava_run.adapter_dir), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["backbone"] == "llava" and summary["out"] == str(out)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert not (out / "adapter_config.json").exists()
    record = json.loads((out / "pfmvg_training.json").read_text())
    assert record["convention"] == "minigptv2" and record["merged"]["adapter"] == str(llava_run.adapter_dir)

    batch = toy_batch(tiny, toy)
    merged = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    peft = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny), llava_run.adapter_dir).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny).eval()
    with torch.no_grad():
        a, b, c = merged(**batch).logits, peft(**batch).logits, base(**batch).logits
    assert torch.allclose(a, b, atol=1e-4)  # merging reorders float sums (logits up to ~7)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter (LoRA and projector) is in the merged weights


def test_pfmvg_llava_reads_the_merged_models_training_record(llava_run, tiny, tmp_path):
    pytest.importorskip("lmms_eval")
    from pfmvg_plugin.lmms.llava_model import PfmvgLlava

    out = tmp_path / "merged"
    assert main(["merge", "--base", str(tiny), "--adapter", str(llava_run.adapter_dir), "--out", str(out)]) == 0
    assert PfmvgLlava(pretrained=str(out), dtype="float32", device="cpu").convention == "minigptv2"
    assert PfmvgLlava(pretrained=str(tiny), dtype="float32", device="cpu").convention == "llava"  # no record


def test_merged_minigptv2_matches_base_plus_adapter(toy, tmp_path):
    from peft import PeftModel

    from pfmvg_plugin.models.minigptv2 import (
        MiniGPTv2ForConditionalGeneration,
        MiniGPTv2Processor,
        build_tiny_minigptv2,
    )

    base_dir = build_tiny_minigptv2(tmp_path / "base")
    res = run(toy_config(base_dir, toy, tmp_path / "run", model={"backbone": "minigptv2", "path": str(base_dir)},
                         train={"max_steps": 2}))
    out = tmp_path / "merged"
    assert main(["merge", "--base", str(base_dir), "--adapter", str(res.adapter_dir), "--out", str(out)]) == 0
    assert json.loads((out / "pfmvg_training.json").read_text())["backbone"] == "minigptv2"

    proc = MiniGPTv2Processor.from_pretrained(out)
    batch = proc([proc.format_prompt("[refer] give me the location of left pleural effusion")],
                 [Image.new("RGB", (40, 48), (70, 70, 70))])
    merged = MiniGPTv2ForConditionalGeneration.from_pretrained(out).eval()
    peft = PeftModel.from_pretrained(MiniGPTv2ForConditionalGeneration.from_pretrained(base_dir), res.adapter_dir)
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, peft.eval()(**batch).logits, atol=1e-4)


def test_bad_inputs_are_clear_errors(tiny, llava_run, tmp_path, capsys):
    def error(*argv) -> str:
        assert main(["merge", *argv]) == 1
        return capsys.readouterr().err

    assert "not a PEFT adapter directory" in error("--base", str(tiny), "--adapter", str(tiny), "--out",
                                                   str(tmp_path / "a"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert "--overwrite" in error("--base", str(tiny), "--adapter", str(llava_run.adapter_dir), "--out", str(busy))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((llava_run.adapter_dir / "adapter_config.json").read_text())
    torch.save({}, pickled / "adapter_model.bin")
    assert "only pickle weights" in error("--base", str(tiny), "--adapter", str(pickled), "--out", str(tmp_path / "b"))
