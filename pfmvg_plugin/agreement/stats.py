"""Agreement statistics between two raters / metrics, with seeded percentile-bootstrap CIs.

Correlations come from scipy (``spearmanr``, ``kendalltau`` = tau-b, ``pearsonr``), the quadratic-weighted Cohen's
kappa from scikit-learn (``cohen_kappa_score(weights="quadratic")`` with labels 1-5; with quadratic weights the
label set does not change the value, the weights' normalisation cancels) and Krippendorff's alpha from the
``krippendorff`` package (ordinal metric, value domain 1-5, missing values allowed). All three are imported lazily
(the ``[agree]`` extra).

Bootstrap: units (sample ids) are resampled with replacement ``n_bootstrap`` times from a seeded
``numpy.random.default_rng``; the CI is the percentile interval of the finite replicate values. Replicates of
Pearson, Spearman (Pearson of average ranks), Kendall tau-b (for n <= :data:`VECTOR_KENDALL_MAX_N`; the cosine of
the pairwise sign matrices, equal to scipy's ``(P - Q) / sqrt((P + Q + T)(P + Q + U))``) and quadratic kappa (its
closed form ``1 - N * sum((a - b)^2) / sum_s sum_t (a_s - b_t)^2``, equal to scikit-learn's for any label set) are
computed vectorised -- the tests check each against the library; alpha and large-n Kendall call the library per
replicate. A replicate can be undefined (a constant resample): it is left out, and a CI needs at least half of the
replicates to be finite, else it is None.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

SCALE = (1, 2, 3, 4, 5)
#: Below this many paired units no statistic is computed.
MIN_N = 3
#: Kendall replicates are vectorised (O(n^2) memory per replicate) up to this many units, else scipy is called.
VECTOR_KENDALL_MAX_N = 200
_CHUNK_ELEMENTS = 2_000_000

CORRELATIONS = ("spearman", "kendall", "pearson")
ORDINAL = ("kappa_quadratic", "alpha_ordinal")


def is_likert(values: Sequence[float] | np.ndarray) -> bool:
    """True when every finite value is an integer on the 1-5 scale (and there is at least one)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size) and bool(np.all(np.isin(v, SCALE)))


def _quiet(fn: Callable[[], float]) -> float:
    """``fn()`` with library warnings (constant input, zero division) silenced and errors turned into NaN."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            value = float(fn())
        except (ValueError, ZeroDivisionError, FloatingPointError):
            return float("nan")
    return value


# ---- point estimates ----------------------------------------------------------------------------------------------
def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall's tau-b (ties corrected) and its p-value."""
    from scipy.stats import kendalltau

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = kendalltau(x, y, variant="b")
    return float(r.statistic), float(r.pvalue)


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import pearsonr

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            r = pearsonr(x, y)
        except ValueError:
            return float("nan"), float("nan")
    return float(r.statistic), float(r.pvalue)


def quadratic_kappa(a: np.ndarray, b: np.ndarray, labels: Sequence[int] = SCALE) -> float:
    """Cohen's kappa with quadratic weights over ``labels`` (scikit-learn)."""
    from sklearn.metrics import cohen_kappa_score

    return _quiet(lambda: cohen_kappa_score(np.asarray(a, dtype=int), np.asarray(b, dtype=int),
                                            labels=list(labels), weights="quadratic"))


def krippendorff_alpha(data: np.ndarray, level: str = "ordinal", value_domain: Sequence[float] | None = SCALE) -> float:
    """Krippendorff's alpha of a raters x units matrix (NaN = missing) at ``level`` (``krippendorff`` package)."""
    import krippendorff

    data = np.asarray(data, dtype=float)
    domain = None if value_domain is None else list(value_domain)
    return _quiet(lambda: krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=domain))


def _alpha_or_nan(data: np.ndarray) -> float:
    """Ordinal alpha on the 1-5 scale without the warning guard (the caller holds one); NaN when undefined."""
    import krippendorff

    try:
        return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=SCALE))
    except (ValueError, ZeroDivisionError):
        return float("nan")


# ---- bootstrap ----------------------------------------------------------------------------------------------------
def bootstrap_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n_bootstrap, n)`` resampled unit indices from a seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        xc = x - x.mean(axis=1, keepdims=True)
        yc = y - y.mean(axis=1, keepdims=True)
        return (xc * yc).sum(axis=1) / np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return _rowwise_pearson(rankdata(x, axis=1), rankdata(y, axis=1))


