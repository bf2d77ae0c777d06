"""Image files: safe paths under a data root, sizes from headers, loading PNG/JPG (Pillow) and DICOM (pydicom)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

DICOM_SUFFIXES = (".dcm", ".dicom")


class UnsafePathError(ValueError):
    """An image path that would leave its data root."""


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed."""


def safe_join(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that would leave ``root``.

    The check is on the path text, which is what an annotation file controls. Symlinks the user placed inside the
    root (e.g. ``files/`` -> another disk) are followed as usual.
    """
    rel = Path(relative)
    if rel.is_absolute() or rel.drive or str(relative).startswith(("/", "\\")):
        raise UnsafePathError(f"image path {str(relative)!r} is absolute; paths must be relative to {root}")
    normal = os.path.normpath(str(relative).replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise UnsafePathError(f"image path {str(relative)!r} escapes the data root {root}")
    return Path(os.path.abspath(root)) / normal


def is_dicom(path: str | Path) -> bool:
    return str(path).lower().endswith(DICOM_SUFFIXES)


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise MissingExtraError(
            "reading DICOM files needs pydicom: pip install 'pfmvg_plugin[dicom]'"
        ) from None
    return pydicom


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header only."""
    if is_dicom(path):
        ds = _pydicom().dcmread(str(path), stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    with Image.open(path) as im:
        return im.size


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Load an image as a Pillow image in ``mode``; DICOM is windowed to 8 bit, MONOCHROME1 inverted."""
    if is_dicom(path):
        return _dicom_to_pil(path).convert(mode)
    with Image.open(path) as im:
        im.load()
        return im.convert(mode)


def _dicom_to_pil(path: str | Path) -> Image.Image:
    import numpy as np

    pydicom = _pydicom()
    ds = pydicom.dcmread(str(path))
    arr = ds.pixel_array.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):  # multi-frame: first frame
        arr = arr[0]
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        lo, hi = float(arr.min()), float(arr.max())
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = 1.0 - arr
    return Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8))


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Centre ``image`` on a square canvas of side ``max(W, H)`` (LLaVA's ``expand2square``); squares pass through."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill if image.mode == "RGB" else fill[0])
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def index_files(root: str | Path, suffixes: tuple[str, ...]) -> dict[str, str]:
    """Map file name -> path relative to ``root`` for every file with one of ``suffixes`` (one walk)."""
    root = Path(root)
    found: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(suffixes):
                found.setdefault(name, os.path.relpath(os.path.join(dirpath, name), root))
    return found
