"""Training data: prepared datasets mixed by ratio, prompts and box targets, box-consistent images, a resumable order.

- Sources are prepared dataset directories (:class:`~pfmvg_plugin.data.store.PreparedDataset`) with a split, a task
  and an optional sampling weight. Records are checked up front; a bad one stops the run naming its id and reason
  (``on_bad_record: error``) or is counted and left out (``skip``).
- A grounding record becomes ``build_prompt("refer", convention, phrase=..., rng=...)`` and
  ``codec.encode(boxes, (width, height))`` with the codec the convention (and image transform) implies: the same code
  that scoring decodes answers with.
- The order of an epoch is a pure function of ``(seed, epoch)``; every per-sample choice (prompt paraphrase, flip)
  is a pure function of ``(seed, epoch, position)``. A resumed run therefore sees exactly the batches an uninterrupted
  run would, whatever the number of dataloader workers.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pfmvg_plugin.codecs import BoxCodec
from pfmvg_plugin.data.images import UnsafePathError, load_image, safe_join
from pfmvg_plugin.data.schema import validate_record
from pfmvg_plugin.data.store import PreparedDataset, data_root, prepare_command
from pfmvg_plugin.families.base import Family, ImageTransform
from pfmvg_plugin.geometry import hflip_box
from pfmvg_plugin.prompts import build_prompt
from pfmvg_plugin.training.config import ConfigError, DataConfig, DatasetSpec, expand_path, record_task

log = logging.getLogger(__name__)

#: ``preprocess: memory`` keeps model-ready pixel tensors when all images fit in this many bytes, else resized images.
PIXEL_CACHE_BYTES = 1 << 30
#: ``data.group_by_length`` sorts the epoch order within windows of this many optimizer steps (transformers: 50).
LENGTH_WINDOW_STEPS = 50
_TASK_RECORD = {"refer": "grounding", "vqa": "vqa", "report": "report", "caption": None}
_SIDES = re.compile(r"\b(left|right)\b", re.IGNORECASE)


class BadRecordError(ValueError):
    """A record the recipe cannot train on (``on_bad_record: error``)."""


def swap_sides(text: str) -> str:
    """``left`` <-> ``right`` (whole words, case kept): what a horizontal flip does to a radiology phrase."""

    def repl(m: re.Match) -> str:
        word = m.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _SIDES.sub(repl, text)


def resolve_dataset_path(path: str, config_dir: str | None = None) -> Path:
    """A dataset path as written in the YAML: absolute, relative to the config file or the current directory, or a
    name under ``$PFMVG_DATA_ROOT`` (``mscxr`` -> ``~/.cache/pfmvg/mscxr``)."""
    p = Path(expand_path(path))
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, *([Path(config_dir) / p] if config_dir else []),
                                               data_root() / p]
    for c in candidates:
        if (c / "dataset.json").is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"dataset {path!r} not found (looked for dataset.json in: {tried}); create it with "
                            f"`{prepare_command(Path(path).name)}`")


def check_datasets(data: DataConfig, config_dir: str | None = None) -> None:
    """Raise :class:`ConfigError` (one line per missing dataset, with the command that creates it) unless every
    dataset of the mixture is prepared: called before the model is built."""
    missing = []
    for spec in data.datasets:
        try:
            resolve_dataset_path(spec.path, config_dir)
        except FileNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        raise ConfigError("data.datasets", "; ".join(missing))


@dataclass
class Source:
    """One dataset of the mixture, its usable records and (optionally) their preprocessed images."""

    spec: DatasetSpec
    dataset: PreparedDataset
    task: str
    records: list[dict]
    #: image rel path -> (pixel tensor or resized image, original size), filled by ``preprocess: memory``
    images: dict[str, tuple] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.dataset.name}/{self.spec.split}"


@dataclass
class BadRecords:
    """What ``on_bad_record: skip`` left out."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, where: str, reason: str) -> None:
        kind = re.sub(r"\[[^\]]*\]|'[^']*'|\d+(\.\d+)?", "#", reason.split(":")[0])  # group "box 0 [..]" etc.
        self.counts[kind[:100]] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {reason}")

    def to_dict(self) -> dict:
        return {"skipped": self.total, "by_reason": dict(self.counts), "examples": self.examples}


def _record_problems(rec: dict, task: str) -> list[str]:
    problems = validate_record(rec)
    if problems:
        return problems
    need = _TASK_RECORD[task]
    if need is not None and rec["task"] != need:
        return [f"task {task!r} needs {need!r} records, this one is {rec['task']!r}"]
    if task == "caption" and not (rec.get("caption") or rec.get("report") or (rec.get("meta") or {}).get("caption")):
        return ["a caption task needs a 'caption' or 'report' field"]
    return []


