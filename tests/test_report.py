"""`pfmvg report`: lmms-eval --log_samples output in, an HTML page with numbers, charts and overlays out."""

from __future__ import annotations

import json
import re
import sys
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pfmvg_plugin.cli.main import main as pfmvg
from pfmvg_plugin.codecs import get_codec
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.data.synth import generate_synthcxr
from pfmvg_plugin.metrics import aggregate, score_sample, score_text
from pfmvg_plugin.report import ReadStats, find_sample_files, iter_grounding_samples
from pfmvg_plugin.viz import GT_COLOR, PRED_COLOR

TASK = "pfmvg_synthcxr_grounding"
DATE = "20261123_062633"
SIZE = 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("synth")
    generate_synthcxr(out, n=16, size=SIZE, seed=3)
    return PreparedDataset(out)


def _records(ds: PreparedDataset) -> list[dict]:
    return [r for split in ("train", "val", "test") if ds.split_path(split).is_file() for r in ds.records(split)]


def _our_record(rec: dict, ds: PreparedDataset, answer: str | None, status: str | None = None) -> dict:
    """What the lmms-eval task's process_results logs for one doc."""
    size = (rec["width"], rec["height"])
    codec = get_codec("llava")
    if status == "generation_error":
        score, boxes = score_sample(None, rec["boxes"], status=status), []
    else:
        score = score_text(answer, rec["boxes"], size, codec)
        boxes = [list(b) for b in codec.decode(answer, size).boxes]
    return {"id": rec["id"], "dataset_dir": str(ds.path.resolve()), "image": rec["image"], "width": rec["width"],
            "height": rec["height"], "phrase": rec["phrase"], "category": rec["category"], "gt_boxes": rec["boxes"],
            "pred_boxes": boxes, "iou": score.iou, "dice": score.dice, "parsed": score.parsed, "status": score.status,
            "convention": "llava", "mode": score.mode, "answer": answer or ""}


def _line(doc_id: int, record: dict | None, answer: str) -> dict:
    line = {"doc_id": doc_id, "target": "[0.1, 0.2, 0.3, 0.4]", "filtered_resps": answer, "token_counts": [None],
            "doc_hash": f"h{doc_id}", "input": "<image>\nWhere is it? Answer with [x1, y1, x2, y2]."}
    if record is not None:  # every metric key holds the same record, as process_results returns it
        line.update({"grounding_acc@0.1": record, "grounding_acc@0.5": record, "grounding_miou": record})
    return line


def _fake_run(ds: PreparedDataset, root: Path) -> tuple[Path, list[dict], str, Path]:
    """An lmms-eval 0.7.3 --output_path dir: <root>/<org>__<model>/<date>_{results.json,samples_<task>.jsonl}."""
    run = root / "run" / "myorg__llava-med-lora"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    recs = _records(ds)
    codec = get_codec("llava")
    lines, ours = [], []
    for i, rec in enumerate(recs):
        size = (rec["width"], rec["height"])
        if i == 0:
            answer, status = "I cannot see any finding here.", None  # parse failure (no_box)
        elif i == 1:
            answer, status = "", "generation_error"
        else:
            jitter = rng.uniform(-0.35, 0.35, 4) * (i % 4) * (np.array(rec["boxes"][0][2:] * 2)
                                                             - np.array(rec["boxes"][0][:2] * 2))
            box = np.clip(np.array(rec["boxes"][0]) + jitter, 0, SIZE - 1)
            box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]) + 1, max(box[1], box[3]) + 1]
            answer, status = codec.encode(box, size), None
        record = _our_record(rec, ds, answer, status)
        ours.append(record)
        lines.append(_line(i, record, answer))
    lines.insert(3, _line(99, None, "x"))  # a line without our record: skipped and counted
    samples = run / f"{DATE}_samples_{TASK}.jsonl"
    samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    own = {"alias": TASK, "grounding_acc@0.5,none": 0.4242, "grounding_acc@0.5_stderr,none": "N/A"}
    results = {"results": {TASK: own},
               "config": {"model": "pfmvg_llava", "model_args": "pretrained=myorg/llava-med-lora,box_format=llava",
                          "model_backend": "pfmvg_plugin.lmms.models.PfmvgLlava (simple)", "limit": None},
               "model_name": "pfmvg_llava", "date": 1795000000.0,
               "n-samples": {TASK: {"original": 99, "effective": 99}}}
    (run / f"{DATE}_results.json").write_text(json.dumps(results))
    # the image of the last record is deleted: listed in the page, never fatal
    gone = ds.image_path(recs[-1])
    return root / "run", ours, str(recs[-1]["image"]), gone


