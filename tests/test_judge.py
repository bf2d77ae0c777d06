"""`pfmvg judge` against a real HTTP server on loopback that speaks the chat-completions protocol."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("httpx")

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.judge.cache import cache_key
from pfmvg_plugin.judge.client import backoff_delay, chat_url
from pfmvg_plugin.judge.rubrics import REPORT, VQA, load_rubric_file, parse_rating
from pfmvg_plugin.judge.samples import get_path, read_items

SECRET = "sk-test-SECRET-7f3a9c"
TAG = re.compile(r"\[\[(\w+)\]\]")


class FakeJudge:
    """State of the fake endpoint. A prediction carries its fate in a tag: ``[[4]]`` -> rating 4 (in one of several
    reply styles), ``[[garble]]`` -> a reply without a rating, ``[[bad]]`` -> HTTP 400; ``fail[tag]`` lists HTTP codes
    to answer before succeeding."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.requests: list[dict] = []
            self.inflight = 0
            self.max_inflight = 0
            self.delay = 0.0
            self.fail: dict[str, list[int]] = {}
            self.status_all: int | None = None

    def answer(self, body: dict) -> tuple[int, dict, dict]:
        user = body["messages"][-1]["content"]
        prediction = user.split("Generated report:")[-1] if "Generated report:" in user else user
        tag = (TAG.findall(prediction) or ["3"])[-1]
        with self.lock:
            queue = self.fail.get(tag) or []
            code = queue.pop(0) if queue else (self.status_all or 200)
        if code != 200:
            headers = {"Retry-After": "0"} if code == 429 else {}
            return code, {"error": {"message": f"injected {code}"}}, headers
        if tag == "bad":
            return 400, {"error": {"message": "context too long"}}, {}
        if tag == "garble":
            content = "I am not able to decide on this one."
        else:
            k = int(tag)
            content = [f'{{"rating": {k}, "reason": "fake judge says {k}"}}',
                       f'```json\n{{"rating": "{k}", "reason": "fenced"}}\n```',
                       f"<think>maybe 2?</think>Rating: {k}/5 - plain text reply"][k % 3]
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}, {}


@pytest.fixture(scope="module")
def server():
    state = FakeJudge()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
                state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            try:
                time.sleep(state.delay)
                code, payload, headers = state.answer(body) if self.path == "/v1/chat/completions" else \
                    (404, {"error": "not found"}, {})
                if code == 401:  # like real APIs, echo (part of) the key: it must be scrubbed from our messages
                    payload = {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization')}"}}
            finally:
                with state.lock:
                    state.inflight -= 1
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def fake(server):
    server.reset()
    return server


def write_items(path: Path, tags: list[str]) -> Path:
    with open(path, "w") as f:
        for i, tag in enumerate(tags):
            f.write(json.dumps({"id": f"s{i}", "prediction": f"finding {i} [[{tag}]]",
                                "reference": f"reference report {i}"}) + "\n")
    return path


def judge(fake, tmp_path, inputs, *extra, cache="cache", out="ratings.jsonl", rubric=("--rubric", "report")):
    argv = ["judge", *map(str, inputs), *rubric, "--base-url", fake.url, "--model", "fake-judge",
            "--backoff", "0.01", "--out", str(tmp_path / out), "--api-key-env", "PFMVG_TEST_KEY", *extra]
    argv += ["--cache", str(tmp_path / cache)] if cache else ["--no-cache"]
    rc = main(argv)
    ratings = [json.loads(x) for x in (tmp_path / out).read_text().splitlines()] if (tmp_path / out).exists() else []
    summary_path = tmp_path / out.replace(".jsonl", ".summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return rc, ratings, summary


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PFMVG_TEST_KEY", SECRET)
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")


# ---- end to end ---------------------------------------------------------------------------------------------------
def test_ratings_weighted_average_and_distribution(fake, tmp_path):
    tags = ["5", "4", "4", "3", "1", "5", "2", "4"]
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", tags)])
    assert rc == 0
    assert [r["id"] for r in ratings] == [f"s{i}" for i in range(len(tags))]
    assert [r["rating"] for r in ratings] == [int(t) for t in tags]
    assert all(r["status"] == "rated" and r["reason"] for r in ratings)
    assert summary["distribution"] == {"1": 1, "2": 1, "3": 1, "4": 3, "5": 2}
    assert summary["weighted_average"] == pytest.approx(sum(int(t) for t in tags) / len(tags))
    lo, hi = summary["weighted_average_ci95"]
    assert lo <= summary["weighted_average"] <= hi
    assert summary["n_rated"] == 8 and summary["n_unrated"] == 0
    assert summary["client"]["requests"] == 8 == len(fake.requests)
    body = fake.requests[0]["body"]
    assert body["model"] == "fake-judge" and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system" and "5 = Clinically equivalent" in body["messages"][0]["content"]


def test_concurrency_bound_is_respected(fake, tmp_path):
    fake.delay = 0.05
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["4"] * 12)],
                                 "--concurrency", "3", cache=None)
    assert rc == 0 and len(ratings) == 12
    assert 2 <= fake.max_inflight <= 3


