"""Box fusion across raters (pfmvg_plugin.data.fusion) on hand-made cases."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfmvg_plugin.data.fusion import FusedBox, fuse_boxes
from pfmvg_plugin.geometry import box_iou


def test_box_iou_basics():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 5)) == 0.5
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_three_overlapping_boxes_become_one_averaged_box():
    boxes = [[1264.0, 743.0, 1611.0, 1019.0], [1329.0, 743.0, 1521.0, 958.0], [1290.0, 730.0, 1600.0, 1000.0]]
    fused = fuse_boxes(boxes, ["R10", "R9", "R8"], method="wbf", iou_threshold=0.4)
    assert len(fused) == 1
    f = fused[0]
    assert f.box == pytest.approx(((1264 + 1329 + 1290) / 3, (743 + 743 + 730) / 3,
                                   (1611 + 1521 + 1600) / 3, (1019 + 958 + 1000) / 3))
    assert f.raters == ("R10", "R8", "R9")
    assert f.support == 3 and f.n_boxes == 3


def test_two_disjoint_boxes_stay_two():
    fused = fuse_boxes([[600, 1332, 903, 1523], [1700, 1300, 2000, 1500]], ["R10", "R10"])
    assert [f.box for f in fused] == [(600.0, 1332.0, 903.0, 1523.0), (1700.0, 1300.0, 2000.0, 1500.0)]
    assert [f.support for f in fused] == [1, 1]


def test_bilateral_finding_two_clusters_of_three_raters():
    left = [[100, 100, 200, 300], [105, 98, 210, 305], [95, 102, 198, 296]]
    right = [[400, 100, 500, 300], [398, 95, 505, 302], [402, 101, 497, 299]]
    raters = ["R1", "R2", "R3"]
    fused = fuse_boxes(left + right, raters + raters)
    assert len(fused) == 2
    assert [f.support for f in fused] == [3, 3]
    assert fused[0].box == pytest.approx((100, 100, 202.6666667, 300.3333333))
    assert fused[1].box[0] == pytest.approx(400.0)


def test_threshold_edge_is_inclusive():
    a, b = [0, 0, 10, 10], [0, 0, 10, 5]  # IoU exactly 0.5
    assert len(fuse_boxes([a, b], iou_threshold=0.5)) == 1
    assert len(fuse_boxes([a, b], iou_threshold=0.5000001)) == 2
    # 1/3 is not exactly representable: IoU computed as 0.333... still counts as reaching the threshold 1/3
    c, d = [0, 0, 10, 10], [5, 0, 15, 10]  # IoU = 50 / 150
    assert len(fuse_boxes([c, d], iou_threshold=1 / 3)) == 1
    assert len(fuse_boxes([c, d], iou_threshold=0.34)) == 2
    assert len(fuse_boxes([a, a], iou_threshold=1.0)) == 1


def test_none_keeps_every_box():
    boxes = [[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]]
    fused = fuse_boxes(boxes, ["R1", "R2", "R3"], method="none", iou_threshold=0.4)
    assert len(fused) == 3
    assert all(f.support == 1 and f.n_boxes == 1 for f in fused)
    assert sorted(f.raters[0] for f in fused) == ["R1", "R2", "R3"]


def test_support_counts_distinct_raters_and_unknown_raters_separately():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 9, 10], [1, 0, 10, 10]]
    fused = fuse_boxes(boxes, ["R1", "R1", None, None])
    assert len(fused) == 1
    assert fused[0].n_boxes == 4
    assert fused[0].raters == ("R1",)
    assert fused[0].support == 3  # R1 once, each unnamed rater on its own
    assert fuse_boxes(boxes)[0].support == 4


def test_chain_is_judged_against_the_running_mean():
    # b overlaps a and c, but a and c barely overlap: with a high threshold the chain does not collapse into one
    a, b, c = [0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]
    fused = fuse_boxes([a, b, c], iou_threshold=0.4)
    assert len(fused) == 2
    assert sum(f.n_boxes for f in fused) == 3


@pytest.mark.parametrize("threshold", [0.1, 0.4, 0.6])
def test_order_independence_on_all_permutations(threshold):
    boxes = [[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10], [2, 1, 12, 11], [50, 50, 60, 70], [52, 49, 61, 72]]
    raters = ["R1", "R2", "R3", "R1", "R2", "R3"]
    expected = fuse_boxes(boxes, raters, iou_threshold=threshold)
    for perm in itertools.islice(itertools.permutations(range(len(boxes))), 0, None, 7):
        got = fuse_boxes([boxes[i] for i in perm], [raters[i] for i in perm], iou_threshold=threshold)
        assert got == expected


_coord = st.integers(min_value=0, max_value=60)
_box = st.tuples(_coord, _coord, st.integers(1, 40), st.integers(1, 40)).map(
    lambda t: [float(t[0]), float(t[1]), float(t[0] + t[2]), float(t[1] + t[3])])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_box, st.sampled_from(["R1", "R2", "R3", None])), min_size=1, max_size=7),
       st.sampled_from([0.2, 0.4, 0.7]), st.randoms(use_true_random=False))
def test_fusion_properties(items, threshold, rnd: random.Random):
    boxes, raters = [list(b) for b, _ in items], [r for _, r in items]
    fused = fuse_boxes(boxes, raters, iou_threshold=threshold)
    order = list(range(len(items)))
    rnd.shuffle(order)
    assert fuse_boxes([boxes[i] for i in order], [raters[i] for i in order], iou_threshold=threshold) == fused
    assert sum(f.n_boxes for f in fused) == len(boxes)
    for f in fused:
        assert isinstance(f, FusedBox)
        assert 1 <= f.support <= f.n_boxes
        x1, y1, x2, y2 = f.box
        assert x2 > x1 and y2 > y1  # a mean of valid boxes is a valid box
        assert min(b[0] for b in boxes) <= x1 and x2 <= max(b[2] for b in boxes)
    assert len(fuse_boxes(boxes, raters, method="none")) == len(boxes)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown box fusion method"):
        fuse_boxes([[0, 0, 1, 1]], method="nms")
    with pytest.raises(ValueError, match="IoU threshold"):
        fuse_boxes([[0, 0, 1, 1]], iou_threshold=0.0)
    with pytest.raises(ValueError, match="rater ids"):
        fuse_boxes([[0, 0, 1, 1]], ["R1", "R2"])
    with pytest.raises(ValueError, match="four coordinates"):
        fuse_boxes([[0, 0, 1]])
    assert fuse_boxes([]) == []
