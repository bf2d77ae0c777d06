"""A record of what a converter skipped and why: nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SkipLog:
    """Collects skipped rows (file, 1-based line, reason) and non-fatal warnings for ``prepare_report.json``."""

    skipped: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    def skip(self, file: str | Path, line: int | None, reason: str, **extra) -> None:
        self.skipped.append({"file": str(file), "line": line, "reason": reason, **extra})

    def warn(self, file: str | Path, line: int | None, message: str, **extra) -> None:
        self.warnings.append({"file": str(file), "line": line, "message": message, **extra})

    @staticmethod
    def _kind(text: str) -> str:
        return text.split(":", 1)[0]

    def by_reason(self) -> dict[str, int]:
        """Counts of skipped rows per reason kind (the part of the reason before the first colon)."""
        return dict(Counter(self._kind(s["reason"]) for s in self.skipped).most_common())

    def to_dict(self) -> dict:
        return {
            "n_skipped": len(self.skipped),
            "skipped_by_reason": self.by_reason(),
            "n_warnings": len(self.warnings),
            "warnings_by_kind": dict(Counter(self._kind(w["message"]) for w in self.warnings).most_common()),
            "skipped": self.skipped,
            "warnings": self.warnings,
        }
