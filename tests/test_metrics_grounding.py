"""Grounding metrics against independent references: torchvision IoU, rasterised masks, MiniGPT-v2's formula."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfmvg_plugin.codecs import available_codecs, get_codec
from pfmvg_plugin.geometry import box_iou
from pfmvg_plugin.metrics import (
    MultiBoxMode,
    SampleScore,
    aggregate,
    dice,
    iou,
    score_sample,
    score_text,
    union_overlap,
)

pytestmark = pytest.mark.lowest


def _tv_iou(a, b) -> np.ndarray:
    """torchvision's pairwise IoU matrix in float64."""
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    ta = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    tb = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return ops.box_iou(ta, tb).numpy()


def _random_boxes(rng: np.random.Generator, n: int, lo: float = 0.5, hi: float = 60.0) -> np.ndarray:
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(lo, hi, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _special_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Identical, nested, edge-touching, corner-touching and disjoint pairs."""
    a = _random_boxes(rng, n)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    f = rng.uniform(0.1, 0.4, size=(n, 1))
    nested = a + np.stack([w, h, -w, -h], axis=1) * f
    edge = np.stack([a[:, 2], a[:, 1], a[:, 2] + w, a[:, 3]], axis=1)
    corner = np.stack([a[:, 2], a[:, 3], a[:, 2] + 5, a[:, 3] + 5], axis=1)
    disjoint = a + np.stack([w, h, w, h], axis=1) * 1.5
    return np.concatenate([a, a, a, a, a]), np.concatenate([a, nested, edge, corner, disjoint])


def _minigptv2_compute_iou(bbox1, bbox2):
    """Transcribed from MiniGPT-v2's eval_scripts/eval_ref.py (computeIoU)."""
    x1, y1, x2, y2 = bbox1
    x3, y3, x4, y4 = bbox2
    intersection_x1 = max(x1, x3)
    intersection_y1 = max(y1, y3)
    intersection_x2 = min(x2, x4)
    intersection_y2 = min(y2, y4)
    intersection_area = max(0, intersection_x2 - intersection_x1 + 1) * max(0, intersection_y2 - intersection_y1 + 1)
    bbox1_area = (x2 - x1 + 1) * (y2 - y1 + 1)
    bbox2_area = (x4 - x3 + 1) * (y4 - y3 + 1)
    union_area = bbox1_area + bbox2_area - intersection_area
    return intersection_area / union_area


def _mask(boxes, size: int = 64, plus_one: bool = False) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=bool)
    extra = 1 if plus_one else 0
    for x1, y1, x2, y2 in boxes:
        canvas[int(y1) : int(y2) + extra, int(x1) : int(x2) + extra] = True
    return canvas


def _random_int_boxes(rng: np.random.Generator, k: int, size: int = 64) -> list[tuple[int, int, int, int]]:
    out = []
    for _ in range(k):
        x1, y1 = rng.integers(0, size - 2, size=2)
        x2, y2 = rng.integers(x1 + 1, size - 1), rng.integers(y1 + 1, size - 1)
        out.append((int(x1), int(y1), int(x2), int(y2)))
    return out


# ---- single-box IoU / Dice --------------------------------------------------------------------------------------
def test_iou_matches_torchvision_on_random_and_special_boxes():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 3000), _random_boxes(rng, 3000)
    sa, sb = _special_pairs(rng, 400)
    a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    ref = np.diagonal(_tv_iou(a, b))
    ours = np.array([iou(tuple(p), tuple(g)) for p, g in zip(a, b, strict=True)])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert (ref == 0).sum() >= 1200 and (ref == 1).sum() >= 400  # touching/disjoint and identical were covered


