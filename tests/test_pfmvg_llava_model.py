"""``pfmvg_llava`` (lmms-eval simple model) on the tiny checkpoint: order, batching, adapters, errors, safety, state."""

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

from pfmvg_plugin.families import family_for_checkpoint  # noqa: E402
from pfmvg_plugin.lmms import state  # noqa: E402
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER, error_answer  # noqa: E402
from pfmvg_plugin.lmms.llava_model import PfmvgLlava  # noqa: E402
from pfmvg_plugin.models.tiny_llava import build_tiny_llava  # noqa: E402
from pfmvg_plugin.prompts import build_prompt  # noqa: E402

TASK, SPLIT = "fake_grounding", "test"
PHRASES = [
    "cardiomegaly",
    "small right apical pneumothorax",
    "large left pleural effusion blunting the costophrenic angle",
    "nodule",
    "left lower zone atelectasis",
    "large lobulated mass in the upper zone of the right lung",
    "edema",
    "patchy airspace opacity in the left middle zone",
    "right pleural effusion",
    "consolidation in the left lower zone",
]
GEN = {"until": ["\n\n"], "max_new_tokens": 8, "do_sample": False}




@pytest.fixture(autouse=True)
def _fresh_state():
    state.reset()
    yield
    state.reset()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("pfmvg_llava") / "ckpt")


@pytest.fixture(scope="module")
def docs():
    rng = np.random.default_rng(0)
    out = []
    for i, phrase in enumerate(PHRASES):
        image = Image.fromarray((rng.random((96 + 16 * i, 128)) * 255).astype("uint8"), mode="L")
        out.append({"id": f"doc{i}", "phrase": phrase, "image": image})
    return out


def doc_to_visual(doc):
    return [doc["image"]]


def context(doc, i):
    # mixed lengths: the bare phrase, or a full LLaVA grounding prompt
    return build_prompt("refer", "llava", phrase=doc["phrase"]) if i % 2 else doc["phrase"]


def make_requests(docs, gen=GEN, visual=doc_to_visual, ids=None):
    ids = range(len(docs)) if ids is None else ids
    return [
        Instance(
            request_type="generate_until",
            arguments=(context(docs[i], i), dict(gen), visual, i, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": i, "repeats": 1},
        )
        for i in ids
    ]


def make_model(tiny_dir, docs, **kwargs):
    model = PfmvgLlava(pretrained=str(tiny_dir), **kwargs)
    model.task_dict = {TASK: {SPLIT: docs}}
    return model


def reference_answers(hf_model, processor, prompt_fn, docs, max_new_tokens=8, image_fn=None):
    """One-at-a-time greedy answers straight from ``generate``: the oracle for every path of the model class.
    ``image_fn``: the family's image function (the model class shows every image through it)."""
    answers = []
    for i, doc in enumerate(docs):
        image = image_fn(doc["image"].convert("RGB")) if image_fn else doc["image"]
        enc = processor(text=prompt_fn(context(doc, i), 1), images=[image], return_tensors="pt")
        with torch.inference_mode():
            out = hf_model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return answers


@pytest.fixture(scope="module")
def base_answers(tiny_dir, docs):
    model = make_model(tiny_dir, docs)
    assert model.image_fn is not None and model.image_fn.mode == "squash"  # the llava family's image function
    return reference_answers(model.model, model.processor, model.build_prompt, docs, image_fn=model.image_fn)


def test_instance_layout_matches_lmms_eval():
    """Guard the request layout we unpack: (ctx, gen_kwargs, doc_to_visual, doc_id, task, split)."""
    import importlib.util
    from pathlib import Path

    source = (Path(importlib.util.find_spec("lmms_eval").origin).parent / "api" / "task.py").read_text()
    branch = source[source.index('elif self.OUTPUT_TYPE == "generate_until":'):]
    assert branch.splitlines()[1].strip() == (
        "arguments = (ctx, copy.deepcopy(self.config.generation_kwargs), self.doc_to_visual, doc_id, "
        "self.config.task, split)"
    )


def test_answers_in_original_order_batched_equals_single(tiny_dir, docs, base_answers):
    assert len(set(base_answers)) >= len(docs) - 1  # the tiny model answers differently for different inputs
    one = make_model(tiny_dir, docs, batch_size=1).generate_until(make_requests(docs))
    four = make_model(tiny_dir, docs, batch_size="4").generate_until(make_requests(docs))
    assert one == base_answers
    assert four == base_answers
    # a shuffled request list comes back in its own order
    order = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]
    shuffled = make_model(tiny_dir, docs, batch_size=3).generate_until(make_requests(docs, ids=order))
    assert shuffled == [base_answers[i] for i in order]