def test_report_end_to_end(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    run, ours, gone_image, gone = _fake_run(dataset, tmp_path)
    backup = gone.read_bytes()
    gone.unlink()
    try:
        out = tmp_path / "report"
        assert pfmvg(["report", str(run), "--out", str(out), "--per-category", "2", "--n-bootstrap", "200"]) == 0
    finally:
        gone.write_bytes(backup)  # the dataset fixture is shared by the module

    html = (out / "index.html").read_text()
    expected = aggregate(ours, [r["category"] for r in ours], n_bootstrap=200)
    # headline numbers: exactly metrics.aggregate's, shown rounded with their CIs
    for key in ("acc@0.1", "acc@0.3", "acc@0.5", "miou", "mdice"):
        pattern = rf'data-task="{TASK}" data-key="{re.escape(key)}" data-value="([^"]*)" data-ci="([^"]*)"'
        cell = re.search(pattern, html)
        assert cell, key
        assert float(cell[1]) == expected[key]
        assert json.loads(unescape(cell[2])) == expected["ci"][key]
        lo, hi = expected["ci"][key]
        assert f"{expected[key]:.3f}" in html and f"[{lo:.3f}, {hi:.3f}]" in html
    assert f'data-key="n" data-value="{len(ours)}"' in html
    # generation errors are counted apart from parse failures (the model never answered)
    assert expected["parse_failures"] == {"no_box": 1} and expected["generation_errors"] == 1
    assert f"{expected['parse_failure_rate']:.1%}" in html and "no_box 1" in html
    assert 'data-key="generation_errors">1<' in html
    for cat, v in expected["per_category"].items():
        assert f'data-category="{cat}" data-key="acc@0.5" data-value="{v["acc@0.5"]!r}"' in html
    # model and lmms-eval's own numbers from results.json
    assert "pretrained=myorg/llava-med-lora,box_format=llava" in html and "grounding_acc@0.5,none" in html
    assert "0.4242" in html
    # the missing image is listed and counted; the skipped line counted
    assert gone_image in html and "image file missing: <b>1</b>" in html
    assert "no grounding record" in html
    summary = json.loads((out / "summary.json").read_text())["tasks"][TASK]
    assert summary["read"]["skipped"] == {"no grounding record (no dict with iou and gt_boxes)": 1}
    assert [m["image"] for m in summary["missing_images"]] == [gone_image]
    assert summary["aggregate"]["acc@0.5"] == expected["acc@0.5"]

    # PNGs exist, open, have sane sizes, and are referenced relatively by the page
    pngs = sorted(out.rglob("*.png"))
    names = {p.name for p in pngs}
    assert {"iou_histogram.png", "per_category.png"} <= names
    sheets = [p for p in pngs if p.name.startswith("overlays_")]
    assert len(sheets) == len(expected["per_category"])
    for p in pngs:
        with Image.open(p) as im:
            assert 200 <= im.width <= 3000 and 150 <= im.height <= 4000, (p, im.size)
        assert f'src="{p.relative_to(out).as_posix()}"' in html

    # the overlays carry green (GT) and red (prediction) pixels; a failure's raw answer is in its caption
    found = {"gt": False, "pred": False}
    for p in sheets:
        arr = np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3)
        found["gt"] |= bool((arr == GT_COLOR).all(axis=1).sum() > 20)
        found["pred"] |= bool((arr == PRED_COLOR).all(axis=1).sum() > 20)
    assert found == {"gt": True, "pred": True}


