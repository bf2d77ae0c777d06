"""`pfmvg rate`: the server, its database and its export, through real HTTP against a `pfmvg rate serve` subprocess.

Concurrent readers, a SIGKILLed server, malformed samples, HTML injection, path traversal, the access token, blinding,
and the export read by the real `pfmvg agree` (numbers checked against scipy / scikit-learn on the entered ratings).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from helpers_rate import Client, Server

from pfmvg_plugin.cli.main import main
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import generate_synthcxr

pytest.importorskip("aiohttp")
pytest.importorskip("jinja2")

DOCS = 6
XSS = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("rate_data") / "synthcxr"
    generate_synthcxr(out, n=12, size=64)
    return PreparedDataset(out)


def _samples(path: Path, ds: PreparedDataset, model: str, extra: dict | None = None) -> Path:
    """A plain samples JSONL: DOCS documents of ``ds`` with a reference and this model's prediction."""
    records = ds.records("train")[:DOCS]
    with open(path, "w") as f:
        for n, rec in enumerate(records):
            line = {"id": f"doc{n}", "prediction": f"{len(model)} mm finding {n}", "reference": f"finding {n}",
                    "dataset_dir": str(ds.path), "image": rec["image"], **(extra or {}).get(n, {})}
            f.write(json.dumps(line) + "\n")
    return path


@pytest.fixture
def two_models(tmp_path, dataset) -> list[str]:
    a = _samples(tmp_path / "a.jsonl", dataset, "alpha", {0: {"prediction": XSS}})
    b = _samples(tmp_path / "b.jsonl", dataset, "beta")
    return ["--samples", f"alpha={a}", "--samples", f"beta={b}"]


@pytest.fixture
def server(tmp_path, two_models):
    srv = Server([*two_models, "--db", str(tmp_path / "ratings.sqlite")])
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


def _queue(specs: list[str], rater: str):
    from pfmvg_plugin.rate.items import load_items
    from pfmvg_plugin.rate.queue import rater_queue

    return rater_queue(load_items([s for s in specs if s != "--samples"]), rater)


def _db_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT rater, item, rating, comment, box FROM ratings ORDER BY rater, item").fetchall()


def test_login_resume_and_blinding(server, two_models):
    alice = Client(server.url)
    status, where, html = alice.request("/")
    assert status == 200 and 'id="name"' in html and 'id="token"' not in html  # loopback, no token: name only
    status, where, html = alice.login("alice")
    assert (status, where) == (200, "/item/0")
    assert "alpha" not in html and "beta" not in html  # model names hidden
    assert "Document 1 of 6 · output A of 2" in html
    # each reader's order of the two outputs per document is random, seeded by the name, stable on every visit
    orders = {name: [s.item.model for s in _queue(two_models, name)] for name in ("alice", "bob", "carol", "dave")}
    assert len({tuple(o) for o in orders.values()}) > 1
    assert orders["alice"] == [s.item.model for s in _queue(two_models, "alice")]
    for pos in range(3):
        assert alice.rate(pos, 4)[0] == 200
    status, where, _ = Client(server.url).login("alice")  # a new browser, the same name: resumes at the 4th item
    assert where == "/item/3"
    status, reply = alice.rate(3, None, comment="only a comment")  # saved, but not a rating: still to be rated
    assert status == 200 and reply["progress"] == {"rated": 3, "total": 12}
    assert Client(server.url).login("alice")[1] == "/item/3"


