"""Report charts with matplotlib (the ``[eval]`` extra), drawn on Agg figures without touching pyplot's state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

PARSED_COLOR = "#1f77b4"
FAILED_COLOR = "#9e9e9e"
ACC_COLOR = "#2e7d32"
MIOU_COLOR = "#1565c0"


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("report charts need matplotlib: pip install 'pfmvg_plugin[eval]'") from e
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def iou_histogram(ious: Sequence[float], parsed: Sequence[bool], thresholds: Sequence[float], path: Path,
                  title: str) -> Path:
    """Histogram of per-sample IoU (20 bins on [0, 1]); parse failures (IoU 0) stacked in grey; thresholds dashed."""
    ious = np.asarray(ious, dtype=float)
    parsed = np.asarray(parsed, dtype=bool)
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    ax.hist([ious[parsed], ious[~parsed]], bins=bins, stacked=True, color=[PARSED_COLOR, FAILED_COLOR],
            label=[f"parsed (n={int(parsed.sum())})", f"parse failure / generation error (n={int((~parsed).sum())})"],
            edgecolor="white", linewidth=0.5)
    for t in thresholds:
        ax.axvline(t, color="black", linestyle="--", linewidth=0.8)
        share = float(np.mean(ious >= t)) if ious.size else 0.0
        ax.text(t, 1.0, f" Acc@{t:g}={share:.2f}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("IoU with ground truth")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.88))
    fig.savefig(path)
    return path


def category_bars(per_category: dict, path: Path, title: str, overall: dict | None = None) -> Path:
    """Horizontal bars of Acc@0.5 and mIoU per category (labels carry n), biggest category on top."""
    names = sorted(per_category, key=lambda c: (-per_category[c]["n"], c))
    labels = [f"{c} (n={per_category[c]['n']})" for c in names]
    y = np.arange(len(names))
    fig = _figure(8.0, 1.0 + 0.32 * max(3, len(names)))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, name, color in ((axes[0], "acc@0.5", "Acc@0.5", ACC_COLOR), (axes[1], "miou", "mIoU", MIOU_COLOR)):
        values = [per_category[c].get(key) or 0.0 for c in names]
        ax.barh(y, values, color=color, height=0.7)
        for yi, v in zip(y, values):
            if v > 0.8:  # no room right of the bar: write inside it
                ax.text(v - 0.01, yi, f"{v:.2f}", va="center", ha="right", fontsize=8, color="white")
            else:
                ax.text(v + 0.01, yi, f"{v:.2f}", va="center", fontsize=8)
        label = name
        if overall and overall.get(key) is not None:
            ax.axvline(overall[key], color="black", linestyle="--", linewidth=0.8)
            label += f"  (dashed: all samples, {overall[key]:.2f})"
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel(label)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    return path
