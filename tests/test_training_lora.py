"""PEFT wiring on the tiny LLaVA with the bare-torch engine: LoRA on the language model only, projector trained and
saved, vision tower frozen, adapters that reload and reproduce the trained logits, DoRA, QLoRA errors, stages."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers_training import run
from safetensors.torch import load_file

from pfmvg_plugin.training.config import ConfigError
from pfmvg_plugin.training.toy import toy_config, write_toy_text
from pfmvg_plugin.training_record import SCHEMA_VERSION

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.lowest]










def base_state(tiny) -> dict:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_hits_the_language_model_only(tiny, toy, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.model import build_peft_model

    cfg = toy_config(tiny, toy, tmp_path, lora={"target_modules": ["q_proj", "v_proj"]})
    model, processor = build_peft_model(cfg, get_family("llava"), str(tiny), torch.float32)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(".language_model." in n for n in lora)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora} == {"q_proj", "v_proj"}
    assert any("multi_modal_projector.modules_to_save" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert {n for n in trainable if "lora_" not in n} == {n for n in trainable if "multi_modal_projector" in n}
    # What the regex avoids: plain module names also wrap the vision tower's attention.
    naive = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert any("vision_tower" in n and "lora_" in n for n, _ in naive.named_parameters())


def initial_trainable(cfg, tiny) -> dict:
    """The trainable tensors a run starts from (the trainer seeds before building the model, as here)."""
    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.model import build_peft_model
    from pfmvg_plugin.training.trainer import _seed_everything

    _seed_everything(cfg.train.seed)
    model, _ = build_peft_model(cfg, get_family("llava"), str(tiny), torch.float32)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_lora_step_changes_only_the_trainable_tensors(tiny, toy, tmp_path, monkeypatch):
    before = base_state(tiny)
    cfg = toy_config(tiny, toy, tmp_path, train={"max_steps": 2})
    init = initial_trainable(cfg, tiny)
    for key in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    res = run(cfg)
    # the launcher variables it filled in are gone: a later subprocess (lmms-eval) must not join this process group
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT"} & set(os.environ)
    model = res.engine.module
    after = {k: v for k, v in model.named_parameters()}
    changed_frozen, unchanged_trainable = [], []
    for name, p in after.items():
        if p.requires_grad:
            if torch.equal(init[name], p.detach()):
                unchanged_trainable.append(name)
        else:
            key = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
            key = key.replace(".original_module", "")
            if not torch.equal(before[key], p.detach()):
                changed_frozen.append(name)
    assert not changed_frozen
    assert not unchanged_trainable  # two steps: lora_B moves first, then lora_A
    assert len(res.losses) == 2 and all(loss > 0 for loss in res.losses)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > r["samples_per_s"] and r["lr"] > 0 for r in log)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_saved_adapter_reloads_and_reproduces_the_trained_logits(tiny, toy, tmp_path, use_dora):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    res = run(toy_config(tiny, toy, tmp_path, lora={"use_dora": use_dora, "dropout": 0.1}, train={"max_steps": 3}))
    adapter = res.adapter_dir
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    saved = load_file(adapter / "adapter_model.safetensors")
    assert any("multi_modal_projector" in k for k in saved)  # the projector travels with the adapter
    assert any("lora_magnitude_vector" in k for k in saved) == use_dora
    meta = json.loads((adapter / "pfmvg_training.json").read_text())
    assert meta["convention"] == "llava" and meta["box_codec"] == "llava" and meta["image_resize"] == "squash"
    assert meta["version"] == SCHEMA_VERSION  # a new record says which schema it was written in
    AutoProcessor.from_pretrained(adapter)  # processor saved beside

    trained = res.engine.module.eval()
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny), adapter).eval()
    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.data import TrainingData

    backbone = get_family("llava")
    backbone.attach(None, AutoProcessor.from_pretrained(tiny))
    data = TrainingData(res_cfg_data(toy), backbone, seed=0)
    batch = backbone.collate([data.example(0, i, 0, i) for i in range(3)])
    batch.pop("labels")
    with torch.no_grad():
        a, b = trained(**batch).logits, reloaded(**batch).logits
    base = AutoModelForImageTextToText.from_pretrained(tiny).eval()
    with torch.no_grad():
        c = base(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # and the adapter did change the model


def res_cfg_data(toy):
    from pfmvg_plugin.training.config import DataConfig, DatasetSpec

    return DataConfig(datasets=[DatasetSpec(path=str(toy))])


def test_qlora_on_cpu_is_a_clear_error(tiny, toy, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("QLoRA is allowed on a GPU")
    with pytest.raises(ConfigError, match=r"^model\.load_in_4bit: QLoRA .* needs a CUDA GPU"):
        run(toy_config(tiny, toy, tmp_path, model={"load_in_4bit": True}))


def test_unmatched_lora_targets_are_a_clear_error(tiny, toy, tmp_path):
    with pytest.raises(ConfigError, match=r"^lora\.target_modules: \[.no_such_proj.\] matched no module"):
        run(toy_config(tiny, toy, tmp_path, lora={"target_modules": ["no_such_proj"]}))


def test_stage_two_starts_from_the_stage_one_adapter(tiny, toy, tmp_path):
    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.model import build_peft_model

    captions = write_toy_text(tmp_path / "captions", task="report", n=8)
    stage1 = run(toy_config(tiny, captions, tmp_path / "stage1", lora={"r": 2, "alpha": 4},
                            data={"datasets": [{"path": str(captions), "task": "caption"}]}))
    cfg2 = toy_config(tiny, toy, tmp_path / "stage2", lora={"init_adapter": str(stage1.adapter_dir)})
    model, _ = build_peft_model(cfg2, get_family("llava"), str(tiny), torch.float32)
    saved = load_file(stage1.adapter_dir / "adapter_model.safetensors")
    params = {n.replace(".default", ""): p for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved) <= {n.replace("modules_to_save.", "") for n in params}
    for key, value in saved.items():
        name = key if key in params else key.replace("multi_modal_projector.", "multi_modal_projector.modules_to_save.")
        assert torch.equal(params[name].detach(), value), key
    assert all(p.shape[0] == 2 for n, p in params.items() if "lora_A" in n)  # rank from stage 1, not stage 2's yaml
    stage2 = run(cfg2)
    assert stage2.global_step == 3


def test_pfmvg_llava_loads_the_adapter_and_prompts_like_training(tiny, toy, tmp_path):
    """The evaluation model (lmms-eval ``pfmvg_llava adapter=DIR``) sees the trained model and the training prompt."""
    pytest.importorskip("lmms_eval")
    from transformers import AutoProcessor

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.lmms.llava_model import PfmvgLlava
    from pfmvg_plugin.prompts import build_prompt
    from pfmvg_plugin.training.data import TrainingData

    res = run(toy_config(tiny, toy, tmp_path, train={"max_steps": 2}))
    evaluator = PfmvgLlava(pretrained=str(tiny), adapter=str(res.adapter_dir), dtype="float32", device="cpu")
    backbone = get_family("llava")
    backbone.attach(None, AutoProcessor.from_pretrained(tiny))
    instruction = build_prompt("refer", "llava", phrase="left pleural effusion")
    assert evaluator.build_prompt(instruction, 1) == backbone.prompt_and_answer(instruction, "[0.1, 0.2, 0.3, 0.4]")[0]
    data = TrainingData(res_cfg_data(toy), backbone, seed=0)
    batch = backbone.collate([data.example(0, i, 0, i) for i in range(2)])
    batch.pop("labels")
    with torch.no_grad():
        ours = res.engine.module.eval()(**batch).logits
        theirs = evaluator.model(**batch).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_tiny_llava_path_builds_the_base_model_and_report_to_is_checked(toy, tmp_path):
    import importlib.util

    from pfmvg_plugin.training.toy import TEST_TINY_LLAVA

    cfg = toy_config("tiny-llava", toy, tmp_path, model={"tiny": TEST_TINY_LLAVA}, train={"max_steps": 1})
    res = run(cfg)
    assert (tmp_path / "base_model" / "config.json").is_file() and res.global_step == 1
    assert json.loads((res.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tmp_path / "base_model")
    tb = toy_config(tmp_path / "base_model", toy, tmp_path / "tb", train={"max_steps": 1, "report_to": "tensorboard"})
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match=r"^train\.report_to: tensorboard is not installed"):
            run(tb)
    else:
        run(tb)
        assert list((tmp_path / "tb" / "tensorboard").iterdir())
