"""The recipe files shipped with the package (the repository's ``recipes/`` folder, installed as
``pfmvg_plugin.recipes``): training configs by name (``tiny_synthcxr``) and DeepSpeed JSONs (``zero2``)."""

from __future__ import annotations

from pathlib import Path

#: Package holding the shipped recipe files (the repository's ``recipes/`` folder, mapped in pyproject.toml).
RECIPES_PACKAGE = "pfmvg_plugin.recipes"


def recipes_dir() -> Path:
    """The shipped ``recipes/`` folder (``configs/*.yaml``, ``ds/*.json``), in wheel and editable installs."""
    try:
        from importlib.resources import files

        return Path(str(files(RECIPES_PACKAGE)))
    except (ImportError, TypeError):  # a source checkout that is not installed
        return Path(__file__).resolve().parents[2] / "recipes"


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every shipped training config (``tiny_synthcxr`` -> ``.../configs/tiny_synthcxr.yaml``)."""
    return {p.stem: p for p in sorted((recipes_dir() / "configs").glob("*.yaml"))}


def find_config(spec: str) -> Path:
    """A config given as a path, or the name of a shipped one. Raises ``FileNotFoundError`` naming both."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped and (path.parent == Path(".") or not path.exists()):
        return shipped[name]
    raise FileNotFoundError(f"config {spec!r} is neither a file nor a shipped config; shipped: {', '.join(shipped)}")