def test_until_truncates_and_gen_kwargs_are_grouped(tiny_dir, docs, base_answers):
    model = make_model(tiny_dir, docs, batch_size=4)
    i = next(k for k, a in enumerate(base_answers) if len(a.strip()) >= 4)
    stop = base_answers[i].strip()[2:4]
    cut = base_answers[i][: base_answers[i].find(stop)]
    requests = make_requests(docs)
    requests[i].arguments[1]["until"] = [stop, "\n\n"]
    requests[0].arguments[1]["max_new_tokens"] = 2
    answers = model.generate_until(requests)
    assert answers[i] == cut
    assert len(model.tokenizer(answers[0], add_special_tokens=False)["input_ids"]) <= 3
    others = [k for k in range(len(docs)) if k not in (0, i)]
    assert [answers[k] for k in others] == [base_answers[k] for k in others]


def test_sampling_and_beam_kwargs_are_honoured(tiny_dir, docs, base_answers):
    model = make_model(tiny_dir, docs, batch_size=2)
    beams = model.generate_until(make_requests(docs[:4], gen={**GEN, "num_beams": 2}))
    assert all(not a.startswith(GENERATION_ERROR_MARKER) for a in beams)
    torch.manual_seed(0)
    sampled = model.generate_until(make_requests(docs, gen={**GEN, "do_sample": True, "temperature": 5.0}))
    assert sampled != base_answers  # temperature 5 on a random model: greedy answers are not reproduced
    greedy = model.generate_until(make_requests(docs, gen={**GEN, "temperature": 0, "top_p": 0.9}))
    assert greedy == base_answers  # temperature 0 means greedy, top_p then ignored


def test_zero_and_several_images(tiny_dir, docs):
    model = make_model(tiny_dir, docs, batch_size=4)
    none = model.generate_until(make_requests(docs[:3], visual=lambda doc: None))
    empty = model.generate_until(make_requests(docs[:3], visual=lambda doc: []))
    assert none == empty and all(not a.startswith(GENERATION_ERROR_MARKER) for a in none)
    two = model.generate_until(make_requests(docs[:4], visual=lambda doc: [doc["image"], [doc["image"]]]))
    assert all(not a.startswith(GENERATION_ERROR_MARKER) for a in two)
    assert model.build_prompt("Where?", 2) == "USER: <image>\n<image>\nWhere? ASSISTANT:"
    assert model.build_prompt("<image>\nWhere?", 1) == "USER: <image>\nWhere? ASSISTANT:"  # placed by the task
    assert model.generation_errors == 0


def test_prompt_falls_back_to_tokenizer_template_then_llava15(tiny_dir):
    model = PfmvgLlava(pretrained=str(tiny_dir))
    expected = "USER: <image>\nWhere? ASSISTANT:"
    assert model.build_prompt("Where?", 1) == expected  # the processor's template
    model.processor.chat_template = None
    assert model.build_prompt("Where?", 1) == expected  # the tokenizer's
    model.tokenizer.chat_template = None
    assert model.build_prompt("Where?", 1) == expected  # none: LLaVA-1.5's format
    assert model.build_prompt("Where?", 0) == "USER: Where? ASSISTANT:"


