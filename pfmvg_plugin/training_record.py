"""``pfmvg_training.json``: what a model or adapter was trained with, so evaluation can match it. One schema, written
and read here only.

Our recipe writes it beside every adapter and full fine-tune, ``pfmvg merge`` beside a merged model and
``pfmvg convert minigptv2`` beside a converted adapter. Evaluation (``pfmvg_llava``, ``pfmvg_minigptv2``) reads the
prompt convention, the box codec and the image resize from it, so a model is asked, shown its images and decoded as
it was trained. Records written before the schema had a version (version 1) load unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

log = logging.getLogger(__name__)

#: File name of the record inside an adapter or model directory.
RECORD_NAME = "pfmvg_training.json"
#: Version of the schema this module writes (1: the unversioned records of earlier releases; 3 added
#: ``box_codec_options`` and ``image_resize: native``).
SCHEMA_VERSION = 3
#: How an image becomes model input (:class:`pfmvg_plugin.families.base.ImageTransform`): ``squash`` and ``pad``
#: resize to the processor's fixed input size ourselves (its own resize and crop are then no-ops); ``native`` hands
#: the image to the processor as it is (dynamic resolution: the processor picks the input size per image).
IMAGE_RESIZES = ("squash", "pad", "native")


@dataclass
class TrainingRecord:
    """How a model or adapter was trained. ``extra`` keeps everything else a writer adds (datasets, precision, engine,
    steps, what it was merged from or converted from) and every unknown key of a record read back."""

    convention: str
    box_codec: str | None = None  # None: the convention's own codec
    box_codec_options: dict | None = None  # the codec's frame (e.g. Qwen2.5-VL's min/max pixels)
    backbone: str | None = None
    image_resize: str = "squash"
    base_model: str | None = None
    extra: dict = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.image_resize not in IMAGE_RESIZES:
            raise ValueError(f"image_resize must be one of {', '.join(IMAGE_RESIZES)}, got {self.image_resize!r}")
        if self.box_codec_options is not None and not isinstance(self.box_codec_options, dict):
            raise ValueError(f"box_codec_options must be a mapping, got {self.box_codec_options!r}")

    def to_dict(self) -> dict:
        """The JSON object written to disk (the known fields first, then ``extra``)."""
        known = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**known, **{k: v for k, v in self.extra.items() if k not in known}}

    @classmethod
    def from_dict(cls, data: dict, source: str = "record") -> TrainingRecord:
        """Parse a record (any version up to :data:`SCHEMA_VERSION`); raises ``ValueError`` naming ``source``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("version", 1)
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"{source}: version {version!r} is not a schema version")
        if version > SCHEMA_VERSION:
            log.warning("%s: schema version %d is newer than this pfmvg_plugin's (%d); reading the fields it knows",
                        source, version, SCHEMA_VERSION)
        if not isinstance(data.get("convention"), str):
            raise ValueError(f"{source}: no prompt convention (a 'convention' string)")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: data[k] for k in names if k in data}
        return cls(**{**known, "version": version}, extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def create(cls, data: dict, source: str = "record") -> TrainingRecord:
        """A new record of this schema version from a plain dict of fields and extras (what writers use; any
        ``version`` in ``data``, e.g. of a record it was derived from, is replaced)."""
        return cls.from_dict({**data, "version": SCHEMA_VERSION}, source)

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/pfmvg_training.json`` atomically (a reader never sees half a file); returns the path."""
        path = Path(directory) / RECORD_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike | None, who: str = "pfmvg") -> TrainingRecord | None:
        """The record in ``directory``; None when there is none, or it cannot be read (a warning naming ``who``)."""
        path = Path(directory) / RECORD_NAME if directory else None
        if path is None or not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as exc:
            log.warning("%s: ignoring unreadable %s: %s", who, path, exc)
            return None


def read_training_meta(directory: str | os.PathLike | None, who: str = "pfmvg") -> dict:
    """The record in ``directory`` as a plain dict (``{}`` when there is none): what the evaluators look up."""
    record = TrainingRecord.read(directory, who)
    return record.to_dict() if record is not None else {}
