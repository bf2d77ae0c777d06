"""The items a reader rates, built from lmms-eval ``--log_samples`` files or ``pfmvg judge`` / plain JSONL files.

Every line of a samples file is one item: ``(task, model, id)``; the task is the one in an lmms-eval samples file's
name, else the kind of the line (``text`` for plain id/prediction/reference lines), so plain files of several models
with the same ids are the same documents. The fields are found as ``pfmvg judge`` finds them
(:mod:`pfmvg_plugin.judge.samples`); grounding lines are read from their ``grounding_sample`` record (phrase,
predicted and ground-truth boxes in pixels of the record's ``width`` x ``height``). An image is shown only when the
record names its prepared dataset (``dataset_dir`` + ``image``) and the path stays inside that dataset's image root
(:class:`pfmvg_plugin.report.overlays.ImageResolver`); otherwise the item is shown without it, saying why.

A line that is not a JSON object is an error naming the file and line: a reader must not silently miss documents.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pfmvg_plugin.data.images import image_size
from pfmvg_plugin.judge.rubrics import SCALE, Rubric, get_rubric, load_rubric_file
from pfmvg_plugin.judge.samples import DEFAULT_PATHS, ReadStats, as_text, expand_inputs, first_value, iter_lines
from pfmvg_plugin.report.overlays import ImageResolver
from pfmvg_plugin.report.samples import (
    IMAGE_ERROR,
    KIND_LABELS,
    file_kind,
    line_kind,
    parse_samples_name,
    results_file_for,
)

#: What a grounding reader rates (no judge rubric exists for boxes).
GROUNDING_ANCHORS = {
    5: "The box localises the finding: it covers the finding and little else; a reader would draw about the same.",
    4: "Acceptable: the finding is inside the box, which is somewhat too large or slightly off on one side.",
    3: "Partly: the box covers part of the finding, or is much larger than it; clinically borderline.",
    2: "Mostly wrong: the box touches the finding only at its edge, or covers the wrong side or region.",
    1: "Wrong: the box misses the finding entirely, or there is no usable box.",
}
_ANCHOR_RE = re.compile(r"^\s*([1-5])\s*[=:.)-]\s*(.+?)\s*$")


@dataclass(frozen=True)
class Scale:
    """The 1-5 scale shown to a reader: a title and one anchor description per point."""

    name: str
    anchors: dict[int, str]
    text: str = ""  # the rubric's whole text, shown when it has no recognisable anchors


def scale_from_rubric(rubric: Rubric) -> Scale:
    """The anchors ``N = description`` of a judge rubric's system prompt (the same text ``pfmvg judge`` sends)."""
    anchors = {}
    for line in rubric.system.splitlines():
        m = _ANCHOR_RE.match(line)
        if m and int(m[1]) not in anchors:
            anchors[int(m[1])] = m[2]
    if set(anchors) != set(SCALE):
        return Scale(rubric.name, {}, rubric.system)
    return Scale(rubric.name, anchors)


GROUNDING_SCALE = Scale("grounding", GROUNDING_ANCHORS)


def resolve_scales(rubric: str | None) -> dict[str, Scale]:
    """Scales per item kind for ``--rubric``: None = each kind its own (report, vqa, grounding); a name or a rubric
    file gives that one scale for every text item (grounding items keep theirs)."""
    scales = {"report": scale_from_rubric(get_rubric("report")), "vqa": scale_from_rubric(get_rubric("vqa")),
              "grounding": GROUNDING_SCALE}
    if rubric is None or rubric == "grounding":
        return scales
    if rubric not in ("report", "vqa") and not Path(rubric).is_file():
        raise ValueError(f"--rubric {rubric}: not report, vqa or grounding, and no such rubric file")
    chosen = (scale_from_rubric(get_rubric(rubric)) if rubric in ("report", "vqa")
              else scale_from_rubric(load_rubric_file(rubric)))
    return {"report": chosen, "vqa": chosen, "grounding": GROUNDING_SCALE}


@dataclass(frozen=True)
class Item:
    """One model output for one document. ``key`` (``task|model|id``) is how the database knows it."""

    task: str
    model: str
    id: str
    kind: str  # report, vqa, grounding (or "text": a plain JSONL with prediction/reference)
    prediction: str
    reference: str | None = None
    question: str | None = None
    phrase: str | None = None
    pred_boxes: list = field(default_factory=list)
    gt_boxes: list = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    image: Path | None = None
    image_problem: str | None = None
    where: str = ""

    @property
    def key(self) -> str:
        return f"{self.task}|{self.model}|{self.id}"

    @property
    def study(self) -> str:
        """The document: every model's output for it is shown together, in a blinded order."""
        return f"{self.task}|{self.id}"


def split_spec(spec: str) -> tuple[str | None, Path]:
    """``MODEL=PATH`` or ``PATH`` -> ``(model or None, path)``."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if name and path:
            return name, Path(path)
    return None, Path(spec)


def default_model(path: Path) -> str:
    """The model that wrote a samples file: ``config.model`` of its ``results.json``, else its folder's name."""
    results = results_file_for(path)
    if results is not None:
        try:
            model = (json.loads(results.read_text()).get("config") or {}).get("model")
        except (OSError, ValueError):
            model = None
        if model:
            return str(model)
    return path.parent.name or "model"


def _boxes(raw: object) -> list[list[float]]:
    out = []
    for box in raw if isinstance(raw, list) else []:
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            continue
        out.append([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])
    return out


def _int(value: object) -> int | None:
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except (TypeError, ValueError):
        return None


