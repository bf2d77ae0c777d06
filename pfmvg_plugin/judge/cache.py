"""On-disk cache of judge ratings, so a rerun (or a resumed run) costs no requests.

The key is the SHA-256 of ``(rubric name, rubric version, rubric text hash, model, prediction, reference, question)``;
each entry is one small JSON file ``<dir>/<key[:2]>/<key>.json`` written atomically (temp file + rename), so
concurrent workers and concurrent runs can share a directory. Entries hold the rating, the reason and the raw reply --
never the API key or any request header. Only parsed ratings are stored: unrated samples are asked again on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from pfmvg_plugin.judge.rubrics import Rubric

CACHE_ENV = "PFMVG_JUDGE_CACHE"


def default_cache_dir() -> Path:
    """``$PFMVG_JUDGE_CACHE``, else ``$XDG_CACHE_HOME/pfmvg/judge`` (``~/.cache/pfmvg/judge``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pfmvg" / "judge"


def cache_key(rubric: Rubric, model: str, prediction: str, reference: str, question: str | None = None) -> str:
    """The cache key of one judgement."""
    payload = [rubric.name, rubric.version, rubric.sha256, model, prediction, reference, question]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


class RatingCache:
    """A directory of cached judgements (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached entry for ``key``, or None (a missing or unreadable entry is a miss)."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("rating"), int) else None

    def put(self, key: str, entry: dict) -> None:
        """Store ``entry`` under ``key`` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
