"""Qwen2-VL / Qwen2.5-VL as a model family: its real processor, its box frame, training and evaluation agreeing.

Qwen2.5-VL answers in pixels of the *resized* input its processor makes (``smart_resize``: multiples of 28 px within
``min_pixels`` / ``max_pixels``). The frame therefore depends on the processor's pixel budget, which users change (the
tiny checkpoint here uses 28 * 28 * 16 instead of the released 28 * 28 * 1280). Training writes targets in that frame,
the training record carries it to the evaluator, and the evaluator reads it from the loaded processor otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Qwen2_5_VLForConditionalGeneration"):
    pytest.skip("this transformers has no Qwen2.5-VL", allow_module_level=True)

from helpers_eval import TASK, inputs_to_generate, lmms_eval_as, task_results  # noqa: E402
from PIL import Image  # noqa: E402

from pfmvg_plugin.codecs import get_codec  # noqa: E402
from pfmvg_plugin.families import family_for_checkpoint, get_family  # noqa: E402
from pfmvg_plugin.families.qwen2vl import processor_frame  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

#: Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json (the same values as Qwen2-VL's).
PUBLISHED = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
}
SIZES = [(250, 300), (300, 250), (2544, 3056), (1024, 1024), (90, 700)]


def published_processor(**overrides):
    from transformers import Qwen2VLImageProcessor

    values = {**PUBLISHED, **overrides}
    size = {"shortest_edge": values.pop("min_pixels"), "longest_edge": values.pop("max_pixels")}
    return Qwen2VLImageProcessor(**values, size=size)


def bright_box_image(width: int, height: int) -> tuple[Image.Image, list[float]]:
    """A dark image with one bright, asymmetric rectangle away from the centre."""
    box = [0.15 * width, 0.70 * height, 0.55 * width, 0.95 * height] if height > width else \
        [0.70 * width, 0.10 * height, 0.95 * width, 0.55 * height]
    box = [float(round(v)) for v in box]
    pixels = np.full((height, width), 20, dtype=np.uint8)
    pixels[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = 250
    return Image.fromarray(pixels, mode="L").convert("RGB"), box


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return get_family("qwen25vl").build_tiny(tmp_path_factory.mktemp("qwen") / "tiny_qwen25vl")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("budget", ["published", "tiny"])
def test_the_codec_frame_is_the_processors_resized_input(size, budget):
    """The image grid Qwen's real processor makes (published config) is the input size the codec decodes against."""
    processor = published_processor(**({} if budget == "published" else {"max_pixels": 28 * 28 * 16}))
    image = Image.new("RGB", size)
    grid = processor(images=image, return_tensors="pt")["image_grid_thw"][0].tolist()
    codec = get_codec("qwen25vl", **processor_frame(processor))
    assert codec.input_size(size) == (grid[2] * 14, grid[1] * 14)


def test_checkpoint_is_recognised_and_its_frame_read_from_the_processor(qwen_dir):
    from transformers import AutoProcessor

    assert family_for_checkpoint(qwen_dir) == "qwen25vl"
    family = get_family("qwen25vl")
    family.attach(None, AutoProcessor.from_pretrained(qwen_dir))
    codec = family.codec("qwen25vl", family.image_transform())
    assert codec.options() == {"min_pixels": 3136, "max_pixels": 28 * 28 * 16, "factor": 28}
    with pytest.raises(ValueError, match="native"):
        family.image_transform("squash")