def read_file(path: Path, model: str, resolver: ImageResolver) -> list[Item]:
    """The items of one samples file (see the module docstring); raises ``ValueError`` naming a malformed line."""
    stats = ReadStats()
    date, task = parse_samples_name(path)
    items = []
    for where, obj in iter_lines(path, stats):
        found = line_kind(obj)
        kind, record = found if found is not None else ("text", obj)
        if record.get("status") == IMAGE_ERROR:
            continue  # no readable image when evaluated: left out of every metric, and out of rating
        item_id = as_text(first_value(obj, DEFAULT_PATHS["id"]))
        prediction = as_text(first_value(obj, DEFAULT_PATHS["prediction"])) or ""
        if kind == "grounding":
            prediction = str(record.get("answer") or prediction)
        reference = as_text(first_value(obj, DEFAULT_PATHS["reference"]), join=True)
        line = where.rsplit(":", 1)[1]
        if item_id is None:
            raise ValueError(f"{path}:{line}: no sample id ({' / '.join(DEFAULT_PATHS['id'])})")
        if kind != "grounding" and first_value(obj, DEFAULT_PATHS["prediction"]) is None:
            raise ValueError(f"{path}:{line}: no model output to rate ({' / '.join(DEFAULT_PATHS['prediction'])})")
        image, problem = None, "the sample names no prepared dataset image (dataset_dir + image)"
        if record.get("dataset_dir") and record.get("image"):
            before = len(resolver.missing)
            image = resolver.resolve(record)
            problem = resolver.missing[-1].reason if len(resolver.missing) > before else None
        width, height = _int(record.get("width")), _int(record.get("height"))
        if image is not None and not (width and height):  # boxes are in pixels of the original image
            try:
                width, height = image_size(image)
            except (OSError, ValueError, ImportError) as exc:
                image, problem = None, f"unreadable image {image} ({exc})"
        items.append(Item(
            task=task if date else kind, model=model, id=item_id, kind=kind, prediction=prediction,
            reference=None if kind == "grounding" else reference,
            question=as_text(first_value(obj, DEFAULT_PATHS["question"])), phrase=as_text(record.get("phrase")),
            pred_boxes=_boxes(record.get("pred_boxes")), gt_boxes=_boxes(record.get("gt_boxes")),
            width=width, height=height, image=image, image_problem=problem,
            where=f"{path}:{where.rsplit(':', 1)[1]}"))
    bad = {reason: lines for reason, lines in stats.skipped_at.items()}
    if bad:
        reason, lines = next(iter(bad.items()))
        line = lines[0].rsplit(":", 1)[1]
        more = sum(stats.skipped.values()) - 1
        raise ValueError(f"{path}:{line}: {reason}" + (f" (and {more} more bad line(s))" if more else "")
                         + "; every line of a samples file must be one JSON object: fix or remove it")
    return items


JUDGE_KEYS = {"id", "rating", "status", "where"}


def judged_samples(path: Path) -> tuple[list[Path], set[str]] | None:
    """For a ``pfmvg judge`` output (it holds ratings, not the model's text): the samples files it judged, from its
    ``.summary.json``, and the ids it covers. None for any other file."""
    ids: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for text in f:
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                return None  # not a judge output: read_file names the bad line
            if not (isinstance(line, dict) and set(line) >= JUDGE_KEYS
                    and first_value(line, DEFAULT_PATHS["prediction"]) is None):
                return None
            ids.add(str(line["id"]))
    summary = path.with_name(path.name.removesuffix(".jsonl") + ".summary.json")
    try:
        files = [Path(p) for p in json.loads(summary.read_text())["inputs"]["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is a pfmvg judge output: it holds the judge's ratings, not the model's text. Its "
                         f"{summary.name} (which lists the samples files it judged) is missing or unreadable: give "
                         "those samples files to --samples instead") from None
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ValueError(f"{path}: the samples files this judge output was made from are gone: {', '.join(missing)}")
    return files, ids


def load_items(specs: list[str], kind: str | None = None) -> list[Item]:
    """Every item of the ``[MODEL=]PATH`` samples files (a directory: its lmms-eval samples files; a ``pfmvg judge``
    output: the items of the samples files it judged).

    Two files of the same task whose model names are the same (and not given) are an error: name them MODEL=PATH.
    ``kind`` (``--rubric report|vqa|grounding``): a samples file of another kind of task is an error naming it.
    """
    resolver = ImageResolver()
    items: list[Item] = []
    owners: dict[tuple[str, str], Path] = {}
    for spec in specs:
        given, where = split_spec(spec)
        for given_path in expand_inputs([where]):
            judged = judged_samples(given_path)
            for path in judged[0] if judged else [given_path]:
                model = given or default_model(path)
                date, task = parse_samples_name(path)
                task = task if date else f"{path.name} (not an lmms-eval samples file)"
                if (task, model) in owners:
                    raise ValueError(f"{owners[(task, model)]} and {path} are both task {task} of model {model!r}: "
                                     "name them, e.g. --samples modelA=FILE --samples modelB=FILE")
                owners[(task, model)] = path
                found = file_kind(path) if kind else None
                if found is not None and found != kind:
                    raise ValueError(f"{path}: task {task} is a {KIND_LABELS[found]} run, but --rubric {kind} rates "
                                     f"{KIND_LABELS[kind]} outputs; leave --rubric out to rate every file on its own "
                                     "kind's scale")
                read = read_file(path, model, resolver)
                items.extend(i for i in read if judged is None or i.id in judged[1])
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise ValueError(f"{item.where}: sample id {item.id!r} appears twice in task {item.task} of model "
                             f"{item.model!r}; each document must be rated once")
        seen.add(item.key)
    if not items:
        raise ValueError(f"nothing to rate in {', '.join(specs)}: no samples lines")
    return items