def test_iou_special_cases():
    box = (10.0, 20.0, 50.0, 80.0)
    assert iou(box, box) == 1.0
    assert iou(box, (50.0, 20.0, 90.0, 80.0)) == 0.0  # touching edge
    assert iou(box, (60.0, 90.0, 70.0, 95.0)) == 0.0  # disjoint
    assert iou(box, (20.0, 30.0, 40.0, 70.0)) == pytest.approx(20 * 40 / (40 * 60))  # nested
    assert iou((5, 5, 5, 9), (5, 5, 5, 9)) == 0.0  # zero area -> 0, not NaN
    assert dice((5, 5, 5, 9), (5, 5, 5, 9)) == 0.0


def test_dice_independent_formula_and_iou_relation():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 2000), _random_boxes(rng, 2000)
    for p, g in zip(a, b, strict=True):
        iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
        ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
        areas = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1])
        expected = 2 * iw * ih / areas
        d, j = dice(tuple(p), tuple(g)), iou(tuple(p), tuple(g))
        assert d == pytest.approx(expected, abs=1e-12)
        assert d == pytest.approx(2 * j / (1 + j), abs=1e-12)


def test_iou_is_the_geometry_box_iou():
    assert iou is box_iou  # one IoU for metrics and box fusion


def test_plus_one_hand_computed_minigptv2_example():
    # inclusive pixels 0..9 and 5..14: intersection 5x5 = 25 px, each box 10x10 = 100 px -> 25 / 175
    assert iou((0, 0, 9, 9), (5, 5, 14, 14), plus_one=True) == pytest.approx(25 / 175)
    assert iou((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(16 / (81 + 81 - 16))
    # boxes sharing the column x=10 overlap by one pixel column in the legacy convention: 11 / (121 + 121 - 11)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10), plus_one=True) == pytest.approx(11 / 231)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert dice((0, 0, 9, 9), (5, 5, 14, 14), plus_one=True) == pytest.approx(2 * 25 / 200)


def test_plus_one_matches_minigptv2_compute_iou_on_random_boxes():
    rng = np.random.default_rng(2)
    for _ in range(2000):
        p, g = _random_int_boxes(rng, 2, size=120)
        assert iou(p, g, plus_one=True) == pytest.approx(_minigptv2_compute_iou(p, g), abs=1e-12)
    for p, g in zip(_random_boxes(rng, 500), _random_boxes(rng, 500), strict=True):  # also on float boxes
        assert iou(tuple(p), tuple(g), plus_one=True) == pytest.approx(_minigptv2_compute_iou(p, g), abs=1e-12)


# ---- several GT boxes -------------------------------------------------------------------------------------------
def test_union_mode_matches_rasterised_masks():
    rng = np.random.default_rng(3)
    for _ in range(600):
        gts = _random_int_boxes(rng, int(rng.integers(1, 5)))
        preds = _random_int_boxes(rng, int(rng.integers(1, 4)))
        for plus_one in (False, True):
            pm, gm = _mask(preds, plus_one=plus_one), _mask(gts, plus_one=plus_one)
            inter, union = (pm & gm).sum(), (pm | gm).sum()
            s = score_sample(preds, gts, mode="union", plus_one=plus_one)
            assert s.iou == pytest.approx(inter / union, abs=1e-9)
            assert s.dice == pytest.approx(2 * inter / (pm.sum() + gm.sum()), abs=1e-9)
            assert s.mode == "union" and s.parsed


def test_union_mode_single_boxes_equals_iou():
    rng = np.random.default_rng(4)
    for p, g in zip(_random_boxes(rng, 300), _random_boxes(rng, 300), strict=True):
        p, g = tuple(p), tuple(g)
        assert union_overlap([p], [g]) == pytest.approx((iou(p, g), dice(p, g)), abs=1e-12)


def test_merge_mode_is_iou_with_enclosing_box():
    rng = np.random.default_rng(5)
    for _ in range(300):
        gts = _random_boxes(rng, int(rng.integers(1, 5)))
        preds = _random_boxes(rng, 2)
        enclosing = np.concatenate([gts[:, :2].min(axis=0), gts[:, 2:].max(axis=0)])
        s = score_sample([tuple(p) for p in preds], [tuple(g) for g in gts], mode=MultiBoxMode.MERGE)
        assert s.iou == pytest.approx(_tv_iou(preds[0], enclosing)[0, 0], abs=1e-12)
        assert s.pred_box == pytest.approx(tuple(preds[0]))


def test_max_mode_is_best_torchvision_iou_of_first_prediction():
    rng = np.random.default_rng(6)
    for _ in range(300):
        gts = _random_boxes(rng, int(rng.integers(1, 6)))
        preds = _random_boxes(rng, int(rng.integers(1, 3)))
        s = score_sample([tuple(p) for p in preds], [tuple(g) for g in gts], mode="max")
        row = _tv_iou(preds[0], gts)[0]
        assert s.iou == pytest.approx(row.max(), abs=1e-12)
        j = row.max()
        assert s.dice == pytest.approx(2 * j / (1 + j), abs=1e-12)


def test_modes_disagree_where_they_should():
    gts = [(0, 0, 10, 10), (20, 0, 30, 10)]
    pred = [(0, 0, 10, 10)]
    assert score_sample(pred, gts, "max").iou == 1.0
    assert score_sample(pred, gts, "merge").iou == pytest.approx(100 / 300)
    assert score_sample(pred, gts, "union").iou == pytest.approx(100 / 200)
    both = [(0, 0, 10, 10), (20, 0, 30, 10)]
    assert score_sample(both, gts, "union").iou == 1.0  # union mode uses every predicted box
    assert score_sample(list(reversed(both)), gts, "max").pred_box == (20, 0, 30, 10)  # max uses the first one


def test_score_sample_failures_and_validation():
    gts = [(0, 0, 10, 10)]
    for preds in (None, []):
        s = score_sample(preds, gts)
        assert (s.iou, s.dice, s.parsed, s.status, s.pred_box) == (0.0, 0.0, False, "no_box", None)
    s = score_sample([(float("nan"), 0, 1, 1)], gts)
    assert not s.parsed and s.status == "non_finite"
    assert score_sample([], gts, status="out_of_range").status == "out_of_range"
    assert score_sample([(10, 10, 0, 0)], gts).iou == 1.0  # reversed corners are reordered
    with pytest.raises(ValueError):
        score_sample([(0, 0, 1, 1)], [])
    with pytest.raises(ValueError):
        score_sample([(0, 0, 1, 1)], gts, mode="mean")


# ---- score_text ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", available_codecs())
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1000, 800), (224, 224)])
def test_score_text_round_trip_within_quantisation(name, size):
    codec = get_codec(name)
    rng = np.random.default_rng(7)
    w, h = size
    ex, ey = codec.max_error(size)
    scores = []
    for _ in range(50):
        bw, bh = rng.uniform(0.2, 0.6) * w, rng.uniform(0.2, 0.6) * h
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        gt = (x1, y1, x1 + bw, y1 + bh)
        s = score_text(codec.encode(gt, size), [gt], size, name)
        assert s.parsed and s.status == "ok"
        bound = (bw - 2 * ex) * (bh - 2 * ey) / ((bw + 2 * ex) * (bh + 2 * ey))
        assert s.iou >= bound - 1e-9
        scores.append(s)
    assert aggregate(scores, n_bootstrap=0)["acc@0.5"] == 1.0