def test_training_example_puts_the_loss_on_the_answer_only(qwen_dir):
    from transformers import AutoProcessor

    family = get_family("qwen25vl")
    family.attach(None, AutoProcessor.from_pretrained(qwen_dir))
    image, _ = bright_box_image(250, 300)
    answer = '[{"bbox_2d": [10, 20, 30, 40]}]'
    ex = family.build_example(image, "Where is the finding?", answer)
    tok = family.processor.tokenizer
    assert tok.decode(ex["input_ids"][ex["labels"] != -100]) == answer + "<|im_end|>\n"
    n_image = int((ex["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_image == int(ex["image_grid_thw"][0].prod()) // 4 == ex["pixel_values"].shape[0] // 4
    prompt = tok.decode(ex["input_ids"][ex["labels"] == -100])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                             "<|vision_start|><|image_pad|>")
    assert prompt.endswith("Where is the finding?<|im_end|>\n<|im_start|>assistant\n")
    batch = family.collate([ex, family.build_example(bright_box_image(300, 250)[0], "Where?", answer)])
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())


def _record(qwen_dir, tmp_path):
    from transformers import AutoProcessor

    from pfmvg_plugin.training_record import TrainingRecord

    family = get_family("qwen25vl")
    family.attach(None, AutoProcessor.from_pretrained(qwen_dir))
    codec = family.codec("qwen25vl", family.image_transform())
    model_dir = tmp_path / "trained"
    import shutil

    shutil.copytree(qwen_dir, model_dir)
    TrainingRecord(convention="qwen25vl", box_codec=codec.name, box_codec_options=codec.options(),
                   backbone="qwen25vl", image_resize="native").write(model_dir)
    return model_dir, family, codec


@pytest.mark.parametrize("size", [(250, 300), (300, 250)], ids=["portrait", "landscape"])
def test_evaluation_feeds_the_pixels_training_fed_and_decodes_in_the_training_frame(qwen_dir, tmp_path, size):
    pytest.importorskip("lmms_eval")
    from pfmvg_plugin.lmms import state

    model_dir, family, codec = _record(qwen_dir, tmp_path)
    image, box = bright_box_image(*size)
    target = codec.encode([box], size)
    trained = family.build_example(image, "Where is it?", target)
    from pfmvg_plugin.lmms.llava_model import PfmvgLlava

    seen = inputs_to_generate(PfmvgLlava, model_dir, image)
    assert torch.equal(seen["image_grid_thw"], trained["image_grid_thw"])
    assert torch.equal(seen["pixel_values"], trained["pixel_values"])
    # the training target, answered back, lands on the same pixels within the codec's quantisation
    state.note_prompt_convention("qwen25vl", TASK)
    decoded = state.answer_codec(task=TASK).decode(target, size)
    ex, ey = codec.max_error(size)
    assert decoded.ok
    assert all(abs(a - b) <= e + 1e-6 for a, b, e in zip(decoded.boxes[0], box, (ex, ey, ex, ey)))
    # the released default budget would read the same answer in another frame: a miss
    from torchvision.ops import box_iou

    wrong = get_codec("qwen25vl").decode(target, size).boxes[0]
    assert float(box_iou(torch.tensor([wrong]), torch.tensor([box]))) < 0.5


# ---- black box through the real lmms-eval CLI ---------------------------------------------------------------------
PIXEL_READER = '''
"""pfmvg_llava whose generate reads the bright rectangle off the pixel_values it is handed and answers where it is,
in the family's own box language relative to THAT input, as the real model would."""
import sys

import numpy as np
import torch

from pfmvg_plugin.lmms.llava_model import PfmvgLlava
from pfmvg_plugin.lmms.minigptv2_model import PfmvgMiniGPTv2


def qwen_image(pixel_values, grid, merge=2, patch=14, temporal=2):
    """Undo Qwen2-VL's patch flattening: (patches, C*T*P*P) -> (H, W) mean over channels of frame 0."""
    t, h, w = (int(v) for v in grid)
    x = pixel_values.reshape(t, h // merge, w // merge, merge, merge, 3, temporal, patch, patch)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t, temporal, 3, h * patch, w * patch)
    return x[0, 0].mean(0).numpy()


def bright_box(image):
    ys, xs = np.nonzero(image > 1.0)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def generate(self, prompts, images, settings):
    if isinstance(self, PfmvgMiniGPTv2):  # MiniGPT-v2: {<x1><y1><x2><y2>}, 0-100 of its 448-squashed input
        answers = []
        for image in self.processor(prompts, images)["pixel_values"]:
            gray = image.mean(0).numpy()
            x1, y1, x2, y2 = bright_box(gray)
            h, w = gray.shape
            answers.append("{<%d><%d><%d><%d>}" % (100 * x1 / w, 100 * y1 / h, 100 * x2 / w, 100 * y2 / h))
        return answers
    inputs = self.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
    answers = []
    if "image_grid_thw" in inputs:
        start = 0
        for grid in inputs["image_grid_thw"]:
            n = int(grid.prod())
            x1, y1, x2, y2 = bright_box(qwen_image(inputs["pixel_values"][start:start + n], grid))
            start += n
            answers.append('```json\\n[{"bbox_2d": [%d, %d, %d, %d], "label": "finding"}]\\n```' % (x1, y1, x2, y2))
    else:
        for image in inputs["pixel_values"]:
            gray = image.mean(0).numpy()
            x1, y1, x2, y2 = bright_box(gray)
            h, w = gray.shape
            answers.append("[%.2f, %.2f, %.2f, %.2f]" % (x1 / w, y1 / h, x2 / w, y2 / h))
    return answers


PfmvgLlava._generate = generate
PfmvgMiniGPTv2._generate = generate
from lmms_eval.__main__ import cli_evaluate
sys.argv = ["lmms-eval", *sys.argv[1:]]
cli_evaluate()
'''

#: llava-hf/llava-1.5-7b-hf preprocessor_config.json (CLIP-336 centre crop), the side scaled to the tiny tower's 32.
LLAVA15_CLIP = {
    "do_resize": True, "size": {"shortest_edge": 32}, "resample": 3, "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32}, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}


def _bright_box_dataset(root: Path, sizes) -> None:
    from pfmvg_plugin.data.schema import grounding_record
    from pfmvg_plugin.data.store import write_dataset

    (root / "images").mkdir(parents=True)
    records = []
    for i, (w, h) in enumerate(sizes):
        image, box = bright_box_image(w, h)
        image.convert("L").save(root / "images" / f"{i}.png")
        records.append(grounding_record(record_id=f"b{i}", source="synthcxr", split="test", image=f"{i}.png",
                                        width=w, height=h, phrase="bright finding", boxes=[box], category="Mass",
                                        meta={}))
    write_dataset(root, "synthcxr", records, root / "images")


@pytest.fixture(scope="module")
def llava_crop_dir(tmp_path_factory):
    """A tiny LLaVA with LLaVA-1.5's released centre-crop processor (not trained by our recipe: no record)."""
    from transformers import AutoProcessor, CLIPImageProcessor

    from pfmvg_plugin.models.tiny_llava import build_tiny_llava

    ckpt = build_tiny_llava(tmp_path_factory.mktemp("crop") / "ckpt", image_size=32, patch_size=8,
                            vision_hidden_size=32, text_hidden_size=32, vocab_size=1024)
    processor = AutoProcessor.from_pretrained(ckpt)
    processor.image_processor = CLIPImageProcessor(**LLAVA15_CLIP)
    processor.save_pretrained(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def minigptv2_dir(tmp_path_factory):
    from pfmvg_plugin.models.minigptv2.tiny import build_tiny_minigptv2

    return build_tiny_minigptv2(tmp_path_factory.mktemp("minigptv2") / "ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "minigptv2", "qwen25vl"])
def test_a_model_reading_its_own_pixels_scores_perfectly_through_the_cli(family, qwen_dir, llava_crop_dir,
                                                                         minigptv2_dir, tmp_path):
    """Black box per family: the answer is where the box is in the pixels the model received, in its own format;
    the whole pipeline (family image function, prompt convention, frame-aware decoding) must give Acc@0.5 = 1.0 on
    portrait and landscape images. Before the families, pfmvg_llava handed the raw image to LLaVA-1.5's crop
    processor and decoded Qwen2.5-VL answers against the released pixel budget: both scored below 0.5."""
    pytest.importorskip("lmms_eval")
    model_dir = {"qwen25vl": qwen_dir, "llava": llava_crop_dir, "minigptv2": minigptv2_dir}[family]
    data_root = tmp_path / "data"
    _bright_box_dataset(data_root / "synthcxr", [(100, 150), (150, 100), (90, 160), (160, 120)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(data_root),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), "PFMVG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    model_name = "pfmvg_minigptv2" if family == "minigptv2" else "pfmvg_llava"
    out = subprocess.run([sys.executable, "-c", PIXEL_READER, "--model", model_name, "--model_args",
                          f"pretrained={model_dir}", "--tasks", "synthcxr_grounding", "--batch_size", "2",
                          "--output_path", str(tmp_path / "out"), "--log_samples"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    results = task_results(tmp_path / "out", "synthcxr_grounding", out)
    assert results["prompt_convention,none"] == {"qwen25vl": "qwen25vl", "llava": "llava",
                                                  "minigptv2": "minigptv2"}[family]
    assert results["n_scored,none"] == 4 and results["parse_failure_rate,none"] == 0.0
    assert results["acc@0.5,none"] == 1.0, results


# ---- the recipe: LoRA under ZeRO-2 on CPU, then the adapter through lmms-eval ----------------------------------
DS = Path(__file__).resolve().parents[1] / "recipes" / "ds"


@pytest.mark.slow
def test_lora_zero2_trains_like_bare_torch_and_the_adapter_scores_through_lmms_eval(qwen_dir, tmp_path):
    pytest.importorskip("deepspeed")
    from helpers_training import run
    from safetensors.torch import load_file

    from pfmvg_plugin.training.toy import toy_config, write_toy_grounding

    toy = write_toy_grounding(tmp_path / "toy", n=8)
    sections = {"model": {"backbone": "qwen25vl"}, "lora": {"dropout": 0.1}, "train": {"max_steps": 2}}
    bare = run(toy_config(qwen_dir, toy, tmp_path / "bare", **sections))
    res = run(toy_config(qwen_dir, toy, tmp_path / "zero2", deepspeed=str(DS / "zero2.json"), **sections))
    assert res.engine.kind == "deepspeed" and res.summary["zero_stage"] == 2
    assert res.losses == pytest.approx(bare.losses, abs=1e-4)

    weights = load_file(res.adapter_dir / "adapter_model.safetensors")
    lora = [k for k in weights if "lora_" in k]
    assert lora and all(".language_model." in k for k in lora)  # never the ViT's own q/v or MLP projections
    assert any(".visual.merger." in k for k in weights)  # the projector is trained and saved with the adapter
    assert not any(".visual.blocks." in k for k in weights)
    record = json.loads((res.adapter_dir / "pfmvg_training.json").read_text())
    assert record["backbone"] == "qwen25vl" and record["convention"] == "qwen25vl"
    assert record["image_resize"] == "native" and record["image_size"] is None
    assert record["box_codec"] == "qwen25vl"
    assert record["box_codec_options"] == {"min_pixels": 3136, "max_pixels": 28 * 28 * 16, "factor": 28}

    data_root = tmp_path / "data"
    _bright_box_dataset(data_root / "synthcxr", [(100, 150), (150, 100), (90, 160), (160, 120)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(data_root),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), "PFMVG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PFMVG_NO_TASK_HOOK", None)
    out = subprocess.run([str(Path(sys.executable).parent / "lmms-eval"), "--model", "pfmvg_llava", "--model_args",
                          f"pretrained={qwen_dir},adapter={res.adapter_dir}", "--tasks", "synthcxr_grounding",
                          "--batch_size", "2", "--output_path", str(tmp_path / "out"), "--log_samples"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    results = task_results(tmp_path / "out", "synthcxr_grounding", out)
    assert results["prompt_convention,none"] == "qwen25vl"
    assert results["n_scored,none"] == 4 and results["generation_error_rate,none"] == 0.0


# ---- lmms-eval's own qwen2_5_vl, scored in the frame its resize produces -------------------------------------------
QWEN_STAND_IN = '''
"""Stands in for lmms-eval's qwen2_5_vl (registered under that name): resizes each image exactly as the real class
does (qwen_vl_utils.fetch_image within its min/max pixels, the class's own defaults), finds the bright rectangle and
answers in Qwen2.5-VL's bbox_2d pixels of that resized input, as the real model would."""
import numpy as np
from qwen_vl_utils import fetch_image
from scripted_model import ScriptedModel


class QwenStandIn(ScriptedModel):
    def __init__(self, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **kwargs):
        super().__init__()
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)

    def generate_until(self, requests):
        answers = []
        for request in requests:
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            (image,) = doc_to_visual(self.task_dict[task][split][doc_id])
            seen = fetch_image({"image": image, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels})
            gray = np.asarray(seen.convert("L"), dtype=float)
            ys, xs = np.nonzero(gray > 128)
            answers.append('[{"bbox_2d": [%d, %d, %d, %d], "label": "finding"}]'
                           % (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        return answers
'''



def lmms_eval_qwen25_defaults() -> dict:
    """min/max pixels defaults of the installed lmms-eval's Qwen2_5_VL class, read from its source."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("lmms_eval")
    source = (Path(spec.origin).parent / "models" / "simple" / "qwen2_5_vl.py").read_text()
    init = next(node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    args = init.args.args[-len(init.args.defaults):]
    numbers = {a.arg: d for a, d in zip(args, init.args.defaults) if a.arg in ("min_pixels", "max_pixels")}
    # arithmetic of literals (256 * 28 * 28): evaluated with no names available
    return {k: eval(compile(ast.Expression(d), "<default>", "eval"), {"__builtins__": {}}) for k, d in numbers.items()}


def test_the_task_frame_for_lmms_evals_qwen2_5_vl_is_its_class_defaults():
    pytest.importorskip("lmms_eval")
    import yaml

    template = Path(__file__).resolve().parents[1] / "tasks" / "grounding" / "_default_template_grounding_yaml"
    text = "\n".join(line for line in template.read_text().splitlines() if "!function" not in line)
    kwargs = yaml.safe_load(text)["lmms_eval_specific_kwargs"]
    assert kwargs["qwen2_5_vl"] == {"convention": "qwen25vl", **lmms_eval_qwen25_defaults()}
    assert kwargs["qwen2_vl"] == {"convention": "qwen2vl"}


def test_model_args_on_the_command_line_override_the_task_frame():
    from pfmvg_plugin.lmms.task_data import codec_frame

    kwargs = {"convention": "qwen25vl", "min_pixels": 200704, "max_pixels": 1605632}
    argv = ["lmms-eval", "--model", "qwen2_5_vl", "--model_args", "pretrained=Qwen/x,max_pixels=40000"]
    assert codec_frame(kwargs, argv) == {"min_pixels": 200704, "max_pixels": 40000}
    assert codec_frame(kwargs, ["pytest"]) == {"min_pixels": 200704, "max_pixels": 1605632}
    assert codec_frame({"convention": "llava"}, argv) == {}  # a task kwarg without a frame gets none


@pytest.mark.slow
@pytest.mark.parametrize("model_args", [None, "min_pixels=3136,max_pixels=40000"], ids=["defaults", "max_pixels"])
def test_lmms_evals_qwen2_5_vl_is_decoded_in_the_frame_it_resized_to(tmp_path, model_args):
    """Black box: lmms-eval's qwen2_5_vl answers in pixels of the input it resized to (upscaled to its 200,704-pixel
    minimum here, or down to a 40,000-pixel budget): Acc@0.5 = 1.0 on portrait and landscape images. Read as pixels
    of the original image, as lmms-eval's own refcoco tasks do, the same answers miss."""
    pytest.importorskip("lmms_eval")
    pytest.importorskip("qwen_vl_utils")
    defaults = lmms_eval_qwen25_defaults()
    (tmp_path / "stand_in.py").write_text(QWEN_STAND_IN.replace("MIN_PIXELS", str(defaults["min_pixels"]))
                                          .replace("MAX_PIXELS", str(defaults["max_pixels"])))
    data_root = tmp_path / "data"
    _bright_box_dataset(data_root / "synthcxr", [(300, 400), (400, 300), (240, 420), (420, 320)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PFMVG_DATA_ROOT": str(data_root),
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "hf_cache"), "PFMVG_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join((str(tmp_path), str(Path(__file__).parent)))}
    args = ["--force_simple", "--tasks", "synthcxr_grounding", "--output_path", str(tmp_path / "out"),
            "--log_samples", *(["--model_args", model_args] if model_args else [])]
    out = lmms_eval_as("qwen2_5_vl", "stand_in.QwenStandIn", args, tmp_path, env)
    results = task_results(tmp_path / "out", "synthcxr_grounding", out)
    assert results["prompt_convention,none"] == "qwen25vl" and results["parse_failure_rate,none"] == 0.0
    assert results["acc@0.5,none"] == 1.0, results
    (samples,) = (tmp_path / "out").rglob("*_samples_synthcxr_grounding.jsonl")
    from pfmvg_plugin.lmms.grounding_task import SAMPLE_KEY

    records = [json.loads(line)[SAMPLE_KEY] for line in samples.read_text().splitlines()]
    from torchvision.ops import box_iou

    for record in records:  # the same answers read as pixels of the original image: out of range, or a miss
        as_original = get_codec("qwen25vl", min_pixels=1, max_pixels=10**9, factor=1).decode(
            record["answer"], (record["width"], record["height"])).boxes
        assert not as_original or float(
            box_iou(torch.tensor(as_original[:1]), torch.tensor(record["gt_boxes"])).max()) < 0.5


@pytest.mark.slow
def test_a_qwen_adapter_merges_into_the_same_model(qwen_dir, tmp_path):
    """``pfmvg merge`` on a Qwen2.5-VL adapter (LoRA + the trained merger): the merged checkpoint gives the logits of
    base + adapter, and keeps the frame in its training record."""
    from helpers_training import run
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from pfmvg_plugin.cli.main import main as pfmvg
    from pfmvg_plugin.training.toy import toy_config, write_toy_grounding

    toy = write_toy_grounding(tmp_path / "toy", n=8)
    res = run(toy_config(qwen_dir, toy, tmp_path / "run", model={"backbone": "qwen25vl"},
                         train={"max_steps": 3, "lr": 5e-2}))
    merged_dir = tmp_path / "merged"
    assert pfmvg(["merge", "--base", str(qwen_dir), "--adapter", str(res.adapter_dir), "--out", str(merged_dir)]) == 0
    family = get_family("qwen25vl")
    base, _ = family.load(str(qwen_dir), torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(res.adapter_dir)).eval()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    batch = family.collate([family.build_example(bright_box_image(*s)[0], "Where is it?", '[{"bbox_2d": [1, 2, 3, 4]}]')
                            for s in ((250, 300), (300, 250))])
    batch.pop("labels")
    with torch.no_grad():
        expected, got = with_adapter(**batch).logits, merged(**batch).logits
        plain = AutoModelForImageTextToText.from_pretrained(qwen_dir).eval()(**batch).logits
    assert float((expected - plain).abs().max()) > 1e-3  # the adapter changed the model
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    record = json.loads((merged_dir / "pfmvg_training.json").read_text())
    assert record["backbone"] == "qwen25vl" and record["box_codec_options"]["max_pixels"] == 28 * 28 * 16
    assert record["version"] == 3


@pytest.mark.slow
def test_a_pixel_budget_set_for_training_is_the_one_evaluation_uses(qwen_dir, tmp_path):
    """``model.processor: {max_pixels: ...}`` (what every Qwen fine-tune sets): the adapter carries the processor and
    the frame, and pfmvg_llava shows the image at the budget training used, not the base checkpoint's."""
    from helpers_training import run

    from pfmvg_plugin.lmms.llava_model import PfmvgLlava
    from pfmvg_plugin.training.config import ConfigError
    from pfmvg_plugin.training.toy import toy_config, write_toy_grounding

    toy = write_toy_grounding(tmp_path / "toy", n=4)
    budget = 28 * 28 * 4
    res = run(toy_config(qwen_dir, toy, tmp_path / "run", model={"backbone": "qwen25vl", "processor": {
        "max_pixels": budget}}, train={"max_steps": 1}))
    record = json.loads((res.adapter_dir / "pfmvg_training.json").read_text())
    assert record["box_codec_options"] == {"min_pixels": 3136, "max_pixels": budget, "factor": 28}
    image, _ = bright_box_image(250, 300)
    seen = inputs_to_generate(PfmvgLlava, qwen_dir, image, adapter=str(res.adapter_dir))
    from transformers import AutoProcessor

    family = get_family("qwen25vl")  # what the recipe fed: the family's encoder with the adapter's processor
    family.attach(None, AutoProcessor.from_pretrained(res.adapter_dir))
    expected = family.encode_image(image)
    assert seen["image_grid_thw"].tolist() == expected["image_grid_thw"].tolist()
    assert int(seen["image_grid_thw"].prod()) * 14 * 14 <= budget  # the training budget, not the base's 12,544
    assert torch.equal(seen["pixel_values"], expected["pixel_values"])
    with pytest.raises(ConfigError, match="model.processor"):
        run(toy_config(qwen_dir, toy, tmp_path / "bad", model={"backbone": "qwen25vl", "processor": {"fps": 2}},
                       train={"max_steps": 1}))
