"""``pfmvg judge``: rate predictions against references 1-5 with an LLM judge (PeFoMed's Likert evaluation).

Only argparse here; the judge (httpx, numpy) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from pfmvg_plugin.judge.rubrics import RUBRICS


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "judge", help="rate generated reports / VQA answers 1-5 with an LLM judge (weighted average, distribution)",
        description="Rate each prediction against its reference on PeFoMed's 5-point Likert scale with an LLM judge "
                    "behind any OpenAI-compatible /chat/completions endpoint, and report the weighted average "
                    "sum(k*n_k)/N over rated samples and the distribution n_1..n_5 plus the unrated count. Input: "
                    "lmms-eval --log_samples files (or their output dir) or a plain JSONL with id/prediction/"
                    "reference fields. Output: one JSONL line per sample (id, rating, reason, status) and "
                    "<out>.summary.json. Ratings are cached on disk, so a rerun or a resumed run sends no request "
                    "twice. The API key is read from an environment variable and never written anywhere. Before "
                    "sending anything, samples of another kind of task than the rubric's are refused (a grounding "
                    "run's boxes are no reference reports; --force-rubric overrides) and one cheap request checks "
                    "that the endpoint is reachable, so a dead URL fails at once with what to check.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="SAMPLES",
                   help="lmms-eval samples .jsonl file(s) or output dir(s), or plain JSONL files; in a dir, samples "
                        "files of another task kind than the rubric's are skipped with a note")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--rubric", choices=sorted(RUBRICS),
                       help="report: generated vs reference radiology report (report-generation runs); vqa: model vs "
                            "reference answer, uses the question (VQA runs)")
    which.add_argument("--rubric-file", type=Path, metavar="FILE",
                       help="your own rubric, YAML or JSON: system (the scale anchors), template (the user message "
                            "with {prediction}, {reference}, optionally {question}); optional name, version, "
                            "needs_question, answer_format (default true: ask for one line of JSON); any samples")
    p.add_argument("--force-rubric", action="store_true",
                   help="judge samples even when their task kind (grounding, VQA, report generation) is not the "
                        "rubric's; without it such a file is refused (named) or skipped (found in a dir)")
    p.add_argument("--base-url", default=None,
                   help="OpenAI-compatible API base, e.g. https://api.openai.com/v1 or http://localhost:8000/v1 "
                        "(default $OPENAI_BASE_URL; not needed with --dry-run). Checked with one GET <base>/models "
                        "before the run: a refused connection, an unknown host or a connect timeout stops at once")
    p.add_argument("--model", required=True, help="judge model name as the endpoint knows it")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default OPENAI_API_KEY; unset: no "
                        "Authorization header)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    p.add_argument("--retries", type=int, default=5,
                   help="retries per request on 429/5xx, read timeouts and dropped connections, exponential "
                        "backoff with jitter (default 5); a connection that cannot be opened (refused, DNS, connect "
                        "timeout) is retried once after 0.2 s, then the run stops")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="first backoff in seconds, doubling per retry (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--parse-retries", type=int, default=1,
                   help="times to ask again when a reply holds no rating, then the sample counts as unrated "
                        "(default 1)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (default 0; negative: not sent)")
    p.add_argument("--max-tokens", type=int, default=None, help="max_tokens to send (default: not sent)")
    p.add_argument("--extra-body", default=None, metavar="JSON",
                   help='extra request fields as a JSON object, e.g. \'{"seed": 0}\'')
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", type=Path, default=None, metavar="DIR",
                       help="rating cache dir (default $PFMVG_JUDGE_CACHE or ~/.cache/pfmvg/judge)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--out", type=Path, default=None,
                   help="ratings JSONL (default judge_<rubric>_<model>.jsonl beside the first input); the summary "
                        "goes to <out without .jsonl>.summary.json")
    fields = p.add_argument_group("input fields (dotted paths; '*' = any per-sample record dict)")
    fields.add_argument("--id-field", default=None, help="default: id, *.id, doc_id")
    fields.add_argument("--prediction-field", default=None,
                        help="default: prediction, *.prediction, pred, *.pred, filtered_resps, resps")
    fields.add_argument("--reference-field", default=None,
                        help="default: reference, *.reference, references, *.references, target")
    fields.add_argument("--question-field", default=None, help="default: question, *.question (vqa rubric)")
    p.add_argument("--limit", type=int, default=None, help="judge only the first N samples")
    p.add_argument("--dry-run", action="store_true",
                   help="read the inputs and show the first prompt; send nothing (needs no --base-url)")
    p.add_argument("--n-bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the average's 95%% CI (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(handler=run)


def _default_out(first_input: Path, rubric: str, model: str) -> Path:
    folder = first_input if first_input.is_dir() else first_input.parent
    return folder / f"judge_{rubric}_{re.sub(r'[^A-Za-z0-9._-]+', '-', model)}.jsonl"


def _extra_body(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--extra-body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--extra-body must be a JSON object")
    return value


def run(args: argparse.Namespace) -> dict:
    from pfmvg_plugin.judge.cache import RatingCache, default_cache_dir
    from pfmvg_plugin.judge.client import ChatClient, JudgeError
    from pfmvg_plugin.judge.rubrics import get_rubric, load_rubric_file
    from pfmvg_plugin.judge.run import RATED, elapsed_since, judge_all, needs_request, summarise, write_outputs
    from pfmvg_plugin.judge.samples import ReadStats, read_items, select_files

    start = time.perf_counter()
    rubric = load_rubric_file(args.rubric_file) if args.rubric_file else get_rubric(args.rubric)
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    files, skipped_files = select_files(args.inputs, rubric.task, force=args.force_rubric)
    for skipped in skipped_files:
        print(f"pfmvg judge: note: skipped {skipped['why']}", file=sys.stderr)
    stats = ReadStats(skipped_files=skipped_files)
    fields = {"id": args.id_field, "prediction": args.prediction_field, "reference": args.reference_field,
              "question": args.question_field}
    items = read_items(files, fields, need_question=False, stats=stats)
    if args.limit is not None:
        items = items[: max(0, args.limit)]
    if not items:
        raise ValueError(f"nothing to judge in {', '.join(map(str, args.inputs))}: {stats.to_dict()['skipped']} "
                         "(set --prediction-field / --reference-field / --id-field to the dotted paths of your files)")
    if rubric.needs_question and not any(i.question for i in items):
        print(f"pfmvg judge: note: no question found ({args.question_field or 'question, *.question'}); the vqa "
              "rubric will say '(not given)'", file=sys.stderr)
    if args.dry_run:
        first = items[0]
        return {"items": len(items), "inputs": stats.to_dict(),
                "first_prompt": rubric.messages(first.prediction, first.reference, first.question)}

    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        raise ValueError("no endpoint: give --base-url (e.g. https://api.openai.com/v1 or http://localhost:8000/v1) "
                         "or set OPENAI_BASE_URL")
    key = os.environ.get(args.api_key_env) or None
    if key is None:
        print(f"pfmvg judge: note: ${args.api_key_env} is not set; sending no Authorization header", file=sys.stderr)
    cache = None if args.no_cache else RatingCache(args.cache or default_cache_dir())
    out = args.out or _default_out(args.inputs[0], rubric.name, args.model)
    temperature = None if args.temperature < 0 else args.temperature
    with ChatClient(base_url, args.model, key, timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                    temperature=temperature, max_tokens=args.max_tokens,
                    extra_body=_extra_body(args.extra_body), max_connections=args.concurrency) as client:
        if any(needs_request(i, rubric, args.model, cache) for i in items):  # a fully cached rerun works offline
            client.probe()
        judgements, fatal = judge_all(items, rubric, client, cache, args.concurrency, args.parse_retries)
        summary = {
            "rubric": rubric.name, "rubric_version": rubric.version, "rubric_sha256": rubric.sha256,
            "model": args.model, "endpoint": client.scrub(client.url), "api_key_env": args.api_key_env,
            "api_key_sent": key is not None,
            **summarise(judgements, n_bootstrap=args.n_bootstrap, seed=args.seed),
            "client": client.stats.to_dict(),
            "cache": str(cache.root) if cache else None,
            "inputs": stats.to_dict(),
            "aborted": client.scrub(str(fatal)) if fatal else None,
            "elapsed_s": elapsed_since(start),
            "out": str(out),
        }
    summary["summary"] = str(write_outputs(judgements, summary, out))
    if fatal is not None:
        rated = sum(j.status == RATED for j in judgements)
        where = f"; they are cached in {cache.root}: rerun the same command to resume" if cache else ""
        raise JudgeError(f"{fatal}\n{rated} of {len(items)} samples were rated before the stop and written to "
                         f"{out}{where}")
    _print_table(summary)
    return summary


def _print_table(summary: dict) -> None:
    dist = summary["distribution"]
    avg = summary["weighted_average"]
    ci = summary["weighted_average_ci95"]
    avg_text = "n/a" if avg is None else f"{avg:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    lines = [f"rubric {summary['rubric']} v{summary['rubric_version']}, judge {summary['model']}",
             "rating   " + "  ".join(f"{k:>5}" for k in dist) + "  unrated",
             "count    " + "  ".join(f"{v:>5}" for v in dist.values()) + f"  {summary['n_unrated']:>7}",
             f"weighted average {avg_text} over {summary['n_rated']} rated of {summary['n']}; "
             f"{summary['client']['requests']} requests, {summary['cached']} from the cache"]
    print("\n".join(lines), file=sys.stderr)
