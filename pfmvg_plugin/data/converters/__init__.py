"""Converters from real dataset release files to canonical records (``pfmvg data prepare <name>``)."""

from pfmvg_plugin.data.converters.registry import (
    CONVERTERS,
    Conversion,
    ConversionError,
    ConverterSpec,
    register_converter,
)

__all__ = ["CONVERTERS", "Conversion", "ConversionError", "ConverterSpec", "register_converter", "load_converters"]


def load_converters() -> dict[str, ConverterSpec]:
    """Import the built-in converter modules (each registers itself) and return the registry."""
    import importlib

    for module in ("mscxr", "chestxray8", "vindr", "rsna", "vqarad", "slake", "iuxray", "pathvqa", "mimiccxr_reports"):
        try:
            importlib.import_module(f"pfmvg_plugin.data.converters.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"pfmvg_plugin.data.converters.{module}":
                raise
    return CONVERTERS
