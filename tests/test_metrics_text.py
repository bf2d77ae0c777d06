"""Report-generation metrics against pycocoevalcap (BLEU, ROUGE-L, CIDEr on identical tokens) and hand-worked METEOR."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfmvg_plugin.metrics.text import (
    bleu,
    cider_d,
    lcs_length,
    meteor,
    meteor_stats,
    rouge_l,
    score_reports,
    sentence_meteor,
    sentence_rouge_l,
    tokenize,
)


def _w(text: str) -> list[str]:
    return text.split()


# (prediction, reference or references): normal / abnormal chest X-ray findings, varied lengths, several refs.
PAIRS: list[tuple[str, str | list[str]]] = [
    ("The lungs are clear. No pleural effusion or pneumothorax.",
     "The lungs are clear bilaterally. No pleural effusion or pneumothorax is seen."),
    ("Heart size is normal. The lungs are clear.",
     ["Heart size is within normal limits. Lungs are clear.", "Normal heart size. No focal consolidation."]),
    ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process."),
    ("There is a right lower lobe opacity concerning for pneumonia.",
     "Right lower lobe consolidation, compatible with pneumonia in the appropriate clinical setting."),
    ("Moderate cardiomegaly with mild pulmonary edema.",
     ["Cardiomegaly is moderate. There is mild interstitial pulmonary edema.",
      "Moderately enlarged cardiac silhouette with mild edema.",
      "Mild pulmonary vascular congestion and cardiomegaly."]),
    ("Small left pleural effusion.", "Small left pleural effusion with adjacent atelectasis."),
    ("Endotracheal tube terminates 3.5 cm above the carina. Nasogastric tube courses below the diaphragm.",
     "The endotracheal tube tip is 3.5 cm above the carina. An enteric tube extends below the diaphragm."),
    ("Normal chest.", "No acute cardiopulmonary abnormality. Heart and mediastinum are normal."),
    ("Large right pneumothorax with leftward mediastinal shift, concerning for tension.",
     "Large right-sided pneumothorax with mediastinal shift to the left, consistent with tension physiology."),
    ("Bibasilar atelectasis. No focal consolidation.",
     ["Bibasilar atelectasis is present. No focal consolidation.", "Mild bibasilar atelectasis."]),
    ("The cardiomediastinal silhouette is within normal limits. There is no pleural effusion. "
     "No pneumothorax. The visualized osseous structures are unremarkable.",
     "Cardiomediastinal silhouette is normal. No pleural effusion or pneumothorax. Osseous structures intact."),
    ("Healed left rib fractures.", "Old healed fractures of the left posterior ribs."),
    ("There is a 1.2-cm nodule in the right upper lobe.",
     "A 1.2 cm nodule is seen in the right upper lobe; follow-up CT is recommended."),
    ("Lungs are hyperinflated, consistent with COPD.", "Hyperinflated lungs compatible with emphysema/COPD."),
    ("Right PICC terminates in the SVC.",
     ["Right-sided PICC line tip in the mid SVC.", "The right PICC tip projects over the SVC."]),
    ("No evidence of pneumonia.", "No radiographic evidence of pneumonia. Lungs are clear."),
    ("Diffuse bilateral airspace opacities, likely ARDS.",
     "Diffuse bilateral patchy airspace opacities, which may represent ARDS or multifocal pneumonia."),
    ("Sternotomy wires are intact. Heart size is normal.", "Median sternotomy wires intact. Normal heart size."),
    ("Stable chest radiograph.", "Stable appearance of the chest compared with prior."),
    ("The lungs are clear. No pleural effusion or pneumothorax.",
     "The lungs are clear. No pleural effusion or pneumothorax."),
    ("Mild degenerative changes of the thoracic spine.",
     ["Degenerative changes in the thoracic spine.", "Mild thoracic spondylosis."]),
]


def _tokens(max_words=None):
    hyps = [tokenize(p, max_words=max_words) for p, _ in PAIRS]
    refs = [[tokenize(r, max_words=max_words) for r in ([rs] if isinstance(rs, str) else rs)] for _, rs in PAIRS]
    return hyps, refs


def _coco_inputs(hyps, refs):
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    return gts, res


# ---- tokenizer --------------------------------------------------------------------------------------------------
def test_tokenize_rules():
    text = "The ET-tube is 3.5 cm above the carina (stable). Emphysema/COPD; patient's X-ray: 1.2-cm nodule!"
    assert tokenize(text) == [
        "the", "et-tube", "is", "3.5", "cm", "above", "the", "carina", "stable", "emphysema/copd", "patient", "s",
        "x-ray", "1.2-cm", "nodule",
    ]
    assert tokenize("Lungs Clear.", lowercase=False) == ["Lungs", "Clear"]
    assert tokenize("a - b -- c ... 3. 5") == ["a", "b", "c", "3", "5"]
    assert tokenize("") == []


def test_tokenize_truncation_only_when_asked():
    text = " ".join(f"w{i}" for i in range(80))
    assert len(tokenize(text)) == 80
    assert tokenize(text, max_words=50) == [f"w{i}" for i in range(50)]
    assert tokenize("a b", max_words=0) == []
    with pytest.raises(ValueError):
        tokenize("a", max_words=-1)


# ---- against pycocoevalcap --------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_words", [None, 6])
def test_bleu_rouge_cider_match_pycocoevalcap(max_words):
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
    Rouge = pytest.importorskip("pycocoevalcap.rouge.rouge").Rouge
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    hyps, refs = _tokens(max_words)
    gts, res = _coco_inputs(hyps, refs)

    ref_bleu, ref_bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    assert bleu(hyps, refs) == pytest.approx(ref_bleu, abs=1e-9, rel=0)
    ref_rouge, ref_rouge_per = Rouge().compute_score(gts, res)
    ours_rouge, ours_rouge_per = rouge_l(hyps, refs)
    assert ours_rouge == pytest.approx(ref_rouge, abs=1e-9, rel=0)
    assert ours_rouge_per == pytest.approx(list(ref_rouge_per), abs=1e-9, rel=0)
    ref_cider, ref_cider_per = Cider().compute_score(gts, res)
    ours_cider, ours_cider_per = cider_d(hyps, refs)
    assert ours_cider == pytest.approx(ref_cider, abs=1e-6, rel=0)
    assert ours_cider_per == pytest.approx(list(ref_cider_per), abs=1e-6, rel=0)
    assert 0 < ref_bleu[3] < ref_bleu[0] < 1 and ref_cider > 0.5  # the fixture is neither trivial nor hopeless

    # score_reports tokenises the raw strings the same way
    out = score_reports([p for p, _ in PAIRS], [r for _, r in PAIRS], max_words=max_words)
    assert [out[f"bleu{k}"] for k in range(1, 5)] == pytest.approx(ref_bleu, abs=1e-9, rel=0)
    assert out["rouge_l"] == pytest.approx(ref_rouge, abs=1e-9, rel=0)
    assert out["cider"] == pytest.approx(ref_cider, abs=1e-6, rel=0)
    assert out["n"] == len(PAIRS) and 0 < out["meteor"] < 1


def test_bleu_brevity_penalty_and_closest_reference():
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
    hyps = [["no", "acute", "process"], ["lungs", "clear"]]
    refs = [[["no", "acute", "cardiopulmonary", "process"], ["no", "acute"]],  # |3-4| == |3-2|: ties -> shorter
            [["the", "lungs", "are", "clear", "bilaterally"]]]
    gts, res = _coco_inputs(hyps, refs)
    assert bleu(hyps, refs) == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0], abs=1e-12, rel=0)
    # BLEU-1 by hand: clipped matches 3 + 2 over 5 guesses; reference length 2 + 5 = 7 > 5 -> BP = exp(1 - 7/5)
    assert bleu(hyps, refs)[0] == pytest.approx(math.exp(1 - 7 / 5), abs=1e-9)


def test_lcs_and_rouge_by_hand():
    assert lcs_length(_w("a b c d e"), _w("a x c e")) == 3
    assert lcs_length([], ["a"]) == 0
    hyp, ref = _w("no acute process"), _w("no acute cardiopulmonary process")
    p, r = 3 / 3, 3 / 4
    assert sentence_rouge_l(hyp, [ref]) == pytest.approx((1 + 1.2**2) * p * r / (r + 1.2**2 * p))
    assert sentence_rouge_l([], [ref]) == 0.0


# ---- METEOR -----------------------------------------------------------------------------------------------------
def test_meteor_textbook_examples():
    ref = _w("the cat sat on the mat")
    # identical: P = R = 1, one chunk of 6 -> penalty 0.5 * (1/6)^3
    assert sentence_meteor(ref, [ref]) == pytest.approx(1 - 0.5 / 216)
    # reordered: 3 chunks ("on the mat", "sat", "the cat") of 6 matches -> 1 - 0.5 * (3/6)^3 = 0.9375
    assert meteor_stats(_w("on the mat sat the cat"), ref) == (6, 3)
    assert sentence_meteor(_w("on the mat sat the cat"), [ref]) == pytest.approx(0.9375)
    # one extra word: P = 6/7, R = 1, Fmean = 10PR / (R + 9P) = 60/61; 2 chunks -> penalty 0.5 * (2/6)^3
    hyp = _w("the cat was sat on the mat")
    assert meteor_stats(hyp, ref) == (6, 2)
    assert sentence_meteor(hyp, [ref]) == pytest.approx(60 / 61 * (1 - 0.5 / 27))
    assert sentence_meteor(hyp, [ref]) == pytest.approx(0.9654, abs=5e-5)


def test_meteor_properties():
    ref = _w("small left pleural effusion with adjacent atelectasis")
    assert sentence_meteor([], [ref]) == 0.0
    assert sentence_meteor(["pneumothorax"], [ref]) == 0.0
    # more correct words in the right order score higher; scrambling the same words scores lower
    a = sentence_meteor(_w("small effusion"), [ref])
    b = sentence_meteor(_w("small left pleural effusion"), [ref])
    c = sentence_meteor(_w("effusion pleural left small"), [ref])
    assert 0 < a < b and c < b
    # several references: the best one counts
    assert sentence_meteor(ref, [["x"], ref]) == sentence_meteor(ref, [ref])
    mean, per = meteor([ref, ["x"]], [[ref], [ref]])
    assert per[1] == 0.0 and mean == pytest.approx(per[0] / 2)


# ---- properties -------------------------------------------------------------------------------------------------
_words = st.lists(st.sampled_from(_w("lungs are clear no effusion pleural heart normal size mild")), max_size=12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_words, _words), min_size=1, max_size=4))
def test_scores_in_range_and_symmetry(pairs):
    hyps = [h for h, _ in pairs]
    refs = [[r] for _, r in pairs]
    for v in bleu(hyps, refs):
        assert 0.0 <= v <= 1.0 + 1e-9
    r_mean, r_per = rouge_l(hyps, refs)
    m_mean, m_per = meteor(hyps, refs)
    c_mean, _ = cider_d(hyps, refs)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in r_per + m_per)
    assert c_mean >= 0.0
    for h, r in pairs:
        assert lcs_length(h, r) == lcs_length(r, h)
        # METEOR's matches and chunks do not depend on which side is the hypothesis
        assert meteor_stats(h, r)[0] == meteor_stats(r, h)[0]
        if h and r:  # with beta = 1 ROUGE-L's F is symmetric
            assert sentence_rouge_l(h, [r], beta=1.0) == pytest.approx(sentence_rouge_l(r, [h], beta=1.0))
        if h:
            assert sentence_rouge_l(h, [h]) == pytest.approx(1.0)
            assert sentence_meteor(h, [h]) == pytest.approx(1 - 0.5 / len(h) ** 3)


def test_input_validation():
    with pytest.raises(ValueError):
        bleu([["a"]], [])
    with pytest.raises(ValueError):
        rouge_l([["a"]], [[]])
    with pytest.raises(TypeError):
        cider_d([["a"]], [["a"]])
    with pytest.raises(ValueError):
        score_reports(["a"], ["a", "b"])