@pytest.mark.parametrize("name", available_codecs())
def test_score_text_shifted_box_matches_torchvision(name):
    codec = get_codec(name)
    size = (1000, 800)
    gt = (200.0, 160.0, 600.0, 560.0)
    shifted = (300.0, 240.0, 700.0, 640.0)
    decoded = codec.decode(codec.encode(shifted, size), size).box
    s = score_text(codec.encode(shifted, size), [gt], size, codec)
    assert s.iou == pytest.approx(_tv_iou(decoded, gt)[0, 0], abs=1e-12)
    assert s.iou == pytest.approx(_tv_iou(shifted, gt)[0, 0], abs=0.05)  # 96000 / 224000 before quantisation


def test_score_text_parse_failures_never_raise():
    gts = [(0, 0, 100, 100)]
    size = (200, 200)
    s = score_text("I cannot find it.", gts, size, "minigptv2")
    assert (s.iou, s.dice, s.parsed, s.status) == (0.0, 0.0, False, "no_box")
    assert score_text(None, gts, size, "llava").status == "not_text"
    assert score_text("{<10><10><", gts, size, "minigptv2").status == "malformed"
    assert score_text("[5.0, 5.0, 9.0, 9.0]", gts, size, "llava").status == "out_of_range"
    two = "<p>lesion</p>{<0><0><25><50>}<delim>{<25><0><50><50>}"
    assert score_text(two, gts, size, "minigptv2", mode="union").iou == pytest.approx(1.0)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200), name=st.sampled_from(available_codecs()))
