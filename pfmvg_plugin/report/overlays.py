"""Images of report samples: resolve them through their prepared dataset, and draw best / worst cases per category."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pfmvg_plugin.data.images import load_image
from pfmvg_plugin.data.store import PreparedDataset
from pfmvg_plugin.viz import Panel, contact_sheet

NO_CATEGORY = "(no category)"


@dataclass
class Missing:
    """A sample whose image could not be found (``reason`` says why)."""

    id: str
    image: str
    reason: str
    dataset_dir: str


@dataclass
class ImageResolver:
    """Resolve ``record["dataset_dir"]`` + ``record["image"]`` to a file; problems are collected, never raised."""

    _datasets: dict[str, PreparedDataset | str] = field(default_factory=dict)  # dir -> dataset, or why it failed
    missing: list[Missing] = field(default_factory=list)

    def _dataset(self, directory: str) -> PreparedDataset | str:
        if directory not in self._datasets:
            try:
                self._datasets[directory] = PreparedDataset(directory)
            except FileNotFoundError:
                self._datasets[directory] = "dataset dir missing (no dataset.json)"
            except (OSError, ValueError) as e:
                self._datasets[directory] = f"dataset dir unreadable ({e})"
        return self._datasets[directory]

    def resolve(self, record: dict) -> Path | None:
        """The image file of ``record``, or None (then the sample is added to :attr:`missing`)."""
        directory, image = record.get("dataset_dir"), record.get("image")
        reason = None
        path = None
        if not directory or not isinstance(directory, str):
            reason = "record has no dataset_dir"
        elif not image or not isinstance(image, str):
            reason = "record has no image"
        else:
            ds = self._dataset(directory)
            if isinstance(ds, str):
                reason = ds
            else:
                try:
                    path = ds.image_path({"image": image})
                except ValueError as e:  # UnsafePathError
                    reason = str(e)
                else:
                    if not path.is_file():
                        reason, path = "image file missing", None
        if reason:
            self.missing.append(Missing(str(record.get("id", record.get("_doc_id"))), str(image), reason,
                                        str(directory)))
        return path


def _boxes(raw, sx: float, sy: float) -> list[tuple[float, float, float, float]]:
    """Finite 4-number boxes, corners ordered and scaled; anything else is dropped (drawing must not fail)."""
    out = []
    for b in raw or ():
        try:
            x1, y1, x2, y2 = (float(v) for v in b)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            out.append((min(x1, x2) * sx, min(y1, y2) * sy, max(x1, x2) * sx, max(y1, y2) * sy))
    return out


def _one_line(text: object, limit: int = 200) -> str:
    s = " ".join(str(text).split()) if text is not None else ""
    return s[:limit] + ("…" if len(s) > limit else "")


def panel_for(record: dict, path: Path, label: str, tile: int) -> Panel:
    """A :class:`Panel` of one sample: the image scaled to fit ``tile`` (so outlines stay crisp), boxes to match.

    Boxes are in pixels of the record's ``width`` x ``height``; an image file of another size is scaled to it.
    """
    image = load_image(path)
    width, height = record.get("width") or image.width, record.get("height") or image.height
    fit = tile / max(image.size)
    image = image.resize((max(1, round(image.width * fit)), max(1, round(image.height * fit))), Image.LANCZOS)
    sx, sy = image.width / float(width), image.height / float(height)
    status = str(record.get("status", ""))
    lines = [f"{label} · IoU {float(record['iou']):.2f} · {status}"]
    if not record.get("parsed", status == "ok"):
        lines.append(f"answer: {_one_line(record.get('answer'))!s}" if record.get("answer") else "answer: (empty)")
    else:
        lines.append(f"id {record.get('id', record.get('_doc_id'))}")
    return Panel(image, _boxes(record.get("gt_boxes"), sx, sy), _boxes(record.get("pred_boxes"), sx, sy),
                 caption=_one_line(record.get("phrase", "")), lines=lines)


def _best_key(r: dict) -> tuple:
    return -float(r["iou"]), str(r.get("id"))


def _worst_key(r: dict) -> tuple:
    return float(r["iou"]), bool(r.get("parsed")), str(r.get("id"))  # failures first among IoU ties


def category_sheet(records: Sequence[dict], paths: Sequence[Path | None], k: int, title: str, tile: int = 256,
                   unreadable: list[tuple[dict, str]] | None = None) -> Image.Image | None:
    """Top row: the ``k`` best cases (by IoU), bottom row: the ``k`` worst, never the same sample twice.

    Only records with a path are candidates; an image that fails to load is appended to ``unreadable`` as
    ``(record, reason)`` and the next candidate is taken. Returns None when no image could be drawn.
    """
    have = [i for i in range(len(records)) if paths[i] is not None]
    used: set[int] = set()

    def take(key, label: str) -> list[Panel]:
        panels = []
        for i in sorted(have, key=lambda i: key(records[i])):
            if len(panels) == k:
                break
            if i in used:
                continue
            used.add(i)
            try:
                panels.append(panel_for(records[i], paths[i], f"{label} {len(panels) + 1}", tile))
            except (OSError, ValueError, ImportError) as e:
                if unreadable is not None:
                    unreadable.append((records[i], f"image unreadable ({e})"))
        return panels

    best = take(_best_key, "best")
    worst = take(_worst_key, "worst")
    if not best:
        return None
    blank = Panel(Image.new("RGB", (tile, tile), "white"))
    return contact_sheet(best + [blank] * (k - len(best)) + worst, columns=k, tile=tile, title=title)
