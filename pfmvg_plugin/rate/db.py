"""The ratings database: SQLite through the standard library, one row per (rater, item), committed as given.

WAL journal with ``synchronous=FULL``: a rating is on disk when :meth:`RatingsDB.save` returns, so killing the server
loses nothing that a reader was told is saved. Saving the same item again replaces that rater's row (an upsert on the
``UNIQUE(rater, item)`` constraint): a rater's answers never touch another rater's, and a rating is never duplicated.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    rater TEXT NOT NULL,
    item TEXT NOT NULL,          -- task|model|id
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    rating INTEGER CHECK (rating BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    box TEXT,                    -- JSON [x1, y1, x2, y2] in pixels of the original image, or NULL
    updated_at REAL NOT NULL,
    UNIQUE (rater, item)
);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY,
    rater TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Rating:
    rater: str
    item: str
    task: str
    model: str
    sample_id: str
    rating: int | None
    comment: str
    box: list[float] | None
    updated_at: float


class RatingsDB:
    """A connection to the ratings file, safe to use from several threads (one lock around each statement)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def save(self, rater: str, item: str, task: str, model: str, sample_id: str, rating: int | None,
             comment: str = "", box: list[float] | None = None) -> None:
        """Insert or replace ``rater``'s answer for ``item``; committed before it returns."""
        if rating is not None and rating not in (1, 2, 3, 4, 5):
            raise ValueError(f"rating {rating!r} is not an integer from 1 to 5")
        with self._lock:
            self._conn.execute(
                "INSERT INTO ratings (rater, item, task, model, sample_id, rating, comment, box, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rater, item) DO UPDATE SET rating=excluded.rating, "
                "comment=excluded.comment, box=excluded.box, updated_at=excluded.updated_at",
                (rater, item, task, model, sample_id, rating, comment, None if box is None else json.dumps(box),
                 time.time()))

    def _rows(self, sql: str, args: tuple = ()) -> list[Rating]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [Rating(r[0], r[1], r[2], r[3], r[4], r[5], r[6], None if r[7] is None else json.loads(r[7]), r[8])
                for r in rows]

    _COLUMNS = "rater, item, task, model, sample_id, rating, comment, box, updated_at"

    def of_rater(self, rater: str) -> dict[str, Rating]:
        """``item -> Rating`` of one rater."""
        return {r.item: r for r in self._rows(f"SELECT {self._COLUMNS} FROM ratings WHERE rater = ?", (rater,))}

    def get(self, rater: str, item: str) -> Rating | None:
        rows = self._rows(f"SELECT {self._COLUMNS} FROM ratings WHERE rater = ? AND item = ?", (rater, item))
        return rows[0] if rows else None

    def all(self) -> list[Rating]:
        """Every row, ordered by rater, task, model, sample id."""
        return self._rows(f"SELECT {self._COLUMNS} FROM ratings ORDER BY rater, task, model, sample_id")

    def count(self, rater: str | None = None) -> int:
        """Rows with a rating (of one rater, or of all)."""
        sql, args = "SELECT COUNT(*) FROM ratings WHERE rating IS NOT NULL", ()
        if rater is not None:
            sql, args = sql + " AND rater = ?", (rater,)
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def new_session(self, rater: str) -> str:
        """A fresh login token for ``rater`` (kept across server restarts)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._conn.execute("INSERT INTO sessions (token, rater, created_at) VALUES (?, ?, ?)",
                               (token, rater, time.time()))
        return token

    def session_rater(self, token: str | None) -> str | None:
        if not token:
            return None
        with self._lock:
            row = self._conn.execute("SELECT rater FROM sessions WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None
