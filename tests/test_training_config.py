"""Training config: validation names the bad key; overrides; shipped YAMLs and DeepSpeed JSONs resolve; --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pfmvg_plugin.training.config import ConfigError, apply_overrides, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
PLAIN_TORCH_CONFIGS = {"demo_vision.yaml"}
DS_JSONS = sorted((ROOT / "recipes" / "ds").glob("*.json"))


def minimal(**sections) -> dict:
    data = {"model": {"path": "some/model"}, "data": {"datasets": [{"path": "ds1"}]}}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return data


def error_of(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value


def test_minimal_config_gets_defaults():
    cfg = config_from_dict(minimal())
    assert cfg.model.backbone == "llava" and cfg.lora.r == 16 and cfg.train.micro_batch_size == 4
    assert cfg.data.hflip == 0.0 and cfg.data.on_bad_record == "error" and cfg.deepspeed is None


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (minimal(train={"learning_rate": 1e-4}), "train.learning_rate", "unknown key"),
        (minimal(train={"lrr": 1e-4}), "train.lrr", "did you mean 'lr'"),
        (minimal(lora={"r": "sixteen"}), "lora.r", "expected an integer"),
        (minimal(lora={"use_dora": "yes"}), "lora.use_dora", "true/false"),
        (minimal(train={"lr": "fast"}), "train.lr", "expected a number"),
        (minimal(train={"precision": "fp8"}), "train.precision", "one of"),
        (minimal(train={"min_lr": -1e-6}), "train.min_lr", "must be in [0, train.lr"),
        (minimal(train={"lr": 1e-5, "min_lr": 8e-5}), "train.min_lr", "got 8e-05"),
        (minimal(train={"min_lr": "low"}), "train.min_lr", "expected a number"),
        (minimal(data={"datasets": [{"path": "a", "ratio": -0.5}]}), "data.datasets[0].ratio", "positive"),
        (minimal(data={"datasets": [{"path": "a", "ratio": 0}]}), "data.datasets[0].ratio", "positive"),
        (minimal(data={"datasets": [{"path": "a", "ratio": "lots"}]}), "data.datasets[0].ratio", "number"),
        (minimal(data={"datasets": [{"path": "a", "ratio": 0.5}, {"path": "b"}]}), "data.datasets[1].ratio",
         "every dataset"),
        (minimal(data={"datasets": [{"path": "a", "task": "segment"}]}), "data.datasets[0].task", "refer"),
        (minimal(data={"datasets": [{"path": "a", "weight": 2}]}), "data.datasets[0].weight", "did you mean 'ratio'"),
        (minimal(data={"datasets": []}), "data.datasets", "at least one"),
        (minimal(data={"hflip": 2}), "data.hflip", "probability"),
        (minimal(data={"on_bad_record": "ignore"}), "data.on_bad_record", "one of"),
        (minimal(data={"convention": "gpt9"}), "data.convention", "one of"),
        (minimal(model={"path": ""}), "model.path", "required"),
        (minimal(deepspeed=3), "deepspeed", "JSON path"),
        ({"model": {"path": "m"}, "data": {"datasets": [{"path": "a"}]}, "optimizer": {}}, "optimizer", "unknown"),
        (minimal(train="fast"), "train", "mapping"),
    ],
)
def test_validation_names_the_bad_key(data, key, words):
    err = error_of(data)
    assert err.key == key, str(err)
    assert str(err).startswith(key + ":")
    assert words in str(err)


def test_yaml_float_without_dot_and_ratios_are_weights():
    cfg = config_from_dict(minimal(train={"lr": "2e-4"}, data={"datasets": [{"path": "a", "ratio": 7},
                                                                             {"path": "b", "ratio": 3}]}))
    assert cfg.train.lr == pytest.approx(2e-4)
    assert [d.ratio for d in cfg.data.datasets] == [7.0, 3.0]


def test_overrides_set_nested_keys_and_are_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal(data={"datasets": [{"path": "a", "ratio": 1}, {"path": "b", "ratio": 1}]})))
    cfg = load_config(path, ["train.lr=1e-5", "data.datasets.1.ratio=3", "lora.target_modules=[q_proj]",
                             "deepspeed=zero3.json", "train.max_steps=null"])
    assert cfg.train.lr == pytest.approx(1e-5) and cfg.data.datasets[1].ratio == 3.0
    assert cfg.lora.target_modules == ["q_proj"] and cfg.deepspeed == "zero3.json" and cfg.train.max_steps is None
    assert cfg.config_dir == str(tmp_path)
    for plain in ("deepspeed=none", "deepspeed=null", "deepspeed=None"):  # README: `torchrun ... deepspeed=none`
        assert load_config(path, [plain]).deepspeed is None
    with pytest.raises(ConfigError, match=r"^train\.bogus: unknown key"):
        load_config(path, ["train.bogus=1"])
    with pytest.raises(ConfigError, match=r"data\.datasets\.5"):
        apply_overrides(minimal(), ["data.datasets.5.ratio=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(minimal(), ["train.lr"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate_and_their_deepspeed_json_resolves(path):
    from pfmvg_plugin.training.engine import resolve_ds_config

    cfg = load_config(path)
    if path.name in PLAIN_TORCH_CONFIGS:  # read by recipes/pretrain_vision.py: one process, no DeepSpeed
        assert cfg.deepspeed is None and cfg.train.max_steps
        return
    assert cfg.deepspeed
    ds = resolve_ds_config(cfg.deepspeed, cfg, world_size=2, precision="bf16")
    t = cfg.train
    assert ds["train_batch_size"] == t.micro_batch_size * t.grad_accum * 2
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False


@pytest.mark.parametrize("path", DS_JSONS, ids=lambda p: p.name)
def test_shipped_deepspeed_jsons_resolve_without_auto(path):
    from pfmvg_plugin.training.engine import resolve_ds_config

    raw = json.loads(path.read_text())
    assert "auto" not in json.dumps(raw)
    cfg = config_from_dict(minimal(train={"micro_batch_size": 3, "grad_accum": 2, "max_grad_norm": 0.5}))
    ds = resolve_ds_config(str(path), cfg, world_size=4, precision="fp32")
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 24 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": False} and ds["zero_allow_untested_optimizer"] is True
    assert ds["zero_optimization"]["stage"] in (2, 3)
    if "offload" in path.name:
        assert ds["zero_force_ds_cpu_optimizer"] is False


def test_deepspeed_auto_is_filled_or_named():
    from pfmvg_plugin.training.engine import resolve_ds_config

    cfg = config_from_dict(minimal(train={"micro_batch_size": 2}))
    ds = resolve_ds_config({"train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": "auto"},
                            "zero_optimization": {"stage": 2}}, cfg, world_size=1, precision="fp32")
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["bf16"] == {"enabled": False}
    with pytest.raises(ConfigError, match=r"deepspeed\.zero_optimization\.reduce_bucket_size"):
        resolve_ds_config({"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}, cfg, 1, "fp32")
    with pytest.raises(ConfigError, match=r"^deepspeed: .*not found"):
        resolve_ds_config("no_such_ds.json", cfg, 1, "fp32")


def test_script_help_and_config_errors_exit_cleanly(tmp_path):
    script = ROOT / "recipes" / "finetune_lora.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "--resume" in out.stdout and "deepspeed --hostfile" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(lora={"rank": 8})))
    out = subprocess.run([sys.executable, str(script), "--config", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "lora.rank: unknown key (did you mean 'r'?)" in out.stderr
