"""Helpers shared by the converters: row values, annotation files, image files and record checks.

A row that cannot be used raises :class:`RowError`; its message is the skip reason (``kind: detail``) that the
converter writes to its :class:`~pfmvg_plugin.data.skips.SkipLog`. A file that cannot be used at all raises
:class:`~pfmvg_plugin.data.converters.registry.ConversionError`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from pfmvg_plugin.data.converters.registry import ConversionError
from pfmvg_plugin.data.images import MissingExtraError, UnsafePathError, image_size, index_files, safe_join
from pfmvg_plugin.data.schema import validate_record
from pfmvg_plugin.data.splits import assign_split
from pfmvg_plugin.geometry import xywh_to_xyxy
from pfmvg_plugin.progress import progress

CLIP_TOLERANCE = 1.0  # boxes overshooting the image by at most this many pixels are clipped (with a warning)


class RowError(ValueError):
    """A row that cannot be used; the message is the skip reason (``kind: detail``)."""


# --- values ---------------------------------------------------------------------------------------------------------

def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (empty, not a number, bool, nan/inf)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_number(value: Any, name: str) -> float:
    """A finite number from a CSV/JSON field, or :class:`RowError` (``missing value`` / ``unreadable number``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"missing value: {name}")
    number = _finite(value)
    if number is None:
        raise RowError(f"unreadable number: {name}={value!r}")
    return number


def parse_numbers(fields: Mapping[str, Any], names: Sequence[str]) -> list[float]:
    """The finite numbers ``fields[name]`` for each of ``names``; an empty value counts as unreadable.

    A :class:`RowError` (``unreadable number: a='x', b=''``) lists every unreadable one at once.
    """
    numbers = [_finite(fields[name]) for name in names]
    bad = [f"{name}={fields[name]!r}" for name, n in zip(names, numbers, strict=True) if n is None]
    if bad:
        raise RowError(f"unreadable number: {', '.join(bad)}")
    return numbers  # type: ignore[return-value]  # no None left


def parse_size(value: Any, name: str) -> int:
    """A positive whole pixel count (image width/height)."""
    number = parse_number(value, name)
    if not number.is_integer():
        raise RowError(f"unreadable number: {name}={value!r} is not a whole number of pixels")
    if number <= 0:
        raise RowError(f"non-positive image size: {name}={_show(value)}")
    return int(number)


def parse_box_size(w: Any, h: Any) -> tuple[float, float]:
    """Box width and height, both positive."""
    wv, hv = parse_number(w, "w"), parse_number(h, "h")
    for name, raw, v in (("w", w, wv), ("h", h, hv)):
        if v <= 0:
            raise RowError(f"non-positive box size: {name}={_show(raw)}")
    return wv, hv


def _show(value: Any) -> str:
    return value.strip() if isinstance(value, str) else str(value)


# --- paths and names ------------------------------------------------------------------------------------------------

def safe_relpath(text: Any) -> str:
    """A forward-slash path relative to the image root, or :class:`RowError` for absolute or ``..`` paths."""
    if not isinstance(text, str) or not text.strip():
        raise RowError("missing value: path")
    s = text.strip().replace("\\", "/")
    p = PurePosixPath(s)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", s) or ".." in p.parts or p.as_posix() in ("", "."):
        raise RowError(f"unsafe image path: {text.strip()!r} must be relative and stay inside the image root")
    return p.as_posix()


def is_plain_name(name: str) -> bool:
    """True for a bare file name (no separators, not ``.``/``..``, no leading ``~``)."""
    return name not in (".", "..") and not any(c in name for c in "/\\\x00") and not name.startswith("~")


def image_key(value: str, column: str) -> str:
    """An id that names an image file (``image_id``, ``patientId``): non-empty and a plain file name."""
    if not value:
        raise RowError(f"missing {column}")
    if not is_plain_name(value):
        raise RowError(f"path escapes the image root: {column} {value!r} is not a plain file name")
    return value


# --- boxes ----------------------------------------------------------------------------------------------------------

def fit_box(xywh: Sequence[float], width: int, height: int,
            tolerance: float = CLIP_TOLERANCE) -> tuple[list[float], str | None]:
    """``[x1, y1, x2, y2]`` inside a ``width`` x ``height`` image, and a ``box clipped`` warning if it was clipped.

    A box overshooting the image by at most ``tolerance`` pixels is clipped; beyond that it is a :class:`RowError`.
    """
    box = list(xywh_to_xyxy(*xywh))
    x1, y1, x2, y2 = box
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        raise RowError(f"box outside image: [x1, y1, x2, y2] = {_show_box(box)} exceeds the {width}x{height} image "
                       f"by more than {tolerance:g} px")
    clipped = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise RowError(f"box outside image: {_show_box(box)} has no area inside the {width}x{height} image")
    if clipped == box:
        return clipped, None
    return clipped, f"box clipped: {_show_box(box)} -> {_show_box(clipped)} to fit the {width}x{height} image"


