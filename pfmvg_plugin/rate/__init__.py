"""``pfmvg rate``: a local web app where human readers rate model outputs (blinded, resumable) for ``pfmvg agree``.

Modules: :mod:`~pfmvg_plugin.rate.items` (the items to rate, read from samples files), :mod:`~pfmvg_plugin.rate.db`
(SQLite: one committed row per rater and item), :mod:`~pfmvg_plugin.rate.queue` (each rater's blinded order),
:mod:`~pfmvg_plugin.rate.app` (the aiohttp web app; aiohttp and Jinja2 are imported only there) and
:mod:`~pfmvg_plugin.rate.export` (the long CSV ``pfmvg agree --ratings`` reads).
"""
