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

from helpers_eval import TASK, inputs_to_generate  # noqa: E402
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
    return inputs_to_generate(PfmvgLlava, model_dir, image)["pixel_values"][0]


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


# ---- LLaVA-NeXT (anyres) and MiniGPT-v2: the other families, each with its released processor at a tiny scale -------
@pytest.fixture(scope="module")
def next_checkpoint(tmp_path_factory):
    """A tiny LLaVA-NeXT: llava-hf/llava-v1.6-*'s image processor (shortest edge, centre crop, anyres over the
    released grid pinpoints, pad) scaled from 336 to 32 px; no training record (a zero-shot checkpoint)."""
    return build_tiny_llava(tmp_path_factory.mktemp("next") / "ckpt", image_size=32, patch_size=8,
                            vision_hidden_size=32, text_hidden_size=32, vocab_size=1024, architecture="llava_next")


@pytest.fixture(scope="module")
def minigptv2_checkpoint(tmp_path_factory):
    """A tiny MiniGPT-v2 whose processor is the release's eval transform (bicubic squash, CLIP mean/std), at 56 px."""
    from pfmvg_plugin.models.minigptv2.tiny import build_tiny_minigptv2

    return build_tiny_minigptv2(tmp_path_factory.mktemp("minigptv2") / "ckpt")


def _family_train_pixels(name: str, model_dir, image: Image.Image):
    """What the recipe feeds for ``image``: the family's image function, then its encoder (TrainingData's path)."""
    from pfmvg_plugin.families import get_family

    family = get_family(name)
    if name == "minigptv2":
        from pfmvg_plugin.models.minigptv2.processing import MiniGPTv2Processor

        family.attach(None, MiniGPTv2Processor.from_pretrained(model_dir))
    else:
        from transformers import AutoProcessor

        family.attach(None, AutoProcessor.from_pretrained(model_dir))
    return family, family.encode_image(family.image_transform()(image))


@pytest.mark.parametrize("size", [(50, 60), (60, 50)], ids=["portrait", "landscape"])
def test_llava_next_anyres_evaluation_feeds_the_tiles_training_fed(next_checkpoint, size):
    from pfmvg_plugin.lmms import state

    image = _portrait(*size)
    family, trained = _family_train_pixels("llava", next_checkpoint, image)
    seen = inputs_to_generate(PfmvgLlava, next_checkpoint, image)
    assert family.anyres and trained.dim() == 4 and trained.shape[0] > 1  # base view + tiles
    assert torch.equal(seen["pixel_values"][0], trained)
    assert seen["image_sizes"][0].tolist() == [32, 32]  # the squashed image is what anyres tiles
    # a training target read back by evaluation lands on the same pixels (llava floats of the original image)
    codec = family.codec("llava", family.image_transform())
    box = (round(0.15 * size[0]), round(0.7 * size[1]), round(0.55 * size[0]), round(0.95 * size[1]))
    state.note_prompt_convention("llava", TASK)
    decoded = state.answer_codec(task=TASK).decode(codec.encode([box], size), size).boxes[0]
    ex, ey = codec.max_error(size)
    assert all(abs(a - b) <= e for a, b, e in zip(decoded, box, (ex, ey, ex, ey)))


def test_llava_next_trains_with_its_image_sizes(next_checkpoint):
    """One LoRA-free forward/backward on a batch the family built: anyres needs ``image_sizes`` per example."""
    from transformers import AutoModelForImageTextToText

    family, _ = _family_train_pixels("llava", next_checkpoint, _portrait())
    model = AutoModelForImageTextToText.from_pretrained(next_checkpoint)
    transform = family.image_transform()
    batch = family.collate([family.build_example(transform(_portrait(*s)), "Where?", "[0.10, 0.20, 0.30, 0.40]")
                            for s in ((50, 60), (60, 50))])
    assert batch["image_sizes"].tolist() == [[32, 32], [32, 32]]
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("size", [(50, 60), (60, 50)], ids=["portrait", "landscape"])
def test_minigptv2_evaluation_feeds_the_pixels_training_fed(minigptv2_checkpoint, size):
    from pfmvg_plugin.lmms.minigptv2_model import PfmvgMiniGPTv2

    image = _portrait(*size)
    _, trained = _family_train_pixels("minigptv2", minigptv2_checkpoint, image)
    seen = inputs_to_generate(PfmvgMiniGPTv2, minigptv2_checkpoint, image)
    assert trained.shape == (3, 56, 56)
    assert torch.equal(seen["pixel_values"][0], trained)