def _show_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


# --- records --------------------------------------------------------------------------------------------------------

def invalid_record(rec: dict) -> str | None:
    """The skip reason (``invalid record: ...``) of a record that breaks the schema; None when it is valid."""
    problems = validate_record(rec)
    return f"invalid record: {'; '.join(problems)}" if problems else None


# --- annotation files -----------------------------------------------------------------------------------------------

@contextmanager
def open_text(path: Path, what: str) -> Iterator[TextIO]:
    """Open a plain UTF-8 text file (BOM allowed) for ``csv``/``json``; errors name the file as ``what``.

    A missing, unreadable or non-UTF-8 file raises ConversionError; a decoding error the caller catches itself
    (to word it differently) wins.
    """
    if not path.exists():
        raise ConversionError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ConversionError(f"{what} {path} is not a file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            yield f
    except OSError as e:
        raise ConversionError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConversionError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


@contextmanager
def open_csv_text(path: Path) -> Iterator[TextIO]:
    """Open a CSV (plain, ``.gz`` or a ``.zip`` with one CSV) as text; unreadable input raises ConversionError."""
    try:
        with ExitStack() as stack:
            suffix = path.suffix.lower()
            if suffix == ".gz":
                f = stack.enter_context(gzip.open(path, "rt", encoding="utf-8-sig", newline=""))
            elif suffix == ".zip":
                zf = stack.enter_context(zipfile.ZipFile(path))
                members = [n for n in zf.namelist() if n.lower().endswith(".csv") and not n.startswith("__MACOSX")]
                if len(members) != 1:
                    raise ConversionError(f"{path}: expected one .csv inside the zip, found {members or 'none'}")
                f = stack.enter_context(io.TextIOWrapper(zf.open(members[0]), encoding="utf-8-sig", newline=""))
            else:
                f = stack.enter_context(path.open(encoding="utf-8-sig", newline=""))
            yield f
    except (OSError, UnicodeDecodeError, EOFError, zipfile.BadZipFile) as e:
        raise ConversionError(f"cannot read {path}: {e}") from None


def iter_csv_rows(
    path: Path, required: Sequence[str], optional: Sequence[str] = (), desc: str = "rows"
) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
    """Yield ``(line, fields, problem)`` for each data row of a CSV (see :func:`open_csv_text`), columns by name.

    Column names match case-insensitively; ``fields`` maps each required/optional column present (named as in
    ``required``/``optional``) to its stripped value. A row with missing or extra fields yields ``None`` and a skip
    reason instead. An unreadable file or a missing required column raises ConversionError.
    """
    with open_csv_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise ConversionError(f"{path}:{reader.line_num}: not a readable CSV ({e})") from None
        if not header:
            raise ConversionError(f"{path} is empty; expected a header with columns {', '.join(required)}")
        names = [h.strip().lower() for h in header]
        missing = [c for c in required if c.lower() not in names]
        if missing:
            raise ConversionError(f"{path} lacks required column(s) {', '.join(missing)} "
                                  f"(header: {','.join(h.strip() for h in header)})")
        index = {c: names.index(c.lower()) for c in (*required, *optional) if c.lower() in names}
        rows = progress(reader, desc=desc, unit="rows")
        while True:
            try:
                row = next(rows, None)
            except csv.Error as e:
                raise ConversionError(f"{path}:{reader.line_num}: not a readable CSV ({e})") from None
            if row is None:
                return
            line = reader.line_num
            if not any(v.strip() for v in row):
                continue
            if len(row) < len(header):
                absent = [c for c, i in index.items() if i >= len(row)]
                if absent:
                    yield line, None, f"missing columns: {', '.join(absent)} (row has {len(row)} of {len(header)})"
                    continue
            elif len(row) > len(header) and any(v.strip() for v in row[len(header):]):
                yield line, None, f"too many fields: {len(row)} for a header of {len(header)}"
                continue
            yield line, {c: row[i].strip() for c, i in index.items() if i < len(row)}, None


# --- image files ----------------------------------------------------------------------------------------------------

def read_image_size(path: Path, shown: str | None = None) -> tuple[int, int]:
    """``(width, height)`` from the image header; a damaged or empty image is an ``unreadable image`` RowError.

    ``shown`` names the image in the reason (default: the file name). A missing optional reader (pydicom) is not a
    row problem: :class:`~pfmvg_plugin.data.images.MissingExtraError` propagates.
    """
    shown = path.name if shown is None else shown
    try:
        w, h = image_size(path)
    except MissingExtraError:
        raise
    except Exception as e:  # Pillow and pydicom raise many kinds (OSError, ValueError, SyntaxError ...) on a bad file
        raise RowError(f"unreadable image: {shown} ({type(e).__name__}: {e})") from None
    if not (int(w) > 0 and int(h) > 0):
        raise RowError(f"unreadable image: {shown} has size {w}x{h}")
    return int(w), int(h)


class ImageFinder:
    """Finds ``<image_id>.<ext>`` anywhere under an image root (one directory walk) and reads each size once.

    ``suffixes`` lists the accepted extensions in order of preference (e.g. DICOM before a PNG/JPG export).
    """

    def __init__(self, root: Path, suffixes: Sequence[str]) -> None:
        self.root = root
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.best: dict[str, tuple[int, str]] = {}
        for name, rel in index_files(root, self.suffixes).items():
            stem, _, ext = name.rpartition(".")
            rank = self.suffixes.index("." + ext.lower())
            if stem not in self.best or rank < self.best[stem][0]:
                self.best[stem] = (rank, rel)
        self.cache: dict[str, tuple[str, int, int] | str | None] = {}

    def __len__(self) -> int:
        return len(self.best)

    def find(self, image_id: str) -> tuple[str, int, int] | str | None:
        """``(relative posix path, width, height)``, a skip reason when unusable, or ``None`` when not found."""
        if image_id not in self.cache:
            self.cache[image_id] = self._find(image_id)
        return self.cache[image_id]

    def _find(self, image_id: str) -> tuple[str, int, int] | str | None:
        if image_id not in self.best:
            return None
        rel = Path(self.best[image_id][1]).as_posix()
        try:
            return (rel, *read_image_size(safe_join(self.root, rel), rel))
        except UnsafePathError as e:
            return f"path escapes the image root: {e}"
        except RowError as e:
            return str(e)


# --- VQA and report releases (JSON lists of questions / reports) ---------------------------------------------------

def read_json(path: Path, what: str) -> Any:
    """The parsed content of a JSON file (``.jsonl``: a list of its lines' objects); bad input is ConversionError."""
    with open_text(path, what) as f:
        if path.suffix.lower() == ".jsonl":
            items = []
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConversionError(f"{path}:{lineno}: not valid JSON Lines ({e.msg} at column {e.colno})"
                                          ) from None
            return items
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                                  f"expected {what}") from None