def test_generation_error_marks_only_the_failing_sample(tiny_dir, docs, base_answers, monkeypatch):
    model = make_model(tiny_dir, docs, batch_size=4)
    real_generate = model.model.generate
    calls = []

    def flaky_generate(**inputs):
        calls.append(inputs["input_ids"].shape[0])
        texts = model.tokenizer.batch_decode(inputs["input_ids"])
        if any(f"describes: {PHRASES[3]}." in t for t in texts):  # only doc 3's prompt
            raise RuntimeError("boom\non two lines")
        return real_generate(**inputs)

    monkeypatch.setattr(model.model, "generate", flaky_generate)
    answers = model.generate_until(make_requests(docs))
    assert answers[3] == f"{GENERATION_ERROR_MARKER} RuntimeError: boom on two lines" == error_answer(
        RuntimeError("boom\non two lines")
    )
    assert [a for k, a in enumerate(answers) if k != 3] == [a for k, a in enumerate(base_answers) if k != 3]
    assert model.generation_errors == 1
    assert 1 in calls and max(calls) == 4  # the failing batch was retried sample by sample
    model.generate_until(make_requests(docs, ids=[3]))
    assert model.generation_errors == 2


def test_bad_inputs_become_markers_not_empty_answers(tiny_dir, docs):
    model = make_model(tiny_dir, docs, batch_size=4)

    def broken_visual(doc):
        if doc["id"] == "doc1":
            raise OSError("image file is truncated")
        return [doc["image"]]

    answers = model.generate_until(make_requests(docs[:4], visual=broken_visual))
    assert answers[1] == f"{GENERATION_ERROR_MARKER} OSError: image file is truncated"
    assert all(not a.startswith(GENERATION_ERROR_MARKER) for k, a in enumerate(answers) if k != 1)
    bad_until = model.generate_until(make_requests(docs[:2], gen={"until": 5}))
    assert all(a.startswith(f"{GENERATION_ERROR_MARKER} ValueError") for a in bad_until)
    assert model.generation_errors == 3


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir, tmp_path_factory):
    """A LoRA adapter on the language model's q_proj/v_proj only, with random (non-zero) B so it changes answers."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", lora_dropout=0.0
    )
    model = peft.get_peft_model(base, config)
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.Module)]
    # never the vision tower (a plain q_proj/v_proj target would also wrap its attention)
    assert wrapped and all("language_model" in n for n in wrapped), wrapped
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(out)
    assert (out / "adapter_model.safetensors").exists()
    return out


@pytest.mark.parametrize("merge", [False, True])
def test_adapter_reproduces_peft_model(tiny_dir, docs, base_answers, adapter_dir, merge):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    peft_model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_dir), adapter_dir).eval()
    ours = make_model(tiny_dir, docs, adapter=str(adapter_dir), merge_adapter=str(merge).lower(), batch_size=4)
    assert isinstance(ours.model, PeftModel) != merge
    expected = reference_answers(peft_model, ours.processor, ours.build_prompt, docs, image_fn=ours.image_fn)
    assert ours.generate_until(make_requests(docs)) == expected
    assert expected != base_answers


def test_use_safetensors_refuses_pickle_checkpoint(tiny_dir, docs, tmp_path):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"only pickle weights \(pytorch_model.bin\).*use_safetensors=false"):
        PfmvgLlava(pretrained=str(pickled))
    trusted = make_model(pickled, docs, use_safetensors="false")  # an explicit opt-in loads it
    assert trusted.generate_until(make_requests(docs[:2]))[0]


def test_use_safetensors_refuses_pickle_adapter(tiny_dir, adapter_dir, tmp_path):
    from safetensors.torch import load_file

    pickled = tmp_path / "adapter"
    shutil.copytree(adapter_dir, pickled)
    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match="adapter .* only pickle weights"):
        PfmvgLlava(pretrained=str(tiny_dir), adapter=str(pickled))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, "llava"), ({"box_format": "minigptv2"}, "minigptv2"), ({"convention": "qwen2vl"}, "qwen2vl")],
)
def test_box_format_sets_the_model_convention(tiny_dir, kwargs, expected):
    model = PfmvgLlava(pretrained=str(tiny_dir), **kwargs)
    assert model.convention == expected
    assert state.model_convention() == expected
    assert state.resolve_convention({"convention": state.FROM_MODEL}) == expected


@pytest.mark.parametrize(("model_type", "expected"),
                         [("qwen2_vl", "qwen2vl"), ("qwen2_5_vl", "qwen25vl"), ("llava", "llava"),
                          ("pfmvg_minigptv2", "minigptv2"), ("gpt2", None), (None, None)])
def test_checkpoints_are_recognised_by_their_family(tmp_path, model_type, expected):
    if model_type:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert family_for_checkpoint(tmp_path) == expected
    assert family_for_checkpoint("Qwen/Qwen2-VL-2B-Instruct") is None  # a hub id: nothing local to read


def test_argument_errors_are_clear(tiny_dir):
    with pytest.raises(ValueError, match="unknown box_format 'yolo'"):
        PfmvgLlava(pretrained=str(tiny_dir), box_format="yolo")
    with pytest.raises(ValueError, match="disagree"):
        PfmvgLlava(pretrained=str(tiny_dir), box_format="llava", convention="minigptv2")
    with pytest.raises(TypeError, match=r"unknown model_args \['adpater'\]"):
        PfmvgLlava(pretrained=str(tiny_dir), adpater="x")
    with pytest.raises(ValueError, match="batch_size='auto' is not an integer"):
        PfmvgLlava(pretrained=str(tiny_dir), batch_size="auto")
    with pytest.raises(ValueError, match="dtype"):
        PfmvgLlava(pretrained=str(tiny_dir), dtype="float8")
    with pytest.raises(ValueError, match="merge_adapter"):
        PfmvgLlava(pretrained=str(tiny_dir), merge_adapter="maybe")


def test_built_like_the_cli_does(tiny_dir):
    """lmms-eval: ``create_from_arg_string(model_args, {batch_size: str, max_batch_size, device})``."""
    model = PfmvgLlava.create_from_arg_string(
        f"pretrained={tiny_dir},box_format=minigptv2,merge_adapter=False,max_new_tokens=16,dtype=float32",
        {"batch_size": "8", "max_batch_size": None, "device": "cpu"},
    )
    assert (model.batch_size, model.max_new_tokens, model.rank, model.world_size) == (8, 16, 0, 1)
    assert model.device == torch.device("cpu") and model.model.dtype == torch.float32
    assert model.is_simple and state.model_convention() == "minigptv2"
    assert hasattr(model, "accelerator")  # the evaluator gathers through it under `accelerate launch`
    with pytest.raises(NotImplementedError, match="generate_until tasks only"):
        model.loglikelihood([])
    with pytest.raises(NotImplementedError):
        model.generate_until_multi_round([])
    assert model.generate_until([]) == []


_DP_TASK_YAML = """\
task: pfmvg_dp_probe
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 6
  until: ["\\n\\n"]
