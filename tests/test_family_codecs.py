"""The native box languages of other MLLM families, read from answers written by hand in each family's documented
format (special tokens, fences, chatter, several boxes), on non-square images with asymmetric boxes.

Expected pixel boxes are worked out here with plain arithmetic, never with the codec under test. A cross-family matrix
checks that one family's answer read with another family's codec fails or gives a clearly different box, except for
the pairs listed as the same box language. Molmo's points are scored as points (``point_hit``), not boxes.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfmvg_plugin.codecs import (
    MolmoPointCodec,
    ParseStatus,
    available_codecs,
    get_codec,
    point_hit,
)
from pfmvg_plugin.prompts import build_prompt, get_prompts

LAND = (640, 400)  # landscape: x in thousandths * 0.64, y * 0.4
PORT = (300, 700)  # portrait: x in thousandths * 0.3, y * 0.7


def close(got, want, tol=1e-6):
    assert got is not None, "no box decoded"
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert abs(g - w) <= tol, (got, want)


# ---- each family's answers, written by hand ------------------------------------------------------------------------
# (codec, image size, answer text, expected pixel boxes in order)
CASES = [
    # InternVL: <ref>..</ref><box>[[x1, y1, x2, y2]]</box>, 0-1000
    ("internvl", LAND, "Sure! <ref>the left pleural effusion</ref><box>[[120, 250, 480, 900]]</box>",
     [(120 * 0.64, 250 * 0.4, 480 * 0.64, 900 * 0.4)]),
    ("internvl", PORT, "<ref>nodules</ref><box>[[100, 200, 300, 400], [600, 50, 950, 350]]</box> are visible.",
     [(30, 140, 90, 280), (180, 35, 285, 245)]),
    ("internvl", LAND, "the left pleural effusion[[120, 250, 480, 900]]",  # skip_special_tokens=True
     [(76.8, 100, 307.2, 360)]),
    # MiniCPM-V: <ref>..</ref><box>x1 y1 x2 y2</box>, 0-1000, spaces
    ("minicpmv", PORT, "The mass is at <ref>right hilar mass</ref><box>120 250 480 900</box>.",
     [(36, 175, 144, 630)]),
    ("minicpmv", LAND, "<ref>nodules</ref><box>100 200 300 400</box><box>600\t50  950 350</box>",
     [(64, 80, 192, 160), (384, 20, 608, 140)]),
    ("minicpmv", PORT, "<box>120, 250, 480, 900</box>", [(36, 175, 144, 630)]),
    # DeepSeek-VL2: <|ref|>..<|/ref|><|det|>[[..]]<|/det|>, 0-999
    ("deepseekvl2", LAND, "<|ref|>the cardiac silhouette<|/ref|><|det|>[[111, 222, 666, 999]]<|/det|>",
     [(111 / 999 * 640, 222 / 999 * 400, 666 / 999 * 640, 400)]),
    ("deepseekvl2", PORT, "<|ref|>nodules<|/ref|><|det|>[[0, 999, 333, 555], [500, 100, 999, 200]]<|/det|>",
     [(0, 555 / 999 * 700, 100, 700), (500 / 999 * 300, 100 / 999 * 700, 300, 200 / 999 * 700)]),
    ("deepseekvl2", LAND, "the cardiac silhouette[[111, 222, 666, 999]]",  # skip_special_tokens=True
     [(111 / 999 * 640, 222 / 999 * 400, 666 / 999 * 640, 400)]),
    # PaliGemma: <locYMIN><locXMIN><locYMAX><locXMAX> label ; ..., 0-1023, y first
    ("paligemma", LAND, "<loc0256><loc0102><loc0768><loc0512> effusion ; <loc0100><loc0600><loc0300><loc0900> nodule",
     [(102 / 1023 * 640, 256 / 1023 * 400, 512 / 1023 * 640, 768 / 1023 * 400),
      (600 / 1023 * 640, 100 / 1023 * 400, 900 / 1023 * 640, 300 / 1023 * 400)]),
    ("paligemma", PORT, "<loc0000><loc0511><loc1023><loc1023> left lung<eos>",
     [(511 / 1023 * 300, 0, 300, 700)]),
    # Florence-2: phrase<loc_x1><loc_y1><loc_x2><loc_y2>, bin centres (b + 0.5) / 1000
    ("florence2", LAND, "</s><s>the left lung<loc_100><loc_250><loc_480><loc_900></s>",
     [(100.5 * 0.64, 250.5 * 0.4, 480.5 * 0.64, 900.5 * 0.4)]),
    ("florence2", PORT, "nodules<loc_0><loc_0><loc_99><loc_99><loc_500><loc_500><loc_999><loc_999>",
     [(0.15, 0.35, 29.85, 69.65), (150.15, 350.35, 299.85, 699.65)]),
    # Kosmos-2: <phrase>..</phrase><object><patch_index_A><patch_index_B></object>, 32x32 grid
    # 44 = row 1 col 12, 863 = row 26 col 31: different row and column -> patch centres
    ("kosmos2", LAND, "<grounding> An image of<phrase> a nodule</phrase><object><patch_index_0044>"
     "<patch_index_0863></object> in the left lung.",
     [(12.5 / 32 * 640, 1.5 / 32 * 400, 31.5 / 32 * 640, 26.5 / 32 * 400)]),
    # 100 = row 3 col 4, 110 = row 3 col 14: same row -> the whole patches
    ("kosmos2", PORT, "<phrase>two nodules</phrase><object><patch_index_0044><patch_index_0863>"
     "</delimiter_of_multi_objects/><patch_index_0100><patch_index_0110></object>",
     [(12.5 / 32 * 300, 1.5 / 32 * 700, 31.5 / 32 * 300, 26.5 / 32 * 700),
      (4 / 32 * 300, 3 / 32 * 700, 15 / 32 * 300, 4 / 32 * 700)]),
    # CogVLM: [[x0,y0,x1,y1]] three digits, ';' between boxes, / 1000
    ("cogvlm", PORT, "Sure, the nodule [[120,250,480,900]] and the effusions [[050,600,300,950;600,100,999,400]].",
     [(36, 175, 144, 630), (15, 420, 90, 665), (180, 70, 299.7, 280)]),
    # GLM-4.1V / 4.5V: <|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>, 0-1000
    ("glm4v", LAND, "The lesion is at <|begin_of_box|>[120,250,480,900]<|end_of_box|>.",
     [(76.8, 100, 307.2, 360)]),
    ("glm4v", PORT, "<|begin_of_box|>[[100,200,300,400],[600,50,950,350]]<|end_of_box|>",
     [(30, 140, 90, 280), (180, 35, 285, 245)]),
    # Gemini: JSON box_2d [ymin, xmin, ymax, xmax], 0-1000, y first, in a ```json fence
    ("gemini", LAND, '```json\n[\n  {"box_2d": [250, 120, 900, 480], "label": "effusion"},\n'
     '  {"box_2d": [50, 600, 350, 950], "label": "nodule"}\n]\n```',
     [(76.8, 100, 307.2, 360), (384, 20, 608, 140)]),
    ("gemini", PORT, "Here you go: [{'label': 'mass', 'box_2d': [250, 120, 900, 480]}]",
     [(36, 175, 144, 630)]),
    # Qwen3-VL: JSON bbox_2d [x1, y1, x2, y2], 0-1000
    ("qwen3vl", LAND, '```json\n[\n\t{"bbox_2d": [120, 250, 480, 900], "label": "effusion"}\n]\n```',
     [(76.8, 100, 307.2, 360)]),
    ("qwen3vl", PORT, '[{"bbox_2d": [100, 200, 300, 400], "label": "a"}, {"bbox_2d": [600, 50, 950, 350]}]',
     [(30, 140, 90, 280), (180, 35, 285, 245)]),
    # Shikra: [x0,y0,x1,y1] 3 decimals, ';' between boxes, relative to the image padded to a square.
    # 640x400 sits at y 120..520 of a 640 square; 300x700 at x 200..500 of a 700 square.
    ("shikra", LAND, "The nodule [0.100,0.300,0.500,0.700] is in the left lung.",
     [(64, 0.3 * 640 - 120, 320, 0.7 * 640 - 120)]),
    ("shikra", LAND, "Two nodules [0.100,0.300,0.500,0.700;0.600,0.200,0.900,0.400].",
     [(64, 72, 320, 328), (384, 8, 576, 136)]),
    ("shikra", PORT, "[0.300,0.100,0.600,0.900]", [(0.3 * 700 - 200, 70, 0.6 * 700 - 200, 630)]),
    # Ferret: phrase [x1, y1, x2, y2], 0-1000
    ("ferret", PORT, "The nodule [120, 250, 480, 900] is in the right lung.", [(36, 175, 144, 630)]),
    ("ferret", LAND, "nodule [100, 200, 300, 400], nodule [600, 50, 950, 350]",
     [(64, 80, 192, 160), (384, 20, 608, 140)]),
]


@pytest.mark.parametrize(("name", "size", "text", "want"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_family_answer_decodes_to_the_expected_pixel_boxes(name, size, text, want):
    result = get_codec(name).decode(text, size)
    assert result.status is ParseStatus.OK, result
    assert len(result.boxes) == len(want), result
    for got, expected in zip(result.boxes, want):
        close(got, expected)


def test_every_family_codec_has_a_hand_written_case():
    families = {"internvl", "minicpmv", "deepseekvl2", "paligemma", "florence2", "kosmos2", "cogvlm", "glm4v",
                "gemini", "qwen3vl", "shikra", "ferret"}
    assert {c[0] for c in CASES} == families
    assert families <= set(available_codecs())


# ---- y-first families: an axis swap must show --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "swapped_text"),
    [
        ("gemini", '[{"box_2d": [250, 120, 900, 480]}]', '[{"box_2d": [120, 250, 480, 900]}]'),
        ("paligemma", "<loc0256><loc0102><loc0768><loc0512> x", "<loc0102><loc0256><loc0512><loc0768> x"),
    ],
)
def test_y_first_families_read_y_first(name, text, swapped_text):
    w, h = LAND
    s = 1000 if name == "gemini" else 1023
    a, b, c, d = (250, 120, 900, 480) if name == "gemini" else (256, 102, 768, 512)
    y_first = (b / s * w, a / s * h, d / s * w, c / s * h)
    x_first = (a / s * w, b / s * h, c / s * w, d / s * h)  # what an axis bug would give
    assert max(abs(p - q) for p, q in zip(y_first, x_first)) > 50  # the case is asymmetric enough to tell
    codec = get_codec(name)
    close(codec.decode(text, LAND).box, y_first)
    swapped = codec.decode(swapped_text, LAND).box
    assert max(abs(p - q) for p, q in zip(swapped, y_first)) > 50


def test_y_first_encoders_write_y_first():
    # 640x400, box x 76.8..307.2 (120..480 thousandths), y 100..360 (250..900)
    assert get_codec("gemini").encode((76.8, 100, 307.2, 360), LAND, label="effusion") == (
        '[{"box_2d": [250, 120, 900, 480], "label": "effusion"}]'
    )
    # round(c * 1023): y 0.25 -> 256, x 0.12 -> 123, y 0.9 -> 921, x 0.48 -> 491
    assert get_codec("paligemma").encode((76.8, 100, 307.2, 360), LAND, label="effusion") == (
        "<loc0256><loc0123><loc0921><loc0491> effusion"
    )


# ---- encoders write what the families write -----------------------------------------------------------------------
def test_encoders_write_each_documented_format():
    box, size = (76.8, 100, 307.2, 360), LAND  # 120, 250, 480, 900 thousandths
    two = [box, (384, 20, 608, 140)]  # second: 600, 50, 950, 350
    assert get_codec("internvl").encode(two, size, label="a") == (
        "<ref>a</ref><box>[[120, 250, 480, 900], [600, 50, 950, 350]]</box>"
    )
    assert get_codec("minicpmv").encode(box, size, label="a") == "<ref>a</ref><box>120 250 480 900</box>"
    # 999 steps: 0.12 * 999 = 119.88 -> 120, 0.25 * 999 = 249.75 -> 250, 0.48 * 999 = 479.52 -> 480, 0.9 * 999 -> 899
    assert get_codec("deepseekvl2").encode(box, size, label="a") == (
        "<|ref|>a<|/ref|><|det|>[[120, 250, 480, 899]]<|/det|>"
    )
    assert get_codec("cogvlm").encode([(0, 0, 640, 40), box], size) == "[[000,000,999,100;120,250,480,900]]"
    assert get_codec("glm4v").encode(box, size) == "<|begin_of_box|>[120,250,480,900]<|end_of_box|>"
    assert get_codec("qwen3vl").encode(box, size, label="a") == '[{"bbox_2d": [120, 250, 480, 900], "label": "a"}]'
    assert get_codec("ferret").encode(box, size, label="a") == "a [120, 250, 480, 900]"
    # floor(c * 1000), 1.0 -> 999
    assert get_codec("florence2").encode([(76.79, 100, 640, 360)], size, label="a") == (
        "a<loc_119><loc_250><loc_999><loc_900>"
    )
    # Shikra pads 640x400 to 640x640 (y + 120)
    assert get_codec("shikra").encode(two, size) == "[0.120,0.344,0.480,0.750;0.600,0.219,0.950,0.406]"
    # Kosmos-2: floor(x1 * 32), ceil(x2 * 32 - 1): x 3.84 -> 3, 15.36 - 1 -> 15; y 8 -> 8, 28.8 - 1 -> 28
    assert get_codec("kosmos2").encode(box, size, label="a") == (
        "<phrase>a</phrase><object><patch_index_0259><patch_index_0911></object>"
    )


def test_kosmos2_matches_transformers_patch_index_functions():
    kosmos = pytest.importorskip("transformers.models.kosmos2.processing_kosmos2")
    codec = get_codec("kosmos2")
    w, h = PORT
    for first, last in [(44, 863), (100, 110), (3, 995), (500, 500), (33, 1023), (0, 1023), (72, 8)]:
        text = f"<object><patch_index_{first:04d}><patch_index_{last:04d}></object>"
        x1, y1, x2, y2 = kosmos.patch_index_to_coordinate(first, last, 32)
        want = (min(x1, x2) * w, min(y1, y2) * h, max(x1, x2) * w, max(y1, y2) * h)
        close(codec.decode(text, PORT).box, want, tol=1e-9)
    for box in [(0.1, 0.2, 0.7, 0.9), (0.0, 0.0, 1.0, 1.0), (0.33, 0.5, 0.34, 0.52)]:
        pixel = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
        first, last = kosmos.coordinate_to_patch_index(box, 32)
        assert f"<patch_index_{first:04d}><patch_index_{last:04d}>" in codec.encode(pixel, PORT)


def test_shikra_pads_like_expand2square_and_can_be_told_not_to():
    # 301 wide, 700 high: Shikra pastes the image at x = (700 - 301) // 2 = 199 (integer division)
    r = get_codec("shikra").decode("[0.500,0.500,0.600,0.600]", (301, 700))
    close(r.box, (350 - 199, 350, 420 - 199, 420))
    unpadded = get_codec("shikra", pad_to_square=False).decode("[0.100,0.300,0.500,0.700]", LAND)
    close(unpadded.box, (64, 120, 320, 280))


def test_minicpmv_needs_its_box_tags():
    codec = get_codec("minicpmv")
    assert codec.decode("<ref>mass</ref> 120 250 480 900", PORT).status is ParseStatus.NO_BOX
    assert codec.decode("<box>120 250 480 900", PORT).status is ParseStatus.MALFORMED


# ---- the cross-family matrix --------------------------------------------------------------------------------------
# One single-box answer per family on the 640x400 image, with the box it stands for.
ANSWERS = {
    "internvl": ("<ref>effusion</ref><box>[[120, 250, 480, 900]]</box>", (76.8, 100, 307.2, 360)),
    "minicpmv": ("The effusion: <ref>effusion</ref><box>120 250 480 900</box>", (76.8, 100, 307.2, 360)),
    "deepseekvl2": ("<|ref|>effusion<|/ref|><|det|>[[120, 250, 480, 900]]<|/det|>",
                    (120 / 999 * 640, 250 / 999 * 400, 480 / 999 * 640, 900 / 999 * 400)),
    "paligemma": ("<loc0256><loc0123><loc0921><loc0491> effusion",
                  (123 / 1023 * 640, 256 / 1023 * 400, 491 / 1023 * 640, 921 / 1023 * 400)),
    "florence2": ("effusion<loc_120><loc_250><loc_480><loc_900>",
                  (120.5 * 0.64, 250.5 * 0.4, 480.5 * 0.64, 900.5 * 0.4)),
    "kosmos2": ("<phrase> effusion</phrase><object><patch_index_0259><patch_index_0911></object>",
                (3.5 * 20, 8.5 * 12.5, 15.5 * 20, 28.5 * 12.5)),
    "cogvlm": ("The effusion [[120,250,480,900]].", (76.8, 100, 307.2, 360)),
    "glm4v": ("Here: <|begin_of_box|>[120,250,480,900]<|end_of_box|>", (76.8, 100, 307.2, 360)),
    "gemini": ('```json\n[{"box_2d": [250, 120, 900, 480], "label": "effusion"}]\n```', (76.8, 100, 307.2, 360)),
    "qwen3vl": ('```json\n[{"bbox_2d": [120, 250, 480, 900], "label": "effusion"}]\n```', (76.8, 100, 307.2, 360)),
    "shikra": ("The effusion [0.120,0.300,0.480,0.700].", (76.8, 72, 307.2, 328)),
    "ferret": ("The effusion [120, 250, 480, 900] is on the left.", (76.8, 100, 307.2, 360)),
    # our older conventions, so the new codecs are checked against them too
    "llava": ("[0.12, 0.25, 0.48, 0.90]", (76.8, 100, 307.2, 360)),
    "qwen2vl": ("<|box_start|>(120,250),(480,900)<|box_end|>", (76.8, 100, 307.2, 360)),
    "minigptv2": ("<p>effusion</p> {<12><25><48><90>}", (76.8, 100, 307.2, 360)),
}

# Pairs (answer family, reading codec) that read the same box and may: these families write the same language once
# skip_special_tokens has removed their tokens (0-1000 xyxy integer lists; DeepSeek-VL2's 0-999 is 0.1 % apart),
# Qwen3-VL's JSON holds such a list, and Shikra's padded floats are LLaVA's expand2square floats.
_BARE_PER_MILLE = ("internvl", "ferret", "glm4v", "cogvlm", "deepseekvl2")
SAME_LANGUAGE = (
    {(a, b) for a in _BARE_PER_MILLE for b in _BARE_PER_MILLE if a != b}
    | {("qwen3vl", b) for b in _BARE_PER_MILLE}
    | {("shikra", "llava_pad")}
)


def _same_box(got, want, size) -> bool:
    """Within 2 % of the side on every coordinate: what a reader could mistake for the right answer."""
    w, h = size
    return all(abs(g - t) <= 0.02 * s for g, t, s in zip(got, want, (w, h, w, h)))


def test_answers_read_by_other_families_fail_or_differ():
    same = set()
    for family, (text, want) in ANSWERS.items():
        for reader in available_codecs():
            result = get_codec(reader).decode(text, LAND)
            if reader == family:
                assert result.ok and len(result.boxes) == 1, (family, result)
                close(result.box, want)
            elif result.ok and _same_box(result.box, want, LAND):
                same.add((family, reader))
    assert same == SAME_LANGUAGE, (sorted(same - SAME_LANGUAGE), sorted(SAME_LANGUAGE - same))


# ---- Molmo points -------------------------------------------------------------------------------------------------
MOLMO = MolmoPointCodec()


def test_molmo_point_decodes_percentages_to_pixels():
    r = MOLMO.decode('The nodule is here: <point x="61.5" y="40.6" alt="nodule">nodule</point>.', LAND)
    assert r.ok and len(r.points) == 1
    close(r.point, (0.615 * 640, 0.406 * 400))
    r = MOLMO.decode('<points x1="10.0" y1="20.0" x2="75.5" y2="90.0" alt="nodules">nodules</points>', PORT)
    assert r.ok
    assert [tuple(round(v, 6) for v in p) for p in r.points] == [(30, 140), (226.5, 630)]
    two_tags = '<point x="10" y="20" alt="a">a</point> and <point x="50" y="50" alt="b">b</point>'
    assert len(MOLMO.decode(two_tags, LAND).points) == 2
    assert MOLMO.decode("<point y='20' x='10'>a</point>", LAND).point == pytest.approx((64, 80))


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("I cannot point to it.", ParseStatus.NO_BOX),
        ('<point x="12.5" alt="a">a</point>', ParseStatus.MALFORMED),  # y missing
        ('<point x="12.5" y="', ParseStatus.MALFORMED),
        ('<point x="250" y="40">a</point>', ParseStatus.OUT_OF_RANGE),
        ('<point x="nan" y="40">a</point>', ParseStatus.NON_FINITE),
        ('<point x="1e999" y="40">a</point>', ParseStatus.NON_FINITE),
        ('<point x="ten" y="40">a</point>', ParseStatus.MALFORMED),
        ('<points x1="10" y1="20" x2="30">a</points>', ParseStatus.OK),  # one complete point of two
        ("[0.1, 0.2, 0.3, 0.4]", ParseStatus.NO_BOX),  # a box is not a point
    ],
)
def test_molmo_point_failures(text, status):
    r = MOLMO.decode(text, LAND)
    assert r.status is status, r
    if status is not ParseStatus.OK:
        assert r.points == ()
        if status is not ParseStatus.NO_BOX:
            assert r.rejected
    else:
        assert len(r.points) == 1 and r.rejected


def test_molmo_point_clamps_slightly_out_of_range():
    r = MOLMO.decode('<point x="101.5" y="-2">a</point>', LAND)
    assert r.ok and r.clamped == 1 and r.point == (640.0, 0.0)


@pytest.mark.parametrize("bad", [None, 42, b'<point x="1" y="2">', ["<point>"]])
def test_molmo_point_never_raises_on_non_text(bad):
    assert MOLMO.decode(bad, LAND).status is ParseStatus.NOT_TEXT


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_molmo_point_never_raises_on_any_text(text):
    for x, y in MOLMO.decode(text, LAND).points:
        assert 0 <= x <= 640 and 0 <= y <= 400 and math.isfinite(x) and math.isfinite(y)


@settings(max_examples=300, deadline=None)
@given(
    size=st.tuples(st.integers(16, 4096), st.integers(16, 4096)),
    fx=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    fy=st.lists(st.floats(0, 1), min_size=5, max_size=5),
)
def test_molmo_point_round_trip(size, fx, fy):
    points = [(a * size[0], b * size[1]) for a, b in zip(fx, fy)]
    r = MOLMO.decode(MOLMO.encode(points, size, label="x"), size)
    assert r.ok and len(r.points) == len(points)
    ex, ey = MOLMO.max_error(size)
    for (gx, gy), (px, py) in zip(r.points, points):
        assert abs(gx - px) <= ex + 1e-9 * size[0] and abs(gy - py) <= ey + 1e-9 * size[1]


def test_point_hit():
    boxes = [(100, 50, 300, 250), (400, 300, 350, 200)]  # the second with reversed corners
    assert point_hit((150, 60), boxes)
    assert point_hit((100, 250), boxes)  # edges count
    assert point_hit((360, 250), boxes)
    assert not point_hit((320, 60), boxes)
    assert not point_hit((150, 260), boxes)
    assert point_hit((150, 60), (100, 50, 300, 250))  # one box
    assert not point_hit(None, boxes)
    assert not point_hit((float("nan"), 60), boxes)
    assert not point_hit((150, 60), [])
    # a decoded Molmo answer against the ground truth, end to end (640x400: 30 % -> 192 px, 40 % -> 160 px)
    answer = MOLMO.decode('<point x="30.0" y="40.0" alt="opacity">opacity</point>', LAND)
    assert point_hit(answer.point, [(150, 100, 250, 200)])
    assert not point_hit(answer.point, [(200, 100, 250, 200)])


POINT_ATTACKS = {
    "point_starts": '<point x="1" y=' * 66_667,
    "points_spaces": "<points " + " " * 999_992,
    "long_tag": "<points " + 'x1="1" ' * 142_856,
    "attr_runs": 'x="1" y="' * 111_112,
    "angle_runs": "<" * 1_000_000,
}


def test_molmo_point_parsing_is_linear():
    def cost(n: int) -> float:
        t0 = time.perf_counter()
        for payload in POINT_ATTACKS.values():
            MOLMO.decode(payload[:n], (512, 512))
        return time.perf_counter() - t0

    small, large = cost(100_000), cost(1_000_000)
    assert large / max(small, 1e-4) < 30, (small, large)


def test_molmo_is_not_a_box_codec():
    assert "molmo_point" not in available_codecs()
    with pytest.raises(ValueError, match="unknown box format"):
        get_codec("molmo_point")


# ---- prompt conventions ---------------------------------------------------------------------------------------------
_INTERNVL = "Please provide the bounding box coordinate of the region this sentence describes: <ref>left apex</ref>"
OFFICIAL_REFER = {
    "internvl": _INTERNVL,
    "minicpmv": _INTERNVL,
    "cogvlm": "Can you point out left apex in the image and provide the bounding boxes of their location?",
    "glm4v": "Help me to locate left apex in the image and give me its bounding boxes.",
    "qwen3vl": "Locate left apex in the image. Report bbox coordinates in JSON format.",
    "shikra": "Where is left apex in the image? answer in [x0,y0,x1,y1] format.",
    "ferret": "What is the location of left apex in the image?",
}


@pytest.mark.parametrize("convention", sorted(OFFICIAL_REFER) + ["gemini"])
def test_family_conventions_use_the_official_prompt_and_codec(convention):
    prompts = get_prompts(convention)
    assert prompts.codec == convention
    text = build_prompt("refer", convention, phrase="left apex")
    if convention == "gemini":
        assert text.startswith("Detect left apex in the image.") and "[ymin, xmin, ymax, xmax]" in text
        assert "0-1000" in text
    else:
        assert text == OFFICIAL_REFER[convention]
    for family in ("vqa", "caption", "report"):
        assert build_prompt(family, convention, question="Is it normal?")


def test_coarse_grid_conventions_use_their_official_prompts():
    for name in ("deepseekvl2", "paligemma", "florence2", "kosmos2"):
        prompts = get_prompts(name)
        assert prompts.codec == name and name in available_codecs()
        assert "{phrase}" in prompts.refer[0]
    assert build_prompt("refer", "kosmos2", phrase="a nodule") == "<grounding><phrase> a nodule</phrase>"
    assert build_prompt("refer", "florence2", phrase="a") == "<CAPTION_TO_PHRASE_GROUNDING>a"
    assert build_prompt("refer", "paligemma", phrase="a") == "detect a"
    assert build_prompt("refer", "deepseekvl2", phrase="a") == "<|ref|>a<|/ref|>."
