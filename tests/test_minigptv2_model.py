"""MiniGPT-v2 model: the converted model's forward against a reference computed here from the released files' raw
tensors (EVA block math with q_bias/v_bias, bicubic position-embedding interpolation, class-token drop, 4-token
grouping, llama_proj, splicing at <ImageHere>, LoRA), preprocessing, save/reload, batched generation, and the
parameter count of the real 7B configuration on the meta device."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

IMAGE_SIZE = 56  # tiny: 4 x 4 patches of 14 px -> 16 patch tokens -> 4 language-model tokens
INSTRUCTIONS = ["[refer] give me the location of left basilar atelectasis",
                "[vqa] Based on the image, respond to this question with a short answer: Is there a pleural effusion?"]


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((40 + 12 * i, 64 - 8 * i, 3)) * 255).astype("uint8")) for i in range(n)]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from pfmvg_plugin.models.minigptv2.tiny import write_tiny_release_files

    return write_tiny_release_files(tmp_path_factory.mktemp("release"), image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    from pfmvg_plugin.models.minigptv2.convert import convert_minigptv2

    return convert_minigptv2(release["llama"], release["eva"], tmp_path_factory.mktemp("conv") / "out",
                             release["ckpt"], dtype="float32", image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def peft_model(converted):
    from peft import PeftModel

    from pfmvg_plugin.models.minigptv2 import MiniGPTv2ForConditionalGeneration, MiniGPTv2Processor

    model = MiniGPTv2ForConditionalGeneration.from_pretrained(converted.model_dir)
    return PeftModel.from_pretrained(model, converted.adapter_dir).eval(), MiniGPTv2Processor.from_pretrained(
        converted.model_dir)


# ---- the reference, written from the architecture description, on the raw released tensors ---------------------
def reference_image_embeddings(eva: dict, proj: dict, pixels: torch.Tensor, n_layers: int, heads: int,
                               image_size: int) -> torch.Tensor:
    c = eva["cls_token"].shape[-1]
    patch = eva["patch_embed.proj.weight"].shape[-1]
    grid = image_size // patch
    # position embedding: class row kept, the stored g x g grid resized bicubically (align_corners False, float32)
    pos = eva["pos_embed"].float()
    g0 = int(math.isqrt(pos.shape[1] - 1))
    table = pos[:, 1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False)
    pos = torch.cat([pos[:, :1], table.permute(0, 2, 3, 1).reshape(1, grid * grid, c)], dim=1)
    x = F.conv2d(pixels, eva["patch_embed.proj.weight"], eva["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([eva["cls_token"].expand(x.shape[0], 1, c), x], dim=1) + pos
    b, n, _ = x.shape
    d = c // heads
    for i in range(n_layers):
        w = {k[len(f"blocks.{i}."):]: v for k, v in eva.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (c,), w["norm1.weight"], w["norm1.bias"], eps=1e-6)
        bias = torch.cat([w["attn.q_bias"], torch.zeros(c), w["attn.v_bias"]])  # no k bias
        qkv = h @ w["attn.qkv.weight"].T + bias
        q, k, v = qkv.reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q * d ** -0.5) @ k.transpose(-2, -1), dim=-1)
        x = x + (att @ v).transpose(1, 2).reshape(b, n, c) @ w["attn.proj.weight"].T + w["attn.proj.bias"]
        h = F.layer_norm(x, (c,), w["norm2.weight"], w["norm2.bias"], eps=1e-6)
        hidden = h @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"]
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
        x = x + hidden @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"]
    x = F.layer_norm(x, (c,), eps=1e-5)  # ln_vision: identity affine (never trained in MiniGPT-v2)
    x = x[:, 1:]  # drop the class token
    groups = [torch.cat([x[:, 4 * j + t] for t in range(4)], dim=-1) for j in range(x.shape[1] // 4)]
    grouped = torch.stack(groups, dim=1)  # token j = patches 4j..4j+3 side by side
    return grouped @ proj["weight"].T + proj["bias"]


def reference_llama(release, alpha_over_r: float):
    """The released LLaMA with the checkpoint's LoRA merged by hand: W + (alpha / r) B A."""
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM.from_pretrained(release["llama"]).eval()
    state = torch.load(release["ckpt"], weights_only=True)["model"]
    with torch.no_grad():
        for i, layer in enumerate(llama.model.layers):
            for name in ("q_proj", "v_proj"):
                p = f"llama_model.base_model.model.model.layers.{i}.self_attn.{name}."
                a, b = state[p + "lora_A.default.weight"], state[p + "lora_B.default.weight"]
                getattr(layer.self_attn, name).weight += alpha_over_r * b @ a
    return llama, state