def test_retries_after_429_and_500_then_success(fake, tmp_path):
    fake.fail = {"2": [429, 500, 503]}
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["2", "5"])],
                                 "--concurrency", "1", cache=None)
    assert rc == 0
    assert [r["rating"] for r in ratings] == [2, 5]
    assert summary["client"]["requests"] == 5
    assert summary["client"]["retries"] == 3
    assert summary["client"]["by_status"] == {"200": 2, "429": 1, "500": 1, "503": 1}


def test_retries_used_up_leaves_the_sample_unrated(fake, tmp_path):
    fake.fail = {"2": [500, 500, 500]}
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["2", "5"])],
                                 "--retries", "2", cache=None)
    assert rc == 0
    assert ratings[0]["status"] == "error" and ratings[0]["rating"] is None and "HTTP 500" in ratings[0]["reason"]
    assert summary["unrated"] == {"unparsable": 0, "error": 1, "generation_error": 0}
    assert summary["weighted_average"] == 5.0


def test_cache_second_run_sends_no_request(fake, tmp_path):
    inputs = [write_items(tmp_path / "in.jsonl", ["5", "3", "1", "4"])]
    rc, first, _ = judge(fake, tmp_path, inputs)
    assert rc == 0 and len(fake.requests) == 4
    fake.reset()
    rc, second, summary = judge(fake, tmp_path, inputs, out="again.jsonl")
    assert rc == 0
    assert fake.requests == [] and summary["client"]["requests"] == 0 and summary["cached"] == 4
    assert [r["rating"] for r in second] == [r["rating"] for r in first]
    assert all(r["cached"] for r in second)
    # another model (or rubric text) is another key
    assert cache_key(REPORT, "fake-judge", "a", "b") != cache_key(REPORT, "other", "a", "b")
    assert cache_key(REPORT, "m", "a", "b") != cache_key(VQA, "m", "a", "b")


def test_api_key_is_sent_as_bearer_and_never_written(fake, tmp_path, capsys):
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["4", "bad", "garble"])])
    assert rc == 0
    assert [r["status"] for r in ratings] == ["rated", "error", "unparsable"]  # a 400 fails only its sample
    assert "HTTP 400" in ratings[1]["reason"]
    assert {r["auth"] for r in fake.requests} == {f"Bearer {SECRET}"}
    captured = capsys.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "in.jsonl"]
    assert any("cache" in p.parts for p in written)
    for text in [captured.out, captured.err] + [p.read_text() for p in written]:
        assert SECRET not in text
    assert summary["api_key_sent"] is True and summary["api_key_env"] == "PFMVG_TEST_KEY"


def test_no_key_sends_no_authorization_header(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PFMVG_TEST_KEY")
    rc, _, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["4"])], cache=None)
    assert rc == 0 and fake.requests[0]["auth"] is None and summary["api_key_sent"] is False
    assert "PFMVG_TEST_KEY is not set" in capsys.readouterr().err