process_results: !function utils.process_results
metric_list:
  - metric: answered
    aggregation: mean
    higher_is_better: true
"""
_DP_UTILS = """\
import numpy as np
from PIL import Image


def doc_to_visual(doc):
    rng = np.random.default_rng(doc["idx"])
    return [Image.fromarray((rng.random((64, 80)) * 255).astype("uint8"), mode="L")]


def doc_to_text(doc):
    return f"Where is {doc['phrase']}?"


def process_results(doc, results):
    return {"answered": float(bool(results[0]))}
"""
_DP_RUNNER = """\
import datetime, json, sys
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

# as lmms-eval's CLI does before it builds the model (lmms_eval/__main__.py)
Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=600))])
from lmms_eval import evaluator
from lmms_eval.tasks import TaskManager
from pfmvg_plugin.lmms.llava_model import PfmvgLlava

ckpt, tasks_dir, out = sys.argv[1:4]
lm = PfmvgLlava(pretrained=ckpt, batch_size=2)
results = evaluator.simple_evaluate(
    model=lm, tasks=["pfmvg_dp_probe"], task_manager=TaskManager(include_path=tasks_dir, include_defaults=False),
    log_samples=True,
)
if lm.rank == 0:
    samples = results["samples"]["pfmvg_dp_probe"]
    answers = {s["doc_id"]: s["resps"][0][0] if "resps" in s else s["filtered_resps"][0] for s in samples}
    with open(out, "w") as f:
        json.dump({"world_size": lm.world_size, "answers": answers}, f)
