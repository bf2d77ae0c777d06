"""A record of what a converter skipped and why: nothing is dropped silently.

Converters that look for image files report each image through :meth:`SkipLog.image_found` or
:meth:`SkipLog.image_missing` (or :meth:`SkipLog.view_dropped` for one view of a multi-view record). A row whose
image is missing is skipped, never kept with a guessed size: at evaluation it could only count as a wrong answer.
``pfmvg data prepare`` then refuses the result when too many images are missing (:meth:`SkipLog.missing_images_error`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_MISSING = "image missing"  # the reason kind of a row skipped because its image file is absent
VIEW_DROPPED = "view dropped"  # the warning kind of a missing view of a record that keeps its other views
DEFAULT_MAX_MISSING_IMAGES_FRACTION = 0.05


@dataclass
class SkipLog:
    """Collects skipped rows (file, 1-based line, reason), non-fatal warnings and image checks for
    ``prepare_report.json``."""

    skipped: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    found_images: set[str] = field(default_factory=set)
    missing_images: dict[str, str | None] = field(default_factory=dict)  # image -> root it was looked for under

    def skip(self, file: str | Path, line: int | None, reason: str, **extra) -> None:
        self.skipped.append({"file": str(file), "line": line, "reason": reason, **extra})

    def warn(self, file: str | Path, line: int | None, message: str, **extra) -> None:
        self.warnings.append({"file": str(file), "line": line, "message": message, **extra})

    # --- image checks -----------------------------------------------------------------------------------------------

    def image_found(self, image: str) -> None:
        """Count ``image`` (its path as the record addresses it) as present on disk."""
        self.found_images.add(str(image))

    def image_missing(self, file: str | Path, line: int | None, image: str | Sequence[str],
                      root: str | Path | None = None, looked_for: str = "", **extra) -> None:
        """Skip a row of ``file`` whose image (or every one of its views) is not on disk under ``root``.

        The entry holds ``image`` (the path, or the first view with ``images`` listing all) and the reason
        ``image missing: ...``; ``looked_for`` adds how the image was searched for.
        """
        views = [str(image)] if isinstance(image, (str, Path)) else [str(v) for v in image]
        under = f" under {root}" if root is not None else ""
        how = f" ({looked_for})" if looked_for else ""
        if len(views) == 1:
            reason = f"{IMAGE_MISSING}: {views[0]} not found{under}{how}"
            entry = {"image": views[0]}
        else:
            reason = f"{IMAGE_MISSING}: none of its {len(views)} views was found{under}{how}: {', '.join(views)}"
            entry = {"image": views[0], "images": views}
        for view in views:
            self.missing_images.setdefault(view, str(root) if root is not None else None)
        self.skip(file, line, reason, **entry, **extra)

    def view_dropped(self, file: str | Path, line: int | None, image: str, n_kept: int,
                     root: str | Path | None = None, **extra) -> None:
        """Warn that one view of a multi-view record is missing and was dropped (the record keeps ``n_kept``)."""
        under = f" under {root}" if root is not None else ""
        self.missing_images.setdefault(str(image), str(root) if root is not None else None)
        self.warn(file, line, f"{VIEW_DROPPED}: {image} not found{under}; the record keeps its other {n_kept} "
                              f"view{'s' if n_kept != 1 else ''}", image=str(image), **extra)

    @property
    def n_images_checked(self) -> int:
        """Distinct images looked for on disk (found or missing)."""
        return len(self.found_images | set(self.missing_images))

    @property
    def n_images_missing(self) -> int:
        return len(self.missing_images)

    def missing_examples(self, n: int = 2) -> list[str]:
        """The first ``n`` missing images, as paths under the root they were looked for under."""
        return [str(Path(root) / image) if root else image for image, root in list(self.missing_images.items())[:n]]

    def missing_images_error(self, max_fraction: float = DEFAULT_MAX_MISSING_IMAGES_FRACTION,
                             allow: bool = False) -> str | None:
        """Why the missing images make the conversion unusable, or None.

        More than ``max_fraction`` of the checked images missing is an error unless ``allow`` (the rows are
        skipped either way).
        """
        n_missing, n_checked = self.n_images_missing, self.n_images_checked
        if allow or not n_missing or n_missing <= max_fraction * n_checked:
            return None
        return (f"{n_missing} of {n_checked} images ({100 * n_missing / n_checked:.1f}%) are missing, more than "
                f"--max-missing-images-fraction {max_fraction:g} allows; e.g. {', '.join(self.missing_examples())}. "
                "Fix --images (the folder holding the release's images; finish the download), or pass "
                "--allow-missing-images to skip the records whose image is missing.")

    # --- summaries --------------------------------------------------------------------------------------------------

    @staticmethod
    def _kind(text: str) -> str:
        return text.split(":", 1)[0]

    def by_reason(self) -> dict[str, int]:
        """Counts of skipped rows per reason kind (the part of the reason before the first colon)."""
        return dict(Counter(self._kind(s["reason"]) for s in self.skipped).most_common())

    def warnings_by_kind(self) -> dict[str, int]:
        """Counts of warnings per kind (the part of the message before the first colon)."""
        return dict(Counter(self._kind(w["message"]) for w in self.warnings).most_common())

    def to_dict(self) -> dict:
        return {
            "n_skipped": len(self.skipped),
            "skipped_by_reason": self.by_reason(),
            "n_warnings": len(self.warnings),
            "warnings_by_kind": self.warnings_by_kind(),
            "n_images_checked": self.n_images_checked,
            "n_images_missing": self.n_images_missing,
            "missing_images": list(self.missing_images),
            "skipped": self.skipped,
            "warnings": self.warnings,
        }
