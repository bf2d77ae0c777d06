"""synthcxr_vqa: Med-VQA questions about the synthcxr radiographs, answered from their ground truth (and short reports).

Questions are written from the synthcxr grounding records (finding kind, patient side, zone, size, box and the lung's
box), never from the pixels, and keep each image in the split synthcxr gave it, so no test image reaches training.
The VQA records point at the synthcxr images (``image_root`` is the synthcxr folder, stored relative to this one).

Families (``meta.family``) and their answers:

================  ======  ====================================================  ===================================
family            type    example question                                      answer
================  ======  ====================================================  ===================================
presence_side     closed  Is there a nodule in the left lung?                   yes / no
presence_zone     closed  Is there consolidation in the right lower zone?       yes / no
cardiomegaly      closed  Is the heart enlarged?                                yes / no
side_choice       closed  Is the pleural effusion on the left or the right?     left / right
location          open    Where is the pleural effusion?                        left lower zone (pneumothorax:
                                                                                ``right apical`` / ``right lateral``)
abnormality       open    What abnormality is seen in the right upper zone?     nodule (lowercase category)
size              open    How large is the mass?                                small / moderate / large
================  ======  ====================================================  ===================================

Rules that keep every answer true:

- Left and right are the PATIENT's, as in the synthcxr phrases. Zones are thirds of the lung's height
  (``lung_box`` in the grounding record's meta); a finding's zone is the zone of its box centre.
- A ``yes`` names a finding that is drawn. A ``no`` is asked only when it is truly absent: no finding of that kind on
  that side (``presence_side``), or none on that side whose box reaches into that zone's band of the lung
  (``presence_zone``); no enlarged heart (``cardiomegaly``). Half of the negatives are near misses when one exists
  (same kind on the other side / in another zone), so laterality and zones have to be read from the image.
- yes/no questions are balanced exactly per split and family (the larger side is subsampled with the seed).
- ``location``, ``side_choice`` and ``size`` are asked only about a kind that occurs once in the image;
  ``abnormality`` only when the finding is the only lateral finding on its side (and, on the left, the heart is not
  enlarged), so every open answer is unique.

Reports (:func:`report_records`, dataset ``synthcxr_reports``): one short findings paragraph per image from the same
records ("There is a small nodule in the left upper zone. The heart size is normal. The lungs are otherwise clear.").

Deterministic: the output is a pure function of the synthcxr records and ``seed``. No torch.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from pfmvg_plugin.data.converters.common import report_record, vqa_record
from pfmvg_plugin.data.schema import SPLITS
from pfmvg_plugin.data.store import PreparedDataset, dataset_dir, write_dataset
from pfmvg_plugin.data.synth.vocab import NAME as SOURCE_NAME
from pfmvg_plugin.data.synth.vocab import SIDES, ZONES

NAME = "synthcxr_vqa"
REPORTS_NAME = "synthcxr_reports"

#: How each finding kind is named in questions and open answers (lowercase category).
FINDING_NAMES = {
    "nodule": "nodule", "mass": "mass", "effusion": "pleural effusion", "pneumothorax": "pneumothorax",
    "consolidation": "consolidation", "cardiomegaly": "cardiomegaly", "atelectasis": "atelectasis",
}
_ARTICLE = {"nodule": "a ", "mass": "a ", "effusion": "a ", "pneumothorax": "a ", "consolidation": "",
            "atelectasis": ""}
#: Kinds that sit in one lung (everything but cardiomegaly).
LATERAL = ("nodule", "mass", "effusion", "pneumothorax", "consolidation", "atelectasis")
#: Kinds placed in a zone of the lung; zone questions ask only about zones where the kind can be drawn.
ZONED = {"nodule": ZONES, "mass": ZONES, "consolidation": ZONES, "atelectasis": ("middle", "lower")}
#: Kinds whose size word is visible by construction (non-overlapping size ranges).
SIZED = ("nodule", "mass", "effusion", "pneumothorax")

FAMILIES = ("presence_side", "presence_zone", "cardiomegaly", "side_choice", "location", "abnormality", "size")
YES_NO_FAMILIES = ("presence_side", "presence_zone", "cardiomegaly")

_TEMPLATES = {
    "presence_side": ("Is there {obj} in the {side} lung?", "Does the {side} lung show {obj}?",
                      "Is there {obj} on the {side} side?"),
    "presence_side_pleural": ("Is there a {side} {name}?", "Is there {obj} on the {side}?",
                              "Is there {obj} on the {side} side?"),
    "presence_zone": ("Is there {obj} in the {side} {zone} zone?", "Does the {side} {zone} zone contain {obj}?",
                      "Is {obj} seen in the {side} {zone} zone?"),
    "cardiomegaly": ("Is the heart enlarged?", "Is there cardiomegaly?", "Is the cardiac silhouette enlarged?"),
    "side_choice": ("Is the {name} on the left or the right?", "Which side is the {name} on, left or right?",
                    "Is the {name} in the left or the right lung?"),
    "location": ("Where is the {name}?", "Where is the {name} located?", "In which region is the {name}?"),
    "abnormality_zone": ("What abnormality is seen in the {side} {zone} zone?",
                         "What is abnormal in the {side} {zone} zone?"),
    "abnormality_side": ("What abnormality is seen in the {side} lung?", "What is abnormal in the {side} lung?"),
    "size": ("How large is the {name}?", "What is the size of the {name}?"),
}


class SourceError(ValueError):
    """The source is not a synthcxr dataset this generator can read."""


def _finding_of(rec: dict) -> dict:
    """The finding a synthcxr grounding record describes: kind, side, zone, size, box, lung box, record id."""
    meta = rec.get("meta") or {}
    kind = meta.get("finding")
    if kind not in FINDING_NAMES:
        raise SourceError(f"record {rec.get('id')!r}: meta.finding {kind!r} is not a synthcxr finding kind; "
                          "synthcxr_vqa is built from `pfmvg data synth` output")
    side = meta.get("side")
    if kind in LATERAL and (side not in SIDES or not meta.get("lung_box")):
        raise SourceError(f"record {rec.get('id')!r}: a {kind} needs meta.side (left/right) and meta.lung_box")
    return {"kind": kind, "side": side if kind in LATERAL else None, "zone": meta.get("zone"),
            "size": meta.get("size"), "box": [float(v) for v in rec["boxes"][0]],
            "lung_box": meta.get("lung_box"), "id": rec["id"]}


def zone_band(zone: str, lung_box: Sequence[float]) -> tuple[float, float]:
    """Rows ``[top, bottom)`` of ``zone`` (a third of the lung's height) in pixels."""
    k = ZONES.index(zone)
    top, height = float(lung_box[1]), float(lung_box[3]) - float(lung_box[1])
    return top + k * height / 3, top + (k + 1) * height / 3


def reaches_zone(finding: dict, zone: str) -> bool:
    """Whether the finding's box overlaps ``zone``'s band of its lung (any overlap counts)."""
    lo, hi = zone_band(zone, finding["lung_box"])
    return finding["box"][1] < hi and finding["box"][3] > lo


def present_on_side(findings: Iterable[dict], kind: str, side: str) -> bool:
    return any(f["kind"] == kind and f["side"] == side for f in findings)


def present_in_zone(findings: Iterable[dict], kind: str, side: str, zone: str) -> bool:
    """True unless a ``no`` is safe: some finding of ``kind`` on ``side`` reaches into ``zone``."""
    return any(f["kind"] == kind and f["side"] == side and reaches_zone(f, zone) for f in findings)


def _obj(kind: str) -> str:
    return _ARTICLE.get(kind, "") + FINDING_NAMES[kind]


def _location_answer(f: dict) -> str:
    if f["kind"] == "pneumothorax":
        return f"{f['side']} {f['zone']}"  # apical / lateral
    return f"{f['side']} {f['zone']} zone"


def _question(family: str, **fields) -> dict:
    return {"family": family, **fields}


def _image_questions(findings: list[dict], rng: random.Random) -> list[dict]:
    """Candidate questions of one image (yes/no negatives included); balancing happens per split afterwards."""
    out: list[dict] = []
    lateral = [f for f in findings if f["kind"] in LATERAL]
    cardio = any(f["kind"] == "cardiomegaly" for f in findings)
    asked_side: set[tuple[str, str]] = set()
    asked_zone: set[tuple[str, str, str]] = set()
    for f in lateral:
        kind, side = f["kind"], f["side"]
        # presence by side: the finding (yes) and one truly absent (kind, side) (no), a near miss half of the time
        if (kind, side) not in asked_side:
            out.append(_question("presence_side", kind=kind, side=side, answer="yes", support=[f["id"]]))
            asked_side.add((kind, side))
        other = SIDES[1 - SIDES.index(side)]
        near = (kind, other)
        pool = [(k, s) for k in LATERAL for s in SIDES
                if not present_on_side(findings, k, s) and (k, s) not in asked_side]
        if pool:
            pick = near if near in pool and rng.random() < 0.5 else rng.choice(pool)
            asked_side.add(pick)
            out.append(_question("presence_side", kind=pick[0], side=pick[1], answer="no", support=[]))
        # presence by zone
        if kind in ZONED and f["zone"] in ZONED[kind] and (kind, side, f["zone"]) not in asked_zone:
            out.append(_question("presence_zone", kind=kind, side=side, zone=f["zone"], answer="yes",
                                 support=[f["id"]]))
            asked_zone.add((kind, side, f["zone"]))
            pool = [(k, s, z) for k in ZONED for s in SIDES for z in ZONED[k]
                    if not present_in_zone(findings, k, s, z) and (k, s, z) not in asked_zone]
            near_pool = [q for q in pool if q[0] == kind and q[1] == side]
            if pool:
                pick = rng.choice(near_pool) if near_pool and rng.random() < 0.5 else rng.choice(pool)
                asked_zone.add(pick)
                out.append(_question("presence_zone", kind=pick[0], side=pick[1], zone=pick[2], answer="no",
                                     support=[]))
        unique = sum(g["kind"] == kind for g in findings) == 1
        if unique:
            out.append(_question("side_choice", kind=kind, side=side, answer=side, support=[f["id"]]))
        alone = sum(g["side"] == side for g in lateral) == 1 and not (cardio and side == "left")
        if unique:
            out.append(_question("location", kind=kind, side=side, zone=f["zone"], answer=_location_answer(f),
                                 support=[f["id"]]))
        if alone:
            by_zone = f["zone"] in ZONES and rng.random() < 0.5
            out.append(_question("abnormality", kind=kind, side=side, zone=f["zone"] if by_zone else None,
                                 answer=FINDING_NAMES[kind], support=[f["id"]]))
        if unique and kind in SIZED and f["size"]:
            out.append(_question("size", kind=kind, side=side, answer=f["size"], support=[f["id"]]))
    cardio_ids = [f["id"] for f in findings if f["kind"] == "cardiomegaly"]
    out.append(_question("cardiomegaly", kind="cardiomegaly", side=None, answer="yes" if cardio else "no",
                         support=cardio_ids))
    return out


def _text(q: dict, rng: random.Random) -> str:
    family, kind = q["family"], q["kind"]
    fields = {"obj": _obj(kind), "name": FINDING_NAMES[kind], "side": q.get("side"), "zone": q.get("zone")}
    if family == "presence_side" and kind in ("effusion", "pneumothorax"):
        key = "presence_side_pleural"
    elif family == "abnormality":
        key = "abnormality_zone" if q.get("zone") else "abnormality_side"
    else:
        key = family
    text = rng.choice(_TEMPLATES[key]).format(**fields)
    return text[0].upper() + text[1:]


def _image_rng(seed: int, image: str, purpose: str) -> random.Random:
    return random.Random(f"{NAME}:{seed}:{image}:{purpose}")


def _group_by_image(records: Iterable[dict]) -> dict[str, tuple[str, int, int, list[dict]]]:
    """image -> (split, width, height, findings); an image in two splits is an error."""
    images: dict[str, tuple[str, int, int, list[dict]]] = {}
    for rec in records:
        if rec.get("task") != "grounding":
            continue
        image = rec["image"]
        if image in images and images[image][0] != rec["split"]:
            raise SourceError(f"image {image} is in two splits ({images[image][0]}, {rec['split']}); "
                              "refusing to build questions that would leak it")
        images.setdefault(image, (rec["split"], int(rec["width"]), int(rec["height"]), []))[3].append(
            _finding_of(rec))
    return images


def vqa_records(grounding: Iterable[dict], seed: int = 0, source: str = NAME) -> list[dict]:
    """Canonical VQA records (see the module docstring) from synthcxr grounding records."""
    images = _group_by_image(grounding)
    per_image = {}
    for image in sorted(images):
        split, _, _, findings = images[image]
        per_image[image] = _image_questions(findings, _image_rng(seed, image, "questions"))
    # balance yes/no per (split, family): keep every answer of the rarer kind, a seeded sample of the other
    dropped: set[tuple[str, int]] = set()
    for split in SPLITS:
        for family in YES_NO_FAMILIES:
            by_answer: dict[str, list[tuple[str, int]]] = {"yes": [], "no": []}
            for image in sorted(images):
                if images[image][0] != split:
                    continue
                for k, q in enumerate(per_image[image]):
                    if q["family"] == family:
                        by_answer[q["answer"]].append((image, k))
            n = min(len(by_answer["yes"]), len(by_answer["no"]))
            rng = random.Random(f"{NAME}:{seed}:{split}:{family}:balance")
            for answer in ("yes", "no"):
                keys = by_answer[answer]
                keep = set(rng.sample(range(len(keys)), n))
                dropped.update(key for i, key in enumerate(keys) if i not in keep)
    out = []
    for image in sorted(images):
        split, width, height, findings = images[image]
        rng = _image_rng(seed, image, "text")
        stem = Path(image).stem
        kept = [q for k, q in enumerate(per_image[image]) if (image, k) not in dropped]
        for k, q in enumerate(kept):
            closed = q["family"] in YES_NO_FAMILIES or q["family"] == "side_choice"
            meta = {"family": q["family"], "finding": q["kind"], "side": q.get("side"), "zone": q.get("zone"),
                    "grounding_ids": q["support"]}
            out.append(vqa_record(record_id=f"{source}-{stem}-{k:02d}", source=source, split=split, image=image,
                                  question=_text(q, rng), answer=q["answer"],
                                  answer_type="closed" if closed else "open", size=(width, height), meta=meta))
    return out


# ---- reports -----------------------------------------------------------------------------------------------------
def _sentence(f: dict) -> str:
    kind, side, zone, size = f["kind"], f["side"], f["zone"], f["size"]
    size = f"{size} " if size else ""
    if kind == "effusion":
        return f"There is a {size}{side} pleural effusion."
    if kind == "pneumothorax":
        return f"There is a {size}{side} {zone} pneumothorax."
    if kind in ("nodule", "mass"):
        return f"There is a {size}{kind} in the {side} {zone} zone."
    return f"There is {kind} in the {side} {zone} zone."


def report_text(findings: Sequence[dict]) -> str:
    """A short findings paragraph: one sentence per lateral finding, the heart, then the rest of the lungs."""
    lateral = sorted((f for f in findings if f["kind"] in LATERAL), key=lambda f: (SIDES.index(f["side"]), f["kind"]))
    heart = ("The heart is enlarged." if any(f["kind"] == "cardiomegaly" for f in findings)
             else "The heart size is normal.")
    rest = "The lungs are otherwise clear." if lateral else "The lungs are clear."
    return " ".join([*(_sentence(f) for f in lateral), heart, rest])


def report_records(grounding: Iterable[dict], source: str = REPORTS_NAME) -> list[dict]:
    """One canonical report record per synthcxr image (same split as the image)."""
    images = _group_by_image(grounding)
    return [report_record(record_id=f"{source}-{Path(image).stem}", source=source, split=split, images=[image],
                          report=report_text(findings), meta={"grounding_ids": [f["id"] for f in findings]})
            for image, (split, _, _, findings) in sorted(images.items())]


# ---- datasets on disk --------------------------------------------------------------------------------------------
def _read_source(source: str | Path) -> tuple[PreparedDataset, list[dict]]:
    ds = PreparedDataset(source)
    if ds.meta.get("name") != SOURCE_NAME:
        raise SourceError(f"{source} is the {ds.meta.get('name')!r} dataset; synthcxr_vqa is built from synthcxr "
                          "(`pfmvg data synth`)")
    records = [r for split in SPLITS if ds.split_path(split).is_file() for r in ds.records(split)]
    return ds, records


def _write(out_dir: Path, name: str, records: list[dict], ds: PreparedDataset, extra: dict) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the images stay in synthcxr; a relative root keeps the pair movable together (e.g. a new $PFMVG_DATA_ROOT)
    root = os.path.relpath(ds.image_root.resolve(), out_dir.resolve())
    generator = {"source": str(Path(ds.path).resolve()), **extra}
    return write_dataset(out_dir, name, records, image_root=ds.image_root,
                         extra={"image_root": Path(root).as_posix(), "generator": generator})


def generate_synthcxr_vqa(source: str | Path, out_dir: str | Path, seed: int = 0) -> dict:
    """Write the ``synthcxr_vqa`` dataset built from the synthcxr dataset at ``source``; returns the summary."""
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    ds, grounding = _read_source(source)
    records = vqa_records(grounding, seed=seed)
    summary = _write(Path(out_dir), NAME, records, ds, {"seed": seed})
    types = defaultdict(int)
    for r in records:
        types[r["answer_type"]] += 1
    return {**summary, "answer_types": dict(types)}


def generate_synthcxr_reports(source: str | Path, out_dir: str | Path) -> dict:
    """Write the ``synthcxr_reports`` dataset (one short report per synthcxr image); returns the summary."""
    ds, grounding = _read_source(source)
    return _write(Path(out_dir), REPORTS_NAME, report_records(grounding), ds, {})


def ensure_synthcxr_vqa(path: str | Path | None = None, source: str | Path | None = None, seed: int = 0) -> Path:
    """``path`` (default ``$PFMVG_DATA_ROOT/synthcxr_vqa``) built from ``source`` (default: the synthcxr folder
    beside it) unless it already holds a prepared dataset. Written to a temporary folder and renamed into place, so a
    concurrent caller never sees a half-written dataset."""
    path = dataset_dir(NAME, path)
    if (path / "dataset.json").is_file():
        return path
    source = Path(source) if source is not None else path.parent / SOURCE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        generate_synthcxr_vqa(source, tmp, seed=seed)
        try:
            if path.exists() and not any(path.iterdir()):
                path.rmdir()
            os.rename(tmp, path)
        except OSError:
            if not (path / "dataset.json").is_file():  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---- command line ------------------------------------------------------------------------------------------------
DESCRIPTION = ("Build synthcxr_vqa: closed (yes/no, left/right) and open (where, what, how large) questions about "
               "the synthcxr radiographs, answered from their boxes; same images and splits as synthcxr.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path, default=None,
                        help=f"the synthcxr dataset to ask about (default $PFMVG_DATA_ROOT/{SOURCE_NAME}; "
                             "create it with `pfmvg data synth`)")
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default $PFMVG_DATA_ROOT/{NAME})")
    parser.add_argument("--seed", type=int, default=0, help="random seed for question choice and wording (default 0)")
    parser.add_argument("--reports", action="store_true",
                        help=f"also write {REPORTS_NAME} (one short findings report per image) beside --out")


def run_cli(args: argparse.Namespace) -> dict:
    source = args.source if args.source is not None else dataset_dir(SOURCE_NAME)
    if not (Path(source) / "dataset.json").is_file():
        raise FileNotFoundError(f"no synthcxr dataset at {source}; run `pfmvg data synth` first "
                                "(or `pfmvg data synth --vqa`, which writes both)")
    out = dataset_dir(NAME, args.out)
    summary = generate_synthcxr_vqa(source, out, seed=args.seed)
    if args.reports:
        return {NAME: summary, REPORTS_NAME: generate_synthcxr_reports(source, out.parent / REPORTS_NAME)}
    return summary
