"""``pfmvg convert minigptv2``: released files (tiny, random, in their real formats) -> our model directory + a PEFT
adapter; both LoRA key styles; what is kept, dropped and reported; pickles that need full unpickling are refused."""

from __future__ import annotations

import argparse
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from pfmvg_plugin.cli.main import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
SIZE = 56


def write(tmp, **kw):
    from pfmvg_plugin.models.minigptv2.tiny import write_tiny_release_files

    return write_tiny_release_files(tmp, image_size=SIZE, **kw)


def printed_json(text: str) -> dict:
    """The JSON the CLI prints (libraries may log a line before it, e.g. DeepSpeed's accelerator notice)."""
    return json.loads(text[text.index("\n{") + 1:] if not text.startswith("{") else text)


def convert_cli(files, out, *extra):
    argv = ["convert", "minigptv2", "--llama", str(files["llama"]), "--eva", str(files["eva"]), "--out", str(out),
            "--image-size", str(SIZE), "--dtype", "float32", *extra]
    if files.get("ckpt") is not None:
        argv += ["--ckpt", str(files["ckpt"])]
    return main(argv)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write(tmp_path_factory.mktemp("rel"))


@pytest.mark.parametrize("suffix", [True, False], ids=["lora_A.default.weight", "lora_A.weight"])
def test_roundtrip_through_the_cli(tmp_path, suffix, capsys):
    from peft import PeftModel

    from pfmvg_plugin.models.minigptv2 import MiniGPTv2ForConditionalGeneration

    files = write(tmp_path / "rel", peft_default_suffix=suffix, lora_r=8)
    assert convert_cli(files, tmp_path / "out") == 0
    printed = printed_json(capsys.readouterr().out)
    out = tmp_path / "out"
    report = json.loads((out / "pfmvg_conversion.json").read_text())
    assert printed["adapter_dir"] == str(out / "adapter")
    assert report["vision"]["blocks_in_file"] == 3 and report["vision"]["blocks_used"] == 2
    assert report["vision"]["unused_blocks"] == ["2"] and report["vision"]["pos_embed_grid"] == [2, 4]
    assert report["checkpoint"]["unexpected_keys"] == [] and report["adapter"]["r"] == 8
    assert report["adapter"]["target_modules"] == ["q_proj", "v_proj"]

    state = torch.load(files["ckpt"], weights_only=True)["model"]
    eva = torch.load(files["eva"], weights_only=True)
    model = MiniGPTv2ForConditionalGeneration.from_pretrained(out / "model")
    weights = model.state_dict()
    assert torch.equal(weights["vision_model.blocks.1.attn.q_bias"], eva["blocks.1.attn.q_bias"])
    assert torch.equal(weights["vision_model.blocks.0.attn.qkv.weight"], eva["blocks.0.attn.qkv.weight"])
    assert torch.equal(weights["vision_model.cls_token"], eva["cls_token"])
    assert torch.equal(weights["vision_model.pos_embed"][:, 0], eva["pos_embed"][:, 0])  # class row untouched
    assert weights["vision_model.pos_embed"].shape == (1, 17, 176)
    assert torch.equal(weights["ln_vision.weight"], torch.ones(176)) and not weights["ln_vision.bias"].any()
    assert torch.equal(weights["llama_proj.weight"], state["llama_proj.weight"])

    peft_model = PeftModel.from_pretrained(model, out / "adapter")
    sfx = ".default" if suffix else ""
    got = dict(peft_model.named_parameters())
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            for ab in "AB":
                src = state[f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}.lora_{ab}{sfx}.weight"]
                dst = got[f"base_model.model.language_model.model.layers.{i}.self_attn.{proj}.lora_{ab}.default.weight"]
                assert torch.equal(src, dst)
    assert torch.equal(got["base_model.model.llama_proj.modules_to_save.default.weight"], state["llama_proj.weight"])
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["modules_to_save"] == ["llama_proj"]
    meta = json.loads((out / "adapter" / "pfmvg_training.json").read_text())
    assert meta["convention"] == "minigptv2" and meta["box_codec"] == "minigptv2"


def test_pickle_that_needs_full_unpickling_is_refused_unless_trusted(tmp_path, capsys):
    files = write(tmp_path / "rel", pickle_extra=argparse.Namespace(lr=1e-5))  # not allowed by weights_only
    assert convert_cli(files, tmp_path / "refused") == 1
    err = capsys.readouterr().err
    assert "weights_only=True" in err and "--trust-pickle" in err
    assert not (tmp_path / "refused" / "model" / "config.json").exists()
    assert convert_cli(files, tmp_path / "trusted", "--trust-pickle") == 0
    assert (tmp_path / "trusted" / "adapter" / "adapter_model.safetensors").is_file()


def test_unexpected_and_missing_keys_are_reported(release, tmp_path, capsys):
    state = torch.load(release["eva"], weights_only=True)
    state["head.weight"] = torch.zeros(3, 3)  # a classifier head the model does not have
    torch.save({"model": state}, tmp_path / "eva_wrapped.pth")  # wrapped state dicts are accepted too
    ckpt = torch.load(release["ckpt"], weights_only=True)
    ckpt["model"]["llama_model.base_model.model.model.norm.weight"] = torch.ones(64)
    torch.save(ckpt, tmp_path / "ckpt.pth")
    files = {**release, "eva": tmp_path / "eva_wrapped.pth", "ckpt": tmp_path / "ckpt.pth"}
    assert convert_cli(files, tmp_path / "out") == 0
    report = printed_json(capsys.readouterr().out)
    assert report["vision"]["unexpected_keys"] == ["head.weight"]
    assert report["checkpoint"]["unexpected_keys"] == ["llama_model.base_model.model.model.norm.weight"]

    del state["cls_token"]
    torch.save(state, tmp_path / "eva_broken.pth")
    assert convert_cli({**files, "eva": tmp_path / "eva_broken.pth"}, tmp_path / "out2") == 1
    assert "missing 'cls_token'" in capsys.readouterr().err


def test_base_only_overwrite_and_shards(release, tmp_path, capsys):
    from pfmvg_plugin.models.minigptv2 import MiniGPTv2ForConditionalGeneration

    files = {**release, "ckpt": None}
    assert convert_cli(files, tmp_path / "out", "--shard-size", "300KB") == 0
    capsys.readouterr()
    out = tmp_path / "out" / "model"
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 2
    assert not (tmp_path / "out" / "adapter").exists()
    model = MiniGPTv2ForConditionalGeneration.from_pretrained(out)  # sharded load, every weight present
    assert model.llama_proj.weight.shape == (64, 4 * 176)
    assert convert_cli(files, tmp_path / "out") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert convert_cli(files, tmp_path / "out", "--overwrite") == 0


def test_help_works(capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "minigptv2", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--trust-pickle" in text and "eva_vit_g.pth" in text and "Llama-2-7b-chat-hf" in text
