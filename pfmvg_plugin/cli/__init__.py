"""The ``pfmvg`` command line."""