def test_overlay_pixels_at_the_boxes(dataset, tmp_path, monkeypatch):
    """One sample, one category: the sheet's green and red outlines sit where the boxes are."""
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    rec = _records(dataset)[0]
    gt = rec["boxes"][0]
    pred = [0.0, 0.0, SIZE / 4, SIZE / 4]  # top-left corner, away from most GT boxes
    answer = get_codec("llava").encode(pred, (SIZE, SIZE))
    record = _our_record(rec, dataset, answer, None)
    assert record["pred_boxes"] == [pytest.approx(pred)]
    path = tmp_path / f"{DATE}_samples_one.jsonl"
    path.write_text(json.dumps(_line(0, record, answer)) + "\n")
    assert pfmvg(["report", str(path), "--per-category", "1", "--tile", "256", "--n-bootstrap", "0"]) == 0
    (sheet,) = (tmp_path / "pfmvg_report" / "one").glob("overlays_*.png")
    arr = np.asarray(Image.open(sheet).convert("RGB"))
    title_h = 24  # viz.contact_sheet layout: title strip, then the image scaled to the 256 px tile
    scale = 256 / SIZE

    def colour_near(box, colour) -> bool:
        x1, y1 = round(box[0] * scale), round(box[1] * scale) + title_h
        y2 = round(box[3] * scale) + title_h
        edge = arr[y1:y2, max(0, x1 - 3):x1 + 4]  # the left side of the box outline
        return bool((np.abs(edge.astype(int) - colour).sum(axis=2) < 60).any())

    assert colour_near(gt, GT_COLOR) and colour_near(pred, PRED_COLOR)


def test_reader_and_file_discovery(tmp_path):
    rec = {"iou": 0.5, "gt_boxes": [[1, 2, 3, 4]], "dice": 0.6, "parsed": True, "status": "ok", "mode": "max"}
    f = tmp_path / "a" / f"{DATE}_samples_t1.jsonl"
    f.parent.mkdir()
    f.write_text("\n".join([json.dumps({"doc_id": 0, "m1": rec, "m2": rec, "input": "p"}),  # one record, not two
                            "not json", json.dumps({"doc_id": 2, "m": {"iou": 1.0, "gt_boxes": [[0, 0, 1, 1]]}}),
                            json.dumps([1, 2]), ""]) + "\n")
    stats = ReadStats()
    got = list(iter_grounding_samples(f, stats))
    assert len(got) == 1 and got[0]["iou"] == 0.5 and got[0]["_doc_id"] == 0 and got[0]["_line"] == 1
    assert stats.lines == 4 and stats.n_skipped == 3
    assert stats.skipped["not JSON"] == 1 and stats.skipped_lines["not JSON"] == [2]
    assert stats.skipped["record lacks dice, parsed, status, mode"] == 1

    # a run dir: newest date per task wins, and a note says so; task names come from the file names
    (tmp_path / "b").mkdir()
    newer = tmp_path / "b" / "20270101_000000_samples_t1.jsonl"
    newer.write_text("")
    other = tmp_path / "b" / f"{DATE}_samples_t2_sub.jsonl"
    other.write_text("")
    notes: list[str] = []
    assert find_sample_files(tmp_path, notes) == {"t1": newer, "t2_sub": other}
    assert len(notes) == 1 and "newest" in notes[0] and "t1" in notes[0]
    assert find_sample_files(f) == {"t1": f}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_sample_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--log_samples"):
        find_sample_files(tmp_path / "empty")


def test_missing_input_and_bad_task_are_clear_errors(tmp_path, capsys):
    assert pfmvg(["report", str(tmp_path / "no_such_run")]) == 1
    err = capsys.readouterr().err
    assert "pfmvg: error:" in err and "no_such_run does not exist" in err and "Traceback" not in err
    f = tmp_path / f"{DATE}_samples_t.jsonl"
    f.write_text("")
    assert pfmvg(["report", str(f), "--task", "other"]) == 1
    assert "no samples file for task 'other'" in capsys.readouterr().err


