"""Dataset directories: one JSONL per split, ``dataset.json`` (image root, counts) and ``prepare_report.json``.

Layout of a prepared dataset ``DIR`` (``--out`` or ``$PFMVG_DATA_ROOT/<name>``)::

    DIR/dataset.json          {"name", "task", "image_root", "splits": {split: n}, "schema_version", ...}
    DIR/{train,val,test}.jsonl canonical records (only splits that have records)
    DIR/prepare_report.json   every skipped row with file, line and reason; warnings; images looked for and missing
                              (the only file written when ``pfmvg data prepare`` refuses the conversion)
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from pfmvg_plugin import __version__
from pfmvg_plugin.data.images import safe_join
from pfmvg_plugin.data.schema import SPLITS, read_records, write_records
from pfmvg_plugin.data.skips import SkipLog

SCHEMA_VERSION = 1
DATA_ROOT_ENV = "PFMVG_DATA_ROOT"
REPORT_NAME = "prepare_report.json"


#: The commands that create the generated datasets (the released ones come from ``pfmvg data prepare <name>``).
GENERATE_COMMANDS = {
    "synthcxr": "pfmvg data synth",
    "synthcxr_vqa": "pfmvg data synth-vqa",
    "synthcxr_reports": "pfmvg data synth-vqa --reports",
    "synthshapes": "pfmvg data shapes",
}


def prepare_command(name: str) -> str:
    """The command that creates dataset ``name`` under the data root (for messages about a missing dataset)."""
    if name in GENERATE_COMMANDS:
        return f"{GENERATE_COMMANDS[name]} --out {data_root() / name}"
    return f"pfmvg data prepare {name} ... (see `pfmvg data prepare {name} --help`)"


def data_root() -> Path:
    """Where prepared datasets live: ``$PFMVG_DATA_ROOT`` or ``~/.cache/pfmvg``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pfmvg"


def dataset_dir(name: str, out: str | Path | None = None) -> Path:
    return Path(out) if out else data_root() / name


def write_dataset(
    out_dir: str | Path,
    name: str,
    records: Iterable[dict],
    image_root: str | Path,
    skips: SkipLog | None = None,
    inputs: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Write records split by split plus ``dataset.json`` and ``prepare_report.json``; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec in records:
        by_split[rec["split"]].append(rec)
    counts = {}
    for split, recs in by_split.items():
        path = out_dir / f"{split}.jsonl"
        if recs:
            counts[split] = write_records(path, recs)
        elif path.exists():
            path.unlink()  # a stale split from an earlier run must not survive
    tasks = Counter(r["task"] for recs in by_split.values() for r in recs)
    image_root = Path(image_root)
    meta = {
        "name": name,
        "task": tasks.most_common(1)[0][0] if tasks else None,
        "image_root": "." if image_root.resolve() == out_dir.resolve() else str(image_root.resolve()),
        "splits": counts,
        "categories": dict(Counter(r.get("category") for recs in by_split.values() for r in recs
                                   if r.get("category")).most_common()),
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pfmvg_plugin": __version__,
        **(extra or {}),
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    report = write_prepare_report(out_dir, name, skips, inputs=inputs, written=counts)
    return {"dir": str(out_dir), **meta, "n_skipped": report["n_skipped"], "n_warnings": report["n_warnings"]}


def write_prepare_report(out_dir: str | Path, name: str, skips: SkipLog | None = None, *, inputs: dict | None = None,
                         written: dict[str, int] | None = None, error: str | None = None) -> dict:
    """Write ``out_dir/prepare_report.json`` (records written per split, every skip and warning); returns it.

    ``error`` is set when the conversion was refused (nothing else is written then).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"dataset": name, "inputs": inputs or {}, "written": written or {},
              **({"error": error} if error else {}), **(skips or SkipLog()).to_dict()}
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


class PreparedDataset:
    """A dataset directory written by :func:`write_dataset`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a prepared dataset (no dataset.json); "
                                    "create it with `pfmvg data prepare …` or `pfmvg data synth`")
        self.meta = json.loads(meta_path.read_text())

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def image_root(self) -> Path:
        root = Path(self.meta.get("image_root", "."))
        return root if root.is_absolute() else (self.path / root)

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.jsonl"

    def records(self, split: str) -> list[dict]:
        path = self.split_path(split)
        if not path.is_file():
            have = ", ".join(sorted(self.meta.get("splits", {}))) or "none"
            raise FileNotFoundError(f"{self.path} has no {split!r} split (splits: {have})")
        return read_records(path)

    def image_path(self, record: dict) -> Path:
        """Absolute path of a record's image, guaranteed inside the image root."""
        return safe_join(self.image_root, record["image"])
