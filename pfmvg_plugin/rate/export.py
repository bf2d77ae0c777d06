"""``pfmvg rate export``: the ratings database as a long CSV, one row per (rater, item), that ``pfmvg agree --ratings``
reads as it is (``id``, ``rater``, ``rating``; ``model`` and ``task`` keep outputs of several models apart)."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from pfmvg_plugin.rate.db import RatingsDB

COLUMNS = ("id", "rater", "model", "task", "rating", "comment", "box_x1", "box_y1", "box_x2", "box_y2", "rated_at")


def export_csv(db_path: str | Path, out: str | Path, model: str | None = None, task: str | None = None) -> dict:
    """Write the ratings (optionally of one model / one task) to ``out``; returns counts."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path} does not exist (start `pfmvg rate serve --db {db_path}` first)")
    db = RatingsDB(db_path)
    try:
        rows = [r for r in db.all() if (model is None or r.model == model) and (task is None or r.task == task)]
    finally:
        db.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in rows:
            box = r.box if r.box else ["", "", "", ""]
            when = datetime.fromtimestamp(r.updated_at, tz=timezone.utc).isoformat(timespec="seconds")
            writer.writerow([r.sample_id, r.rater, r.model, r.task, "" if r.rating is None else r.rating, r.comment,
                             *box, when])
    return {"out": str(out), "rows": len(rows), "raters": sorted({r.rater for r in rows}),
            "models": sorted({r.model for r in rows}), "tasks": sorted({r.task for r in rows})}
