"""Reading and writing checkpoint tensors for the converters: safe pickle loading, shard-by-shard iteration and a
sharded safetensors writer (``model-0000i-of-0000n.safetensors`` + index, as ``save_pretrained`` writes them).

Pickles are opened with ``torch.load(weights_only=True)`` (tensors and plain containers only: nothing can run code);
a file that needs full unpickling is refused unless ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

CONVERSION_REPORT = "pfmvg_conversion.json"


class UnsafePickleError(RuntimeError):
    """A checkpoint that ``torch.load(weights_only=True)`` cannot open."""


class ConversionError(ValueError):
    """Inputs that cannot be converted (missing tensors, wrong shapes, ...)."""


def load_torch_file(path: str | Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` (memory-mapped when possible); with ``trust_pickle`` a refused file
    is loaded with full unpickling."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e).lower() and "zip" not in str(e).lower():
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except (pickle.UnpicklingError, AttributeError, TypeError, RuntimeError) as e:
        if not trust_pickle:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsafePickleError(
                f"{path} is not loadable with torch.load(weights_only=True) ({first}). Loading it fully would run "
                "whatever code the pickle names; if you trust the file's origin, pass --trust-pickle "
                "(trust_pickle=True).") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def state_dict_of(obj: Any, what: str, prefixes: tuple[str, ...] = ()) -> dict:
    import torch

    if isinstance(obj, dict):
        for key in ("model", "state_dict", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{what}: no state dict found (expected a dict of tensors, or one under 'model')")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


class ShardWriter:
    """Writes tensors into ``model-0000i-of-0000n.safetensors`` shards (or one ``model.safetensors``) + index."""

    def __init__(self, out: Path, max_bytes: int) -> None:
        self.out, self.max_bytes = out, max_bytes
        self.buf: dict = {}
        self.size = 0
        self.files: list[tuple[Path, list[str]]] = []
        self.total = 0
        self.shapes: dict[str, tuple[int, ...]] = {}

    def add(self, name: str, tensor) -> None:
        if name in self.shapes:
            raise ConversionError(f"tensor {name} written twice")
        tensor = tensor.contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if tensor.untyped_storage().nbytes() != nbytes:
            tensor = tensor.clone()
        if self.buf and self.size + nbytes > self.max_bytes:
            self.flush()
        self.buf[name] = tensor
        self.size += nbytes
        self.total += nbytes
        self.shapes[name] = tuple(tensor.shape)

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.buf:
            return
        path = self.out / f".pfmvg-shard-{len(self.files):05d}.safetensors"
        save_file(self.buf, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.buf)))
        self.buf, self.size = {}, 0

    def close(self) -> list[str]:
        self.flush()
        if len(self.files) == 1:
            target = self.out / "model.safetensors"
            self.files[0][0].replace(target)
            return [target.name]
        n = len(self.files)
        weight_map, names = {}, []
        for i, (path, keys) in enumerate(self.files, start=1):
            target = self.out / f"model-{i:05d}-of-{n:05d}.safetensors"
            path.replace(target)
            names.append(target.name)
            weight_map.update({k: target.name for k in keys})
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return names


def weight_files(model_dir: Path, pattern: str | None = None) -> list[Path]:
    """The weight files of a folder: ``*.safetensors`` shards, else ``pytorch_model*.bin`` (``pattern``: a stem glob
    such as ``adapter_model*`` instead)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} is not a folder")
    stems = (pattern or "*", pattern or "pytorch_model*")
    files = sorted(model_dir.glob(f"{stems[0]}.safetensors")) or sorted(model_dir.glob(f"{stems[1]}.bin"))
    return [f for f in files if not f.name.startswith(".")]


def iter_tensors(model_dir: Path, trust_pickle: bool = False, pattern: str | None = None):
    """``(name, tensor)`` of a folder's weights (see :func:`weight_files`), one file at a time: only one shard is in
    memory at once."""
    files = weight_files(model_dir, pattern)
    if not files:
        raise ConversionError(f"{model_dir}: no *.safetensors or pytorch_model*.bin weights")
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                    yield key, handle.get_tensor(key)
        else:
            state = state_dict_of(load_torch_file(f, trust_pickle), str(f))
            yield from state.items()
            del state


def list_tensors(model_dir: Path, trust_pickle: bool = False, pattern: str | None = None) -> dict[str, tuple]:
    """``{name: shape}`` of a folder's weights without reading safetensors data (``.bin`` files are memory-mapped)."""
    out: dict[str, tuple] = {}
    for f in weight_files(model_dir, pattern):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                    out[key] = tuple(handle.get_slice(key).get_shape())
        else:
            out.update({k: tuple(v.shape) for k, v in state_dict_of(load_torch_file(f, trust_pickle), str(f)).items()})
    return out


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(text).upper())
    if not m:
        raise ValueError(f"cannot read size {text!r} (e.g. 4GB, 500MB)")
    unit = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30}[m.group(2)]
    return int(float(m.group(1)) * unit)


def prepare_output_dir(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready for a conversion's output. A non-empty folder is replaced only with ``overwrite`` and only
    when it holds an earlier output (its ``pfmvg_conversion.json``): a mistyped path is never wiped."""
    out = Path(out)
    if not (out.exists() and any(out.iterdir())):
        return
    if not overwrite:
        raise ConversionError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if not (out / CONVERSION_REPORT).is_file():
        raise ConversionError(f"{out} is not empty and holds no {CONVERSION_REPORT}, so it is not an earlier output "
                              "and --overwrite leaves it alone: remove it yourself or choose another --out")
    shutil.rmtree(out)
