"""Report-generation metrics without Java: BLEU-1..4, ROUGE-L, CIDEr-D and a simple METEOR. Pure stdlib.

The COCO caption toolkit (``pycocoevalcap``) is the de-facto protocol of medical report generation papers, but its
tokenizer (Stanford PTBTokenizer) and METEOR (METEOR 1.5 jar) need Java. This module re-implements the pure-Python
parts of that protocol, so that numbers agree with ``pycocoevalcap`` when it is fed the same tokens:

* :func:`bleu`     -- corpus BLEU-1..4 as ``pycocoevalcap.bleu.Bleu(4)``: clipped n-gram counts summed over the corpus,
  geometric mean of the precisions, brevity penalty from the per-sample *closest* reference length (ties -> the
  shorter one), summed over the corpus. It keeps the reference's tiny additive constants (``1e-15`` / ``1e-9``) so that
  a zero count scores 0 instead of dividing by zero.
* :func:`rouge_l`  -- ROUGE-L as ``pycocoevalcap.rouge.Rouge``: per sample, LCS precision and recall maximised
  *separately* over the references, F-measure with ``beta=1.2``; the corpus score is the mean over samples.
* :func:`cider_d`  -- CIDEr-D as ``pycocoevalcap.cider.Cider`` (n=4, sigma=6): TF-IDF n-gram vectors with document
  frequencies counted over the references of the evaluated corpus, clipped cosine similarity, Gaussian length
  penalty, mean over n and over references, times 10. Like the reference, the "length" in the penalty is the number of
  *bigrams* of a sentence (``len - 1`` for non-empty sentences), which only differs from the word count for
  sentences of zero or one word.
* :func:`meteor`   -- **not** the METEOR of ``pycocoevalcap`` (see :func:`sentence_meteor` for the differences).

Tokenisation (:func:`tokenize`) stands in for the PTBTokenizer step of the toolkit: lowercase (optional), split off
punctuation and drop it. Report numbers therefore agree with ``pycocoevalcap`` only up to tokenisation differences;
on the same tokens they agree to floating-point precision (see ``tests/test_metrics_text.py``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

Tokens = Sequence[str]

#: A token: a run of word characters or a decimal number, possibly joined to more of them by internal ``-`` or ``/``
#: ("x-ray", "t2-weighted", "and/or", "3.5", "1.2-cm"). Everything else (punctuation, brackets, quotes) is dropped.
_PART = r"(?:\d+\.\d+|[^\W_]+)"
_TOKEN_RE = re.compile(rf"{_PART}(?:[-/]{_PART})*")

BLEU_N = 4
ROUGE_BETA = 1.2
CIDER_N = 4
CIDER_SIGMA = 6.0
METEOR_ALPHA = 0.9
METEOR_BETA = 3.0
METEOR_GAMMA = 0.5

_TINY = 1e-15  # pycocoevalcap BleuScorer: "so that if guess is 0 still return 0"
_SMALL = 1e-9


# ---- tokenisation -----------------------------------------------------------------------------------------------
def tokenize(text: str, lowercase: bool = True, max_words: int | None = None) -> list[str]:
    """Split ``text`` into word tokens, dropping punctuation, like the PTBTokenizer step of ``pycocoevalcap``.

    * ``lowercase`` -- lowercase first (the COCO toolkit always does).
    * Tokens are runs of letters/digits; internal hyphens and slashes are kept ("x-ray", "and/or", as PTB keeps
      them) and decimal points between digits are kept ("3.5"); other punctuation separates tokens and is dropped,
      as the toolkit drops PTB's punctuation tokens. Unlike PTB, clitics lose their apostrophe ("patient's" ->
      ``["patient", "s"]``, PTB: ``["patient", "'s"]``) and underscores separate tokens.
    * ``max_words`` -- keep only the first ``max_words`` tokens (PeFoMed lowercased reports and cut them to 50
      words); ``None`` (the default) keeps everything. Truncation is never applied unless asked for.
    """
    if max_words is not None and max_words < 0:
        raise ValueError(f"max_words must be >= 0 or None, got {max_words}")
    tokens = _TOKEN_RE.findall(text.lower() if lowercase else text)
    return tokens if max_words is None else tokens[:max_words]


def _ngrams(tokens: Tokens, n: int) -> Counter:
    """Counts of all 1..n-grams of ``tokens`` (tuples)."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _check(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
    if not hyps:
        raise ValueError("nothing to score")
    for i, r in enumerate(refs):
        if not r:
            raise ValueError(f"sample {i} has no reference")
        if isinstance(r[0], str):
            raise TypeError(f"sample {i}: references must be a list of token lists, got a list of strings")