def test_concurrent_raters_do_not_overwrite_each_other(server, tmp_path, two_models):
    """Four readers rate all 12 items at once from 12 threads; every answer lands in its own row."""
    raters = ["r1", "r2", "r3", "r4"]
    clients = {r: Client(server.url) for r in raters}
    for r, c in clients.items():
        assert c.login(r)[0] == 200
    expected = {(r, s.item.key): 1 + (n + k) % 5 for k, r in enumerate(raters)
                for n, s in enumerate(_queue(two_models, r))}
    errors = []

    def work(rater: str, positions: range) -> None:
        for pos in positions:
            rating = 1 + (pos + raters.index(rater)) % 5
            status, reply = clients[rater].rate(pos, rating, comment=f"{rater}-{pos}")
            if status != 200 or not reply.get("saved"):
                errors.append((rater, pos, status, reply))

    threads = [threading.Thread(target=work, args=(r, range(start, 12, 3))) for r in raters for start in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = _db_rows(tmp_path / "ratings.sqlite")
    assert len(rows) == len(expected) == 48
    assert {(r, item): rating for r, item, rating, _, _ in rows} == expected
    # the same rater saving the same item again replaces the row: no duplicate
    assert clients["r1"].rate(0, 2)[0] == 200
    assert len(_db_rows(tmp_path / "ratings.sqlite")) == 48


def test_killed_server_loses_no_committed_rating(tmp_path, two_models):
    db = tmp_path / "ratings.sqlite"
    srv = Server([*two_models, "--db", str(db)])
    c = Client(srv.url)
    c.login("kim")
    saved = {}
    for pos in range(5):
        status, reply = c.rate(pos, 1 + pos % 5, comment=f"note {pos}", box=None)
        assert status == 200 and reply["saved"]
        saved[_queue(two_models, "kim")[pos].item.key] = 1 + pos % 5
    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL  # no shutdown code runs
    assert {item: rating for _, item, rating, _, _ in _db_rows(db)} == saved
    again = Server([*two_models, "--db", str(db)])
    try:
        assert Client(again.url).login("kim")[1] == "/item/5"  # resumes after the last answer before the kill
    finally:
        again.stop()


def test_html_from_models_and_readers_is_shown_as_text(server, two_models):
    c = Client(server.url)
    c.login("eve<b>")
    pos = next(n for n, s in enumerate(_queue(two_models, "eve<b>")) if s.item.prediction == XSS)
    assert c.rate(pos, 3, comment="</textarea><script>alert(2)</script>")[0] == 200
    _, _, html = c.request(f"/item/{pos}")
    assert "<script>alert" not in html and "<img src=x" not in html and "</textarea><script>" not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/textarea&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "eve&lt;b&gt;" in html
    _, _, admin = Client(server.url).request(server.admin[len(server.url):])
    assert "<script>alert(2)" not in admin and "&lt;script&gt;alert(2)&lt;/script&gt;" in admin


def test_admin_page_needs_its_key_and_shows_progress(server, two_models):
    c = Client(server.url)
    c.login("ann")
    for pos in range(4):
        c.rate(pos, 5)
    assert Client(server.url).request("/admin")[0] == 403
    assert Client(server.url).request("/admin?key=wrong")[0] == 403
    status, _, html = Client(server.url).request(server.admin[len(server.url):])
    assert status == 200
    models = [s.item.model for s in _queue(two_models, "ann")[:4]]
    row = html.split("<td>ann</td>", 1)[1].split("</tr>", 1)[0]
    assert f"<td>{models.count('alpha')} / 6</td><td>{models.count('beta')} / 6</td>" in row
    assert "<td>4 / 12</td>" in row


def test_image_paths_stay_inside_the_data_root(tmp_path, dataset):
    evil = tmp_path / "evil.jsonl"
    lines = [{"id": "ok", "prediction": "p", "reference": "r", "dataset_dir": str(dataset.path),
              "image": dataset.records("train")[0]["image"]},
             {"id": "up", "prediction": "p", "reference": "r", "dataset_dir": str(dataset.path),
              "image": "../../../../../../etc/passwd"},
             {"id": "abs", "prediction": "p", "reference": "r", "dataset_dir": str(dataset.path),
              "image": "/etc/passwd"}]
    evil.write_text("".join(json.dumps(x) + "\n" for x in lines))
    srv = Server(["--samples", f"m={evil}", "--db", str(tmp_path / "r.sqlite")])
    try:
        c = Client(srv.url)
        c.login("x")
        status, _, body = c.request("/image/0")
        assert status == 200 and body.startswith("\ufffdPNG")
        for pos, why in ((1, "escapes the data root"), (2, "is absolute")):
            status, _, body = c.request(f"/image/{pos}")
            assert status == 404 and "root:" not in body and why in body
            assert why in c.request(f"/item/{pos}")[2]  # the reader is told why there is no image
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/image/..%2f..%2fetc"):
            status, _, body = c.request(path)
            assert status in (403, 404) and "RatingsDB" not in body, path
        assert c.request("/image/3")[0] == 404  # no such position
        assert Client(srv.url).request("/image/0")[0] == 403  # not signed in
    finally:
        srv.stop()
    assert "2 without an image" in "".join(srv.lines)


def test_dicom_image_is_served_as_png(tmp_path):
    """A real DICOM radiograph (pydicom-data's RG1_UNCR.dcm, MONOCHROME1) is windowed and sent as a grey PNG at its
    full size, and a box is clipped to that size."""
    pydicom = pytest.importorskip("pydicom")
    from PIL import Image
    from pydicom.data import get_testdata_file

    root = tmp_path / "cr"
    (root / "images").mkdir(parents=True)
    (root / "images" / "RG1_UNCR.dcm").symlink_to(get_testdata_file("RG1_UNCR.dcm"))
    (root / "dataset.json").write_text(json.dumps({"name": "cr", "image_root": "images"}))
    samples = tmp_path / "cr.jsonl"
    samples.write_text(json.dumps({"id": "RG1", "prediction": "p", "reference": "r", "dataset_dir": str(root),
                                   "image": "RG1_UNCR.dcm"}) + "\n")
    srv = Server(["--samples", f"m={samples}", "--db", str(tmp_path / "r.sqlite")])
    try:
        c = Client(srv.url)
        c.login("x")
        with c.opener.open(urllib.request.Request(srv.url + "/image/0"), timeout=60) as r:
            assert r.headers["Content-Type"] == "image/png"
            image = Image.open(io.BytesIO(r.read()))
        ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"), stop_before_pixels=True)
        assert image.mode == "L" and image.size == (ds.Columns, ds.Rows)
        assert c.rate(0, 4, box=[-1, -1, 1e6, 1e6])[1]["box"] == [0.0, 0.0, float(ds.Columns), float(ds.Rows)]
    finally:
        srv.stop()


def test_rating_and_box_validation(server):
    c = Client(server.url)
    assert c.rate(0, 3)[0] == 401  # not signed in
    c.login("val")
    assert c.rate(0, 7)[0] == 400 and c.rate(0, 0)[0] == 400
    assert c.rate(99, 3)[0] == 404
    assert c.rate(0, 3, box=[1, 2, "x", 4])[0] == 400
    status, reply = c.rate(0, 3, box=[50.004, 80, -5, 10])  # ordered, clipped to the 64 x 64 image, 0.01 px
    assert status == 200 and reply["box"] == [0.0, 10.0, 50.0, 64.0]
    status, _, body = c.request("/api/rate", b"not json", {"Content-Type": "application/json"})
    assert status == 400


def test_foreign_host_header_is_refused(server):
    status, _, body = Client(server.url).request("/", headers={"Host": "attacker.example:80"})
    assert status == 403 and "Host" in body


def test_cross_site_post_is_refused(server):
    c = Client(server.url)
    status, _, body = c.request("/login", b"name=mallory", {"Origin": "http://attacker.example"})
    assert status == 403 and "cross-site" in body
    assert c.request("/item/0")[1] == "/"  # not signed in
    status, where, _ = c.request("/login", b"name=ok", {"Origin": server.url})  # the app's own page
    assert (status, where) == (200, "/item/0")


def test_rubric_name_refuses_samples_of_another_kind(tmp_path, capsys):
    report = tmp_path / "20260101_000000_samples_iuxray_report.jsonl"
    report.write_text(json.dumps({"doc_id": 0, "report_sample": {"id": "r1", "prediction": "p", "reference": "r"}})
                      + "\n")
    db = str(tmp_path / "r.sqlite")
    assert main(["rate", "serve", "--samples", str(report), "--rubric", "vqa", "--db", db]) == 1
    assert (f"{report}: task iuxray_report is a report generation run, but --rubric vqa rates VQA outputs; leave "
            "--rubric out") in capsys.readouterr().err
    from pfmvg_plugin.rate.items import load_items

    (item,) = load_items([str(report)], kind="report")
    assert (item.kind, item.task, item.id, item.prediction, item.reference) == ("report", "iuxray_report", "r1",
                                                                               "p", "r")


def test_review_mode_is_unblinded(tmp_path, two_models, capsys):
    srv = Server([*two_models, "--db", str(tmp_path / "r.sqlite"), "--review"])
    try:
        html = Client(srv.url).login("chief")[2]
        first = _queue(two_models, "chief")[0].item.model
        assert "review mode: unblinded" in html and f'<span class="badge" id="model-name">{first}</span>' in html
    finally:
        srv.stop()
    assert main(["rate", "serve", *two_models, "--db", str(tmp_path / "r.sqlite"), "--rubric", "reprot"]) == 1
    assert "--rubric reprot: not report, vqa or grounding, and no such rubric file" in capsys.readouterr().err


def test_access_token(tmp_path, two_models):
    srv = Server([*two_models, "--db", str(tmp_path / "r.sqlite")], env={"PFMVG_RATE_TOKEN": "s3cret"})
    try:
        c = Client(srv.url)
        assert 'id="token"' in c.request("/")[2]
        assert c.login("amy")[0] == 403 and c.login("amy", "wrong")[0] == 403
        assert c.request("/item/0")[1] == "/"  # still signed out: back to the sign-in page
        assert c.login("amy", "s3cret")[1] == "/item/0"
    finally:
        srv.stop()


def test_non_loopback_host_without_token_is_refused(tmp_path, two_models, capsys, monkeypatch):
    monkeypatch.delenv("PFMVG_RATE_TOKEN", raising=False)
    assert main(["rate", "serve", *two_models, "--db", str(tmp_path / "r.sqlite"), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "WARNING: --host 0.0.0.0 makes the app reachable from other machines" in err
    assert "pfmvg: error: --host 0.0.0.0 needs an access token: set PFMVG_RATE_TOKEN" in err
    assert not (tmp_path / "r.sqlite").exists()  # refused before anything was opened


def test_malformed_samples_name_file_and_line(tmp_path, dataset, capsys):
    good = _samples(tmp_path / "good.jsonl", dataset, "m")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().splitlines()[0] + "\n\n" + '{"id": "x", "prediction": "truncated\n' + "[1, 2]\n")
    assert main(["rate", "serve", "--samples", str(bad), "--db", str(tmp_path / "r.sqlite")]) == 1
    err = capsys.readouterr().err
    assert f"pfmvg: error: {bad}:3: not JSON (and 1 more bad line(s))" in err and "Traceback" not in err
    (tmp_path / "noid.jsonl").write_text('{"prediction": "p", "reference": "r"}\n')
    assert main(["rate", "serve", "--samples", str(tmp_path / "noid.jsonl"), "--db", str(tmp_path / "r.sqlite")]) == 1
    assert f"{tmp_path / 'noid.jsonl'}:1: no sample id" in capsys.readouterr().err
    assert main(["rate", "serve", "--samples", f"m={good}", "--samples", f"m={good}",
                 "--db", str(tmp_path / "r.sqlite")]) == 1
    assert "of model 'm': name them" in capsys.readouterr().err


def test_judge_output_serves_the_samples_it_judged(tmp_path, dataset):
    """`pfmvg judge` output holds ratings, not texts: its summary names the samples files, whose judged ids are
    served (here the judge skipped doc5)."""
    from pfmvg_plugin.judge.run import Judgement, write_outputs
    from pfmvg_plugin.rate.items import load_items

    samples = _samples(tmp_path / "run.jsonl", dataset, "m")
    out = tmp_path / "judge_report_gpt.jsonl"
    write_outputs([Judgement(f"doc{n}", 3, "why", "rated", where=f"run.jsonl:{n + 1}") for n in range(5)],
                  {"inputs": {"files": [str(samples)]}}, out)
    items = load_items([f"llava={out}"])
    assert [(i.model, i.id) for i in items] == [("llava", f"doc{n}") for n in range(5)]
    assert items[0].prediction == "1 mm finding 0" and items[0].reference == "finding 0"
    out.with_name("judge_report_gpt.summary.json").unlink()
    with pytest.raises(ValueError, match=r"is a pfmvg judge output: it holds the judge's ratings, not the model's "
                                         r"text\. Its judge_report_gpt\.summary\.json .* is missing"):
        load_items([str(out)])
    (tmp_path / "nopred.jsonl").write_text('{"id": "a", "reference": "r"}\n')
    with pytest.raises(ValueError, match=r"nopred\.jsonl:1: no model output to rate"):
        load_items([str(tmp_path / "nopred.jsonl")])


def test_rubric_anchors_are_the_judges(tmp_path, dataset):
    from pfmvg_plugin.judge.rubrics import REPORT, VQA
    from pfmvg_plugin.rate.items import resolve_scales, scale_from_rubric

    report = scale_from_rubric(REPORT)
    assert sorted(report.anchors) == [1, 2, 3, 4, 5] and report.anchors[5].startswith("Clinically equivalent")
    assert scale_from_rubric(VQA).anchors[1].startswith("Incorrect: the answer contradicts")
    custom = tmp_path / "mine.yaml"
    custom.write_text("system: |\n  Grade it.\n  5 = perfect\n  4 = good\n  3 = fair\n  2 = poor\n  1 = wrong\n"
                      "template: '{prediction} vs {reference}'\n")
    scales = resolve_scales(str(custom))
    assert scales["report"].anchors == {5: "perfect", 4: "good", 3: "fair", 2: "poor", 1: "wrong"}
    assert scales["grounding"].name == "grounding"
    srv = Server(["--samples", f"m={_samples(tmp_path / 's.jsonl', dataset, 'm')}", "--rubric", str(custom),
                  "--db", str(tmp_path / "r.sqlite")])
    try:
        c = Client(srv.url)
        html = c.login("r")[2]
        assert "Rating (mine rubric)" in html and "<b>4</b> <span>good</span>" in html
    finally:
        srv.stop()


def _pfmvg(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfmvg_plugin.cli.main", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})


def test_export_feeds_pfmvg_agree(server, tmp_path, two_models):
    """Two readers rate all 12 outputs; the export goes through the real `pfmvg agree`; its numbers equal scipy's,
    scikit-learn's and krippendorff's on the ratings entered here."""
    pytest.importorskip("scipy")
    import krippendorff
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    entered: dict[str, dict[tuple[str, str], int]] = {}
    for rater, shift in (("ann", 0), ("ben", 1)):
        c = Client(server.url)
        c.login(rater)
        entered[rater] = {}
        for pos, slot in enumerate(_queue(two_models, rater)):
            n = int(slot.item.id[3:]) + (6 if slot.item.model == "beta" else 0)
            rating = 1 + (n * 7 + shift * (n % 3 == 0)) % 5
            box = [1, 2, 30.5, 40] if n == 4 else None
            assert c.rate(pos, rating, comment=f"c{n}", box=box)[0] == 200
            entered[rater][(slot.item.model, slot.item.id)] = rating
    out = tmp_path / "ratings.csv"
    proc = _pfmvg("rate", "export", "--db", str(tmp_path / "ratings.sqlite"), "--out", str(out))
    assert proc.returncode == 0 and f"wrote 24 ratings of 2 rater(s) to {out}" in proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["id", "rater", "model", "task", "rating", "comment", "box_x1", "box_y1", "box_x2",
                             "box_y2", "rated_at"]
    assert {(r["rater"], r["model"], r["id"]): int(r["rating"]) for r in rows} == {
        (rater, model, i): v for rater, got in entered.items() for (model, i), v in got.items()}
    boxed = [r for r in rows if r["box_x1"]]
    assert {(r["model"], r["id"], r["box_x1"], r["box_y1"], r["box_x2"], r["box_y2"]) for r in boxed} == {
        ("alpha", "doc4", "1.0", "2.0", "30.5", "40.0")}
    proc = _pfmvg("agree", "--ratings", f"human={out}", "--out", str(tmp_path / "agree"), "--no-plots",
                  "--n-bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "agree" / "agreement.json").read_text())
    (pair,) = result["pairs"]
    keys = sorted(entered["ann"])
    a = [entered["ann"][k] for k in keys]
    b = [entered["ben"][k] for k in keys]
    assert pair["n"] == 12  # the two models' outputs of one document are two units, not a duplicate id
    assert pair["spearman"] == pytest.approx(spearmanr(a, b).statistic, abs=1e-9)
    assert pair["kappa_quadratic"] == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-9)
    assert pair["alpha_ordinal"] == pytest.approx(
        krippendorff.alpha(reliability_data=[a, b], level_of_measurement="ordinal"), abs=1e-9)
    # one model's ratings keep plain ids: they join that model's `pfmvg judge` output
    one = tmp_path / "alpha.csv"
    assert _pfmvg("rate", "export", "--db", str(tmp_path / "ratings.sqlite"), "--out", str(one),
                  "--model", "alpha").returncode == 0
    judge = tmp_path / "judge_alpha.jsonl"
    judge.write_text("".join(json.dumps({"id": i, "rating": entered["ann"][("alpha", i)], "status": "rated"}) + "\n"
                             for (m, i) in keys if m == "alpha"))
    proc = _pfmvg("agree", "--ratings", f"human={one}", "--ratings", f"judge={judge}", "--out",
                  str(tmp_path / "agree1"), "--no-plots", "--n-bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    pairs = {(p["x"], p["y"]): p for p in json.loads((tmp_path / "agree1" / "agreement.json").read_text())["pairs"]}
    assert pairs[("human:ann", "judge")]["n"] == 6 and pairs[("human:ann", "judge")]["spearman"] == pytest.approx(1.0)


def test_export_without_database_says_what_to_do(tmp_path, capsys):
    assert main(["rate", "export", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "o.csv")]) == 1
    assert "does not exist (start `pfmvg rate serve --db" in capsys.readouterr().err


def test_cli_imports_no_web_stack():
    code = ("import sys; from pfmvg_plugin.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'jinja2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_wheel_ships_the_templates_and_static_files(built_wheel):
    import zipfile

    rate = Path(__file__).resolve().parents[1] / "pfmvg_plugin" / "rate"
    wanted = {f"pfmvg_plugin/rate/{p.relative_to(rate)}" for folder in ("templates", "static")
              for p in (rate / folder).iterdir() if p.is_file()}
    names = set(zipfile.ZipFile(built_wheel).namelist())
    assert len(wanted) == 7 and wanted <= names, sorted(wanted - names)
