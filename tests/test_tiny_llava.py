"""The tiny offline LLaVA checkpoint: loads with the Auto classes, tokenizes our prompts and boxes, batches exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from pfmvg_plugin.codecs import get_codec  # noqa: E402
from pfmvg_plugin.models.tiny_llava import CHAT_TEMPLATE, build_tiny_llava  # noqa: E402
from pfmvg_plugin.prompts import build_prompt  # noqa: E402


@pytest.fixture(scope="module", params=["llama", "opt"])
def tiny_dir(request, tmp_path_factory):
    """The default Llama language model, and OPT (learned absolute positions; ``make demo``)."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "ckpt", text_model=request.param)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    processor = transformers.AutoProcessor.from_pretrained(tiny_dir)
    return model, processor


def _image(seed: int, size: int = 256) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype("uint8"), mode="L")


def _prompt(processor, text: str, n_images: int = 1) -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def test_checkpoint_files_are_safetensors_and_complete(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    info = json.loads((tiny_dir / "pfmvg_tiny_llava.json").read_text())
    assert info["image_tokens"] == 64 and info["image_size"] == 64 and info["patch_size"] == 8


def test_loads_with_auto_classes_and_llava_class(tiny_dir, loaded):
    model, processor = loaded
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    direct = transformers.LlavaForConditionalGeneration.from_pretrained(tiny_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), name
    config = model.config
    assert config.vision_config.image_size == 64 and config.vision_config.patch_size == 8
    assert config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert processor.tokenizer.padding_side == "left"


def test_generates_from_image_and_prompt(loaded):
    model, processor = loaded
    enc = processor(text=_prompt(processor, "Where is the nodule?"), images=_image(0), return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 64  # 8x8 patches, CLS dropped
    assert tuple(enc["pixel_values"].shape) == (1, 3, 64, 64)
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_dir):
    text_model = json.loads((tiny_dir / "pfmvg_tiny_llava.json").read_text())["text_model"]
    again = build_tiny_llava(tmp_path / "again", text_model=text_model)
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    other = build_tiny_llava(tmp_path / "other", seed=1, text_model=text_model)
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()


def test_builder_validates_geometry_and_text_model(tmp_path):
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_tiny_llava(tmp_path / "bad", image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="text_model must be one of"):
        build_tiny_llava(tmp_path / "bad", text_model="gpt2")


def test_other_sizes_build_and_expand_image_tokens(tmp_path):
    path = build_tiny_llava(tmp_path / "small", image_size=32, patch_size=8, text_hidden_size=64,
                            vision_hidden_size=32)
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    processor = transformers.AutoProcessor.from_pretrained(path)
    enc = processor(text=_prompt(processor, "hi"), images=_image(1), return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 16
    model.generate(**enc, max_new_tokens=2)


def test_tokenizer_specials_and_compact_boxes(loaded):
    tok = loaded[1].tokenizer
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert tok("left lung")["input_ids"][0] == tok.bos_token_id
    assert tok.tokenize("<image>") == ["<image>"]
    size = (256, 256)
    box = (64.0, 32.0, 192.0, 224.0)
    lengths = {}
    for name in ("llava", "minigptv2", "qwen2vl", "pixel"):
        text = get_codec(name).encode(box, size=size)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level BPE: exact round trip
        lengths[name] = len(ids)
    assert lengths["llava"] <= 9, lengths  # "[0.25, 0.12, 0.75, 0.88]": one token per number
    assert lengths["minigptv2"] <= 10, lengths
    phrase = "small right apical pneumothorax"
    assert len(tok(phrase, add_special_tokens=False)["input_ids"]) <= 5
    for convention in ("llava", "minigptv2", "qwen2vl"):
        text = build_prompt("refer", convention, phrase=phrase)
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_is_llava15(loaded):
    processor = loaded[1]
    assert _prompt(processor, "Where is it?") == "USER: <image>\nWhere is it? ASSISTANT:"
    as_string = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\nWhere is it?"}], tokenize=False, add_generation_prompt=True
    )
    assert as_string == "USER: <image>\nWhere is it? ASSISTANT:"
    dialogue = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "[0.10, 0.20, 0.30, 0.40]"}]},
    ]
    rendered = processor.apply_chat_template(dialogue)
    assert rendered == "USER: <image>\nWhere? ASSISTANT: [0.10, 0.20, 0.30, 0.40]</s>"
    assert "{% generation %}" in CHAT_TEMPLATE
    out = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "[0.10, 0.20, 0.30, 0.40]"}],
        return_dict=True, return_assistant_tokens_mask=True,
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    answer = [i for i, m in zip(ids, mask) if m]
    # the space after "ASSISTANT:" starts the answer's first token, exactly as the model generates it
    assert processor.tokenizer.decode(answer) == " [0.10, 0.20, 0.30, 0.40]</s>"
    prompt_ids = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where?"}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids and ids[len(prompt_ids):] == answer  # prompt tokens are a prefix


def test_batched_left_padded_greedy_equals_one_at_a_time(loaded):
    model, processor = loaded
    texts = [
        "cardiomegaly",
        build_prompt("refer", "llava", phrase="small right apical pneumothorax"),
        "Where is the large left pleural effusion blunting the costophrenic angle in this chest X-ray?",
        build_prompt("refer", "minigptv2", phrase="nodule"),
    ]
    prompts = [_prompt(processor, t) for t in texts]
    images = [_image(i) for i in range(len(texts))]
    single = []
    for prompt, image in zip(prompts, images):
        enc = processor(text=prompt, images=image, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=10, do_sample=False)
        single.append(processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    enc = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    lengths = enc["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(texts)  # really mixed lengths
    assert (enc["attention_mask"][:, -1] == 1).all()  # left padding
    out = model.generate(**enc, max_new_tokens=10, do_sample=False)
    batched = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert batched == single
    assert len(set(single)) == len(single)  # the random model is not input-blind