def test_unparsable_reply_is_retried_then_counted_unrated(fake, tmp_path):
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["garble", "4"])],
                                 "--parse-retries", "2", cache=None)
    assert rc == 0
    bad = ratings[0]
    assert bad["status"] == "unparsable" and bad["rating"] is None and bad["attempts"] == 3
    assert "not able to decide" in bad["reason"]
    assert summary["n_unrated"] == 1 and summary["unrated"]["unparsable"] == 1
    assert summary["weighted_average"] == 4.0 and summary["distribution"]["4"] == 1
    assert len(fake.requests) == 4


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_endpoint_fails_at_once_with_one_clear_line(tmp_path, capsys, monkeypatch):
    """Default retries and backoff, progress bars on: the probe fails in well under 5 s and no bar is drawn."""
    monkeypatch.delenv("PFMVG_NO_PROGRESS")
    url = f"http://127.0.0.1:{free_port()}/v1"
    inputs = write_items(tmp_path / "in.jsonl", ["4", "3"])
    start = time.perf_counter()
    rc = main(["judge", str(inputs), "--rubric", "report", "--base-url", url, "--model", "m", "--no-cache",
               "--out", str(tmp_path / "o.jsonl"), "--api-key-env", "PFMVG_TEST_KEY"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 1 and elapsed < 5, elapsed
    assert "cannot reach the judge endpoint" in err and url in err and "connection refused" in err
    assert "--base-url" in err and "server" in err
    assert "judge (report)" not in err and "%|" not in err  # no progress bar
    assert "Traceback" not in err and SECRET not in err
    assert not (tmp_path / "o.jsonl").exists()  # nothing was rated: nothing is written


def test_dead_host_name_is_a_dns_error(tmp_path, capsys):
    inputs = write_items(tmp_path / "in.jsonl", ["4"])
    start = time.perf_counter()
    rc = main(["judge", str(inputs), "--rubric", "report", "--base-url", "http://no-such-host.invalid:8000/v1",
               "--model", "m", "--no-cache", "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1 and time.perf_counter() - start < 15
    assert "no-such-host.invalid" in err and "does not resolve" in err


def test_connection_refused_during_the_run_is_not_retried_like_a_5xx():
    """The probe passed, then the server went away: the request fails fast instead of backing off 5 times."""
    from pfmvg_plugin.judge.client import ChatClient, JudgeError

    with ChatClient(f"http://127.0.0.1:{free_port()}/v1", "m", retries=5, backoff=1.0) as client:
        start = time.perf_counter()
        with pytest.raises(JudgeError, match="connection refused"):
            client.complete([{"role": "user", "content": "hi"}])
        assert time.perf_counter() - start < 2
        assert client.stats.requests <= 2


def test_fully_cached_rerun_needs_no_endpoint(fake, tmp_path):
    inputs = [write_items(tmp_path / "in.jsonl", ["5", "2"])]
    assert judge(fake, tmp_path, inputs)[0] == 0
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rc = main(["judge", str(inputs[0]), "--rubric", "report", "--base-url", dead, "--model", "fake-judge",
               "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "again.jsonl")])
    assert rc == 0
    assert [json.loads(x)["rating"] for x in (tmp_path / "again.jsonl").read_text().splitlines()] == [5, 2]


def test_dry_run_needs_no_url(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    inputs = str(write_items(tmp_path / "in.jsonl", ["4"]))
    assert main(["judge", inputs, "--rubric", "report", "--model", "m", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 1


def grounding_samples(path: Path) -> Path:
    """A grounding run's samples file as lmms-eval logs it: the reference is a box, the record has gt_boxes."""
    lines = [{"doc_id": i, "doc": {"id": f"ms-{i}", "phrase": "left effusion"}, "target": "[0.1, 0.5, 0.4, 0.9]",
              "filtered_resps": ["[0.12, 0.5, 0.41, 0.88]"],
              "grounding_sample": {"id": f"ms-{i}", "iou": 0.8, "dice": 0.9, "gt_boxes": [[10, 50, 40, 90]],
                                   "pred_boxes": [[12, 50, 41, 88]], "parsed": True, "status": "ok"}}
             for i in range(2)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_rubric_must_match_the_samples_task(fake, tmp_path, capsys):
    samples = grounding_samples(tmp_path / "20250101_000000_samples_mscxr_grounding.jsonl")
    rc, ratings, _ = judge(fake, tmp_path, [samples], cache=None)
    err = capsys.readouterr().err
    assert rc == 1 and fake.requests == [] and ratings == []
    assert str(samples) in err and "grounding" in err and "mscxr_grounding" in err
    assert "--rubric report" in err and "--force-rubric" in err
    # a VQA run judged with the report rubric, and a report run with the vqa rubric, are refused the same way
    vqa = tmp_path / "v" / "20250101_000000_samples_pfmvg_vqarad.jsonl"
    vqa.parent.mkdir()
    vqa.write_text(json.dumps({"doc_id": 0, "doc": {"id": "q0", "question": "Is it?"}, "target": "yes",
                               "filtered_resps": ["yes"], "vqa_sample": {"id": "q0", "correct": True}}) + "\n")
    assert judge(fake, tmp_path, [vqa], cache=None)[0] == 1
    assert "VQA" in capsys.readouterr().err
    rep = tmp_path / "r" / "20250101_000000_samples_iuxray_report.jsonl"
    rep.parent.mkdir()
    rep.write_text(json.dumps({"doc_id": 0, "doc": {"id": "r0"}, "target": "Normal.", "filtered_resps": ["Normal."],
                               "report_sample": {"id": "r0", "rouge_l": 1.0}}) + "\n")
    assert judge(fake, tmp_path, [rep], "--rubric", "vqa", cache=None, rubric=())[0] == 1
    assert "--rubric vqa" in capsys.readouterr().err
    assert fake.requests == []
    # the dry run refuses too, and --force-rubric overrides
    assert main(["judge", str(samples), "--rubric", "report", "--model", "m", "--dry-run"]) == 1
    rc, ratings, _ = judge(fake, tmp_path, [samples], "--force-rubric", cache=None)
    assert rc == 0 and len(ratings) == 2 and len(fake.requests) == 2
    assert "[0.1, 0.5, 0.4, 0.9]" in fake.requests[0]["body"]["messages"][1]["content"]


def test_output_dir_with_several_tasks_judges_the_matching_ones(fake, tmp_path, capsys):
    grounding_samples(tmp_path / "20250101_000000_samples_mscxr_grounding.jsonl")
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    doc = {"id": "iu-0", "image": "0.png", "report": "The heart is normal."}
    (tmp_path / "20250101_000000_samples_iuxray_report.jsonl").write_text(
        json.dumps(lmms_eval_line(report_task, doc, "Normal heart. [[4]]", 0)) + "\n")
    rc, ratings, summary = judge(fake, tmp_path, [tmp_path], cache=None)
    err = capsys.readouterr().err
    assert rc == 0 and [r["id"] for r in ratings] == ["iu-0"]
    assert "mscxr_grounding" in err and "skipped" in err
    assert summary["inputs"]["skipped_files"][0]["kind"] == "grounding"


@pytest.mark.parametrize(("code", "words"), [(401, "API key"), (404, "--base-url")])
def test_refused_key_or_wrong_url_stops_the_run(fake, tmp_path, capsys, code, words):
    fake.status_all = code
    rc, _, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["4"] * 3)], cache=None)
    err = capsys.readouterr().err
    assert rc == 1 and words in err and "Traceback" not in err and SECRET not in err
    assert len(fake.requests) <= 3  # no retries on 401/404
    assert summary["aborted"] and summary["n_rated"] == 0  # a stop during the run still writes what it has


def test_lmms_eval_samples_and_dotted_fields(fake, tmp_path):
    lines = [{"doc_id": i, "doc": {"id": f"iu-{i}", "question": "Is there an effusion?"},
              "target": f"ref {i}", "resps": [[f"raw [[{k}]]"]], "filtered_resps": [f"answer [[{k}]]"],
              "vqa_sample": {"pred_text": f"custom [[{k}]]", "gold": "yes"}} for i, k in enumerate([5, 2])]
    path = tmp_path / "20250101_000000_samples_iuxray_report.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    items = read_items([tmp_path])
    assert [(i.id, i.prediction, i.reference, i.question) for i in items] == [
        ("iu-0", "answer [[5]]", "ref 0", "Is there an effusion?"), ("iu-1", "answer [[2]]", "ref 1",
                                                                     "Is there an effusion?")]
    custom = read_items([path], {"prediction": "vqa_sample.pred_text", "reference": "*.gold", "id": "doc_id"})
    assert [(i.id, i.prediction, i.reference) for i in custom] == [("0", "custom [[5]]", "yes"),
                                                                    ("1", "custom [[2]]", "yes")]
    rc, ratings, summary = judge(fake, tmp_path, [path], "--rubric", "vqa", cache=None)
    assert rc == 0 and [r["rating"] for r in ratings] == [5, 2]
    assert summary["inputs"]["skipped"] == {"not JSON": 1}
    assert "Question: Is there an effusion?" in fake.requests[0]["body"]["messages"][1]["content"]


def lmms_eval_line(task, doc: dict, answer: str, doc_id: int) -> dict:
    """A samples line as lmms-eval 0.7.3 logs it (evaluator.py: doc_id, doc, target, resps, filtered_resps, metrics)."""
    return {"doc_id": doc_id, "doc": doc, "target": task.doc_to_target(doc), "arguments": [], "resps": [[answer]],
            "filtered_resps": [answer], **task.process_results(doc, [answer])}


def test_our_report_and_vqa_task_samples_are_read_and_judged(fake, tmp_path):
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    vqa_task = pytest.importorskip("pfmvg_plugin.lmms.vqa_task")
    from pfmvg_plugin.lmms.answers import error_answer

    answers = ["Heart normal. [[5]]", "Small left effusion. [[2]]", error_answer(RuntimeError("CUDA OOM"))]
    docs = [{"id": f"iu-{i}", "task": "report", "source": "iuxray", "split": "test", "image": f"{i}.png",
             "report": f"The heart is normal. Finding {i}."} for i in range(3)]
    path = tmp_path / "20250101_000000_samples_iuxray_report.jsonl"
    path.write_text("".join(json.dumps(lmms_eval_line(report_task, d, a, k)) + "\n"
                            for k, (d, a) in enumerate(zip(docs, answers))))
    rc, ratings, summary = judge(fake, tmp_path, [path], cache=None)
    assert rc == 0
    assert [(r["id"], r["rating"], r["status"]) for r in ratings] == [
        ("iu-0", 5, "rated"), ("iu-1", 2, "rated"), ("iu-2", None, "generation_error")]
    assert len(fake.requests) == 2 and "CUDA OOM" in ratings[2]["reason"]
    assert summary["unrated"]["generation_error"] == 1 and summary["weighted_average"] == 3.5
    sent = sorted(r["body"]["messages"][1]["content"] for r in fake.requests)  # concurrent: any order
    assert "The heart is normal. Finding 0." in sent[0] and "Finding 1." in sent[1]

    fake.reset()
    doc = {"id": "vqarad-7", "task": "vqa", "source": "vqarad", "split": "test", "image": "x.png",
           "question": "Is there a pneumothorax?", "answer": "no", "answer_type": "closed"}
    vpath = tmp_path / "20250101_000000_samples_vqarad.jsonl"
    vpath.write_text(json.dumps(lmms_eval_line(vqa_task, doc, "No. [[5]]", 0)) + "\n")
    rc, ratings, _ = judge(fake, tmp_path, [vpath], "--rubric", "vqa", cache=None, out="vqa.jsonl")
    assert rc == 0 and ratings[0]["id"] == "vqarad-7" and ratings[0]["rating"] == 5
    user = fake.requests[0]["body"]["messages"][1]["content"]
    assert "Question: Is there a pneumothorax?" in user and "Reference answer: no" in user


def test_missing_fields_are_counted_not_dropped(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prediction": "x", "reference": "y"}\n{"id": "b", "prediction": "x"}\n[1]\n')
    from pfmvg_plugin.judge.samples import ReadStats

    stats = ReadStats()
    assert [i.id for i in read_items([path], stats=stats)] == ["a"]
    assert sum(stats.skipped.values()) == 2 and any(k.startswith("no reference") for k in stats.skipped)
    assert get_path({"a": [{"b": 1}]}, "a.0.b") == 1


# ---- pieces -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("reply", "rating"), [
    ('{"rating": 4, "reason": "ok"}', 4),
    ('Sure!\n```json\n{"Rating": "5", "reason": "same findings"}\n```', 5),
    ('{"score": 2.0}', 2),
    ("<think>rating: 1?</think>\nRating: 3/5. Misses the effusion.", 3),
    ("**Score:** 4", 4),
    ("4", 4),
    (" 2/5 ", 2),
    ('{"rating": 6}', None),
    ('{"rating": 3.5}', None),
    ("Rating: 2 ... on reflection, Rating: 4", None),
    ("The report is good.", None),
    ("", None),
    (None, None),
])
def test_parse_rating(reply, rating):
    parsed = parse_rating(reply)
    assert parsed.rating == rating
    assert (parsed.error is None) == (rating is not None)


def test_rubrics_spell_out_every_anchor():
    for rubric in (REPORT, VQA):
        for k in range(1, 6):
            assert f"{k} = " in rubric.system
        assert '"rating"' in rubric.system
    assert "{question}" in VQA.template and VQA.messages("p {x}", "r", "q?")[1]["content"].count("p {x}") == 1


def test_backoff_and_url_helpers():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, rng=rng) for a in range(8)]
    assert all(0.5 * min(2**a, 60) <= d <= min(2**a, 60) for a, d in enumerate(delays))
    assert backoff_delay(3, 1.0, retry_after="2") == 2.0
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    with pytest.raises(ValueError):
        chat_url("localhost:8000/v1")


def test_help_and_core_import_without_httpx(capsys):
    for command in ("judge", "agree"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
    assert "--api-key-env" in capsys.readouterr().out
    code = "import sys, pfmvg_plugin.cli.main, pfmvg_plugin.judge; sys.exit('httpx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_dry_run_sends_nothing_and_base_url_from_env(fake, tmp_path, monkeypatch, capsys):
    inputs = str(write_items(tmp_path / "in.jsonl", ["4", "2"]))
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    assert main(["judge", inputs, "--rubric", "report", "--model", "m", "--dry-run",
                 "--api-key-env", "PFMVG_TEST_KEY"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["items"] == 2 and "finding 0 [[4]]" in shown["first_prompt"][1]["content"]
    assert fake.requests == []
    assert main(["judge", inputs, "--rubric", "report", "--model", "m", "--no-cache", "--api-key-env",
                 "PFMVG_TEST_KEY", "--out", str(tmp_path / "o.jsonl")]) == 0
    assert len(fake.requests) == 2
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert main(["judge", inputs, "--rubric", "report", "--model", "m"]) == 1
    assert "give --base-url" in capsys.readouterr().err


# ---- custom rubric files --------------------------------------------------------------------------------------------
CUSTOM_RUBRIC = """\
name: findings
version: "2"
system: |
  Grade how many of the reference findings the generated report names. 5 = all of them, 1 = none.
template: |
  Reference: {reference}
  Generated: {prediction}
  Literal braces stay: {{"rating": n}}
"""


def test_rubric_file_is_used_end_to_end(fake, tmp_path):
    path = tmp_path / "findings.yaml"
    path.write_text(CUSTOM_RUBRIC)
    rc, ratings, summary = judge(fake, tmp_path, [write_items(tmp_path / "in.jsonl", ["4", "2"])],
                                 rubric=("--rubric-file", str(path)))
    assert rc == 0 and [r["rating"] for r in ratings] == [4, 2]
    rubric = load_rubric_file(path)
    assert (summary["rubric"], summary["rubric_version"], summary["rubric_sha256"]) == ("findings", "2", rubric.sha256)
    system, user = (m["content"] for m in fake.requests[0]["body"]["messages"])
    assert system.startswith("Grade how many") and system.endswith(REPORT.system[-60:])  # JSON answer format added
    assert "Reference: reference report" in user and 'Literal braces stay: {"rating": n}' in user
    assert not rubric.needs_question


@pytest.mark.parametrize("text, message", [
    ("system: s\ntemplate: '{prediction} {reference}'\ncolour: red\n", "unknown key(s) colour"),
    ("template: '{prediction} {reference}'\n", "'system' must be a non-empty string"),
    ("system: s\ntemplate: '{prediction} {refrence}'\n", "{refrence} are not known"),
    ("system: s\ntemplate: 'Answer: {prediction}'\n", "must contain {reference}"),
    ("- a list\n", "a rubric file is a mapping"),
    ("system: [unclosed\n", "cannot read the rubric file"),
])
def test_bad_rubric_file_names_file_and_reason(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        load_rubric_file(path)
    assert str(path) in str(err.value)
    items = write_items(tmp_path / "in.jsonl", ["4"])
    assert main(["judge", str(items), "--rubric-file", str(path), "--base-url", "http://127.0.0.1:9", "--model", "m",
                 "--no-cache"]) != 0
    assert message in capsys.readouterr().err


def test_rubric_file_with_question_sets_needs_question(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"system": "s", "template": "Q: {question} A: {prediction} R: {reference}",
                                "answer_format": False}))
    rubric = load_rubric_file(path)
    assert rubric.needs_question and rubric.system == "s" and rubric.name == "q" and rubric.version == "1"


def test_samples_without_a_readable_image_are_not_judged(fake, tmp_path):
    """The tasks leave an image_error doc out of every metric: the judge leaves it out too, and says so."""
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    docs = [{"id": "iu-0", "image": "0.png", "report": "Normal."},
            {"id": "iu-1", "image": "1.png", "report": "Effusion.", "dataset_dir": str(tmp_path / "gone")}]
    path = tmp_path / "20250101_000000_samples_iuxray_report.jsonl"
    path.write_text("".join(json.dumps(lmms_eval_line(report_task, d, "Normal. [[5]]", k)) + "\n"
                            for k, d in enumerate(docs)))
    rc, ratings, summary = judge(fake, tmp_path, [path], cache=None)
    assert rc == 0 and [r["id"] for r in ratings] == ["iu-0"] and len(fake.requests) == 1
    (reason,) = summary["inputs"]["skipped"]
    assert reason.startswith("image_error") and "left out of every metric" in reason
