"""The learning-rate schedule: warm-up, then cosine / linear down to ``train.min_lr`` (scaled by lr multipliers)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from pfmvg_plugin.training.config import config_from_dict  # noqa: E402
from pfmvg_plugin.training.engine import build_optimizer, build_scheduler  # noqa: E402

TOTAL, WARMUP = 20, 4


def schedule(total: int = TOTAL, **train) -> list[list[float]]:
    """Each group's lr after 0..total scheduler steps (the trainer logs the lr after each step)."""
    cfg = config_from_dict({"model": {"path": "m"}, "data": {"datasets": [{"path": "a"}]}, "train": train})
    params = [(name, torch.nn.Parameter(torch.zeros(2))) for name in ("proj.weight", "vision_tower.weight")]
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg, total)
    lrs = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(total):
        optimizer.step()
        scheduler.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return lrs


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_ends_at_min_lr_and_multiplied_groups_at_their_share(kind):
    lrs = schedule(lr=1e-4, min_lr=1e-5, lr_scheduler=kind, warmup_steps=WARMUP,
                   lr_multipliers={"vision_tower": 0.1})
    assert lrs[-1] == pytest.approx([1e-5, 1e-6], rel=1e-12)
    assert lrs[WARMUP] == pytest.approx([1e-4, 1e-5], rel=1e-12)  # peak right after warm-up
    decay = [base for base, _ in lrs[WARMUP:]]
    assert all(a >= b for a, b in zip(decay, decay[1:])) and min(decay) == pytest.approx(1e-5)
    assert all(v == pytest.approx(0.1 * b) for b, v in lrs)  # one schedule: a factor on each group's own lr
    mid = lrs[WARMUP + (TOTAL - WARMUP) // 2][0]
    assert mid == pytest.approx(1e-5 + (1e-4 - 1e-5) * 0.5)  # half-way: the middle of [min_lr, lr] for both


def test_cosine_matches_minigptv2_formula_between_lr_and_min_lr():
    lr, min_lr = 1e-5, 1e-6
    lrs = schedule(lr=lr, min_lr=min_lr, warmup_steps=WARMUP)
    for step in range(WARMUP, TOTAL + 1):
        progress = (step - WARMUP) / (TOTAL - WARMUP)
        want = (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)) + min_lr  # LinearWarmupCosineLRScheduler
        assert lrs[step][0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_default_min_lr_keeps_the_previous_schedule(kind):
    lrs = [groups[0] for groups in schedule(lr=2e-4, lr_scheduler=kind, warmup_ratio=0.1)]
    warmup = 2
    assert lrs[:warmup] == [2e-4 * ((s + 1) / (warmup + 1)) for s in range(warmup)]
    for step in range(warmup, TOTAL + 1):
        progress = (step - warmup) / (TOTAL - warmup)
        want = {"cosine": 0.5 * (1.0 + math.cos(math.pi * progress)), "linear": 1.0 - progress, "constant": 1.0}[kind]
        assert lrs[step] == 2e-4 * want  # bit for bit: a zero floor changes nothing
    assert lrs[-1] == (2e-4 if kind == "constant" else 0.0)


def test_constant_ignores_min_lr():
    assert {groups[0] for groups in schedule(lr=1e-4, min_lr=1e-5, lr_scheduler="constant")} == {1e-4}
