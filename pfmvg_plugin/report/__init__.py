"""``pfmvg report``: an HTML page with numbers, charts and box overlays from lmms-eval ``--log_samples`` output.

Each task gets the page of its kind: grounding (numbers from :func:`pfmvg_plugin.metrics.aggregate`, IoU charts, box
overlays), VQA and report generation (:mod:`.text`: metric tables, per-question-type accuracy, worst and best
examples with image thumbnails). Charts need matplotlib (the ``[eval]`` extra), images only Pillow. The names below
are imported on first use, so :mod:`.samples` (stdlib only) can be imported alone.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "TaskReport": "build", "build_report": "build", "report_task": "build",
    "ReadStats": "samples", "find_sample_files": "samples", "iter_grounding_samples": "samples",
    "results_file_for": "samples",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
