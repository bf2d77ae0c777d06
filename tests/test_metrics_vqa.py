"""Med-VQA metrics: one hand-made case per protocol rule, and the aggregate with bootstrap CIs."""

from __future__ import annotations

import pytest

from pfmvg_plugin.metrics.vqa import (
    answer_tokens,
    closed_correct,
    normalize_answer,
    open_exact,
    score_vqa,
    token_recall,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("  The LEFT   lung! ", "left lung"),
        ("An enlarged heart", "enlarged heart"),
        ("Two", "2"),
        ("three lesions", "3 lesions"),
        ("Yeah", "yes"),
        ("nope, none", "no none"),
        ("T2-weighted (MRI)", "t2 weighted mri"),
        ("2.5 cm.", "2.5 cm"),
        ("x_ray", "x ray"),
        ("theory", "theory"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_normalisation_is_minimal():
    # no stemming, no medical synonyms, "true"/"absent" are not yes/no
    assert answer_tokens("Lesions true absent") == ["lesions", "true", "absent"]


def test_closed_rules():
    assert closed_correct("Yes", "yes")
    assert closed_correct("yes.", "Yes")
    assert closed_correct("Yes, there is a mass in the left lung.", "yes")  # exactly one of yes/no
    assert closed_correct("Yeah, it is.", "yes")
    assert not closed_correct("No, there is no mass.", "yes")
    assert closed_correct("No, there is no mass.", "no")  # "no" twice is still only "no"
    assert not closed_correct("yes or no", "yes")  # both -> neither
    assert not closed_correct("There is a mass.", "yes")  # neither
    assert not closed_correct("nothing", "no")  # whole tokens only
    # multiple choice: exact match after normalisation only
    assert closed_correct("The MRI.", "mri")
    assert closed_correct("T2-weighted", "t2 weighted")
    assert not closed_correct("It is MRI", "mri")
    assert not closed_correct("CT", "mri")


def test_open_rules():
    assert open_exact("The left lung.", "left lung")
    assert open_exact("two", "2")
    assert not open_exact("left lung apex", "left lung")
    assert token_recall("left lung apex", "left lung") == 1.0
    assert token_recall("the right lung", "left lung") == 0.5
    assert token_recall("lung", "lung lung") == 0.5  # clipped counts
    assert token_recall("cardiomegaly", "pneumothorax") == 0.0
    assert token_recall("", "the") == 1.0 and token_recall("x", "the") == 0.0


def test_score_vqa_aggregate():
    preds = ["Yes, there is.", "no", "MRI", "left lung apex", "Brain", "3"]
    gts = ["yes", "yes", "CT", "left lung", "brain", "three"]
    types = ["CLOSED", "closed", "Closed", "OPEN", "open", "open"]
    out = score_vqa(preds, gts, types, n_bootstrap=200, seed=1)
    assert (out["n"], out["n_closed"], out["n_open"]) == (6, 3, 3)
    assert out["closed_acc"] == pytest.approx(1 / 3)
    assert out["open_exact"] == pytest.approx(2 / 3)
    assert out["open_recall"] == pytest.approx(1.0)
    assert out["overall"] == pytest.approx(3 / 6)
    for key in ("overall", "closed_acc", "open_exact"):
        lo, hi = out[f"{key}_ci"]
        assert 0.0 <= lo <= out[key] <= hi <= 1.0
    assert out["open_recall_ci"] == [1.0, 1.0]
    assert out["ci"] == 0.95 and "recall" in out["protocol"]
    assert score_vqa(preds, gts, types, n_bootstrap=200, seed=1) == out  # deterministic


def test_score_vqa_empty_subset_and_no_bootstrap():
    out = score_vqa(["yes"], ["yes"], ["closed"], n_bootstrap=0)
    assert out["closed_acc"] == 1.0 and out["overall"] == 1.0 and out["closed_acc_ci"] is None
    assert out["open_exact"] is None and out["open_recall"] is None and out["open_exact_ci"] is None
    assert out["n_open"] == 0


def test_score_vqa_validation():
    with pytest.raises(ValueError, match="lengths"):
        score_vqa(["a"], ["a", "b"], ["open"])
    with pytest.raises(ValueError, match="answer_type"):
        score_vqa(["a"], ["a"], ["yes/no"])
