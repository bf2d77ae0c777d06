"""MiniGPT-v2 preprocessing: the image transform and the prompt/tokenizer logic, saved beside the model.

- Images: ``Resize((448, 448), bicubic)`` of the whole image (no crop, no flip, no padding: a box normalised to the
  original width/height stays normalised to what the model sees), ``ToTensor``, CLIP mean/std -- the reference's
  ``blip2_image_eval`` processor. (Its training processor adds a RandomResizedCrop, which moves boxes; we never use it.)
- Prompts: ``[INST] <Img><ImageHere></Img> {instruction} [/INST]`` (``prompt_template`` of MiniGPT-v2 / PeFoMed
  with ``chat_template: True``). The text is split at ``<ImageHere>`` and each piece tokenized on its own, the first
  with the tokenizer's special tokens (``<s>``), the others without -- as the reference does -- and
  ``num_image_tokens`` placeholder ids (``image_token_index``) go where ``<ImageHere>`` was; the model puts the image
  embeddings there. Answers are ``{answer}{end_sym}`` (``</s>``), tokenized on their own.

  The reference's evaluation prompt starts with a literal ``<s>`` *and* tokenizes the first piece with special
  tokens, so it feeds two BOS tokens at inference but one in training; we use one BOS in both.

:class:`MiniGPTv2Processor` has ``save_pretrained`` / ``from_pretrained`` (the tokenizer's own files plus
``pfmvg_minigptv2_processor.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROCESSOR_FILE = "pfmvg_minigptv2_processor.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPT_TEMPLATE = "[INST] {} [/INST]"
IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_WRAP = "<Img>{}</Img>"
#: The task identifiers of MiniGPT-v2 / PeFoMed / PFMVG.
TASK_IDENTIFIERS = ("[refer]", "[grounding]", "[vqa]", "[caption]", "[report]", "[identify]", "[detection]")


class MiniGPTv2ImageProcessor:
    """PIL image (any size, any mode) -> ``(3, size, size)`` float tensor (bicubic squash, CLIP normalisation)."""

    def __init__(self, size: int = 448, image_mean: Sequence[float] = CLIP_MEAN,
                 image_std: Sequence[float] = CLIP_STD) -> None:
        self.size = int(size)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)

    def resize(self, image):
        from PIL import Image

        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BICUBIC)
        return image

    def preprocess(self, image):
        """One image; a tensor passes through unchanged."""
        import numpy as np
        import torch

        if isinstance(image, torch.Tensor):
            return image
        array = np.asarray(self.resize(image), dtype=np.float32) / 255.0
        array = (array - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def __call__(self, images):
        import torch

        if not isinstance(images, (list, tuple)):
            images = [images]
        return torch.stack([self.preprocess(im) for im in images])

    def to_dict(self) -> dict:
        return {"size": self.size, "image_mean": list(self.image_mean), "image_std": list(self.image_std)}


class MiniGPTv2Processor:
    """Tokenizer + image transform + prompt layout of MiniGPT-v2."""

    def __init__(
        self,
        tokenizer,
        image_processor: MiniGPTv2ImageProcessor | None = None,
        *,
        num_image_tokens: int = 256,
        image_token_index: int = 0,
        image_placeholder: str = IMAGE_PLACEHOLDER,
        prompt_template: str = PROMPT_TEMPLATE,
        image_wrap: str = IMAGE_WRAP,
        end_sym: str = "</s>",
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor or MiniGPTv2ImageProcessor()
        self.num_image_tokens = int(num_image_tokens)
        self.image_token_index = int(image_token_index)
        self.image_placeholder = image_placeholder
        self.prompt_template = prompt_template
        self.image_wrap = image_wrap
        self.end_sym = end_sym
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ---- prompts ------------------------------------------------------------------------------------------------
    @property
    def image_token(self) -> str:
        return self.image_placeholder

    def format_prompt(self, instruction: str, n_images: int = 1) -> str:
        """``[INST] <Img><ImageHere></Img> {instruction} [/INST]`` (``instruction`` that already holds
        ``<ImageHere>`` is used as is)."""
        if self.image_placeholder in instruction or n_images == 0:
            body = instruction
        else:
            images = " ".join(self.image_wrap.format(self.image_placeholder) for _ in range(n_images))
            body = f"{images} {instruction}"
        return self.prompt_template.format(body)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a formatted prompt with ``num_image_tokens`` placeholder ids per ``<ImageHere>``."""
        ids: list[int] = []
        for i, piece in enumerate(prompt.split(self.image_placeholder)):
            if i:
                ids.extend([self.image_token_index] * self.num_image_tokens)
            piece_ids = list(self.tokenizer(piece, add_special_tokens=i == 0)["input_ids"]) if piece or i == 0 else []
            if self.image_token_index in piece_ids:
                token = self.tokenizer.convert_ids_to_tokens(self.image_token_index)
                raise ValueError(f"the prompt text contains the image placeholder token {token!r} "
                                 f"(id {self.image_token_index}); remove it")
            ids.extend(piece_ids)
        return ids

    def encode_answer(self, answer: str) -> list[int]:
        """``{answer}{end_sym}`` tokenized on its own (no BOS)."""
        tok = self.tokenizer
        if self.end_sym == tok.eos_token:
            ids = list(tok(answer, add_special_tokens=False)["input_ids"])
            if tok.eos_token_id is not None:
                ids.append(tok.eos_token_id)
            return ids
        return list(tok(answer + self.end_sym, add_special_tokens=False)["input_ids"])

    def count_images(self, prompt: str) -> int:
        return prompt.count(self.image_placeholder)

    # ---- batches ------------------------------------------------------------------------------------------------
    def __call__(self, text: str | Sequence[str], images=None, *, padding_side: str = "left",
                 return_tensors: str = "pt"):
        """Formatted prompt(s) (+ images, one per ``<ImageHere>`` in order) -> ``BatchFeature`` with
        ``input_ids``, ``attention_mask`` (padded on ``padding_side``) and ``pixel_values``."""
        import torch
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        encoded = [self.encode_prompt(t) for t in texts]
        n = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), n), pad, dtype=torch.long)
        attention = torch.zeros((len(encoded), n), dtype=torch.long)
        for i, ids in enumerate(encoded):
            row = torch.tensor(ids, dtype=torch.long)
            if padding_side == "left":
                input_ids[i, n - len(ids):], attention[i, n - len(ids):] = row, 1
            else:
                input_ids[i, : len(ids)], attention[i, : len(ids)] = row, 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
        n_placeholders = sum(self.count_images(t) for t in texts)
        if images is not None:
            images = images if isinstance(images, (list, tuple)) else [images]
            if images:
                data["pixel_values"] = self.image_processor(list(images))
        n_images = 0 if "pixel_values" not in data else data["pixel_values"].shape[0]
        if n_images != n_placeholders:
            raise ValueError(f"{n_placeholders} {self.image_placeholder} placeholder(s) but {n_images} image(s)")
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, ids, **kwargs) -> list[str]:
        kwargs.setdefault("skip_special_tokens", True)
        return [self.postprocess(t) for t in self.tokenizer.batch_decode(ids, **kwargs)]

    def decode(self, ids, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", True)
        return self.postprocess(self.tokenizer.decode(ids, **kwargs))

    def postprocess(self, text: str) -> str:
        """The reference's clean-up: cut at ``</s>``, drop ``<s>``, keep what follows ``[/INST]``, strip."""
        text = text.split("</s>")[0].replace("<s>", "")
        return text.split("[/INST]")[-1].strip()

    # ---- files --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "processor_class": type(self).__name__,
            "num_image_tokens": self.num_image_tokens,
            "image_token_index": self.image_token_index,
            "image_placeholder": self.image_placeholder,
            "prompt_template": self.prompt_template,
            "image_wrap": self.image_wrap,
            "end_sym": self.end_sym,
            "image_processor": self.image_processor.to_dict(),
        }

    def save_pretrained(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(out))
        (out / PROCESSOR_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> MiniGPTv2Processor:
        from transformers import AutoTokenizer

        path = Path(path)
        file = path / PROCESSOR_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{path} has no {PROCESSOR_FILE}: not a MiniGPT-v2 directory written by "
                                    "pfmvg_plugin (pfmvg convert minigptv2 / build_tiny_minigptv2)")
        settings = json.loads(file.read_text())
        settings.pop("processor_class", None)
        image = MiniGPTv2ImageProcessor(**settings.pop("image_processor", {}))
        settings.update(overrides)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return cls(tokenizer, image, **settings)

    @classmethod
    def is_processor_dir(cls, path: str | Path) -> bool:
        return (Path(path) / PROCESSOR_FILE).is_file()