"""


@pytest.mark.slow
def test_data_parallel_under_accelerate_launch_on_cpu(tiny_dir, tmp_path):
    """Two CPU processes (`accelerate launch`, gloo) through lmms-eval's evaluator: sharded, gathered, same answers."""
    import importlib.util
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate CLI not installed")
    task_dir = tmp_path / "tasks" / "pfmvg_dp_probe"
    task_dir.mkdir(parents=True)
    phrases = PHRASES[:7]  # 7 documents: uneven shards (4 + 3), so lmms-eval pads rank 1
    data = task_dir / "data.jsonl"
    data.write_text("".join(json.dumps({"idx": i, "phrase": p, "answer": "x"}) + "\n" for i, p in enumerate(phrases)))
    (task_dir / "pfmvg_dp_probe.yaml").write_text(_DP_TASK_YAML.format(data=data))
    (task_dir / "utils.py").write_text(_DP_UTILS)
    runner = tmp_path / "runner.py"
    runner.write_text(_DP_RUNNER)
    out = tmp_path / "answers.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PFMVG_NO_PROGRESS": "1"}
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           str(runner), str(tiny_dir), str(tmp_path / "tasks"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world_size"] == 2

    spec = importlib.util.spec_from_file_location("dp_utils", task_dir / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    docs = [{"idx": i, "phrase": p} for i, p in enumerate(phrases)]
    model = PfmvgLlava(pretrained=str(tiny_dir), batch_size=1)
    model.task_dict = {"p": {"test": docs}}
    requests = [
        Instance("generate_until", (utils.doc_to_text(d), {"max_new_tokens": 6, "until": ["\n\n"]},
                                    utils.doc_to_visual, i, "p", "test"),
                 idx=0, metadata={"task": "p", "doc_id": i, "repeats": 1})
        for i, d in enumerate(docs)
    ]
    expected = model.generate_until(requests)
    assert {int(k): v for k, v in got["answers"].items()} == dict(enumerate(expected))


@pytest.mark.parametrize(
    ("meta", "box_format", "convention", "codec", "resize"),
    [
        ({"convention": "minigptv2", "box_codec": "minigptv2", "image_resize": "squash"}, None, "minigptv2",
         "minigptv2", "squash"),
        ({"convention": "llava", "box_codec": "llava_pad", "image_resize": "pad"}, None, "llava", "llava_pad", "pad"),
        # an explicit box_format wins; the trained codec then no longer applies
        ({"convention": "llava", "box_codec": "llava_pad", "image_resize": "pad"}, "minigptv2", "minigptv2",
         "minigptv2", "pad"),
    ],
)
def test_adapter_training_meta_sets_format_and_resize(tiny_dir, docs, adapter_dir, tmp_path, meta, box_format,
                                                      convention, codec, resize):
    """An adapter from our recipe says how it was trained; evaluation prompts, decodes and resizes the same way."""
    import json
    import shutil

    from pfmvg_plugin.codecs import NormalizedCodec

    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter)
    (adapter / "pfmvg_training.json").write_text(json.dumps(meta))
    kwargs = {"box_format": box_format} if box_format else {}
    model = make_model(tiny_dir, docs, adapter=str(adapter), **kwargs)
    assert model.convention == convention and model.image_resize == resize
    state.note_prompt_convention(convention)
    got = state.answer_codec()
    assert got.name == codec.split("_")[0] and getattr(got, "pad_to_square", False) == codec.endswith("_pad")
    if codec == "llava_pad":
        assert isinstance(got, NormalizedCodec)
