"""``backbone: minigptv2`` under the training recipe: prompt/labels layout, LoRA on the LLaMA only with llama_proj
trained and the EVA tower frozen, bare torch vs DeepSpeed ZeRO-2, adapters that reload, continuing from a converted
MiniGPT-v2 checkpoint (``lora.init_adapter``), and the recipe script itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from helpers_training import run  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pfmvg_plugin.training.toy import toy_config, write_toy_grounding  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_mgpt(tmp_path_factory):
    from pfmvg_plugin.models.minigptv2 import build_tiny_minigptv2

    return build_tiny_minigptv2(tmp_path_factory.mktemp("tiny_minigptv2") / "model")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_grounding(tmp_path_factory.mktemp("toy"), n=12)


def mgpt_config(model_dir, toy, out, **sections):
    model = {"backbone": "minigptv2", "path": str(model_dir), **sections.pop("model", {})}
    return toy_config(model_dir, toy, out, model=model, **sections)


@pytest.fixture(scope="module")
def bare(tiny_mgpt, toy, tmp_path_factory):
    return run(mgpt_config(tiny_mgpt, toy, tmp_path_factory.mktemp("bare"), lora={"dropout": 0.1},
                           train={"max_steps": 3}))


def test_example_layout_loss_on_answer_only(tiny_mgpt):
    from pfmvg_plugin.families import available_families, get_family
    from pfmvg_plugin.models.minigptv2 import MiniGPTv2Processor

    assert "minigptv2" in available_families()
    backbone = get_family("minigptv2")
    backbone.attach(None, MiniGPTv2Processor.from_pretrained(tiny_mgpt))
    assert backbone.prompt_convention == "minigptv2"
    transform = backbone.image_transform("squash")
    assert transform.size == (56, 56) and transform.codec("minigptv2").name == "minigptv2"
    with pytest.raises(ValueError, match="squash"):
        backbone.image_transform("pad").codec("minigptv2")
    image = transform(Image.new("RGB", (48, 40), (90, 90, 90)))
    ex = backbone.build_example(image, "[refer] give me the location of cardiomegaly", "{<25><10><75><50>}")
    tok = backbone.processor.tokenizer
    answer = ex["labels"][ex["labels"] != -100]
    assert tok.decode(answer[:-1]) == "{<25><10><75><50>}" and int(answer[-1]) == tok.eos_token_id
    prompt_ids = ex["input_ids"][ex["labels"] == -100]
    assert int(prompt_ids[0]) == tok.bos_token_id and int((prompt_ids == 3).sum()) == 4  # 4 image slots
    text = tok.decode([i for i in prompt_ids.tolist() if i != 3], skip_special_tokens=True)
    assert text == "[INST] <Img></Img> [refer] give me the location of cardiomegaly [/INST]"
    assert ex["pixel_values"].shape == (3, 56, 56)
    short = backbone.build_example(image, "[vqa] yes?", "no")
    batch = backbone.collate([ex, short])
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(ex["input_ids"])) and batch["attention_mask"][1, n:].sum() == 0
    assert (batch["labels"][1, n:] == -100).all()  # right padding carries no loss


def test_lora_run_trains_llama_lora_and_projector_only(bare, tiny_mgpt):
    from peft import PeftModel

    from pfmvg_plugin.models.minigptv2 import MiniGPTv2ForConditionalGeneration

    model = bare.engine.module
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if ".lora_" in n]
    assert lora and all(".language_model.model.layers." in n for n in lora)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora} == {"q_proj", "v_proj"}
    assert {n for n in trainable if ".lora_" not in n} == {
        "base_model.model.llama_proj.modules_to_save.default.weight",
        "base_model.model.llama_proj.modules_to_save.default.bias"}
    assert all(torch.isfinite(torch.tensor(bare.losses)))
    saved = load_file(bare.adapter_dir / "adapter_model.safetensors")
    assert {"base_model.model.llama_proj.weight", "base_model.model.llama_proj.bias"} <= set(saved)
    meta = json.loads((bare.adapter_dir / "pfmvg_training.json").read_text())
    assert meta["backbone"] == "minigptv2" and meta["convention"] == "minigptv2" and meta["box_codec"] == "minigptv2"
    assert (bare.adapter_dir / "pfmvg_minigptv2_processor.json").is_file()

    # the saved adapter reproduces the trained model's logits
    from pfmvg_plugin.models.minigptv2 import MiniGPTv2Processor

    proc = MiniGPTv2Processor.from_pretrained(bare.adapter_dir)
    batch = proc([proc.format_prompt("[refer] give me the location of left pleural effusion")],
                 [Image.new("RGB", (40, 48), (70, 70, 70))])
    reloaded = PeftModel.from_pretrained(MiniGPTv2ForConditionalGeneration.from_pretrained(tiny_mgpt),
                                         bare.adapter_dir).eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reloaded(**batch).logits, atol=1e-5)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_matches_bare_torch(tiny_mgpt, toy, tmp_path, bare, stage):
    res = run(mgpt_config(tiny_mgpt, toy, tmp_path, deepspeed=str(ROOT / "recipes" / "ds" / f"zero{stage}.json"),
                          lora={"dropout": 0.1}, train={"max_steps": 3}))
    assert res.engine.kind == "deepspeed" and res.summary["zero_stage"] == stage
    assert res.losses == pytest.approx(bare.losses, abs=1e-4)
    a = load_file(res.adapter_dir / "adapter_model.safetensors")
    b = load_file(bare.adapter_dir / "adapter_model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-4), k


def test_continue_from_converted_minigptv2_checkpoint(toy, tmp_path):
    from pfmvg_plugin.models.minigptv2.convert import convert_minigptv2
    from pfmvg_plugin.models.minigptv2.tiny import write_tiny_release_files

    files = write_tiny_release_files(tmp_path / "release", lora_r=8)
    conv = convert_minigptv2(files["llama"], files["eva"], tmp_path / "conv", files["ckpt"], dtype="float32",
                             image_size=56)
    cfg = mgpt_config(conv.model_dir, toy, tmp_path / "run", lora={"init_adapter": str(conv.adapter_dir)},
                      train={"max_steps": 2, "lr": 1e-4})
    res = run(cfg)
    start = torch.load(files["ckpt"], weights_only=True)["model"]
    params = dict(res.engine.module.named_parameters())
    a = params["base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert a.shape == (8, 64) and a.requires_grad  # the converted adapter's rank, trainable
    src = start["llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert 0 < (a.detach() - src).abs().max() < 1e-2  # started there, moved a little
    assert params["base_model.model.llama_proj.modules_to_save.default.weight"].requires_grad
    assert json.loads((res.adapter_dir / "adapter_config.json").read_text())["r"] == 8


@pytest.mark.slow  # a subprocess: ~15 s of imports on a 2-core machine
def test_recipe_script_with_the_tiny_config(toy, tmp_path):
    env = {**os.environ, "PFMVG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, str(ROOT / "recipes" / "finetune_lora.py"), "--config",
           str(ROOT / "recipes" / "configs" / "minigptv2_tiny_synthcxr.yaml"), f"data.datasets.0.path={toy}",
           f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.micro_batch_size=2",
           "train.save_steps=0", "lora.r=4", "deepspeed=null"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainable params" in proc.stdout
    assert (tmp_path / "run" / "base_model" / "pfmvg_minigptv2_processor.json").is_file()  # tiny-minigptv2 built
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