def test_missing_dataset_dir_is_listed_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    rec = {"id": "r1", "dataset_dir": str(tmp_path / "gone"), "image": "images/x.png", "width": 64, "height": 64,
           "phrase": "left effusion", "category": "Pleural Effusion", "gt_boxes": [[1, 2, 30, 40]],
           "pred_boxes": [], "iou": 0.0, "dice": 0.0, "parsed": False, "status": "malformed", "convention": "llava",
           "mode": "max", "answer": "[0.1, 0.2"}
    f = tmp_path / f"{DATE}_samples_t.jsonl"
    f.write_text(json.dumps(_line(0, rec, rec["answer"])) + "\n")
    assert pfmvg(["report", str(f), "--out", str(tmp_path / "r"), "--n-bootstrap", "10"]) == 0
    html = (tmp_path / "r" / "index.html").read_text()
    assert "dataset dir missing (no dataset.json): <b>1</b>" in html and "images/x.png" in html
    assert "no image available for the overlays" in html
    assert (tmp_path / "r" / "t" / "iou_histogram.png").is_file()


def test_without_matplotlib_or_records_the_page_still_comes(tmp_path, monkeypatch):
    """No matplotlib: numbers and overlays only, with a note. A task without grounding records: a note, n = 0."""
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    for mod in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # import of these now raises ImportError
    rec = {"id": "r1", "dataset_dir": str(tmp_path), "image": "x.png", "phrase": "p", "category": None,
           "gt_boxes": [[1, 2, 30, 40]], "pred_boxes": [[1, 2, 30, 40]], "iou": 1.0, "dice": 1.0, "parsed": True,
           "status": "ok", "convention": "qwen2vl", "mode": "max", "answer": "<|box_start|>..."}
    run = tmp_path / "run"
    run.mkdir()
    (run / f"{DATE}_samples_ground.jsonl").write_text(json.dumps(_line(0, rec, "a")) + "\n")
    (run / f"{DATE}_samples_vqa.jsonl").write_text(json.dumps({"doc_id": 0, "exact_match": 1.0}) + "\n")
    assert pfmvg(["report", str(run), "--n-bootstrap", "10"]) == 0
    html = (run / "pfmvg_report" / "index.html").read_text()
    assert "charts skipped" in html and "pip install" in html
    assert "no grounding records in" in html and 'data-task="vqa" data-key="n" data-value="0"' in html
    assert 'data-task="ground" data-key="acc@0.5" data-value="1.0"' in html and "qwen2vl" in html
    assert not list((run / "pfmvg_report").rglob("*.png"))  # no charts; the image (dataset dir) is missing too


# ---- PeFoMed tasks: VQA and report generation get their own pages ---------------------------------------------------
EVIL = "<script>alert('x')</script> & <b>bold</b>"


def _lmms_line(task, doc: dict, answer: str, doc_id: int) -> dict:
    """A samples line as lmms-eval 0.7.3 logs it for one of our tasks."""
    return {"doc_id": doc_id, "doc": doc, "target": task.doc_to_target(doc), "filtered_resps": [answer],
            **task.process_results(doc, [answer])}


def _vqa_run(ds: PreparedDataset, folder: Path) -> tuple[Path, list[dict]]:
    vqa_task = pytest.importorskip("pfmvg_plugin.lmms.vqa_task")
    from pfmvg_plugin.lmms.answers import error_answer

    recs = _records(ds)
    cases = [("Is there an effusion?", "yes", "closed", "PRES", "Yes, there is."),
             ("Is the heart enlarged?", "no", "closed", "SIZE", "yes"),
             ("Is there a pneumothorax?", "no", "closed", "PRES", "no"),
             ("Where is the mass?", "left upper lobe", "open", "POS", "left upper lobe"),
             ("Where is the nodule?", "right lower lobe", "open", "POS", "right lung"),
             ("What is abnormal?", "pleural effusion", "open", "ABN", EVIL),
             ("Is this a PA view?", "yes", "closed", "PLANE", error_answer(RuntimeError("CUDA OOM"))),
             ("Is there a fracture?", "no", "closed", "PRES", "no")]  # its image was missing at evaluation time
    lines, records = [], []
    for k, (question, answer, kind, qtype, pred) in enumerate(cases):
        doc = {"id": f"q{k}", "source": "vqarad", "split": "test", "image": recs[k]["image"], "question": question,
               "answer": answer, "answer_type": kind, "question_type": qtype, "dataset_dir": str(ds.path.resolve())}
        if k == len(cases) - 1:
            doc["image"] = "images/gone_before_the_run.png"  # the task logs an image_error record, left out
        line = _lmms_line(vqa_task, doc, pred, k)
        if k == 0:  # the image went away after the run: listed, never fatal; the row says why there is no thumbnail
            line["vqa_sample"]["image"] = "images/does_not_exist.png"
        lines.append(line)
        if line["vqa_sample"]["status"] != "image_error":
            records.append(line["vqa_sample"])
    assert len(records) == len(cases) - 1
    path = folder / f"{DATE}_samples_pfmvg_vqarad.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, records


