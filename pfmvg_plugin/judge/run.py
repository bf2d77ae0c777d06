"""Rate every item with a Likert judge: bounded concurrency, cache first, one JSONL line per item, a summary.

Per-item statuses: ``rated`` (a 1-5 rating, fresh or ``cached``), ``unparsable`` (the reply held no unambiguous
rating after the parse retries), ``error`` (the request failed for good, e.g. a 400) and ``generation_error`` (the
evaluated model's answer is our generation-error marker, :mod:`pfmvg_plugin.lmms.answers`: an infrastructure failure,
not a report to grade, so no request is sent). Only ``rated`` items enter the weighted average ``sum(k * n_k) / N``;
the others are counted as unrated, by status. An unreachable endpoint or a refused key stops the run
(:class:`~pfmvg_plugin.judge.client.JudgeError`) after the finished ratings have been written.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pfmvg_plugin.judge.cache import RatingCache, cache_key
from pfmvg_plugin.judge.client import JudgeError, RequestFailed
from pfmvg_plugin.judge.rubrics import SCALE, Rubric, parse_rating
from pfmvg_plugin.judge.samples import Item
from pfmvg_plugin.lmms.answers import is_error_answer
from pfmvg_plugin.progress import progress

RATED, UNPARSABLE, ERROR, GENERATION_ERROR = "rated", "unparsable", "error", "generation_error"


@dataclass
class Judgement:
    """The outcome for one item (one line of the ratings JSONL)."""

    id: str
    rating: int | None
    reason: str
    status: str
    cached: bool = False
    attempts: int = 0
    where: str = ""


def judge_item(item: Item, rubric: Rubric, client, cache: RatingCache | None, parse_retries: int = 1) -> Judgement:
    """Rate one item: from the cache if there, else ask (re-asking up to ``parse_retries`` times on an unparsable
    reply). Raises :class:`JudgeError` when the run cannot go on."""
    if is_error_answer(item.prediction):
        return Judgement(item.id, None, _clip_reason(item.prediction), GENERATION_ERROR, where=item.where)
    key = cache_key(rubric, client.model, item.prediction, item.reference, item.question)
    if cache is not None and (hit := cache.get(key)) is not None:
        return Judgement(item.id, hit["rating"], hit.get("reason", ""), RATED, cached=True, where=item.where)
    messages = rubric.messages(item.prediction, item.reference, item.question)
    parsed, reply = None, ""
    for attempt in range(1, parse_retries + 2):
        try:
            reply = client.complete(messages)
        except RequestFailed as exc:
            return Judgement(item.id, None, str(exc), ERROR, attempts=attempt, where=item.where)
        parsed = parse_rating(reply)
        if parsed.rating is not None:
            if cache is not None:
                cache.put(key, {"rating": parsed.rating, "reason": parsed.reason, "reply": reply,
                                "rubric": rubric.name, "rubric_version": rubric.version, "model": client.model})
            return Judgement(item.id, parsed.rating, parsed.reason, RATED, attempts=attempt, where=item.where)
    return Judgement(item.id, None, f"unparsable reply ({parsed.error}): {_clip_reason(reply)}", UNPARSABLE,
                     attempts=parse_retries + 1, where=item.where)


def needs_request(item: Item, rubric: Rubric, model: str, cache: RatingCache | None) -> bool:
    """Whether rating ``item`` sends a request: not a generation error and not in the cache."""
    if is_error_answer(item.prediction):
        return False
    return cache is None or cache.get(cache_key(rubric, model, item.prediction, item.reference, item.question)) is None


def _clip_reason(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def summarise(judgements: Sequence[Judgement], n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Weighted average ``sum(k * n_k) / N`` over rated items (with a seeded 95% bootstrap CI) and the distribution."""
    ratings = np.array([j.rating for j in judgements if j.status == RATED], dtype=float)
    counts = Counter(int(r) for r in ratings)
    statuses = Counter(j.status for j in judgements)
    out: dict = {
        "n": len(judgements),
        "n_rated": int(ratings.size),
        "n_unrated": len(judgements) - int(ratings.size),
        "unrated": {s: statuses.get(s, 0) for s in (UNPARSABLE, ERROR, GENERATION_ERROR)},
        "distribution": {str(k): counts.get(k, 0) for k in SCALE},
        "weighted_average": None,
        "weighted_average_ci95": None,
        "cached": sum(j.cached for j in judgements),
    }
    if ratings.size:
        out["weighted_average"] = float(sum(k * counts.get(k, 0) for k in SCALE) / ratings.size)
        if n_bootstrap > 0 and ratings.size > 1:
            rng = np.random.default_rng(seed)
            means = rng.choice(ratings, size=(n_bootstrap, ratings.size), replace=True).mean(axis=1)
            out["weighted_average_ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return out


def judge_all(items: Sequence[Item], rubric: Rubric, client, cache: RatingCache | None, concurrency: int = 4,
              parse_retries: int = 1) -> tuple[list[Judgement], JudgeError | None]:
    """Rate ``items`` with at most ``concurrency`` requests in flight.

    Returns the judgements in input order (items not reached after a fatal error are left out) and the fatal error,
    if any. Cached items cost no request. A fatal error stops the progress bar where it is (the bar is cleared).
    """
    results: list[Judgement | None] = [None] * len(items)
    stop = threading.Event()

    def work(index: int) -> None:
        if stop.is_set():
            return
        results[index] = judge_item(items[index], rubric, client, cache, parse_retries)

    fatal: JudgeError | None = None
    with ThreadPoolExecutor(max_workers=max(1, int(concurrency)), thread_name_prefix="pfmvg-judge") as pool:
        futures = [pool.submit(work, i) for i in range(len(items))]

        def halt() -> None:  # queued items are cancelled; running ones finish their current request
            stop.set()
            for f in futures:
                f.cancel()

        bar = progress(as_completed(futures), desc=f"judge ({rubric.name})", total=len(futures), unit="sample")
        try:
            for future in bar:
                exc = None if future.cancelled() else future.exception()
                if exc is None:
                    continue
                halt()
                if not isinstance(exc, JudgeError):
                    raise exc
                fatal = exc
                break  # the cancelled rest must not run the bar up to 100 %
        except BaseException:  # Ctrl-C or a bug: do not let the pool work through the whole queue on exit
            halt()
            raise
        finally:
            bar.close()  # a tqdm generator: closing it clears the bar
    return [r for r in results if r is not None], fatal


def write_outputs(judgements: Sequence[Judgement], summary: dict, out: Path) -> Path:
    """Write the per-item JSONL to ``out`` and the summary to ``<out stem>.summary.json``; returns the summary path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for j in judgements:
            f.write(json.dumps(asdict(j), ensure_ascii=False) + "\n")
    summary_path = out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary_path


def elapsed_since(start: float) -> float:
    return round(time.perf_counter() - start, 3)
