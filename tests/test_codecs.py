"""Box codecs: exact round trips up to quantisation, tolerant decoding of real model output, linear-time parsing."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pfmvg_plugin.codecs import ParseStatus, available_codecs, get_codec, qwen_smart_resize

pytestmark = pytest.mark.lowest


ALL = available_codecs()


FAMILY_CODECS = {"internvl", "minicpmv", "deepseekvl2", "paligemma", "florence2", "kosmos2", "cogvlm", "glm4v",
                 "gemini", "qwen3vl", "shikra", "ferret"}


def test_registry_lists_every_convention():
    assert set(ALL) >= {"minigptv2", "llava", "llava_pad", "qwen2vl", "qwen25vl", "pixel"} | FAMILY_CODECS
    assert "molmo_point" not in ALL  # points are not boxes (pfmvg_plugin/codecs/points.py)
    with pytest.raises(ValueError, match="unknown box format 'nope'.*minigptv2"):
        get_codec("nope")


def draw_box(data, size, codec_name: str, min_side_quanta: float = 3.0):
    """A box inside ``size`` whose sides span at least a few quantisation steps of the codec."""
    w, h = size
    assume(max(size) / min(size) <= 200)  # beyond that Qwen2.5-VL's processor refuses the image
    qx, qy = get_codec(codec_name).max_error(size)
    min_w, min_h = max(1.0, min_side_quanta * 2 * qx), max(1.0, min_side_quanta * 2 * qy)
    assume(min_w < w and min_h < h)
    x1 = data.draw(st.floats(0, w - min_w))
    y1 = data.draw(st.floats(0, h - min_h))
    x2 = data.draw(st.floats(x1 + min_w, w))
    y2 = data.draw(st.floats(y1 + min_h, h))
    return (x1, y1, x2, y2)


SIZES = st.tuples(st.integers(16, 4096), st.integers(16, 4096))


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=SIZES)
def test_round_trip_within_quantisation(name, data, size):
    box = draw_box(data, size, name)
    codec = get_codec(name)
    result = codec.decode(codec.encode(box, size), size)
    assert result.status is ParseStatus.OK, result
    assert len(result.boxes) == 1
    ex, ey = codec.max_error(size)
    for got, want, err in zip(result.box, box, (ex, ey, ex, ey)):
        assert abs(got - want) <= err + 1e-6 * max(size), (name, size, box, result.box)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=100, deadline=None)
@given(data=st.data(), size=SIZES, n=st.integers(2, 5))
def test_several_boxes_round_trip_in_order(name, data, size, n):
    boxes = [draw_box(data, size, name) for _ in range(n)]
    codec = get_codec(name)
    result = codec.decode(codec.encode(boxes, size), size)
    assert result.ok and len(result.boxes) == n
    ex, ey = codec.max_error(size)
    for got_box, want_box in zip(result.boxes, boxes):
        for got, want, err in zip(got_box, want_box, (ex, ey, ex, ey)):
            assert abs(got - want) <= err + 1e-6 * max(size)


def test_minigptv2_truncates_like_the_reference():
    codec = get_codec("minigptv2")
    # int(x / W * 100): 119/400*100 = 29.75 -> 29, never rounded up
    assert codec.encode((119, 0, 399, 499), (400, 500)) == "{<29><0><99><99>}"
    assert codec.encode([(0, 0, 200, 250), (200, 250, 400, 500)], (400, 500)) == (
        "{<0><0><50><50>}<delim>{<50><50><100><100>}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "{<25><10><75><50>}",
        "<unk><unk>{<25><10><75><50>}",
        "{ <25> <10>\n<75> <50> }",
        "<p>nodule</p> {<25><10><75><50>}</s>",
        "The location is <25><10><75><50>",  # braces lost
        "{<75><50><25><10>}",  # corners swapped
        "{<25.0><10.0><75.0><50.0>}",
    ],
)
def test_minigptv2_accepts_what_models_emit(text):
    assert get_codec("minigptv2").decode(text, (400, 500)).box == (100.0, 50.0, 300.0, 250.0)


@pytest.mark.parametrize(
    ("name", "text", "status"),
    [
        ("minigptv2", "I cannot see anything abnormal.", ParseStatus.NO_BOX),
        ("minigptv2", "{<25><10><75>", ParseStatus.MALFORMED),
        ("minigptv2", "{<250><10><75><50>}", ParseStatus.OUT_OF_RANGE),
        ("minigptv2", "{<25><10><25><50>}", ParseStatus.ZERO_AREA),
        ("llava", "[nan, 0.1, 0.5, 0.5]", ParseStatus.NON_FINITE),
        ("llava", "[0.1, 0.1, inf, 0.5]", ParseStatus.NON_FINITE),
        ("llava", "[0.1, 0.1, 1e400, 0.5]", ParseStatus.NON_FINITE),
        ("llava", "[0.1, 0.2, 0.3", ParseStatus.MALFORMED),
        ("llava", "[0.1, 0.2, 7.5, 0.9]", ParseStatus.OUT_OF_RANGE),
        ("llava", "", ParseStatus.NO_BOX),
        ("qwen2vl", "<|box_start|>(10,20),(", ParseStatus.MALFORMED),
        ("qwen25vl", '{"bbox_2d": [1, 2,', ParseStatus.MALFORMED),
        ("pixel", "[10, 10, 10, 50]", ParseStatus.ZERO_AREA),
        ("internvl", "<ref>effusion</ref><box>[[120, 250, 480", ParseStatus.MALFORMED),
        ("internvl", "<box>[[1200, 250, 480, 900]]</box>", ParseStatus.OUT_OF_RANGE),
        ("minicpmv", "<box>120 250 480</box>", ParseStatus.MALFORMED),
        ("minicpmv", "<box>[[120, 250, 480, 900]]</box>", ParseStatus.MALFORMED),  # InternVL's brackets
        ("minicpmv", "the box is 120 250 480 900", ParseStatus.NO_BOX),  # bare numbers are not read
        ("deepseekvl2", "<|ref|>effusion<|/ref|><|det|>[[", ParseStatus.MALFORMED),
        ("deepseekvl2", "<|det|>[[120, 250, 480, 1100]]<|/det|>", ParseStatus.OUT_OF_RANGE),
        ("paligemma", "<loc0256><loc0102><loc0768> effusion", ParseStatus.MALFORMED),
        ("paligemma", "<loc0256><loc0102><loc9999><loc0512> effusion", ParseStatus.OUT_OF_RANGE),
        ("florence2", "effusion<loc_1><loc_2><loc_3>", ParseStatus.MALFORMED),
        ("florence2", "effusion<loc_100><loc_100><loc_100><loc_500>", ParseStatus.ZERO_AREA),
        ("kosmos2", "<phrase>a nodule</phrase><object><patch_index_0044></object>", ParseStatus.MALFORMED),
        ("kosmos2", "<object><patch_index_0044><patch_index_1024></object>", ParseStatus.OUT_OF_RANGE),
        ("cogvlm", "the nodule [[120,250,480", ParseStatus.MALFORMED),
        ("glm4v", "<|begin_of_box|>[120,250,nan,900]<|end_of_box|>", ParseStatus.NON_FINITE),
        ("gemini", '```json\n[{"box_2d": [250, 120,', ParseStatus.MALFORMED),
        ("qwen3vl", '[{"bbox_2d": [120, 250, 480, 5000]}]', ParseStatus.OUT_OF_RANGE),
        ("shikra", "the nodule [0.100,0.300,0.500", ParseStatus.MALFORMED),
        ("ferret", "the nodule [120, 250, 120, 900]", ParseStatus.ZERO_AREA),
    ],
)
def test_decode_failure_reasons(name, text, status):
    result = get_codec(name).decode(text, (400, 500))
    assert result.status is status and result.boxes == ()
    if status not in (ParseStatus.NO_BOX,):
        assert result.rejected, "a failure must say why"


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [None, 42, b"{<1><2><3><4>}", ["[0.1,0.1,0.2,0.2]"]])
def test_decode_never_raises_on_non_text(name, bad):
    assert get_codec(name).decode(bad, (100, 100)).status is ParseStatus.NOT_TEXT


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_decode_never_raises_on_any_text(name, text):
    result = get_codec(name).decode(text, (640, 480))
    for x1, y1, x2, y2 in result.boxes:
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert all(math.isfinite(v) for v in (x1, y1, x2, y2))


def test_slightly_out_of_range_is_clamped_and_counted():
    r = get_codec("llava").decode("[-0.02, 0.10, 1.03, 0.50]", (200, 100))
    assert r.ok and r.clamped == 1 and r.box == (0.0, 10.0, 200.0, 50.0)


def test_chatter_and_several_boxes():
    r = get_codec("llava").decode(
        "Sure! The opacity is at [0.10, 0.20, 0.30, 0.40] and another at (0.5, 0.5, 0.9, 0.9). Hope this helps.",
        (100, 100),
    )
    assert [tuple(round(v, 6) for v in b) for b in r.boxes] == [(10, 20, 30, 40), (50, 50, 90, 90)]


def test_qwen2vl_without_special_tokens():
    # skip_special_tokens=True removes <|box_start|> and friends; the coordinates must still be read.
    r = get_codec("qwen2vl").decode("right lower lobe(120,340),(480,900)", (1000, 2000))
    assert r.box == pytest.approx((120.0, 680.0, 480.0, 1800.0))


def test_qwen25vl_json_in_code_fence_uses_model_input_pixels():
    codec = get_codec("qwen25vl")
    h, w = qwen_smart_resize(2000, 1000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 28 * 28 * 1280
    text = f'```json\n[\n  {{"bbox_2d": [0, 0, {w // 2}, {h // 2}], "label": "effusion"}}\n]\n```'
    r = codec.decode(text, (1000, 2000))
    assert r.box == pytest.approx((0.0, 0.0, 500.0, 1000.0), abs=1.0)


def test_llava_pad_to_square_matches_expand2square_geometry():
    # A 200x100 image padded to 200x200 sits at y in [50, 150]; its full extent is [0, .25, 1, .75].
    codec = get_codec("llava_pad")
    assert codec.encode((0, 0, 200, 100), (200, 100)) == "[0.00, 0.25, 1.00, 0.75]"
    assert codec.decode("[0.0, 0.25, 1.0, 0.75]", (200, 100)).box == (0.0, 0.0, 200.0, 100.0)


def test_encode_rejects_non_finite_boxes():
    with pytest.raises(ValueError, match="finite"):
        get_codec("llava").encode((0, 0, float("nan"), 1), (10, 10))


ADVERSARIAL = {
    "digits": "9" * 1_000_000,
    "open_brackets": "[" * 1_000_000,
    "unclosed_lists": "[0.1, 0.2, 0.3, " * 62_500,
    "minigpt_starts": "{<1><2><3>" * 100_000,
    "spaces_after_bracket": "[" + " " * 999_999,
    "qwen_tuples": "(1,2),(" * 142_857,
    "angle_digits": "<" + "1" * 999_999,
    # the native formats of other families: runs that start a box and never complete it
    "paligemma_loc_runs": "<loc0001><loc0002><loc0003>x" * 37_038,
    "florence_loc_runs": "<loc_1><loc_2><loc_3>x" * 45_455,
    "kosmos_patch_runs": "<object><patch_index_0001>x" * 37_038,
    "deepseek_det_runs": "<|det|>[[" * 111_112,
    "gemini_box_2d_runs": '"box_2d": [' * 90_910,
    "qwen_bbox_2d_runs": '{"bbox_2d": [1, 2, 3, ' * 45_455,
    "minicpm_box_runs": "<box>1 2 3 " * 90_910,
    "minicpm_box_spaces": "<box>" + " " * 999_995,
    "glm_box_runs": "<|begin_of_box|>[1,2," * 47_620,
    "cogvlm_semicolons": "[[1,2,3;" * 125_000,
}


@pytest.mark.parametrize("name", ALL)
def test_parsing_is_linear_in_input_length(name):
    """Decoding 1 MB of adversarial text must cost ~10x decoding 100 kB, not ~100x (no regex backtracking)."""
    codec = get_codec(name)

    def cost(n_chars: int) -> float:
        total = 0.0
        for payload in ADVERSARIAL.values():
            text = payload[:n_chars]
            t0 = time.perf_counter()
            codec.decode(text, (512, 512))
            total += time.perf_counter() - t0
        return total

    small, large = cost(100_000), cost(1_000_000)
    assert large / max(small, 1e-4) < 30, (name, small, large)