def test_forward_equals_reference_computation(release, peft_model):
    from transformers import AutoTokenizer

    model, processor = peft_model
    eva = torch.load(release["eva"], weights_only=True)
    llama, state = reference_llama(release, alpha_over_r=16 / 4)
    proj = {"weight": state["llama_proj.weight"], "bias": state["llama_proj.bias"]}
    tok = AutoTokenizer.from_pretrained(release["llama"])
    ims = images()
    prompts = [processor.format_prompt(t) for t in INSTRUCTIONS]
    assert prompts[0] == f"[INST] <Img><ImageHere></Img> {INSTRUCTIONS[0]} [/INST]"
    batch = processor(prompts, ims, padding_side="right")
    with torch.no_grad():
        ours = model(**batch).logits
        img = reference_image_embeddings(eva, proj, batch["pixel_values"], n_layers=2, heads=2,
                                         image_size=IMAGE_SIZE)
        assert img.shape == (2, 4, 64)
        assert torch.allclose(model.get_image_features(batch["pixel_values"]), img, atol=1e-5)
        embed = llama.get_input_embeddings()
        for i, prompt in enumerate(prompts):
            before, after = prompt.split("<ImageHere>")
            first = tok(before)["input_ids"]  # with <s>
            rest = tok(after, add_special_tokens=False)["input_ids"]
            assert first[0] == tok.bos_token_id
            embeds = torch.cat([embed(torch.tensor([first])), img[i: i + 1], embed(torch.tensor([rest]))], dim=1)
            ref = llama(inputs_embeds=embeds).logits[0]
            n = ref.shape[0]
            assert int(batch["attention_mask"][i].sum()) == n
            assert torch.allclose(ours[i, :n], ref, atol=2e-4), (ours[i, :n] - ref).abs().max()


def test_grouping_concatenates_four_consecutive_tokens():
    from pfmvg_plugin.models.minigptv2.configuration import MiniGPTv2Config
    from pfmvg_plugin.models.minigptv2.modeling import MiniGPTv2ForConditionalGeneration

    with torch.device("meta"):
        model = MiniGPTv2ForConditionalGeneration(MiniGPTv2Config())
    assert model.config.num_image_tokens == 256 and model.config.projector_in_features == 5632
    feats = torch.arange(2 * 1025 * 3, dtype=torch.float32).reshape(2, 1025, 3)
    grouped = model.group_tokens(feats)
    assert grouped.shape == (2, 256, 12)
    for b in range(2):
        for j in (0, 1, 7, 128, 255):
            assert torch.equal(grouped[b, j], torch.cat([feats[b, 1 + 4 * j + t] for t in range(4)]))


