"""``pfmvg report``: an HTML page with numbers, charts and box overlays from lmms-eval ``--log_samples`` output.

Numbers come from :func:`pfmvg_plugin.metrics.aggregate` over the per-sample records our lmms-eval tasks log; charts
need matplotlib (the ``[eval]`` extra), overlays only Pillow.
"""

from pfmvg_plugin.report.build import TaskReport, build_report, report_task
from pfmvg_plugin.report.samples import ReadStats, find_sample_files, iter_grounding_samples, results_file_for

__all__ = [
    "ReadStats",
    "TaskReport",
    "build_report",
    "find_sample_files",
    "iter_grounding_samples",
    "report_task",
    "results_file_for",
]