# ---- BLEU -------------------------------------------------------------------------------------------------------
def bleu(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], n: int = BLEU_N) -> list[float]:
    """Corpus BLEU-1..``n`` of tokenised hypotheses against tokenised reference sets -> ``[bleu1, ..., bleun]``."""
    _check(hyps, refs)
    correct = [0] * n
    guess = [0] * n
    hyp_len = 0
    ref_len = 0
    for hyp, ref_set in zip(hyps, refs):
        max_ref: Counter = Counter()
        for ref in ref_set:
            max_ref |= _ngrams(ref, n)  # element-wise max of counts
        for gram, count in _ngrams(hyp, n).items():
            correct[len(gram) - 1] += min(count, max_ref.get(gram, 0))
        for k in range(n):
            guess[k] += max(0, len(hyp) - k)
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in ref_set)[1]  # closest, ties -> shorter
    scores = []
    prod = 1.0
    for k in range(n):
        prod *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(prod ** (1.0 / (k + 1)))
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ---- ROUGE-L ----------------------------------------------------------------------------------------------------
def lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def sentence_rouge_l(hyp: Tokens, refs: Sequence[Tokens], beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F of one hypothesis: LCS precision and recall each maximised over ``refs``; 0 for empty input."""
    if not hyp:
        return 0.0
    lcs = [lcs_length(r, hyp) for r in refs]
    prec = max(c / len(hyp) for c in lcs)
    rec = max((c / len(r) if r else 0.0) for c, r in zip(lcs, refs))
    if prec == 0 or rec == 0:
        return 0.0
    return (1 + beta**2) * prec * rec / (rec + beta**2 * prec)


def rouge_l(
    hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], beta: float = ROUGE_BETA
) -> tuple[float, list[float]]:
    """Corpus ROUGE-L ``(mean, per-sample scores)``."""
    _check(hyps, refs)
    per = [sentence_rouge_l(h, r, beta) for h, r in zip(hyps, refs)]
    return sum(per) / len(per), per


# ---- CIDEr-D ----------------------------------------------------------------------------------------------------
def _tfidf(counts: Counter, doc_freq: Counter, log_n_docs: float, n: int) -> tuple[list[dict], list[float], int]:
    """TF-IDF vectors (one dict per n-gram order), their norms, and the bigram count used as "length"."""
    vec: list[dict] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        w = tf * (log_n_docs - math.log(max(1.0, doc_freq.get(gram, 0))))
        vec[k][gram] = w
        norm[k] += w * w
        if k == 1:  # as pycocoevalcap: the length penalty counts bigrams
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def cider_d(
    hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], n: int = CIDER_N, sigma: float = CIDER_SIGMA
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D ``(mean, per-sample scores)``; IDF from the references of this corpus (so it depends on it)."""
    _check(hyps, refs)
    ref_counts = [[_ngrams(r, n) for r in ref_set] for ref_set in refs]
    doc_freq: Counter = Counter()
    for ref_set in ref_counts:
        doc_freq.update({g for c in ref_set for g in c})
    log_n_docs = math.log(float(len(refs)))
    per = []
    for hyp, ref_set in zip(hyps, ref_counts):
        vh, nh, lh = _tfidf(_ngrams(hyp, n), doc_freq, log_n_docs, n)
        total = [0.0] * n
        for rc in ref_set:
            vr, nr, lr = _tfidf(rc, doc_freq, log_n_docs, n)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for k in range(n):
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    dot /= nh[k] * nr[k]
                total[k] += dot * penalty
        per.append(10.0 * sum(total) / n / len(ref_set))
    return sum(per) / len(per), per


# ---- METEOR (simple, exact match only) --------------------------------------------------------------------------
def _align(hyp: Tokens, ref: Tokens) -> list[tuple[int, int]]:
    """Exact-match one-to-one alignment ``[(hyp_idx, ref_idx)]``, sorted by hypothesis position.

    Greedy: repeatedly align the longest run of consecutive tokens equal in both sentences among still unaligned
    positions (ties: earliest in the hypothesis, then in the reference). This aligns the maximum number of unigrams
    (the per-word minimum of counts) and keeps contiguous phrases together, approximating METEOR's search for the
    alignment with fewest chunks.
    """
    used_h = [False] * len(hyp)
    used_r = [False] * len(ref)
    pairs: list[tuple[int, int]] = []
    while True:
        best = (0, 0, 0)  # (length, hyp start, ref start)
        prev = [0] * (len(ref) + 1)  # run lengths ending at (i - 1, j - 1)
        for i, h in enumerate(hyp):
            cur = [0] * (len(ref) + 1)
            if not used_h[i]:
                for j, r in enumerate(ref):
                    if not used_r[j] and h == r:
                        cur[j + 1] = prev[j] + 1
                        if cur[j + 1] > best[0]:
                            best = (cur[j + 1], i - cur[j + 1] + 1, j - cur[j + 1] + 1)
            prev = cur
        length, hi, ri = best
        if length == 0:
            break
        for d in range(length):
            used_h[hi + d] = used_r[ri + d] = True
            pairs.append((hi + d, ri + d))
    return sorted(pairs)


def meteor_stats(hyp: Tokens, ref: Tokens) -> tuple[int, int]:
    """``(matches, chunks)`` of the alignment of ``hyp`` to ``ref`` (chunks: runs adjacent and in order in both)."""
    pairs = _align(hyp, ref)
    chunks = sum(1 for k, (h, r) in enumerate(pairs) if k == 0 or (h, r) != (pairs[k - 1][0] + 1, pairs[k - 1][1] + 1))
    return len(pairs), chunks


def sentence_meteor(
    hyp: Tokens,
    refs: Sequence[Tokens],
    alpha: float = METEOR_ALPHA,
    beta: float = METEOR_BETA,
    gamma: float = METEOR_GAMMA,
) -> float:
    """METEOR 1.0-style score of one hypothesis, maximised over ``refs``.

    For one reference with ``m`` exactly matched unigrams in ``c`` chunks: ``P = m / len(hyp)``,
    ``R = m / len(ref)``, ``Fmean = P * R / (alpha * P + (1 - alpha) * R)`` (``alpha=0.9`` gives Banerjee & Lavie's
    ``10PR / (R + 9P)``), ``penalty = gamma * (c / m) ** beta`` and ``score = Fmean * (1 - penalty)``; 0 when
    nothing matches. Identical sentences of ``L`` words score ``1 - gamma / L**beta`` (just below 1).

    **This is not the METEOR that pycocoevalcap reports** (the Java METEOR 1.5 jar, ``-l en -norm``) and its numbers
    are not comparable to published ones. Differences:

    * matching is exact only: no Porter stemming, WordNet synonym or paraphrase-table modules (and no module weights);
    * no language-tuned parameters: 1.5 uses ``alpha=0.85, beta=0.2, gamma=0.6, delta=0.75`` for English and weighs
      content vs function words (``delta``); here fixed ``alpha=0.9, beta=3, gamma=0.5`` and all words count the same;
    * the alignment is a greedy longest-run approximation, not METEOR's beam search over alignments;
    * no METEOR text normalisation (``-norm``): tokens are used as given;
    * :func:`meteor` averages sentence scores, whereas the jar's corpus score pools statistics over segments.
    """
    best = 0.0
    if not hyp:
        return best
    for ref in refs:
        if not ref:
            continue
        m, chunks = meteor_stats(hyp, ref)
        if m == 0:
            continue
        p, r = m / len(hyp), m / len(ref)
        fmean = p * r / (alpha * p + (1 - alpha) * r)
        best = max(best, fmean * (1 - gamma * (chunks / m) ** beta))
    return best


def meteor(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], **params: float) -> tuple[float, list[float]]:
    """Mean :func:`sentence_meteor` over the corpus ``(mean, per-sample scores)`` (a simple METEOR, not METEOR 1.5)."""
    _check(hyps, refs)
    per = [sentence_meteor(h, r, **params) for h, r in zip(hyps, refs)]
    return sum(per) / len(per), per


# ---- all at once ------------------------------------------------------------------------------------------------
def score_reports(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
    max_words: int | None = None,
    lowercase: bool = True,
) -> dict:
    """Score generated reports -> ``{bleu1..bleu4, rouge_l, meteor, cider, n}``.

    ``references`` holds one string per prediction or a list of reference strings per prediction. Predictions and
    references are tokenised by :func:`tokenize` with the same ``lowercase`` / ``max_words`` (``max_words=None``: no
    truncation). ``meteor`` is this module's simple exact-match METEOR, not pycocoevalcap's METEOR 1.5.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    hyps = [tokenize(p, lowercase, max_words) for p in predictions]
    refs = [[tokenize(r, lowercase, max_words) for r in ([rs] if isinstance(rs, str) else rs)] for rs in references]
    b = bleu(hyps, refs)
    out: dict = {f"bleu{k + 1}": v for k, v in enumerate(b)}
    out["rouge_l"] = rouge_l(hyps, refs)[0]
    out["meteor"] = meteor(hyps, refs)[0]
    out["cider"] = cider_d(hyps, refs)[0]
    out["n"] = len(hyps)
    return out