def _rowwise_kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair: ``sum(sx * sy) / sqrt(sum(sx^2) * sum(sy^2))`` over the sign matrices."""
    rows, n = x.shape
    if n > VECTOR_KENDALL_MAX_N:
        return np.array([kendall(a, b)[0] for a, b in zip(x, y)])
    out = np.empty(rows)
    step = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, rows, step):
        xs, ys = x[start:start + step], y[start:start + step]
        sx = np.sign(xs[:, :, None] - xs[:, None, :]).astype(np.int8)
        sy = np.sign(ys[:, :, None] - ys[:, None, :]).astype(np.int8)
        num = (sx * sy).sum(axis=(1, 2), dtype=np.int64)
        den = np.sqrt((sx * sx).sum(axis=(1, 2), dtype=np.int64) * (sy * sy).sum(axis=(1, 2), dtype=np.int64))
        with np.errstate(all="ignore"):
            out[start:start + step] = num / den
    return out


def _rowwise_quadratic_kappa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quadratic-weighted kappa of each row pair in closed form (the weights' normalisation cancels)."""
    n = a.shape[1]
    observed = ((a - b) ** 2).sum(axis=1)
    expected = ((a * a).sum(axis=1) * n + (b * b).sum(axis=1) * n - 2 * a.sum(axis=1) * b.sum(axis=1)) / n
    with np.errstate(all="ignore"):
        return 1 - observed / expected


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of the finite replicates; None when fewer than half of them are finite."""
    reps = np.asarray(replicates, dtype=float)
    finite = reps[np.isfinite(reps)]
    if reps.size == 0 or finite.size < reps.size / 2:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]


def pair_statistics(x: np.ndarray, y: np.ndarray, ordinal: bool, n_bootstrap: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """Every statistic of one pair of aligned arrays (no missing values) with its CI.

    ``ordinal``: both are 1-5 Likert ratings, so kappa and alpha are computed too. Returns
    ``{"n", "<stat>": value, "<stat>_ci": [lo, hi] | None, "<stat>_p": p}`` for the correlations.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out: dict = {"n": int(x.size)}
    names = CORRELATIONS + (ORDINAL if ordinal else ())
    if x.size < MIN_N:
        out.update({name: None for name in names})
        out.update({f"{name}_ci": None for name in names})
        return out
    for name, fn in (("spearman", spearman), ("kendall", kendall), ("pearson", pearson)):
        value, p = fn(x, y)
        out[name] = _finite(value)
        out[f"{name}_p"] = _finite(p)
    if ordinal:
        out["kappa_quadratic"] = _finite(quadratic_kappa(x, y))
        out["alpha_ordinal"] = _finite(krippendorff_alpha(np.vstack([x, y])))
    if n_bootstrap <= 0:
        out.update({f"{name}_ci": None for name in names})
        return out
    idx = bootstrap_indices(x.size, n_bootstrap, seed)
    bx, by = x[idx], y[idx]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        reps = {"pearson": _rowwise_pearson(bx, by), "spearman": _rowwise_spearman(bx, by),
                "kendall": _rowwise_kendall(bx, by)}
        if ordinal:
            reps["kappa_quadratic"] = _rowwise_quadratic_kappa(bx, by)
            reps["alpha_ordinal"] = np.array([_alpha_or_nan(np.vstack([a, b])) for a, b in zip(bx, by)])
    for name in names:
        out[f"{name}_ci"] = percentile_ci(reps[name], level)
    return out


def overall_alpha(data: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Ordinal Krippendorff's alpha over all raters (rows) and units (columns, NaN = missing), with its CI."""
    data = np.asarray(data, dtype=float)
    pairable = (np.isfinite(data).sum(axis=0) >= 2)
    data = data[:, pairable]
    out: dict = {"raters": int(data.shape[0]), "units": int(data.shape[1]), "alpha_ordinal": None,
                 "alpha_ordinal_ci": None}
    if data.shape[1] < MIN_N:
        return out
    out["alpha_ordinal"] = _finite(krippendorff_alpha(data))
    if n_bootstrap > 0:
        idx = bootstrap_indices(data.shape[1], n_bootstrap, seed)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            reps = np.array([_alpha_or_nan(data[:, i]) for i in idx])
        out["alpha_ordinal_ci"] = percentile_ci(reps, level)
    return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