class TrainingData:
    """All sources of a run, validated; builds examples for ``(epoch, position)`` keys."""

    def __init__(self, cfg: DataConfig, backbone: Family, *, seed: int, config_dir: str | None = None,
                 show_progress: bool = False) -> None:
        self.cfg = cfg
        self.backbone = backbone
        self.seed = seed
        self.convention = cfg.convention or backbone.prompt_convention
        try:
            self.transform: ImageTransform = backbone.image_transform(cfg.image_resize)
            self.codec: BoxCodec = backbone.codec(self.convention, self.transform)
        except ValueError as e:
            raise ConfigError("data.image_resize", str(e)) from None
        self.bad = BadRecords()
        self.pixel_cache = False
        self.sources: list[Source] = []
        for i, spec in enumerate(cfg.datasets):
            self.sources.append(self._load_source(i, spec, config_dir))
        if cfg.preprocess == "memory":
            self._preprocess(show_progress)
        for i, src in enumerate(self.sources):
            if not src.records:
                skipped = f" ({self.bad.total} skipped: {dict(self.bad.counts)})" if self.bad.total else ""
                raise BadRecordError(f"data.datasets[{i}] ({src.name}): no usable records{skipped}")
        ratios = [s.spec.ratio for s in self.sources]
        self.weights = None if ratios[0] is None else np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
        self.sizes = [len(s.records) for s in self.sources]
        self.epoch_size = cfg.epoch_size or sum(self.sizes)

    # ---- loading and validation -----------------------------------------------------------------------------------
    def _bad(self, src_name: str, rec: dict | None, line: int, reason: str) -> None:
        rid = rec.get("id") if isinstance(rec, dict) else None
        where = f"{src_name} record {rid!r}" if rid else f"{src_name} line {line}"
        if rid and line:
            where += f" (line {line})"
        if self.cfg.on_bad_record == "error":
            raise BadRecordError(f"{where}: {reason} (set data.on_bad_record: skip to leave such records out)")
        self.bad.add(where, reason)

    def _read_split(self, ds: PreparedDataset, spec: DatasetSpec) -> list[tuple[int, object]]:
        """``(line, record)`` pairs, unvalidated (a JSON error is kept as the record: a bad record)."""
        path = ds.split_path(spec.split)
        if not path.is_file():
            ds.records(spec.split)  # raises the store's "no such split (splits: ...)" error
        rows = []
        with path.open(encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    rows.append((line, json.loads(text)))
                except json.JSONDecodeError as e:
                    rows.append((line, e))
                if spec.limit is not None and len(rows) >= spec.limit:
                    break
        return rows

    def _load_source(self, i: int, spec: DatasetSpec, config_dir: str | None) -> Source:
        ds = PreparedDataset(resolve_dataset_path(spec.path, config_dir))
        rows = self._read_split(ds, spec)
        first = next((r for _, r in rows if isinstance(r, dict)), {})
        task = spec.task or record_task(first.get("task"))
        if task is None:
            raise BadRecordError(f"data.datasets[{i}] ({ds.name}/{spec.split}): cannot tell the task from the records;"
                                 " set task: refer|vqa|report|caption")
        name = f"{ds.name}/{spec.split}"
        records, seen = [], set()
        for line, rec in rows:
            if isinstance(rec, Exception):
                self._bad(name, None, line, f"not valid JSON ({rec.msg} at column {rec.colno})")
                continue
            problems = _record_problems(rec, task)
            if not problems and rec["id"] in seen:
                problems = [f"duplicate id {rec['id']!r}"]
            if not problems:
                try:
                    path = safe_join(ds.image_root, rec["image"])
                    if not path.is_file():
                        problems = [f"image file missing: {path}"]
                except UnsafePathError as e:
                    problems = [str(e)]
            if problems:
                self._bad(name, rec, line, "; ".join(problems))
                continue
            seen.add(rec["id"])
            records.append(rec)
        return Source(spec=spec, dataset=ds, task=task, records=records)

    def _load_image(self, src: Source, rec: dict):
        """The record's image at the model input size (transformed, not flipped); checks the recorded size."""
        image = load_image(src.dataset.image_path(rec))
        self._check_size(src, rec, image.size)
        return self.transform(image), image.size

    def _image(self, src: Source, rec: dict):
        """The record's cached pixels or image, else the image read now."""
        cached = src.images.get(rec["image"])
        return cached[0] if cached is not None and cached[0] is not None else self._load_image(src, rec)[0]

    @staticmethod
    def _check_size(src: Source, rec: dict, size: tuple[int, int]) -> None:
        if src.task == "refer" and (rec["width"], rec["height"]) != tuple(size):
            raise ValueError(f"image is {size[0]}x{size[1]} but the record says {rec['width']}x{rec['height']}")

    def _preprocess(self, show_progress: bool) -> None:
        from PIL import Image
        from tqdm.auto import tqdm

        n_images = sum(len({r["image"] for r in s.records}) for s in self.sources)
        if self.backbone.cache_pixels:
            probe = self.backbone.encode_image(Image.new("RGB", tuple(self.transform.size)))
            self.pixel_cache = n_images * probe.numel() * probe.element_size() <= PIXEL_CACHE_BYTES
        total = sum(len(s.records) for s in self.sources)
        bar = tqdm(total=total, desc="preprocess images", unit="rec", disable=not show_progress, leave=False)
        for src in self.sources:
            kept = []
            for rec in src.records:
                bar.update(1)
                key = rec["image"]
                if key not in src.images:
                    try:
                        image, size = self._load_image(src, rec)
                        if self.pixel_cache:
                            image = self.backbone.encode_image(image)
                        elif self.transform.size is None:  # full-size images: checked here, read when used
                            image = None
                        src.images[key] = (image, size)
                    except Exception as e:  # unreadable file or wrong size: a bad record
                        src.images[key] = e
                cached = src.images[key]
                try:
                    if isinstance(cached, Exception):
                        raise cached
                    self._check_size(src, rec, cached[1])
                except Exception as e:
                    self._bad(src.name, rec, 0, f"image unusable: {e}")
                    continue
                kept.append(rec)
            src.records = kept
            src.images = {k: v for k, v in src.images.items() if not isinstance(v, Exception)}
        bar.close()

    # ---- order -------------------------------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """``(epoch_size, 2)`` array of ``(source, record)`` indices: a pure function of ``(seed, epoch)``."""
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        n = self.epoch_size

        def draw(pool: int, k: int, gen: np.random.Generator) -> np.ndarray:
            reps = -(-k // pool)
            return np.concatenate([gen.permutation(pool) for _ in range(reps)])[:k]

        if self.weights is None:  # one pool: every record once per epoch (cycled if epoch_size is larger)
            offsets = np.cumsum([0, *self.sizes])
            flat = draw(offsets[-1], n, rng)
            src = np.searchsorted(offsets, flat, side="right") - 1
            return np.stack([src, flat - offsets[src]], axis=1)
        exact = self.weights * n
        counts = np.floor(exact).astype(np.int64)
        for j in np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]:
            counts[j] += 1  # largest remainder: the counts sum to epoch_size
        parts = []
        for s, k in enumerate(counts):
            if k:
                gen = np.random.default_rng([self.seed, epoch, 0x5EED, s + 1])
                parts.append(np.stack([np.full(k, s), draw(self.sizes[s], int(k), gen)], axis=1))
        order = np.concatenate(parts)
        return order[rng.permutation(len(order))]

    def step_order(self, epoch: int, samples_per_step: int) -> np.ndarray:
        """The order the trainer walks: :meth:`epoch_order`, and with ``group_by_length`` each window of
        :data:`LENGTH_WINDOW_STEPS` optimizer steps (of ``samples_per_step``) sorted longest first."""
        order = self.epoch_order(epoch)
        if not self.cfg.group_by_length:
            return order
        return group_by_length(order, self.text_lengths(order), LENGTH_WINDOW_STEPS * samples_per_step)

    def text_lengths(self, order: np.ndarray) -> np.ndarray:
        """Characters of each ordered example's variable text (phrase, question + answer, report or caption): a
        cheap stand-in for its token count."""
        def length(source: int, index: int) -> int:
            src, rec = self.sources[source], self.sources[source].records[index]
            if src.task == "refer":
                return len(rec["phrase"])
            if src.task == "vqa":
                return len(rec["question"]) + len(rec["answer"])
            caption = rec.get("caption") or (rec.get("meta") or {}).get("caption") if src.task == "caption" else None
            return len(caption or rec.get("report") or "")

        return np.array([length(int(s), int(i)) for s, i in order], dtype=np.int64)

    # ---- examples ----------------------------------------------------------------------------------------------------
    def sample_rng(self, epoch: int, position: int) -> random.Random:
        return random.Random(f"pfmvg:{self.seed}:{epoch}:{position}")

    def texts(self, src: Source, rec: dict, rng: random.Random, flip: bool) -> tuple[str, str]:
        """(instruction, target) of a record for its source's task."""
        conv = self.convention
        if src.task == "refer":
            phrase = swap_sides(rec["phrase"]) if flip else rec["phrase"]
            size = (rec["width"], rec["height"])
            boxes = [hflip_box(b, size[0]) for b in rec["boxes"]] if flip else [tuple(b) for b in rec["boxes"]]
            return build_prompt("refer", conv, phrase=phrase, rng=rng, codec=self.codec), self.codec.encode(boxes, size)
        if src.task == "vqa":
            question, answer = rec["question"], rec["answer"]
            if flip:
                question, answer = swap_sides(question), swap_sides(answer)
            return build_prompt("vqa", conv, question=question, rng=rng), answer
        text = None
        if src.task == "caption":
            text = rec.get("caption") or (rec.get("meta") or {}).get("caption")
        text = text or rec["report"]
        return build_prompt(src.task, conv, rng=rng), swap_sides(text) if flip else text

    def pixels(self, source: int, index: int) -> torch.Tensor:
        """The model-ready pixel tensor of a record's image (not flipped), from the cache when there is one."""
        src = self.sources[source]
        rec = src.records[index]
        image = self._image(src, rec)
        return image if isinstance(image, torch.Tensor) else self.backbone.encode_image(image)

    def example(self, epoch: int, position: int, source: int, index: int) -> dict:
        src = self.sources[source]
        rec = src.records[index]
        rng = self.sample_rng(epoch, position)
        flip = self.cfg.hflip > 0 and rng.random() < self.cfg.hflip
        try:
            image = self._image(src, rec)
            if flip and isinstance(image, torch.Tensor):
                image = image.flip(-1)  # normalisation is per channel: flipping pixels or tensors is the same
            elif flip:
                from PIL import ImageOps

                image = ImageOps.mirror(image)
            instruction, target = self.texts(src, rec, rng, flip)
            ex = self.backbone.build_example(image, instruction, target)
        except Exception as e:
            raise BadRecordError(f"{src.name} record {rec.get('id')!r}: {e}") from e
        if self.cfg.max_length is not None and len(ex["input_ids"]) > self.cfg.max_length:
            raise BadRecordError(f"{src.name} record {rec.get('id')!r}: {len(ex['input_ids'])} tokens exceed "
                                 f"data.max_length={self.cfg.max_length}")
        return ex

    def summary(self) -> dict:
        return {
            "convention": self.convention,
            "box_codec": self.codec.name + ("_pad" if getattr(self.codec, "pad_to_square", False) else ""),
            "box_codec_options": self.codec.options(),
            "image_resize": self.transform.mode,
            "image_size": list(self.transform.size) if self.transform.size else None,
            "epoch_size": self.epoch_size,
            "sources": [{"name": s.name, "task": s.task, "records": len(s.records), "ratio": s.spec.ratio}
                        for s in self.sources],
            "bad_records": self.bad.to_dict(),
        }


def group_by_length(order: np.ndarray, lengths: np.ndarray, window: int) -> np.ndarray:
    """``order`` with each run of ``window`` positions sorted by ``lengths``, longest first (stable), so consecutive
    positions -- one micro-batch -- have similar lengths while the epoch stays shuffled across windows. The first
    window's longest examples come first: a run that would run out of memory does so at once."""
    out = order.copy()
    for start in range(0, len(order), window):
        idx = np.argsort(-lengths[start:start + window], kind="stable")
        out[start:start + window] = order[start:start + window][idx]
    return out


class KeyedDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by ``(epoch, position, source, record)`` keys from :class:`StepSampler`."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.epoch_size

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict:
        return self.data.example(*key)


class StepSampler(torch.utils.data.Sampler):
    """Micro-batches of keys for one rank in one epoch, starting at micro-step ``start``.

    Micro-step ``m`` of the epoch covers positions ``[m * B * W, (m + 1) * B * W)`` of the epoch order (B: micro
    batch, W: world size); rank ``r`` takes ``[m * B * W + r * B, ... + B)``. A trailing partial step is dropped.
    """

    def __init__(self, order: np.ndarray, epoch: int, micro_batch: int, world_size: int, rank: int,
                 n_micro: int, start: int = 0) -> None:
        self.order, self.epoch = order, epoch
        self.b, self.w, self.r = micro_batch, world_size, rank
        self.n_micro, self.start = n_micro, start

    def __len__(self) -> int:
        return max(0, self.n_micro - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        for m in range(self.start, self.n_micro):
            first = m * self.b * self.w + self.r * self.b
            yield [(self.epoch, p, int(self.order[p, 0]), int(self.order[p, 1])) for p in range(first, first + self.b)]


def make_loader(data: TrainingData, sampler: StepSampler, num_workers: int, collate) -> torch.utils.data.DataLoader:
    """A DataLoader over ``sampler``; its own generator keeps the global torch RNG (LoRA dropout) untouched."""
    return torch.utils.data.DataLoader(
        KeyedDataset(data),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(data.seed),
        pin_memory=torch.cuda.is_available(),
    )


def encode_target_boxes(codec: BoxCodec, boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> str:
    """The target text of a grounding record (exposed for tests and tools)."""
    return codec.encode([tuple(b) for b in boxes], size)
