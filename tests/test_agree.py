"""`pfmvg agree`: agreement statistics checked against textbook values, scipy, and through the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("sklearn")
pytest.importorskip("krippendorff")

from scipy import stats as sps  # noqa: E402

from pfmvg_plugin.agreement.load import load_metrics, load_ratings, to_number  # noqa: E402
from pfmvg_plugin.agreement.stats import (  # noqa: E402
    _rowwise_kendall,
    _rowwise_pearson,
    _rowwise_quadratic_kappa,
    _rowwise_spearman,
    is_likert,
    krippendorff_alpha,
    overall_alpha,
    pair_statistics,
    percentile_ci,
    quadratic_kappa,
)
from pfmvg_plugin.cli.main import main  # noqa: E402

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units, missing data.
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
])


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849),
                                                 ("ratio", 0.797)])
def test_krippendorff_alpha_textbook_example(level, expected):
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(expected, abs=5e-4)


def test_krippendorff_alpha_two_coder_binary_example():
    # Krippendorff (2011), section A: two observers, binary data, 10 units -> alpha = 0.095
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha(np.array([a, b]), "nominal", value_domain=[0, 1]) == pytest.approx(0.095, abs=5e-4)


def test_overall_alpha_drops_unpairable_units_and_matches_the_textbook():
    out = overall_alpha(KRIPPENDORFF_2011, n_bootstrap=200, seed=1)
    assert out["units"] == 11 and out["raters"] == 4  # unit 12 has one value only
    assert out["alpha_ordinal"] == pytest.approx(0.815, abs=5e-4)
    lo, hi = out["alpha_ordinal_ci"]
    assert lo <= out["alpha_ordinal"] <= hi


def test_quadratic_kappa_hand_computed():
    # a = 1 2 3 4, b = 1 2 4 4. Observed sum of squared differences: 1. Expected: sum_ij (i-j)^2 r_i c_j / N with
    # r = {1,2,3,4: 1}, c = {1: 1, 2: 1, 4: 2}: (19 + 9 + 7 + 13) / 4 = 12. kappa = 1 - 1/12 = 11/12.
    assert quadratic_kappa(np.array([1, 2, 3, 4]), np.array([1, 2, 4, 4])) == pytest.approx(11 / 12)
    assert quadratic_kappa(np.array([1, 3, 5]), np.array([1, 3, 5])) == pytest.approx(1.0)
    # labels 1-5 although 5 never occurs: for quadratic weights the label set does not matter (normalisation cancels)
    from sklearn.metrics import cohen_kappa_score

    assert quadratic_kappa(np.array([1, 2, 3, 4]), np.array([1, 2, 4, 4])) == pytest.approx(
        cohen_kappa_score([1, 2, 3, 4], [1, 2, 4, 4], weights="quadratic"))


def _data(n=60, seed=3):
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 6, n).astype(float)
    b = np.clip(a + rng.integers(-1, 2, n), 1, 5).astype(float)
    return a, b


def test_correlations_match_scipy_and_vectorised_replicates_are_exact(monkeypatch):
    a, b = _data()
    out = pair_statistics(a, b, ordinal=True, n_bootstrap=0)
    assert out["spearman"] == pytest.approx(sps.spearmanr(a, b).statistic)
    assert out["kendall"] == pytest.approx(sps.kendalltau(a, b, variant="b").statistic)
    assert out["pearson"] == pytest.approx(sps.pearsonr(a, b).statistic)
    assert out["spearman_p"] == pytest.approx(sps.spearmanr(a, b).pvalue)
    assert out["kappa_quadratic"] is not None and out["alpha_ordinal"] is not None
    from sklearn.metrics import cohen_kappa_score

    rows = np.random.default_rng(0).integers(0, a.size, size=(6, a.size))
    ra, rb = a[rows], b[rows]
    reps = zip(rows, _rowwise_spearman(ra, rb), _rowwise_pearson(ra, rb), _rowwise_kendall(ra, rb),
               _rowwise_quadratic_kappa(ra, rb))
    for row, rs, rp, rk, rq in reps:  # Likert data: many ties
        assert rs == pytest.approx(sps.spearmanr(a[row], b[row]).statistic)  # average ranks, as scipy
        assert rp == pytest.approx(sps.pearsonr(a[row], b[row]).statistic)
        assert rk == pytest.approx(sps.kendalltau(a[row], b[row], variant="b").statistic)
        assert rq == pytest.approx(cohen_kappa_score(a[row].astype(int), b[row].astype(int), weights="quadratic"))
    cont = np.random.default_rng(1).normal(size=(3, 40))
    cont[:, :5] = 0.5  # ties in x only
    other = np.round(cont + np.random.default_rng(2).normal(size=(3, 40)), 1)
    vectorised = _rowwise_kendall(cont, other)
    for x, y, rk in zip(cont, other, vectorised):
        assert rk == pytest.approx(sps.kendalltau(x, y, variant="b").statistic)
    import pfmvg_plugin.agreement.stats as st

    monkeypatch.setattr(st, "VECTOR_KENDALL_MAX_N", 10)  # large n: scipy per replicate, same numbers
    assert st._rowwise_kendall(cont, other) == pytest.approx(vectorised)


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    a, b = _data()
    one = pair_statistics(a, b, ordinal=True, n_bootstrap=200, seed=7)
    again = pair_statistics(a, b, ordinal=True, n_bootstrap=200, seed=7)
    other = pair_statistics(a, b, ordinal=True, n_bootstrap=200, seed=8)
    for name in ("spearman", "kendall", "pearson", "kappa_quadratic", "alpha_ordinal"):
        lo, hi = one[f"{name}_ci"]
        assert lo <= one[name] <= hi, name
        assert one[f"{name}_ci"] == again[f"{name}_ci"]
    assert one["spearman_ci"] != other["spearman_ci"]


def test_degenerate_input_gives_none_not_errors():
    out = pair_statistics(np.array([3.0, 3, 3, 3]), np.array([1.0, 2, 3, 4]), ordinal=True, n_bootstrap=50)
    assert out["spearman"] is None and out["spearman_ci"] is None
    assert pair_statistics(np.array([1.0, 2]), np.array([1.0, 2]), ordinal=False)["pearson"] is None
    assert percentile_ci(np.array([np.nan] * 6 + [0.1] * 4)) is None
    assert is_likert([1, 5, np.nan]) and not is_likert([1, 2.5]) and not is_likert([0, 1])


def test_values_and_spec_parsing(tmp_path):
    assert to_number(" 4 ") == (4.0, None) and to_number("NA") == (None, "missing")
    assert to_number(None) == (None, "missing") and to_number("good") == (None, "invalid")
    path = tmp_path / "long.csv"
    path.write_text("id,rater,rating\na,r1,4\na,r2,5\nb,r1,\nb,r2,3\na,r1,2\n")
    variables, report = load_ratings(f"human={path}")
    by = {v.name: v for v in variables}
    assert set(by) == {"human:r1", "human:r2"}
    assert by["human:r1"].values == {"a": 4.0, "b": None}
    assert by["human:r1"].missing == 1 and by["human:r1"].duplicates == 1
    assert report["rows"] == 5


def test_long_format_with_models_and_tasks_keys_units_by_what_varies(tmp_path):
    """`pfmvg rate export`: a `model` (or `task`) column that varies joins the unit id, so two models' outputs of one
    document are two units, not a duplicate; a column with one value leaves the ids plain (they join a judge file)."""
    path = tmp_path / "rate.csv"
    path.write_text("id,rater,model,task,rating\na,r1,m1,t,4\na,r1,m2,t,2\nb,r1,m1,t,5\na,r2,m2,t,1\n")
    (r1, r2), _ = load_ratings(str(path))
    assert r1.values == {"m1/a": 4.0, "m2/a": 2.0, "m1/b": 5.0} and r1.duplicates == 0
    assert r2.values == {"m2/a": 1.0}
    one = tmp_path / "one.csv"
    one.write_text("id,rater,model,task,rating\na,r1,m1,t1,4\nb,r1,m1,t2,3\na,r2,m1,t1,2\n")
    (r1, r2), _ = load_ratings(str(one))
    assert r1.values == {"t1/a": 4.0, "t2/b": 3.0} and r2.values == {"t1/a": 2.0}


def _write_inputs(tmp_path, n=30):
    rng = np.random.default_rng(11)
    truth = rng.integers(1, 6, n)
    ids = [f"iu-{i}" for i in range(n)]
    with open(tmp_path / "human.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "radiologist_a", "radiologist_b"])
        for i, t in zip(ids, truth):
            w.writerow([i, t, int(np.clip(t + rng.integers(-1, 2), 1, 5))])
        w.writerow(["extra-1", 3, ""])  # an id nobody else has, one missing rating
    with open(tmp_path / "judge.jsonl", "w") as f:
        for k, (i, t) in enumerate(zip(ids, truth)):
            rating = None if k == 0 else int(np.clip(t + rng.integers(-1, 2), 1, 5))
            f.write(json.dumps({"id": i, "rating": rating, "reason": "r", "status": "rated" if rating else
                                "unparsable"}) + "\n")
    words = ["normal", "heart", "size", "lungs", "clear", "effusion", "pneumothorax", "no", "small", "left"]
    with open(tmp_path / "20250101_000000_samples_iuxray_report.jsonl", "w") as f:
        for k, (i, t) in enumerate(zip(ids[:-2], truth)):  # two ids without metrics
            ref = " ".join(words)
            pred = " ".join(words[: 2 + 2 * int(t)])
            f.write(json.dumps({"doc_id": k, "doc": {"id": i}, "target": ref, "filtered_resps": [pred]}) + "\n")
    return tmp_path


def test_cli_writes_table_json_csv_and_pngs(tmp_path, capsys):
    d = _write_inputs(tmp_path)
    out = tmp_path / "agree"
    rc = main(["agree", "--ratings", str(d / "human.csv"), "--ratings", f"gpt4={d / 'judge.jsonl'}",
               "--metrics", str(d / "20250101_000000_samples_iuxray_report.jsonl"), "--out", str(out),
               "--n-bootstrap", "50", "--seed", "3"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| x | y | n | Spearman rho [95% CI]" in table and "alpha (ordinal)" in table
    result = json.loads((out / "agreement.json").read_text())
    names = {"human:radiologist_a", "human:radiologist_b", "gpt4", "bleu1", "bleu4", "rouge_l", "meteor", "cider"}
    assert set(result["coverage"]["variables"]) == names
    pairs = {(p["x"], p["y"]): p for p in result["pairs"]}
    rater_pair = pairs[("human:radiologist_a", "gpt4")]
    assert rater_pair["n"] == 29 and rater_pair["ordinal"] and rater_pair["kappa_quadratic"] is not None
    metric_pair = pairs[("human:radiologist_a", "rouge_l")]
    assert metric_pair["n"] == 28 and not metric_pair["ordinal"] and "kappa_quadratic" not in metric_pair
    assert metric_pair["spearman"] > 0.5  # the fake predictions get longer (more overlap) with the rating
    cov = result["coverage"]["variables"]
    assert cov["gpt4"]["missing"] == 1
    assert cov["human:radiologist_b"]["missing"] == 1
    assert cov["human:radiologist_a"]["ids_not_in_others"] == 1
    assert result["overall"]["raters_used"] == ["human:radiologist_a", "human:radiologist_b", "gpt4"]
    assert result["sources"][2]["text_metrics"] == "report"
    rows = list(csv.DictReader((out / "agreement.csv").read_text().splitlines()))
    assert len(rows) == len(result["pairs"]) == 28 and "kappa_quadratic_ci_low" in rows[0]
    for png in ("agreement_heatmap.png", "agreement_scatter.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "agreement.md").read_text().startswith("| x | y |")


def test_cli_metrics_csv_and_textbook_alpha_through_the_cli(tmp_path, capsys):
    with open(tmp_path / "coders.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "rater", "rating"])
        for c, row in zip("ABCD", KRIPPENDORFF_2011):
            for u, v in enumerate(row):
                w.writerow([f"u{u + 1}", c, "" if np.isnan(v) else int(v)])
    (tmp_path / "m.csv").write_text("id,score,label\n" + "".join(f"u{u},{u / 10},x\n" for u in range(1, 13)))
    rc = main(["agree", "--ratings", str(tmp_path / "coders.csv"), "--metrics", str(tmp_path / "m.csv"),
               "--n-bootstrap", "0", "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Krippendorff's alpha (ordinal) over 4 raters, 11 units: 0.815" in out
    assert "| coders:A | score |" in out  # label (text) is not a metric


def test_metric_columns_select_computed_and_file_metrics(tmp_path, capsys):
    d = _write_inputs(tmp_path, n=12)
    samples = str(d / "20250101_000000_samples_iuxray_report.jsonl")
    rc = main(["agree", "--ratings", str(d / "human.csv"), "--metrics", samples, "--metric-columns", "rouge_l,bleu4",
               "--n-bootstrap", "0", "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "| rouge_l |" in out and "| bleu4 |" in out and "meteor" not in out and "cider" not in out
    rc = main(["agree", "--ratings", str(d / "human.csv"), "--metrics", samples, "--metric-columns", "nope"])
    assert rc == 1 and "--metric-columns nope not found" in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["agree", "--ratings", str(tmp_path / "nope.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "one.csv").write_text("id,rating\na,4\n")
    assert main(["agree", "--ratings", str(tmp_path / "one.csv")]) == 1
    assert "at least two variables" in capsys.readouterr().err


def test_metrics_from_our_report_and_vqa_task_samples(tmp_path):
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    vqa_task = pytest.importorskip("pfmvg_plugin.lmms.vqa_task")

    def line(task, doc, answer, k):  # as lmms-eval 0.7.3 logs a sample
        return {"doc_id": k, "doc": doc, "target": task.doc_to_target(doc), "filtered_resps": [answer],
                **task.process_results(doc, [answer])}

    docs = [{"id": f"iu-{i}", "report": "the heart is normal no effusion", "image": "a.png"} for i in range(3)]
    answers = ["the heart is normal", "no effusion", "pneumothorax"]
    path = tmp_path / "20250101_000000_samples_iuxray_report.jsonl"
    path.write_text("".join(json.dumps(line(report_task, d, a, k)) + "\n"
                            for k, (d, a) in enumerate(zip(docs, answers))))
    variables, report = load_metrics(str(path))
    by = {v.name: v.values for v in variables}
    assert report["text_metrics"] == "report"
    assert {"bleu1", "bleu4", "rouge_l", "meteor", "cider", "prediction_words"} <= set(by)
    assert by["rouge_l"]["iu-2"] == 0.0 and by["rouge_l"]["iu-0"] > by["rouge_l"]["iu-1"] > 0
    assert by["prediction_words"] == {"iu-0": 4.0, "iu-1": 2.0, "iu-2": 1.0}

    qdocs = [{"id": f"q{i}", "question": "Is the heart enlarged?", "answer": "no", "answer_type": "closed",
              "image": "a.png"} for i in range(2)]
    vpath = tmp_path / "20250101_000000_samples_vqarad.jsonl"
    vpath.write_text("".join(json.dumps(line(vqa_task, d, a, k)) + "\n"
                             for k, (d, a) in enumerate(zip(qdocs, ["No.", "Yes, it is."]))))
    variables, report = load_metrics(str(vpath))
    by = {v.name: v.values for v in variables}
    assert report["text_metrics"] == "vqa"
    assert by["correct"] == {"q0": 1.0, "q1": 0.0} and by["exact"] == {"q0": 1.0, "q1": 0.0}


def test_metrics_from_grounding_samples(tmp_path):
    path = tmp_path / "20250101_000000_samples_mscxr_grounding.jsonl"
    line = {"doc_id": 0, "doc": {"id": "g0", "width": 10}, "target": "[0, 0, 1, 1]", "filtered_resps": ["x"],
            "grounding_sample": {"id": "g0", "iou": 0.5, "dice": 0.6, "parsed": True, "width": 10},
            "acc@0.5": {"iou": 0.5, "dice": 0.6}}
    path.write_text(json.dumps(line) + "\n")
    variables, report = load_metrics(str(path))
    assert {v.name: v.values for v in variables} == {"iou": {"g0": 0.5}, "dice": {"g0": 0.6}, "parsed": {"g0": 1.0}}
    assert report["text_metrics"] is None


# ---- what a careful user expects ------------------------------------------------------------------------------------
def test_undefined_values_say_why(tmp_path, capsys):
    """A constant rater and a pair with too few common ids: the table and the JSON give the reason, not a bare '-'."""
    ids = [f"s{i}" for i in range(8)]
    rows = ["id,a,b,flat"] + [f"{i},{1 + k % 5},{1 + (k * 3) % 5},3" for k, i in enumerate(ids)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "few.csv").write_text("id,rating\ns0,4\ns1,2\n")
    out = tmp_path / "agree"
    rc = main(["agree", "--ratings", f"h={tmp_path / 'r.csv'}", "--ratings", f"few={tmp_path / 'few.csv'}",
               "--n-bootstrap", "0", "--no-plots", "--out", str(out)])
    table = capsys.readouterr().out
    assert rc == 0
    flat = next(line for line in table.splitlines() if line.startswith("| h:a | h:flat |"))
    assert "- (constant ratings: h:flat)" in flat
    few = next(line for line in table.splitlines() if line.startswith("| h:a | few |"))
    assert "- (fewer than 3 pairs: 2)" in few
    pairs = {(p["x"], p["y"]): p for p in json.loads((out / "agreement.json").read_text())["pairs"]}
    assert pairs[("h:a", "h:flat")]["undefined"]["spearman"] == "constant ratings: h:flat"
    assert pairs[("h:a", "few")]["undefined"]["kappa_quadratic"] == "fewer than 3 pairs: 2"
    assert "undefined" not in pairs[("h:a", "h:b")] or not pairs[("h:a", "h:b")]["undefined"]
    rows = {(r["x"], r["y"]): r for r in csv.DictReader((out / "agreement.csv").read_text().splitlines())}
    assert rows[("h:a", "h:flat")]["spearman_why"] == "constant ratings: h:flat"


def test_logged_metric_shadows_the_recomputed_one_and_says_so(tmp_path, capsys):
    """report_sample logs rouge_l and agree recomputes rouge_l: one variable, no 'duplicate ids', a note why."""
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    docs = [{"id": f"iu-{i}", "report": "the heart is normal no effusion", "image": "a.png"} for i in range(4)]
    answers = ["the heart is normal", "no effusion", "pneumothorax", "the heart is normal no effusion"]
    path = tmp_path / "20250101_000000_samples_iuxray_report.jsonl"
    path.write_text("".join(json.dumps({"doc_id": k, "doc": d, "target": d["report"], "filtered_resps": [a],
                                        **report_task.process_results(d, [a])}) + "\n"
                            for k, (d, a) in enumerate(zip(docs, answers))))
    variables, report = load_metrics(str(path))
    rouge = next(v for v in variables if v.name == "rouge_l")
    assert rouge.duplicates == 0 and "computed" not in rouge.source
    assert report["shadowed"] == {"rouge_l": "the file's own per-sample rouge_l is used; the recomputed one is not"}
    (tmp_path / "h.csv").write_text("id,rating\n" + "".join(f"iu-{i},{r}\n" for i, r in enumerate([4, 3, 1, 5])))
    rc = main(["agree", "--ratings", str(tmp_path / "h.csv"), "--metrics", str(path), "--n-bootstrap", "0",
               "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "duplicate" not in out
    assert "rouge_l: the file's own per-sample rouge_l is used" in out


def test_off_scale_rating_is_an_error_naming_file_row_and_value(tmp_path, capsys):
    path = tmp_path / "human.csv"
    path.write_text("id,rating\na,4\nb,7\nc,2\nd,5\n")
    (tmp_path / "other.csv").write_text("id,rating\na,4\nb,3\nc,2\nd,5\n")
    assert main(["agree", "--ratings", str(path), "--ratings", str(tmp_path / "other.csv"), "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "line 3" in err and "7" in err and "1-5" in err and "--any-scale" in err
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "a", "rater": "r1", "rating": 4}) + "\n"
                    + json.dumps({"id": "a", "rater": "r2", "rating": 0}) + "\n")
    with pytest.raises(ValueError, match=r"long.jsonl.*line 2.*rater r2.*0"):
        load_ratings(str(long))
    # --any-scale: another scale on purpose; correlations only, as for non-integer ratings
    rc = main(["agree", "--ratings", str(path), "--ratings", str(tmp_path / "other.csv"), "--any-scale",
               "--n-bootstrap", "0", "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "not 1-5 integer ratings (correlations only): human" in out
    # averaged readers (3.5) stay allowed: on the scale, not integers
    path.write_text("id,rating\na,4\nb,3.5\nc,2\nd,5\n")
    assert main(["agree", "--ratings", str(path), "--ratings", str(tmp_path / "other.csv"), "--n-bootstrap", "0",
                 "--no-plots"]) == 0


def test_samples_without_a_readable_image_are_left_out_of_the_metrics(tmp_path):
    report_task = pytest.importorskip("pfmvg_plugin.lmms.report_task")
    docs = [{"id": f"iu-{i}", "report": "the heart is normal", "image": "a.png"} for i in range(3)]
    docs[2]["dataset_dir"] = str(tmp_path / "gone")  # its image cannot be read: the task logs image_error
    path = tmp_path / "20250101_000000_samples_iuxray_report.jsonl"
    path.write_text("".join(json.dumps({"doc_id": k, "doc": d, "target": d["report"], "filtered_resps": ["normal"],
                                        **report_task.process_results(d, ["normal"])}) + "\n"
                            for k, d in enumerate(docs)))
    variables, report = load_metrics(str(path))
    by = {v.name: v.values for v in variables}
    assert report["image_errors_left_out"] == 1
    assert set(by["rouge_l"]) == set(by["bleu1"]) == {"iu-0", "iu-1"}
    assert "n_scored" not in by  # the tasks' per-doc counter is no metric
