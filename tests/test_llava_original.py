"""``pfmvg convert llava`` / ``convert llava-lora`` / ``export llava``: original LLaVA-1.5 and LLaVA-Med v1.5
checkpoints (tiny, random, in the exact release layouts) against references written here from the raw tensors:
pixels (expand2square with the CLIP-mean fill, 336 px), tokens (the original's chunked tokenisation around
``<image>``), logits (CLIP layer -2 without CLS, Linear-GELU-Linear, features spliced at the image), LoRA merges, and
convert -> export -> convert. All but the DeepSpeed + lmms-eval run are in the lowest-versions subset too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pfmvg_plugin.models.checkpoint_io import ConversionError, UnsafePickleError, iter_tensors  # noqa: E402
from pfmvg_plugin.models.llava_original.convert import convert_llava, convert_llava_lora  # noqa: E402
from pfmvg_plugin.models.llava_original.export import export_llava  # noqa: E402
from pfmvg_plugin.models.llava_original.tiny import write_tiny_lora, write_tiny_original  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
# the conversation formats as LLaVA's conversation.py writes them (vicuna_v1: sep " ", sep2 "</s>"; mistral_instruct:
# llama_2 style, empty system)
PROMPTS = {"llama": SYSTEM + " USER: <image>\n{q} ASSISTANT:", "mistral": "[INST] <image>\n{q} [/INST]"}
ANSWERS = {"llama": " {a}</s>", "mistral": " {a} </s>"}
SENTINEL = -200  # the original's IMAGE_TOKEN_INDEX


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """LLaVA-Med (Mistral, CLIP inside, 2 safetensors shards + index) and LLaVA-1.5 (Llama, CLIP apart, .bin)."""
    root = tmp_path_factory.mktemp("llava_original")
    med = write_tiny_original(root / "llava-med-v1.5-mistral-tiny", arch="mistral", vision="checkpoint",
                              fmt="safetensors", shards=2)
    v15 = write_tiny_original(root / "llava-v1.5-tiny", arch="llama", vision="separate", fmt="bin")
    return {
        "mistral": {**med, "out": convert_llava(med["ckpt"], root / "conv-med", dtype="float32")},
        "llama": {**v15, "out": convert_llava(v15["ckpt"], root / "conv-v15", vision_tower=v15["clip"],
                                              dtype="float32")},
    }


def gray_portrait() -> Image.Image:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:300, 0:200]
    return Image.fromarray(((x + 2 * y) % 256 * 0.7 + rng.random((300, 200)) * 70).astype("uint8"), mode="L")


def reference_pixels(image: Image.Image) -> torch.Tensor:
    """LLaVA-1.5's ``image_aspect_ratio: pad``: RGB, expand2square with int(255 * mean), 336 px bicubic, CLIP norm."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in CLIP_MEAN))
    canvas.paste(rgb, ((side - w) // 2, (side - h) // 2))
    arr = (np.asarray(canvas.resize((336, 336), Image.BICUBIC), dtype=np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]


def original_ids(ckpt: Path, text: str) -> list[int]:
    """``tokenizer_image_token``: BOS, then the pieces around ``<image>`` encoded one at a time (``</s>`` is the EOS
    id, as the slow tokenizer splits special tokens), joined by the sentinel."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    ids = [sp.bos_id()]
    for i, piece in enumerate(text.split("<image>")):
        if i:
            ids.append(SENTINEL)
        for j, part in enumerate(piece.split("</s>")):
            if j:
                ids.append(sp.eos_id())
            ids.extend(sp.encode(part) if part else [])
    return ids


def collapse(ids: list[int], image_id: int) -> list[int]:
    """Our input ids with the run of image placeholders folded back into the sentinel."""
    out: list[int] = []
    for i in ids:
        if i == image_id:
            if not out or out[-1] != SENTINEL:
                out.append(SENTINEL)
        else:
            out.append(i)
    return out


def reference_logits(ckpt: Path, clip_dir: Path | None, pixels: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """The original model's forward, from its raw tensors and config.json."""
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
    )

    raw = json.loads((ckpt / "config.json").read_text())
    state = dict(iter_tensors(ckpt))
    if clip_dir is not None:
        vision = {k[len("vision_model."):]: v for k, v in iter_tensors(clip_dir)}
        vcfg = CLIPVisionConfig.from_pretrained(clip_dir)
    else:
        prefix = "model.vision_tower.vision_tower.vision_model."
        vision = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        vcfg = CLIPVisionConfig(hidden_size=raw["mm_hidden_size"], intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=1, image_size=336, patch_size=14, hidden_act="quick_gelu")
    clip = CLIPVisionModel(vcfg).eval()
    getattr(clip, "vision_model", clip).load_state_dict(vision)
    hidden = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[raw["mm_vision_select_layer"]][:, 1:]
    feats = F.linear(F.gelu(F.linear(hidden, state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"])),
                     state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"])[0]
    fields = {k: raw[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                  "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta",
                                  "max_position_embeddings", "tie_word_embeddings")}
    lm = (MistralForCausalLM(MistralConfig(**fields, sliding_window=None)) if "mistral" in raw["model_type"]
          else LlamaForCausalLM(LlamaConfig(**fields))).eval()
    lm.load_state_dict({k: v for k, v in state.items() if not k.startswith(("model.mm_projector", "model.vision_"))})
    pieces, text = [], []
    for i in ids + [None]:
        if i is None or i == SENTINEL:
            if text:
                pieces.append(lm.model.embed_tokens(torch.tensor(text)))
                text = []
            if i == SENTINEL:
                pieces.append(feats)
        else:
            text.append(i)
    return lm(inputs_embeds=torch.cat(pieces)[None]).logits[0]


@pytest.mark.lowest
@pytest.mark.parametrize("arch", ["mistral", "llama"])
def test_eval_inputs_and_logits_equal_the_original_forward(ckpts, arch):
    from helpers_eval import inputs_to_generate
    from transformers import LlavaForConditionalGeneration

    from pfmvg_plugin.lmms.llava_model import PfmvgLlava

    c = ckpts[arch]
    image = gray_portrait()
    seen = inputs_to_generate(PfmvgLlava, c["out"].out, image)
    ref_pix = reference_pixels(image)
    assert torch.allclose(seen["pixel_values"].float(), ref_pix, atol=1e-4), \
        (seen["pixel_values"].float() - ref_pix).abs().max()
    ref_ids = original_ids(c["ckpt"], PROMPTS[arch].format(q="cardiomegaly"))
    image_id = c["out"].report["vocab"]["image_token_id"]
    ours = seen["input_ids"][0].tolist()
    assert collapse(ours, image_id) == ref_ids
    assert ours.count(image_id) == 576  # 336 px / patch 14, CLS dropped

    model = LlavaForConditionalGeneration.from_pretrained(c["out"].out, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(input_ids=seen["input_ids"], pixel_values=seen["pixel_values"].float()).logits[0]
        want = reference_logits(c["ckpt"], c["clip"], ref_pix, ref_ids)
    assert got.shape[0] == want.shape[0]
    assert torch.allclose(got[:, : want.shape[1]], want, atol=1e-4), (got[:, : want.shape[1]] - want).abs().max()


@pytest.mark.lowest
@pytest.mark.parametrize("arch", ["mistral", "llama"])
def test_training_example_is_the_original_conversation(ckpts, arch):
    from transformers import AutoProcessor

    from pfmvg_plugin.families import get_family

    c = ckpts[arch]
    family = get_family("llava")
    family.attach(None, AutoProcessor.from_pretrained(c["out"].out))
    transform = family.image_transform()
    assert transform.mode == "pad" and transform.fill == (122, 116, 104)
    assert transform.codec("llava").pad_to_square  # boxes in the padded square the model was trained on
    image = gray_portrait()
    example = family.build_example(transform(image.convert("RGB")), "cardiomegaly", "[0.10, 0.20, 0.50, 0.70]")
    assert torch.allclose(example["pixel_values"][None], reference_pixels(image), atol=1e-4)
    full = PROMPTS[arch].format(q="cardiomegaly") + ANSWERS[arch].format(a="[0.10, 0.20, 0.50, 0.70]")
    image_id = c["out"].report["vocab"]["image_token_id"]
    assert collapse(example["input_ids"].tolist(), image_id) == original_ids(c["ckpt"], full)
    n_answer = int((example["labels"] != -100).sum())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(c["ckpt"] / "tokenizer.model"))
    answer_part = ANSWERS[arch].format(a="[0.10, 0.20, 0.50, 0.70]").replace("</s>", "")
    assert n_answer == len(original_ids(c["ckpt"], PROMPTS[arch].format(q="cardiomegaly") + answer_part)) \
        - len(original_ids(c["ckpt"], PROMPTS[arch].format(q="cardiomegaly"))) + 1  # + EOS
    assert sp.eos_id() == example["input_ids"][-1]


@pytest.mark.lowest
def test_pfmvg_llava_decodes_the_converted_model_in_the_padded_square(ckpts):
    from pfmvg_plugin.lmms import state
    from pfmvg_plugin.lmms.llava_model import PfmvgLlava

    state.reset()
    try:
        lm = PfmvgLlava(pretrained=str(ckpts["mistral"]["out"].out), max_new_tokens=1)
        assert lm.image_resize == "pad" and lm.convention == "llava"
        state.note_prompt_convention("llava")
        codec = state.answer_codec()
        assert codec.pad_to_square
        # a 200 x 300 portrait sits 50 px in from the left of its 300-px square: 0.25 of the square is 75 - 50 px
        (box,) = codec.decode("[0.25, 0.0, 0.75, 1.0]", (200, 300)).boxes
        assert box == pytest.approx((25.0, 0.0, 175.0, 300.0), abs=1e-6)
    finally:
        state.reset()


@pytest.mark.lowest
def test_conversion_report_and_files(ckpts):
    med = ckpts["mistral"]["out"]
    report = json.loads((med.out / "pfmvg_conversion.json").read_text())
    assert report["architecture"] == "LlavaMistralForCausalLM" and report["template"] == "mistral_instruct"
    assert report["vision_weights"].startswith("from the checkpoint")
    assert report["keys"]["missing"] == [] and report["keys"]["dropped"] == []
    assert report["keys"]["renamed"]["model.mm_projector.0.weight"] == "model.multi_modal_projector.linear_1.weight"
    assert report["keys"]["renamed"][
        "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight"] == \
        "model.vision_tower.vision_model.pre_layrnorm.weight"
    assert report["prompt_check"]["tokens_equal"] is True
    cfg = json.loads((med.out / "config.json").read_text())
    assert cfg["text_config"]["model_type"] == "mistral" and cfg["vision_feature_layer"] == -2
    assert cfg["vision_feature_select_strategy"] == "default" and cfg["projector_hidden_act"] == "gelu"
    assert cfg["text_config"]["vocab_size"] % 64 == 0
    assert (med.out / "llava_original" / "tokenizer.model").is_file()
    v15 = json.loads((ckpts["llama"]["out"].out / "pfmvg_conversion.json").read_text())
    assert v15["vision_weights"].startswith("from --vision-tower") and v15["template"] == "vicuna_v1"
    clip_keys = sorted(k for k, _ in iter_tensors(ckpts["llama"]["clip"]))
    assert set(clip_keys) <= set(v15["keys"]["read"])  # CLIP's own names, as read
    assert v15["keys"]["renamed"]["vision_model.pre_layrnorm.weight"] == \
        "model.vision_tower.vision_model.pre_layrnorm.weight"
    assert "lm_head.weight" in v15["keys"]["read"] and "lm_head.weight" not in v15["keys"]["renamed"]
    with pytest.raises(ValueError, match="already a transformers LLaVA"):
        convert_llava(med.out, med.out.parent / "again")


@pytest.mark.lowest
def test_dropped_keys_are_listed_and_missing_vision_is_a_clear_error(ckpts, tmp_path):
    import shutil

    src = ckpts["llama"]["ckpt"]
    with pytest.raises(ConversionError, match="--vision-tower"):
        convert_llava(src, tmp_path / "x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    # an old export's rotary buffer is read and dropped, and says so
    copy = tmp_path / "llava-extra"
    shutil.copytree(src, copy)
    state = torch.load(copy / "pytorch_model.bin", weights_only=True)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(state, copy / "pytorch_model.bin")
    out = convert_llava(copy, tmp_path / "conv", vision_tower=ckpts["llama"]["clip"])
    assert out.report["keys"]["dropped"] == ["model.layers.0.self_attn.rotary_emb.inv_freq"]
    assert load_file(tmp_path / "conv" / "model.safetensors")["lm_head.weight"].dtype == torch.float16


@pytest.mark.lowest
def test_an_unconverted_checkpoint_is_refused_with_the_command_to_run(ckpts):
    from pfmvg_plugin.families import family_for_checkpoint, get_family

    for arch in ("mistral", "llama"):
        with pytest.raises(ValueError, match="pfmvg convert llava --ckpt"):
            family_for_checkpoint(ckpts[arch]["ckpt"])  # pfmvg_llava asks this first
        with pytest.raises(ValueError, match="pfmvg convert llava --ckpt"):
            get_family("llava").load(str(ckpts[arch]["ckpt"]), "float32")  # the training recipe's load
    assert family_for_checkpoint(ckpts["mistral"]["out"].out) == "llava"


@pytest.mark.lowest
def test_refusals_say_what_to_do(ckpts, tmp_path):
    import argparse
    import shutil

    copy = tmp_path / "llava-pickle"
    shutil.copytree(ckpts["llama"]["ckpt"], copy)
    state = torch.load(copy / "pytorch_model.bin", weights_only=True)
    torch.save({"state": state, "args": argparse.Namespace(lr=1)}, copy / "pytorch_model.bin")
    with pytest.raises(UnsafePickleError, match="--trust-pickle"):
        convert_llava(copy, tmp_path / "a", vision_tower=ckpts["llama"]["clip"])
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "mm_projector_type": "linear"}))
    with pytest.raises(ValueError, match="mm_projector_type"):
        convert_llava(copy, tmp_path / "b")
    with pytest.raises(ConversionError, match="not empty"):
        convert_llava(ckpts["llama"]["ckpt"], ckpts["llama"]["out"].out, vision_tower=ckpts["llama"]["clip"])
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConversionError, match="not an earlier output"):
        convert_llava(ckpts["mistral"]["ckpt"], precious, overwrite=True)
    assert (precious / "thesis.tex").is_file()
    first = convert_llava(ckpts["mistral"]["ckpt"], tmp_path / "conv", dtype="bfloat16")
    again = convert_llava(ckpts["mistral"]["ckpt"], tmp_path / "conv", overwrite=True)  # an earlier output: replaced
    assert first.out == again.out and json.loads((again.out / "pfmvg_conversion.json").read_text())["dtype"] == \
        "float16"


@pytest.mark.lowest
def test_convert_export_convert_gives_the_same_weights(ckpts, tmp_path):
    c = ckpts["mistral"]
    with pytest.raises(ConversionError, match="mistral"):
        export_llava(c["out"].out, tmp_path / "llava-med-finetuned")  # the original loader would build Llama
    export_llava(c["out"].out, tmp_path / "llava-mistral-half", dtype="float16")  # loaded in float16 too
    assert all(v.dtype == torch.float16 for _, v in iter_tensors(tmp_path / "llava-mistral-half"))
    exported = export_llava(c["out"].out, tmp_path / "llava-mistral-export", dtype="float32")
    assert json.loads((tmp_path / "llava-mistral-export" / "config.json").read_text())["architectures"] == [
        "LlavaMistralForCausalLM"]
    original = dict(iter_tensors(c["ckpt"]))
    back = dict(iter_tensors(tmp_path / "llava-mistral-export"))
    assert set(back) == set(original) and exported["tensors"] == len(original)
    assert all(torch.equal(back[k], original[k]) for k in original)  # the original layout, bit for bit
    again = convert_llava(tmp_path / "llava-mistral-export", tmp_path / "conv2", dtype="float32")
    a, b = load_file(c["out"].out / "model.safetensors"), load_file(again.out / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.lowest
def test_llava_lora_output_converts_and_merges_like_the_original(ckpts, tmp_path):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    c = ckpts["llama"]
    lora = write_tiny_lora(tmp_path / "llava-v1.5-tiny-lora", c["ckpt"], r=4, alpha=8)
    config = json.loads((lora / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(ConversionError, match="ranks"):
        convert_llava_lora(lora, c["out"].out, tmp_path / "bad")
    (lora / "adapter_config.json").write_text(json.dumps(config))
    result = convert_llava_lora(lora, c["out"].out, tmp_path / "adapter")
    assert result["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert result["modules_to_save"] == ["multi_modal_projector"]
    record = json.loads((tmp_path / "adapter" / "pfmvg_training.json").read_text())
    assert record["image_resize"] == "pad" and record["box_codec"] == "llava_pad"
    from helpers_eval import inputs_to_generate

    from pfmvg_plugin.lmms.llava_model import PfmvgLlava

    seen = inputs_to_generate(PfmvgLlava, c["out"].out, gray_portrait(), adapter=str(tmp_path / "adapter"))
    image_id = c["out"].report["vocab"]["image_token_id"]
    assert collapse(seen["input_ids"][0].tolist(), image_id) == original_ids(
        c["ckpt"], PROMPTS["llama"].format(q="cardiomegaly"))  # the base's processor and template

    # the original's merge: W + alpha / r * B @ A on the language model, the projector from non_lora_trainables
    merged_ckpt = tmp_path / "llava-merged-reference"
    merged_ckpt.mkdir()
    for name in ("config.json", "tokenizer.model"):
        (merged_ckpt / name).write_bytes((c["ckpt"] / name).read_bytes())
    state = dict(iter_tensors(c["ckpt"]))
    lora_state = torch.load(lora / "adapter_model.bin", weights_only=True)
    for key in list(state):
        a = lora_state.get(f"base_model.model.{key[:-len('.weight')]}.lora_A.weight")
        if a is not None:
            b = lora_state[f"base_model.model.{key[:-len('.weight')]}.lora_B.weight"]
            state[key] = state[key] + (8 / 4) * b @ a
    for key, value in torch.load(lora / "non_lora_trainables.bin", weights_only=True).items():
        state[key[len("base_model.model."):]] = value
    torch.save(state, merged_ckpt / "pytorch_model.bin")

    image = gray_portrait()
    ids = original_ids(c["ckpt"], PROMPTS["llama"].format(q="where is the effusion?"))
    with torch.no_grad():
        want = reference_logits(merged_ckpt, c["clip"], reference_pixels(image), ids)
        model = LlavaForConditionalGeneration.from_pretrained(c["out"].out, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, tmp_path / "adapter").merge_and_unload().eval()
        image_id = c["out"].report["vocab"]["image_token_id"]
        expanded = [t for i in ids for t in ([image_id] * 576 if i == SENTINEL else [i])]
        got = model(input_ids=torch.tensor([expanded]), pixel_values=reference_pixels(image)).logits[0]
    assert torch.allclose(got[:, : want.shape[1]], want, atol=1e-4), (got[:, : want.shape[1]] - want).abs().max()

    # and export merges it into the original layout
    export_llava(c["out"].out, tmp_path / "llava-v1.5-merged", adapter=tmp_path / "adapter", dtype="float32")
    back = dict(iter_tensors(tmp_path / "llava-v1.5-merged"))
    for key in ("model.layers.1.mlp.down_proj.weight", "model.mm_projector.2.bias"):
        assert torch.allclose(back[key], state[key], atol=1e-6), key


@pytest.mark.slow  # two subprocesses: a DeepSpeed launch and an lmms-eval run (~2 min on 2 cores)
def test_converted_llava_med_fine_tunes_under_zero2_and_scores_in_lmms_eval(ckpts, tmp_path):
    """The shipped LLaVA-Med config through ``deepspeed recipes/finetune_lora.py`` (ZeRO-2, CPU), then the adapter
    through the real ``lmms-eval`` CLI on synthcxr_grounding, boxes decoded in the padded square."""
    import os
    import subprocess
    import sys

    from helpers_eval import task_results

    from pfmvg_plugin.data.synth import generate_synthcxr
    from pfmvg_plugin.training.dist import free_port

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "data"
    generate_synthcxr(data / "synthcxr", n=40, seed=1)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                                              "MASTER_ADDR", "MASTER_PORT", "PFMVG_NO_TASK_HOOK")}
    env.update(OMP_NUM_THREADS="1", PFMVG_NO_PROGRESS="1", DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PFMVG_DATA_ROOT=str(data), LMMS_EVAL_DATASETS_CACHE=str(tmp_path / "hf"),
               TORCH_EXTENSIONS_DIR=str(Path(sys.prefix) / "torch_extensions"))
    model = ckpts["mistral"]["out"].out
    run = tmp_path / "run"
    train = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "1", "--master_port", str(free_port()),
             str(root / "recipes" / "finetune_lora.py"), "--config",
             str(root / "recipes" / "configs" / "llava_med_mscxr.yaml"), f"model.path={model}",
             "model.gradient_checkpointing=false", f"data.datasets.0.path={data / 'synthcxr'}", "data.num_workers=0",
             f"train.output_dir={run}", "train.max_steps=2", "train.micro_batch_size=1", "train.grad_accum=1",
             "train.save_steps=0", "train.report_to=none", "lora.r=4"]
    proc = subprocess.run(train, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((run / "adapter" / "pfmvg_training.json").read_text())
    assert record["image_resize"] == "pad" and record["zero_stage"] == 2 and record["engine"] == "deepspeed"

    out = tmp_path / "eval"
    proc = subprocess.run([str(Path(sys.executable).parent / "lmms-eval"), "--model", "pfmvg_llava", "--model_args",
                           f"pretrained={model},adapter={run / 'adapter'}", "--tasks", "synthcxr_grounding",
                           "--batch_size", "2", "--limit", "3", "--output_path", str(out), "--log_samples"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    res = task_results(out, "synthcxr_grounding", proc)
    assert res["generation_error_rate,none"] == 0.0 and res["prompt_convention,none"] == "llava"
    (samples,) = out.rglob("*_samples_synthcxr_grounding.jsonl")
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(lines) == 3
    assert all(line["grounding_sample"]["convention"] == "llava" for line in lines)