def test_score_text_total_on_arbitrary_text(text, name):
    s = score_text(text, [(10, 10, 50, 50)], (100, 80), name, mode="union")
    assert 0.0 <= s.iou <= 1.0 and 0.0 <= s.dice <= 1.0
    assert s.parsed == (s.status == "ok")


# ---- aggregation --------------------------------------------------------------------------------------------------
def _score(v: float, parsed: bool = True, status: str = "ok", mode: str = "max") -> SampleScore:
    return SampleScore(v, 2 * v / (1 + v), parsed, status, (0, 0, 1, 1) if parsed else None, mode)


def test_aggregate_hand_built_list():
    samples = [_score(v) for v in (0.05, 0.2, 0.4, 0.5, 0.6, 0.9)]
    samples.append(score_text("no idea", [(0, 0, 10, 10)], (20, 20), "minigptv2"))
    samples.append(score_sample(None, [(0, 0, 10, 10)], status="malformed"))
    r = aggregate(samples, n_bootstrap=0)
    assert r["n"] == 8 and r["mode"] == "max" and r["plus_one"] is False
    assert r["acc@0.1"] == pytest.approx(5 / 8)
    assert r["acc@0.3"] == pytest.approx(4 / 8)
    assert r["acc@0.5"] == pytest.approx(3 / 8)  # IoU exactly 0.5 is a hit
    assert r["miou"] == pytest.approx(2.65 / 8)
    assert r["mdice"] == pytest.approx(sum(2 * v / (1 + v) for v in (0.05, 0.2, 0.4, 0.5, 0.6, 0.9)) / 8)
    assert r["parse_failure_rate"] == pytest.approx(2 / 8)
    assert r["parse_failures"] == {"malformed": 1, "no_box": 1}
    assert r["ci"]["miou"] is None
    json.dumps(r, allow_nan=False)


