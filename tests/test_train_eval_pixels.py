"""Training and evaluation feed a model the same pixels, with processors configured like the real releases.

The tiny test checkpoint's own processor squashes, where training and evaluation agree trivially. LLaVA-1.5's
published ``preprocessor_config.json`` (CLIP ViT-L/14-336) resizes the short side and then centre-crops, which cuts
the long side of a portrait radiograph: an evaluation that hands the raw image to that processor shows the model the
middle of the image while training showed it all. Here the released values are written out at a tiny scale.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402
from PIL import Image  # noqa: E402

from pfmvg_plugin.families.llava import LlavaFamily  # noqa: E402
from pfmvg_plugin.lmms.llava_model import PfmvgLlava  # noqa: E402
from pfmvg_plugin.models.tiny_llava import build_tiny_llava  # noqa: E402

SIDE = 64  # the tiny tower's input; the release has 336
#: llava-hf/llava-1.5-7b-hf preprocessor_config.json (CLIP-336), the side scaled to SIDE.
LLAVA15_CLIP = {
    "do_resize": True, "size": {"shortest_edge": SIDE}, "resample": 3,  # bicubic
    "do_center_crop": True, "crop_size": {"height": SIDE, "width": SIDE},
    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}
TASK, SPLIT = "pixels", "test"


@pytest.fixture(scope="module")
def crop_checkpoint(tmp_path_factory):
    """The tiny LLaVA with LLaVA-1.5's CLIP crop processor, and a record saying our recipe trained it."""
    from transformers import AutoProcessor, CLIPImageProcessor

    ckpt = build_tiny_llava(tmp_path_factory.mktemp("crop") / "ckpt", image_size=SIDE)
    processor = AutoProcessor.from_pretrained(ckpt)
    processor.image_processor = CLIPImageProcessor(**LLAVA15_CLIP)
    processor.save_pretrained(ckpt)
    return ckpt


def _portrait(width: int = 50, height: int = 60) -> Image.Image:
    """A dark portrait radiograph stand-in with a bright box near the bottom (what a crop cuts off)."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((height, width)) * 40).astype("uint8")
    pixels[height - 12:height - 3, 10:30] = 250
    return Image.fromarray(pixels, mode="L").convert("RGB")


def _with_record(ckpt, tmp_path, image_resize: str):
    model_dir = tmp_path / f"trained_{image_resize}"
    shutil.copytree(ckpt, model_dir)
    codec = "llava_pad" if image_resize == "pad" else "llava"
    (model_dir / "pfmvg_training.json").write_text(json.dumps(
        {"backbone": "llava", "convention": "llava", "box_codec": codec, "image_resize": image_resize}))
    return model_dir


def _eval_pixels(model_dir, image: Image.Image) -> torch.Tensor:
    """The ``pixel_values`` pfmvg_llava hands to ``generate`` for one request with ``image``."""
    lm = PfmvgLlava(pretrained=str(model_dir), max_new_tokens=1)
    lm.task_dict = {TASK: {SPLIT: [{"image": image}]}}
    seen = {}

    def generate(**kwargs):
        seen["pixel_values"] = kwargs["pixel_values"]
        return torch.cat([kwargs["input_ids"], kwargs["input_ids"][:, :1]], dim=1)

    lm._model.generate = generate
    request = Instance(request_type="generate_until",
                       arguments=("cardiomegaly", {"max_new_tokens": 1}, lambda doc: [doc["image"]], 0, TASK, SPLIT),
                       idx=0, metadata={"task": TASK, "doc_id": 0, "repeats": 1})
    lm.generate_until([request])
    return seen["pixel_values"][0]


def _train_pixels(model_dir, image: Image.Image, image_resize: str) -> torch.Tensor:
    """What the recipe's data pipeline feeds for the same image (``TrainingData._load_image`` then the backbone)."""
    from transformers import AutoProcessor

    backbone = LlavaFamily()
    backbone.attach(None, AutoProcessor.from_pretrained(model_dir))
    return backbone.encode_image(backbone.image_transform(image_resize)(image))


@pytest.mark.parametrize("image_resize", ["squash", "pad"])
@pytest.mark.parametrize("size", [(50, 60), (60, 50)], ids=["portrait", "landscape"])
def test_evaluation_feeds_the_pixels_training_fed(crop_checkpoint, tmp_path, image_resize, size):
    model_dir = _with_record(crop_checkpoint, tmp_path, image_resize)
    image = _portrait(*size)
    trained = _train_pixels(model_dir, image, image_resize)
    evaluated = _eval_pixels(model_dir, image)
    assert trained.shape == evaluated.shape == (3, SIDE, SIDE)
    assert torch.equal(trained, evaluated), f"max |delta| {float((trained - evaluated).abs().max()):.3f}"


def test_the_crop_processor_alone_would_cut_the_image(crop_checkpoint):
    """The premise: fed the raw portrait image, the released crop config loses its bottom rows."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(crop_checkpoint)
    image = _portrait()
    raw = processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
    squashed = _train_pixels(crop_checkpoint, image, "squash")
    assert float((raw - squashed).abs().max()) > 0.5
