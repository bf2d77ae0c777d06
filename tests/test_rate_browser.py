"""`pfmvg rate` in a real browser: Debian's chromium, driven headless by playwright, rates report, VQA and grounding
samples that the real lmms-eval CLI wrote for two scripted models, with two readers; draws corrected boxes with the
mouse (one after zooming in), reloads mid-way and resumes; the export goes through the real `pfmvg agree`.

Set PFMVG_RATE_SCREENSHOTS=DIR to keep a screenshot of each item type there (README's come from docs/img).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_rate import MODELS, TASKS, Server, make_samples

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking switches chromium waits on network services this closed machine cannot reach.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        why = f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it before the tests)"
        if os.environ.get("PFMVG_BROWSER_UNAVAILABLE"):  # .ci/run tried to install it and could not
            pytest.skip(f"{why}: {os.environ['PFMVG_BROWSER_UNAVAILABLE']}")
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    pytest.importorskip("aiohttp")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("lmms_eval")
    return make_samples(tmp_path_factory.mktemp("rate_lmms"))


def _expected_rating(rater: str, item) -> int:
    """What each reader enters for each item (model B is rated lower; the readers differ on some items)."""
    base = 5 if item.model == MODELS[0] else 2
    return max(1, min(5, base - (rater == "bob" and sum(map(ord, item.id)) % 2 == 0) - (item.kind == "grounding")))


def _drag_box(page, target: list[float], width: int, height: int) -> list[float]:
    """Drag over ``target`` (a box in original-image pixels) on the displayed, possibly zoomed image, through whole
    viewport pixels as mouse events are; return the box expected from where the mouse really went and the scale the
    image is displayed at."""
    left, top, shown_w, shown_h = page.eval_on_selector(
        "#image", "e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }")
    sx, sy = width / shown_w, height / shown_h  # original pixels per displayed pixel
    ax, ay = round(left + target[0] / sx), round(top + target[1] / sy)
    bx, by = round(left + target[2] / sx), round(top + target[3] / sy)
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move((ax + bx) / 2, (ay + by) / 2)
    page.mouse.move(bx, by)
    page.mouse.up()
    return [round((ax - left) * sx, 2), round((ay - top) * sy, 2), round((bx - left) * sx, 2),
            round((by - top) * sy, 2)]


def _saved(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_have_text("saved", timeout=10_000)


def _shot(page, kind: str, shots: set) -> None:
    """The first page of each item type, kept in $PFMVG_RATE_SCREENSHOTS when it is set."""
    folder = os.environ.get("PFMVG_RATE_SCREENSHOTS")
    if folder and kind not in shots:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"rate_{kind}.png"))
    shots.add(kind)


def _pfmvg(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfmvg_plugin.cli.main", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})


def test_two_readers_rate_in_chromium(browser, samples, tmp_path):
    from playwright.sync_api import expect

    from pfmvg_plugin.rate.items import load_items
    from pfmvg_plugin.rate.queue import rater_queue

    specs = [str(samples[m]) for m in MODELS]
    items = load_items(specs)
    assert {i.kind for i in items} == {"report", "vqa", "grounding"} and len(items) == 2 * len(TASKS) * 2
    db = tmp_path / "ratings.sqlite"
    srv = Server([x for s in specs for x in ("--samples", s)] + ["--db", str(db)])
    entered: dict[tuple[str, str], int] = {}
    boxes: dict[tuple[str, str], list[float]] = {}
    shots: set = set()
    try:
        for rater in ("alice", "bob"):
            queue = rater_queue(items, rater)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            page.goto(srv.url + "/")
            page.fill("#name", rater)
            page.click("#signin")
            page.wait_for_url("**/item/0")
            pos = 0
            while pos < len(queue):
                slot = queue[pos]
                item = slot.item
                page.wait_for_load_state("load")
                expect(page.locator("#where")).to_contain_text(f"output {slot.label} of 2")
                html = page.content()
                assert not any(m in html for m in MODELS), "a model name leaked into the blinded page"
                if item.kind == "grounding":
                    expect(page.locator("#overlay .box.pred")).to_have_count(len(item.pred_boxes))
                    expect(page.locator("#overlay .box.gt")).to_have_count(0)  # ground truth only in review mode
                    if rater == "alice" or pos % 2 == 0:
                        if pos == 0:  # zoomed in: the displayed scale changes, the saved pixels must not care
                            page.click("#zoom-in")
                        w, h = item.width, item.height
                        target = ([max(0, item.gt_boxes[0][0] - 3), max(0, item.gt_boxes[0][1] - 3),
                                   min(w, item.gt_boxes[0][2] + 3), min(h, item.gt_boxes[0][3] + 3)] if pos == 0
                                  else [0.3 * w, 0.2 * h, 0.7 * w, 0.6 * h])
                        box = _drag_box(page, target, w, h)
                        _saved(page)
                        boxes[(rater, item.key)] = box
                        expect(page.locator("#my-box")).to_have_count(1)
                if rater == "alice" and item.kind == "report" and "report" not in shots:
                    # window/level: output = (value - level) / window + 1/2, as an SVG transfer function
                    page.locator("#window").fill("0.5")
                    page.locator("#level").fill("0.4")
                    assert page.get_attribute("#wl-r", "slope") == "2"
                    assert float(page.get_attribute("#wl-r", "intercept")) == pytest.approx(0.5 - 0.4 / 0.5)
                    assert "url(" in page.eval_on_selector("#image", "e => e.style.filter")
                    page.click("#wl-reset")
                    assert page.eval_on_selector("#image", "e => e.style.filter") == ""
                rating = _expected_rating(rater, item)
                if rater == "alice":
                    page.keyboard.press(str(rating))
                else:
                    page.click(f"label:has(#rating-{rating})")
                _saved(page)
                entered[(rater, item.key)] = rating
                _shot(page, item.kind, shots)
                if rater == "alice" and pos == 1:
                    page.fill("#comment", "<b>check</b> the left apex")
                    page.locator("#comment").blur()
                    _saved(page)
                if rater == "alice" and pos == 4:  # mid-way: reload, everything is still there, then resume
                    page.reload()
                    expect(page.locator(f"#rating-{rating}")).to_be_checked()
                    page.goto(srv.url + "/item/1")
                    expect(page.locator("#comment")).to_have_value("<b>check</b> the left apex")
                    page.goto(srv.url + "/item/0")
                    expect(page.locator("#my-box")).to_have_count(int(queue[0].item.kind == "grounding"))
                    page.goto(srv.url + "/")  # the resume point: the first item not rated yet
                    page.wait_for_url(f"**/item/{pos + 1}")
                    pos += 1
                    continue
                if rater == "alice":
                    page.keyboard.press("n")
                else:
                    page.click("#next")
                pos += 1
                page.wait_for_url("**/done" if pos == len(queue) else f"**/item/{pos}")
            expect(page.locator("#progress")).to_have_text(f"{len(items)} / {len(items)} rated.")
            assert not errors, errors
            context.close()
    finally:
        srv.stop()
    assert len(boxes) >= 4

    out = tmp_path / "ratings.csv"
    proc = _pfmvg("rate", "export", "--db", str(db), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    by_key = {(r["rater"], f"{r['task']}|{r['model']}|{r['id']}"): r for r in rows}
    assert {k: int(r["rating"]) for k, r in by_key.items()} == entered
    for key, box in boxes.items():
        got = [float(by_key[key][f"box_{c}"]) for c in ("x1", "y1", "x2", "y2")]
        assert got == pytest.approx(box, abs=0.011), key
    assert by_key[("alice", queue_key(items, "alice", 1))]["comment"] == "<b>check</b> the left apex"

    proc = _pfmvg("agree", "--ratings", f"human={out}", "--out", str(tmp_path / "agree"), "--no-plots",
                  "--n-bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    (pair,) = json.loads((tmp_path / "agree" / "agreement.json").read_text())["pairs"]
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    keys = sorted(i.key for i in items)
    a = [entered[("alice", k)] for k in keys]
    b = [entered[("bob", k)] for k in keys]
    assert pair["n"] == len(items)
    assert pair["spearman"] == pytest.approx(spearmanr(a, b).statistic, abs=1e-9)
    assert pair["kappa_quadratic"] == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-9)


def queue_key(items, rater: str, pos: int) -> str:
    from pfmvg_plugin.rate.queue import rater_queue

    return rater_queue(items, rater)[pos].item.key