def _report_run(ds: PreparedDataset, folder: Path, task: str = "iuxray_report") -> tuple[Path, list[dict]]:
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    recs = _records(ds)
    refs = ["The heart is normal in size. The lungs are clear. No pleural effusion.",
            "Small left pleural effusion. Heart size normal.",
            "Right upper lobe mass. No pneumothorax.",
            "Cardiomegaly. Mild pulmonary edema."]
    preds = ["The heart is normal in size. The lungs are clear. No pleural effusion.",
             "Heart size normal. Small effusion on the left.",
             EVIL,
             "Cardiomegaly with mild edema."]
    lines, records = [], []
    for k, (ref, pred) in enumerate(zip(refs, preds)):
        doc = {"id": f"iu-{k}", "source": "iuxray", "split": "test", "image": recs[k]["image"],
               "images": [recs[k]["image"]], "report": ref, "max_words": None, "dataset_dir": str(ds.path.resolve())}
        line = _lmms_line(report_task, doc, pred, k)
        lines.append(line)
        records.append(line["report_sample"])
    path = folder / f"{DATE}_samples_{task}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, records


def _section_html(html: str, task: str) -> str:
    m = re.search(rf'<section id="task-{re.escape(task)}"[^>]*>(.*?)</section>', html, re.S)
    assert m, task
    return m[0]


def _rows_ids(section: str, which: str) -> list[str]:
    table = re.search(rf'<table class="examples" data-which="{which}">(.*?)</table>', section, re.S)
    assert table, which
    return re.findall(r'<tr data-id="([^"]+)"', table[1])


def test_vqa_run_gets_a_vqa_page(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    path, records = _vqa_run(dataset, tmp_path)
    out = tmp_path / "r"
    assert pfmvg(["report", str(path), "--out", str(out), "--n-bootstrap", "100", "--examples", "2"]) == 0
    html = (out / "index.html").read_text()
    section = _section_html(html, "pfmvg_vqarad")
    assert 'data-kind="vqa"' in section and "no grounding records" not in html and "IoU" not in section

    def cell(key: str, group: str | None = None) -> float | None:
        where = f' data-group="{group}"' if group else ""
        m = re.search(rf'data-task="pfmvg_vqarad"{where} data-key="{re.escape(key)}" data-value="([^"]*)"', html)
        assert m, (key, group)
        return None if m[1] == "" else float(m[1])

    closed = [r for r in records if r["answer_type"] == "closed"]
    opened = [r for r in records if r["answer_type"] == "open"]
    assert cell("overall_acc") == pytest.approx(sum(r["correct"] for r in records) / len(records))
    assert cell("closed_acc") == pytest.approx(sum(r["correct"] for r in closed) / len(closed))
    assert cell("open_exact_acc") == pytest.approx(sum(r["correct"] for r in opened) / len(opened))
    assert cell("open_recall") == pytest.approx(sum(r["recall"] for r in opened) / len(opened))
    assert cell("generation_error_rate") == pytest.approx(1 / len(records))
    # per answer type and per the dataset's question type
    assert cell("accuracy", "closed") == pytest.approx(2 / 4) and cell("n", "closed") == 4
    assert cell("accuracy", "open") == pytest.approx(1 / 3) and cell("n", "open") == 3
    assert cell("accuracy", "POS") == pytest.approx(1 / 2) and cell("n", "POS") == 2
    assert cell("accuracy", "PRES") == pytest.approx(1.0) and cell("n", "SIZE") == 1
    # worst and best answers: question, reference and prediction, escaped; thumbnails where the image is readable
    worst, best = _rows_ids(section, "worst"), _rows_ids(section, "best")
    assert len(worst) == len(best) == 2 and not set(worst) & set(best)
    assert all(not next(r for r in records if r["id"] == i)["correct"] for i in worst)
    assert set(best) <= {r["id"] for r in records if r["correct"]}
    assert "Where is the nodule?" in html or "What is abnormal?" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)"', section)
    assert thumbs and all((out / t).is_file() for t in thumbs)
    with Image.open(out / thumbs[0]) as im:
        assert max(im.size) <= 160
    summary = json.loads((out / "summary.json").read_text())["tasks"]["pfmvg_vqarad"]
    assert summary["kind"] == "vqa" and summary["metrics"]["n"] == 7
    assert summary["per_question_type"]["POS"]["n"] == 2
    assert list(summary["read"]["skipped"]) == ["image_error: no readable image when evaluated (left out of every "
                                                "metric, as the task does)"]
    assert "left out of every metric" in section