def text_value(item: Mapping[str, Any], key: str) -> str:
    """``item[key]`` as stripped, non-empty text (a JSON number becomes its text: VQA answers such as ``2``)."""
    value = item.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(int(value)) if float(value).is_integer() else str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"missing value: {key}")
    if not isinstance(value, str):
        raise RowError(f"unreadable {key}: {value!r} is not text")
    return value.strip()


def parse_answer_type(value: Any) -> str:
    """``OPEN``/``CLOSED`` (any case, stray spaces) -> ``open``/``closed``; anything else is a RowError."""
    if isinstance(value, str) and value.strip().lower() in ("open", "closed"):
        return value.strip().lower()
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("missing value: answer_type")
    raise RowError(f"bad answer_type: {value!r} (expected OPEN or CLOSED)")


def vqa_record(*, record_id: str, source: str, split: str, image: str, question: str, answer: str,
               answer_type: str, size: tuple[int, int] | None, meta: dict) -> dict:
    """A VQA record with the schema's keys in canonical order; ``width``/``height`` only when the size is known."""
    rec: dict[str, Any] = {"id": record_id, "task": "vqa", "source": source, "split": split, "image": image}
    if size is not None:
        rec["width"], rec["height"] = size
    rec.update(question=question, answer=answer, answer_type=answer_type, meta=meta)
    return rec


def report_record(*, record_id: str, source: str, split: str, images: Sequence[str], report: str,
                  meta: dict) -> dict:
    """A report record: ``image`` is the first view, ``images`` all views in the release's order."""
    return {"id": record_id, "task": "report", "source": source, "split": split, "image": images[0],
            "images": list(images), "report": report, "meta": meta}


class ImageSizes:
    """Sizes of images addressed by a relative path under ``root``, each read once.

    ``size(rel)`` is ``(width, height)``, or None when the file does not exist; an unsafe path or an unreadable image
    raises :class:`RowError` (every time it is asked).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, tuple[int, int] | str | None] = {}

    def size(self, rel: str) -> tuple[int, int] | None:
        if rel not in self.cache:
            try:
                target = safe_join(self.root, rel)
                self.cache[rel] = read_image_size(target, rel) if target.is_file() else None
            except UnsafePathError as e:
                self.cache[rel] = f"unsafe image path: {e}"
            except RowError as e:
                self.cache[rel] = str(e)
        found = self.cache[rel]
        if isinstance(found, str):
            raise RowError(found)
        return found


def carve_val(key: str, ratios: Sequence[float], seed: int = 0) -> str:
    """``train`` or ``val`` for an item of an official train set, hashed by ``key`` with the TRAIN:VAL ratio."""
    train, val = float(ratios[0]), float(ratios[1])
    if train + val <= 0:
        raise ValueError("split ratios give train and val no share; cannot carve val out of train")
    return "val" if assign_split(key, (train / (train + val), val / (train + val), 0.0), seed) == "val" else "train"
