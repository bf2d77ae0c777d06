"""Stage-0 vision pretraining (``recipes/pretrain_vision.py``): dense targets checked against torchvision's box
overlap, only the vision tower changes, the tower really learns where boxes are, and the script's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from torchvision.ops import box_area, box_iou  # noqa: E402

from pfmvg_plugin.training.toy import TEST_TINY_LLAVA, toy_config, write_toy_grounding  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]


def vision_config(toy, out, steps=3, **train):
    return toy_config("tiny-llava", toy, out, model={"tiny": {**TEST_TINY_LLAVA, "vision_position_init": "sincos"}},
                      train={"max_steps": steps, "micro_batch_size": 8, "lr": 2e-3, "log_steps": 1, **train})


def test_dense_targets_match_torchvision_overlaps(tiny, tmp_path):
    from transformers import AutoProcessor

    from pfmvg_plugin.families import get_family
    from pfmvg_plugin.training.config import DataConfig, DatasetSpec
    from pfmvg_plugin.training.data import TrainingData
    from pfmvg_plugin.training.vision_pretrain import dense_targets

    toy = write_toy_grounding(tmp_path / "toy", n=9)
    backbone = get_family("llava")
    backbone.attach(None, AutoProcessor.from_pretrained(tiny))
    data = TrainingData(DataConfig(datasets=[DatasetSpec(path=str(toy))]), backbone, seed=0)
    grid = 4
    t = dense_targets(data, grid)
    assert t.categories == ["finding"] and t.pixels.shape == (9, 3, 32, 32)
    cells = torch.tensor([[gx / grid, gy / grid, (gx + 1) / grid, (gy + 1) / grid]
                          for gy in range(grid) for gx in range(grid)])
    for row, rec in enumerate(data.sources[0].records):
        w, h = rec["width"], rec["height"]
        rel = torch.tensor(rec["boxes"][0]) / torch.tensor([w, h, w, h])
        overlap = box_iou(cells, rel[None])[:, 0] * (box_area(cells) + box_area(rel[None])) > 1e-9
        assert torch.equal(t.cover[row, :, 0].bool(), overlap), rec["id"]
        centre = ((rel[:2] + rel[2:]) / 2 * grid).long().clamp(max=grid - 1)
        assert t.centre[row, :, 0].nonzero().flatten().tolist() == [int(centre[1] * grid + centre[0])]
        assert torch.allclose(t.corners[row, int(centre[1] * grid + centre[0])], rel, atol=1e-6)
        assert t.present[row, 0] == 1 and torch.allclose(t.boxes[row, 0], rel, atol=1e-6)


def test_only_the_vision_tower_changes_and_the_model_is_saved(tmp_path):
    from pfmvg_plugin.training.vision_pretrain import pretrain_vision_tower

    toy = write_toy_grounding(tmp_path / "toy", n=12)
    summary = pretrain_vision_tower(vision_config(toy, tmp_path / "run"))
    base = load_file(tmp_path / "run" / "base_model" / "model.safetensors")
    trained = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert set(base) == set(trained)
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all("vision_tower." in k for k in changed)
    untouched = {k for k in set(base) - changed if "vision_tower." in k}
    assert all("post_layernorm" in k for k in untouched)  # LLaVA reads the tower before its final norm
    record = json.loads((tmp_path / "run" / "model" / "pfmvg_vision_pretrain.json").read_text())
    assert record == summary and record["steps"] == 3 and record["images"] == 12
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)


def test_the_tower_learns_where_the_boxes_are(tmp_path):
    """On held-out images, the centre head finds the box's patch far above chance after a short run."""
    from pfmvg_plugin.training.config import DataConfig, DatasetSpec
    from pfmvg_plugin.training.vision_pretrain import pretrain_vision_tower

    toy = write_toy_grounding(tmp_path / "toy", n=96, sizes=((32, 32),))
    val = write_toy_grounding(tmp_path / "val", n=48, seed=1, split="val", sizes=((32, 32),))
    summary = pretrain_vision_tower(vision_config(toy, tmp_path / "run", steps=150, log_steps=50),
                                    val_data=DataConfig(datasets=[DatasetSpec(path=str(val), split="val")]))
    assert summary["chance_centre_hit_rate"] == 1 / 16
    assert summary["val_centre_hit_rate"] >= 0.5, summary


def test_script_help_and_a_dataset_without_boxes_is_a_clear_error(tmp_path):
    from pfmvg_plugin.training.toy import write_toy_text

    script = str(ROOT / "recipes" / "pretrain_vision.py")
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--val" in proc.stdout and "dense detection" in proc.stdout
    text = write_toy_text(tmp_path / "vqa", task="vqa", n=4)
    cfg = tmp_path / "vision.yaml"
    cfg.write_text(f"model: {{backbone: llava, path: tiny-llava, tiny: {json.dumps(TEST_TINY_LLAVA)}}}\n"
                   f"data: {{datasets: [{{path: {text}, task: vqa}}]}}\n"
                   f"train: {{output_dir: {tmp_path / 'run'}, max_steps: 2}}\n")
    proc = subprocess.run([sys.executable, script, "--config", str(cfg)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "needs grounding records" in proc.stderr, proc.stderr[-2000:]