def test_vqa_page_lists_an_unreadable_image_in_the_row(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    path, _ = _vqa_run(dataset, tmp_path)
    out = tmp_path / "r"
    assert pfmvg(["report", str(path), "--out", str(out), "--n-bootstrap", "0", "--examples", "7"]) == 0
    section = _section_html((out / "index.html").read_text(), "pfmvg_vqarad")
    row = re.search(r'<tr data-id="q0">(.*?)</tr>', section, re.S)
    assert row and "no image" in row[1] and "image file missing" in row[1]


def test_report_run_gets_a_report_generation_page(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    from pfmvg_plugin.metrics.text import score_reports

    path, records = _report_run(dataset, tmp_path)
    out = tmp_path / "r"
    assert pfmvg(["report", str(path), "--out", str(out), "--n-bootstrap", "0", "--examples", "1"]) == 0
    html = (out / "index.html").read_text()
    section = _section_html(html, "iuxray_report")
    assert 'data-kind="report"' in section and "no grounding records" not in html
    expected = score_reports([r["prediction"] for r in records], [r["reference"] for r in records])
    for key, ours in (("bleu1", "bleu1"), ("bleu4", "bleu4"), ("rouge_l", "rouge_l"), ("meteor_simple", "meteor"),
                      ("cider_d", "cider")):
        m = re.search(rf'data-task="iuxray_report" data-key="{key}" data-value="([^"]*)"', html)
        assert m and float(m[1]) == pytest.approx(expected[ours]), key
    # worst / best by the record's own per-sample ROUGE-L, reference and generated side by side, escaped
    by_rouge = sorted(records, key=lambda r: r["rouge_l"])
    assert _rows_ids(section, "worst") == [by_rouge[0]["id"]] == ["iu-2"]
    assert _rows_ids(section, "best") == [by_rouge[-1]["id"]] == ["iu-0"]
    assert "ROUGE-L" in section and "reference" in section and "generated" in section
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "Right upper lobe mass. No pneumothorax." in html
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)"', section)
    assert thumbs and all((out / t).is_file() for t in thumbs)
    summary = json.loads((out / "summary.json").read_text())["tasks"]["iuxray_report"]
    assert summary["kind"] == "report" and summary["metrics"]["rouge_l"] == pytest.approx(expected["rouge_l"])


def test_run_with_several_tasks_gets_one_section_per_task_of_its_kind(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    run = tmp_path / "run"
    run.mkdir()
    _vqa_run(dataset, run)
    _report_run(dataset, run, task="synthcxr_report")
    rec = _records(dataset)[0]
    answer = get_codec("llava").encode(rec["boxes"][0], (rec["width"], rec["height"]))
    grounding = _our_record(rec, dataset, answer)
    (run / f"{DATE}_samples_synthcxr_grounding.jsonl").write_text(json.dumps(_line(0, grounding, answer)) + "\n")
    assert pfmvg(["report", str(run), "--n-bootstrap", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {t: v["kind"] for t, v in printed["tasks"].items()} == {
        "pfmvg_vqarad": "vqa", "synthcxr_report": "report", "synthcxr_grounding": "grounding"}
    html = (run / "pfmvg_report" / "index.html").read_text()
    kinds = dict(re.findall(r'<section id="task-([^"]+)" data-kind="([^"]+)"', html))
    assert kinds == {"pfmvg_vqarad": "vqa", "synthcxr_report": "report", "synthcxr_grounding": "grounding"}
    assert 'data-task="synthcxr_grounding" data-key="acc@0.5" data-value="1.0"' in html
    assert 'data-task="pfmvg_vqarad" data-key="acc@0.5"' not in html  # no grounding numbers for VQA
    assert "no grounding records" not in html


def test_record_keys_match_the_tasks():
    from pfmvg_plugin.lmms import grounding_task, report_task, vqa_task
    from pfmvg_plugin.report.samples import RECORD_KEYS

    assert RECORD_KEYS == {"grounding": grounding_task.SAMPLE_KEY, "vqa": vqa_task.SAMPLE_KEY,
                           "report": report_task.SAMPLE_KEY}


def _comparison_run(ds: PreparedDataset, root: Path, model: str, answer_fn, **extra) -> Path:
    """An lmms-eval run dir of ``model`` whose answer to each record is ``answer_fn(i, rec)`` (LLaVA floats);
    ``extra``: fields added to every per-sample record."""
    run = root / model / f"org__{model}"
    run.mkdir(parents=True)
    lines = []
    for i, rec in enumerate(_records(ds)):
        answer = answer_fn(i, rec)
        lines.append(_line(i, {**_our_record(rec, ds, answer), **extra}, answer))
    (run / f"{DATE}_samples_{TASK}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / f"{DATE}_results.json").write_text(json.dumps(
        {"results": {TASK: {"alias": TASK}}, "config": {"model": model, "model_args": f"pretrained=org/{model}"}}))
    return root / model


def test_several_runs_get_one_comparison_page(dataset, tmp_path, monkeypatch):
    """Two models on the same queries: one table row per run with numbers equal to metrics.aggregate over its own
    records, format compliance, and one overlay grid whose rows are the runs and whose columns are the same queries."""
    monkeypatch.setenv("PFMVG_NO_PROGRESS", "1")
    codec = get_codec("llava")

    def exact(i, rec):
        return codec.encode([tuple(b) for b in rec["boxes"]], (rec["width"], rec["height"]))

    def half_chatter(i, rec):
        return "I am not sure." if i % 2 else exact(i, rec)

    good = _comparison_run(dataset, tmp_path, "good_model", exact)
    weak = _comparison_run(dataset, tmp_path, "weak_model", half_chatter, protocol="uniform")
    out = tmp_path / "cmp"
    assert pfmvg(["report", str(good), str(weak), "--out", str(out), "--queries", "4", "--n-bootstrap", "50"]) == 0
    summary = json.loads((out / "comparison.json").read_text())["tasks"][TASK]
    rows = {r["model"]: r for r in summary["rows"]}
    n = len(_records(dataset))
    weak_records = [_our_record(rec, dataset, half_chatter(i, rec)) for i, rec in enumerate(_records(dataset))]
    assert rows["good_model"]["acc@0.5"] == 1.0 and rows["good_model"]["format"]["ok"] == 1.0
    assert rows["weak_model"]["acc@0.5"] == aggregate(weak_records, n_bootstrap=0)["acc@0.5"]
    assert rows["weak_model"]["format"]["no_box"] == pytest.approx((n // 2) / n)
    assert rows["weak_model"]["convention"] == "llava (uniform)" and rows["weak_model"]["n"] == n
    assert rows["good_model"]["convention"] == "llava"  # samples logged before the protocol was recorded
    assert len(summary["queries"]) == 4 and len(set(summary["queries"])) == 4
    grid = Image.open(summary["grid"])
    assert grid.width >= 4 * 192 and grid.height >= 2 * 192  # 4 queries x 2 runs
    html = (out / "compare.html").read_text()
    assert "good_model" in html and "weak_model" in html and "grid_" in html
    # one run is not a comparison: the single-run page, as before
    assert pfmvg(["report", str(good), "--out", str(tmp_path / "single")]) == 0
    assert (tmp_path / "single" / "index.html").is_file()
