"""PNG figures for ``pfmvg agree``: a Spearman correlation heatmap and a scatter grid (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pfmvg_plugin.agreement.load import Variable
from pfmvg_plugin.agreement.stats import is_likert, spearman

#: At most this many pairs are drawn in the scatter grid (pairs with a rater first).
MAX_SCATTER = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def spearman_matrix(variables: Sequence[Variable]) -> np.ndarray:
    """Pairwise Spearman rho over common ids (NaN where fewer than 3 ids or undefined)."""
    k = len(variables)
    m = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            a, b = variables[i].present, variables[j].present
            ids = sorted(set(a) & set(b))
            rho = spearman(np.array([a[t] for t in ids]), np.array([b[t] for t in ids]))[0] if len(ids) >= 3 \
                else np.nan
            m[i, j] = m[j, i] = rho
    return m


def correlation_heatmap(variables: Sequence[Variable], path: Path) -> Path:
    """Annotated heatmap of :func:`spearman_matrix`."""
    plt = _pyplot()
    m = spearman_matrix(variables)
    names = [v.name for v in variables]
    size = max(4.0, 0.7 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, "-" if not np.isfinite(m[i, j]) else f"{m[i, j]:.2f}", ha="center", va="center",
                    fontsize=8, color="white" if np.isfinite(m[i, j]) and abs(m[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Spearman rho")
    ax.set_title("Agreement between raters and metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_grid(pairs: Sequence[dict], variables: Sequence[Variable], path: Path, seed: int = 0) -> Path:
    """Scatter plots of up to :data:`MAX_SCATTER` pairs; 1-5 ratings are jittered so ties stay visible."""
    plt = _pyplot()
    by_name = {v.name: v for v in variables}
    chosen = sorted(pairs, key=lambda p: p["kinds"] == "metric-metric")[:MAX_SCATTER]
    cols = min(4, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, pair in zip(axes.flat, chosen):
        a, b = by_name[pair["x"]].present, by_name[pair["y"]].present
        ids = sorted(set(a) & set(b))
        x = np.array([a[i] for i in ids], dtype=float)
        y = np.array([b[i] for i in ids], dtype=float)
        if is_likert(x):
            x = x + rng.uniform(-0.15, 0.15, x.size)
        if is_likert(y):
            y = y + rng.uniform(-0.15, 0.15, y.size)
        ax.scatter(x, y, s=10, alpha=0.6)
        rho = pair.get("spearman")
        ax.set_title(f"n={pair['n']}, rho={'-' if rho is None else f'{rho:.2f}'}", fontsize=9)
        ax.set_xlabel(pair["x"], fontsize=8)
        ax.set_ylabel(pair["y"], fontsize=8)
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
