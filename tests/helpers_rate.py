"""For the `pfmvg rate` tests: samples from the real lmms-eval CLI (two scripted models, ``rate_model_a`` and
``rate_model_b``, answer a small synthcxr's report, VQA and grounding tasks), a `pfmvg rate serve` subprocess on a
free port, and a reader's HTTP client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers_eval import lmms_eval_as

from pfmvg_plugin.data.synth import generate_synthcxr, generate_synthcxr_reports, generate_synthcxr_vqa

TESTS = Path(__file__).resolve().parent
TASKS = ("synthcxr_report", "synthcxr_vqa", "synthcxr_grounding")
LIMIT = 2
MODELS = ("rate_model_a", "rate_model_b")

SCRIPTED = '''
"""Model A answers the truth (the ground-truth box); model B a shorter, partly wrong text and a shifted box."""
from scripted_model import ScriptedModel

from pfmvg_plugin.lmms import state
from pfmvg_plugin.prompts import convention_codec


class RateModel(ScriptedModel):
    def __init__(self, variant="a", **kwargs):
        super().__init__()
        self.variant = variant

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            if "boxes" in doc:
                x1, y1, x2, y2 = doc["boxes"][0]
                shift = 0 if self.variant == "a" else (x2 - x1) / 3
                codec = convention_codec(state.prompt_convention(doc))
                answers.append(codec.encode([(x1 + shift, y1, x2 + shift, y2)], (doc["width"], doc["height"])))
            elif "question" in doc:
                answers.append(doc["answer"] if self.variant == "a" else "not sure")
            else:
                wrong = "Unremarkable chest. <b>no</b> <script>x</script>"
                answers.append(doc["report"] if self.variant == "a" else wrong)
        return answers
'''


def make_samples(base: Path) -> dict[str, Path]:
    """Run lmms-eval once per model over :data:`TASKS` (``--limit`` 2); returns ``{model: output dir}``."""
    data = base / "data"
    generate_synthcxr(data / "synthcxr", n=24, size=128)
    generate_synthcxr_vqa(data / "synthcxr", data / "synthcxr_vqa")
    generate_synthcxr_reports(data / "synthcxr", data / "synthcxr_reports")
    (base / "rate_model.py").write_text(SCRIPTED)
    env = {**os.environ, "PFMVG_DATA_ROOT": str(data), "PYTHONPATH": os.pathsep.join([str(base), str(TESTS)]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LMMS_EVAL_DATASETS_CACHE": str(base / "hf_cache"),
           "OMP_NUM_THREADS": "1"}
    env.pop("PFMVG_NO_TASK_HOOK", None)
    outs = {}
    for model, variant in zip(MODELS, "ab"):
        out = base / "out" / model
        proc = lmms_eval_as(model, "rate_model.RateModel",
                            ["--model_args", f"variant={variant}", "--tasks", ",".join(TASKS), "--limit", str(LIMIT),
                             "--output_path", str(out), "--log_samples"], cwd=base, env=env)
        found = sorted(out.rglob("*_samples_*.jsonl"))
        assert proc.returncode == 0 and len(found) == len(TASKS), proc.stdout[-2000:] + proc.stderr[-4000:]
        outs[model] = out
    return outs


class Server:
    """``pfmvg rate serve ... --port 0`` as a subprocess; ``url`` and ``admin`` are read from what it prints."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: Path | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "pfmvg_plugin.cli.main", "rate", "serve", "--port", "0",
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd)
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"readers open (http://\S+/) ; admin page (\S+) ;", line)
            if m:
                self.url, self.admin = m[1].rstrip("/"), m[2]
                return
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.lines) + self.proc.stderr.read())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


class Client:
    """One reader's browser without a browser: a cookie jar, form login, JSON posts (standard library only)."""

    def __init__(self, url: str):
        import http.cookiejar
        import urllib.request

        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str, str]:
        """``(status, final URL path, body)``; HTTP errors are answers, not exceptions."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.geturl()[len(self.url):], r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, path, e.read().decode("utf-8", "replace")

    def login(self, name: str, token: str | None = None) -> tuple[int, str, str]:
        import urllib.parse

        form = {"name": name, **({"token": token} if token is not None else {})}
        return self.request("/login", urllib.parse.urlencode(form).encode())

    def rate(self, pos: int, rating: int | None, comment: str = "", box: list | None = None) -> tuple[int, dict]:
        import json

        status, _, body = self.request("/api/rate", json.dumps({"pos": pos, "rating": rating, "comment": comment,
                                                                "box": box}).encode(),
                                       {"Content-Type": "application/json"})
        return status, json.loads(body)