def test_aggregate_per_category():
    samples = [_score(v) for v in (0.6, 0.2, 0.8, 0.1, 0.7)]
    cats = ["lung", "lung", "heart", None, "heart"]
    r = aggregate(samples, categories=cats, n_bootstrap=0)
    assert set(r["per_category"]) == {"lung", "heart"}
    assert r["per_category"]["lung"]["n"] == 2
    assert r["per_category"]["lung"]["acc@0.5"] == pytest.approx(0.5)
    assert r["per_category"]["lung"]["miou"] == pytest.approx(0.4)
    assert r["per_category"]["heart"]["acc@0.5"] == 1.0
    assert r["per_category"]["heart"]["miou"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        aggregate(samples, categories=["lung"])


def test_aggregate_empty_is_nan_free():
    r = aggregate([], categories=[])
    assert r["n"] == 0 and r["mode"] is None
    assert r["miou"] is None and r["acc@0.5"] is None and r["parse_failure_rate"] is None
    assert all(v is None for v in r["ci"].values())
    json.dumps(r, allow_nan=False)


def test_aggregate_accepts_dicts_and_rejects_mixed_modes():
    samples = [score_sample([(0, 0, 10, 10)], [(0, 0, 10, 20)]), score_sample(None, [(0, 0, 1, 1)])]
    via_json = [json.loads(json.dumps(s.to_dict())) for s in samples]
    assert [SampleScore.from_dict(d) for d in via_json] == samples
    assert aggregate(via_json, seed=3) == aggregate(samples, seed=3)
    with pytest.raises(ValueError):
        aggregate([_score(0.5, mode="max"), _score(0.5, mode="union")])


def _sample_ious(rng: np.random.Generator, n: int) -> list[SampleScore]:
    return [_score(float(v)) for v in rng.beta(2, 2, size=n)]


def test_bootstrap_ci_contains_estimate_deterministic_and_narrows():
    rng = np.random.default_rng(8)
    small, large = _sample_ious(rng, 60), _sample_ious(rng, 3000)
    r_small, r_large = aggregate(small, seed=1), aggregate(large, seed=1)
    for r in (r_small, r_large):
        for key in ("acc@0.1", "acc@0.3", "acc@0.5", "miou", "mdice"):
            lo, hi = r["ci"][key]
            assert lo <= r[key] <= hi
    assert aggregate(small, seed=1) == r_small
    assert aggregate(small, seed=2)["ci"] != r_small["ci"]
    for key in ("acc@0.5", "miou", "mdice"):
        (lo_s, hi_s), (lo_l, hi_l) = r_small["ci"][key], r_large["ci"][key]
        assert hi_l - lo_l < (hi_s - lo_s) / 3
    json.dumps(r_large, allow_nan=False)


def test_bootstrap_ci_agrees_with_normal_approximation():
    rng = np.random.default_rng(9)
    samples = _sample_ious(rng, 2000)
    ious = np.array([s.iou for s in samples])
    r = aggregate(samples, n_bootstrap=2000, seed=0, ci=0.95)
    half = 1.959964 * ious.std(ddof=1) / math.sqrt(ious.size)
    lo, hi = r["ci"]["miou"]
    assert lo == pytest.approx(ious.mean() - half, abs=0.15 * half)
    assert hi == pytest.approx(ious.mean() + half, abs=0.15 * half)
    assert r["ci_level"] == 0.95 and r["n_bootstrap"] == 2000


# ---- properties ---------------------------------------------------------------------------------------------------
_coord = st.floats(min_value=-1000, max_value=1000, allow_nan=False)
_extent = st.floats(min_value=0.01, max_value=1000, allow_nan=False)


@st.composite
def _boxes(draw):
    x, y, w, h = draw(_coord), draw(_coord), draw(_extent), draw(_extent)
    return (x, y, x + w, y + h)


@settings(max_examples=300, deadline=None)
@given(a=_boxes(), b=_boxes(), sx=st.floats(0.01, 100), sy=st.floats(0.01, 100), plus_one=st.booleans())
def test_iou_properties(a, b, sx, sy, plus_one):
    j = iou(a, b, plus_one)
    assert 0.0 <= j <= 1.0
    assert j == iou(b, a, plus_one)
    assert iou(a, a, plus_one) == pytest.approx(1.0)
    scaled = [(q[0] * sx, q[1] * sy, q[2] * sx, q[3] * sy) for q in (a, b)]
    assert iou(*scaled) == pytest.approx(iou(a, b), abs=1e-9)
    assert 0.0 <= dice(a, b, plus_one) <= 1.0


def test_metrics_import_without_torch():
    code = "import sys, pfmvg_plugin.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generation_errors_are_scored_zero_but_counted_apart_from_parse_failures():
    gt = [(0.0, 0.0, 10.0, 10.0)]
    samples = [
        score_sample([(0.0, 0.0, 10.0, 10.0)], gt),
        score_sample(None, gt),  # the model answered, nothing parseable
        score_sample(None, gt, status="generation_error"),  # the model never answered
    ]
    res = aggregate(samples, n_bootstrap=0)
    assert res["acc@0.5"] == pytest.approx(1 / 3)
    assert res["parse_failures"] == {"no_box": 1} and res["parse_failure_rate"] == pytest.approx(1 / 3)
    assert res["generation_errors"] == 1 and res["generation_error_rate"] == pytest.approx(1 / 3)