def test_image_preprocessing_is_the_reference_eval_transform():
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    from pfmvg_plugin.models.minigptv2.processing import CLIP_MEAN, CLIP_STD, MiniGPTv2ImageProcessor

    ref = transforms.Compose([transforms.Resize((448, 448), interpolation=InterpolationMode.BICUBIC),
                              transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    for im in images(2) + [images(1)[0].convert("L")]:
        ours = MiniGPTv2ImageProcessor()(im)[0]
        assert ours.shape == (3, 448, 448)
        assert torch.allclose(ours, ref(im.convert("RGB")), atol=1e-5)


def test_processor_layout_roundtrip_and_errors(converted, tmp_path):
    from pfmvg_plugin.models.minigptv2 import MiniGPTv2Processor

    proc = MiniGPTv2Processor.from_pretrained(converted.model_dir)
    ids = proc.encode_prompt(proc.format_prompt("[refer] where is the heart ?"))
    img = proc.image_token_index
    assert ids[0] == proc.tokenizer.bos_token_id and ids.count(img) == proc.num_image_tokens == 4
    start = ids.index(img)
    assert ids[start: start + 4] == [img] * 4
    assert proc.encode_answer("{<1><2><3><4>}")[-1] == proc.tokenizer.eos_token_id
    proc.save_pretrained(tmp_path)
    again = MiniGPTv2Processor.from_pretrained(tmp_path)
    assert again.to_dict() == proc.to_dict()
    with pytest.raises(ValueError, match="placeholder"):
        proc([proc.format_prompt("x"), proc.format_prompt("y")], images(1))
    with pytest.raises(ValueError, match="image placeholder token"):
        proc.encode_prompt(proc.format_prompt("an <image> token in the text"))


def test_placeholder_count_must_match_images(peft_model):
    model, proc = peft_model
    batch = proc([proc.format_prompt("x")], images(1))
    ids = batch["input_ids"][0].tolist()
    del ids[ids.index(proc.image_token_index)]  # one placeholder short
    with pytest.raises(ValueError, match="image placeholder tokens"):
        model(input_ids=torch.tensor([ids]), pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"])


def test_batched_left_padded_generation_equals_one_at_a_time(peft_model):
    model, proc = peft_model
    ims = images(2)
    prompts = [proc.format_prompt(t) for t in INSTRUCTIONS]
    batch = proc(prompts, ims)
    assert batch["attention_mask"][0, 0] == 0  # left padding happened
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
        together = proc.batch_decode(out[:, batch["input_ids"].shape[1]:])
        alone = []
        for p, im in zip(prompts, ims):
            one = proc([p], [im])
            alone.append(proc.batch_decode(model.generate(**one, max_new_tokens=6, do_sample=False)[
                :, one["input_ids"].shape[1]:])[0])
            # the reference's way: inputs_embeds computed up front
            embeds = model.get_base_model().embed_inputs(one["input_ids"], one["pixel_values"])
            via_embeds = model.generate(inputs_embeds=embeds, attention_mask=one["attention_mask"], max_new_tokens=6,
                                        do_sample=False)
            assert proc.batch_decode(via_embeds)[0] == alone[-1]
    assert together == alone
    assert together[0] != together[1]  # the tiny model is not input-blind


def test_tiny_save_reload_reproduces_logits(tmp_path):
    from pfmvg_plugin.models.minigptv2 import (
        MiniGPTv2ForConditionalGeneration,
        MiniGPTv2Processor,
        build_tiny_minigptv2,
    )

    d = build_tiny_minigptv2(tmp_path / "tiny")
    again = build_tiny_minigptv2(tmp_path / "tiny2")
    assert (d / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()  # deterministic
    model = MiniGPTv2ForConditionalGeneration.from_pretrained(d).eval()
    proc = MiniGPTv2Processor.from_pretrained(d)
    batch = proc([proc.format_prompt(INSTRUCTIONS[0])], images(1))
    model.save_pretrained(tmp_path / "resaved")
    reloaded = MiniGPTv2ForConditionalGeneration.from_pretrained(tmp_path / "resaved").eval()
    with torch.no_grad():
        a, b = model(**batch).logits, reloaded(**batch).logits
    assert torch.equal(a, b)
    from transformers import AutoModelForImageTextToText

    assert type(AutoModelForImageTextToText.from_pretrained(d)) is MiniGPTv2ForConditionalGeneration


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    from pfmvg_plugin.models.minigptv2 import (
        MiniGPTv2ForConditionalGeneration,
        MiniGPTv2Processor,
        build_tiny_minigptv2,
    )

    d = build_tiny_minigptv2(tmp_path / "tiny", text_layers=2)
    proc = MiniGPTv2Processor.from_pretrained(d)
    batch = dict(proc([proc.format_prompt(INSTRUCTIONS[0])], images(1)))
    batch["labels"] = batch["input_ids"].masked_fill(batch["input_ids"] == proc.image_token_index, -100)
    grads = []
    for checkpointing in (False, True):
        model = MiniGPTv2ForConditionalGeneration.from_pretrained(d).train()
        model.vision_model.requires_grad_(False)
        model.ln_vision.requires_grad_(False)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model(**batch).loss.backward()
        grads.append(model.llama_proj.weight.grad.clone())
        assert model.vision_model.patch_embed.proj.weight.grad is None
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_real_7b_parameter_count_on_meta_device():
    from pfmvg_plugin.models.minigptv2.meta import build_meta_minigptv2_7b, count_minigptv2_parameters

    model = build_meta_minigptv2_7b()  # LoRA r64 / alpha 16 / q,v + llama_proj: the papers' setting
    counts = count_minigptv2_parameters(model)
    print("MiniGPT-v2 7B on meta:", counts)
    assert counts["lora"] == 32 * 2 * 64 * (4096 + 4096) == 33_554_432
    assert counts["llama_proj"] == 5632 * 4096 + 4096 == 23_072_768
    assert counts["trainable"] == 56_627_200
    assert counts["language_model"] == 6_738_415_616  # Llama-2-7B
    assert 0.98e9 < counts["vision"] < 1.0e9  # EVA ViT-g/14, 39 blocks (+ ln_vision)
    assert all(p.device.type == "meta" for p in model.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".language_model." in n or "llama_proj" in n for n in trainable)
