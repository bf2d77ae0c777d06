"""Agreement between raters (humans, an LLM judge) and per-sample metrics (PeFoMed's evaluation analysis).

:mod:`.stats` (Spearman, Kendall tau-b, Pearson, quadratic kappa, ordinal Krippendorff's alpha, bootstrap CIs),
:mod:`.load` (ratings / metrics files -> variables keyed by sample id), :mod:`.run` (join, table, JSON/CSV),
:mod:`.figures` (PNGs). scipy, scikit-learn, krippendorff and matplotlib are imported lazily (the ``[agree]`` extra).
"""
