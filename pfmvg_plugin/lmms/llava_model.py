"""``pfmvg_llava``: an lmms-eval *simple* model for LLaVA-family checkpoints, with PEFT adapters and batched decoding.

::

    lmms-eval --model pfmvg_llava --model_args pretrained=DIR[,adapter=ADAPTER_DIR][,box_format=llava] \\
        --tasks mscxr_grounding --batch_size 8
    accelerate launch --num_processes 2 -m lmms_eval --model pfmvg_llava ...   # data parallel

What it adds over lmms-eval's built-in ``llava_hf``:

- ``adapter=DIR`` loads a PEFT (LoRA) adapter on top of ``pretrained``; ``merge_adapter=true`` merges it into the
  weights (faster decoding, same answers up to float rounding);
- batched generation (``batch_size`` > 1): requests are grouped by generation settings, sorted by prompt length
  (longest first, so little padding and any out-of-memory shows at once), left-padded, and the answers are returned
  in the original order;
- ``until`` is honoured (answers are cut at the first stop string; ``llava_hf`` ignores it);
- a failed generation is never an empty answer: the batch is retried one sample at a time and a sample that still
  fails answers ``<<pfmvg:generation_error>> <ExceptionType>: <message>`` (counted by our tasks, logged, and
  totalled at the end);
- ``box_format`` (alias ``convention``) tells our tasks which prompt convention and box codec this model speaks
  (:func:`pfmvg_plugin.lmms.state.set_model_convention`);
- weights are loaded from safetensors only unless ``use_safetensors=false`` (pickle files can run code on load);
- the checkpoint's model family (:mod:`pfmvg_plugin.families`, from the training record or ``config.json``) decides
  the image function, exactly the one training uses: squashed or padded to the processor's final input (so a
  centre-cropping processor such as LLaVA-1.5's CLIP-336 cannot cut the box off), or, for Qwen2-VL / Qwen2.5-VL, the
  processor's own dynamic resolution; and the box frame answers are decoded in (Qwen2.5-VL: pixels of this
  processor's ``smart_resize``-d input).

Request layout (lmms-eval 0.7.3, ``api/task.py`` ``construct_requests`` for ``output_type: generate_until``):
``Instance.args == (ctx, gen_kwargs, doc_to_visual, doc_id, task, split)``; the document is
``self.task_dict[task][split][doc_id]`` and its images are ``doc_to_visual(doc)``.

Ranks: lmms-eval shards the documents itself (``task.build_all_requests(rank=RANK, world_size=WORLD_SIZE)``) and
gathers the results; the model only has to sit on its own device and expose ``rank``, ``world_size``, ``device``
and an ``accelerator`` (the evaluator uses ``accelerator.gather`` / ``wait_for_everyone`` between phases).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm.auto import tqdm

from pfmvg_plugin.families import family_for_checkpoint, family_for_model_type, get_family
from pfmvg_plugin.families.base import processor_dir
from pfmvg_plugin.lmms import state
from pfmvg_plugin.lmms.answers import GENERATION_ERROR_MARKER, error_answer
from pfmvg_plugin.prompts import CONVENTIONS
from pfmvg_plugin.training.checkpoint import pickle_only_weights
from pfmvg_plugin.training_record import read_training_meta

IMAGE_TOKEN = "<image>"
#: Generation settings passed through from a task's ``generation_kwargs`` (others are ignored, as lmms-eval's own
#: models do, since tasks carry keys meant for other backends).
GEN_KEYS = (
    "max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "use_cache",
)
_SAMPLING_ONLY = ("temperature", "top_p", "top_k")
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def _as_bool(value: Any, name: str, model_id: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError(f"{model_id}: {name}={value!r} is not a boolean (use true/false)")


def _as_int(value: Any, name: str, model_id: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{model_id}: {name}={value!r} is not an integer") from None
    if number < 1:
        raise ValueError(f"{model_id}: {name} must be at least 1, got {number}")
    return number


def check_safetensors(path: str | Path, what: str, weight_names: Sequence[str] = (),
                      model_id: str = "pfmvg_llava") -> None:
    """Refuse a local checkpoint directory whose weights exist only as pickle files.

    ``torch.load`` of a pickle can execute code; safetensors cannot. Remote ids are left to ``transformers`` (which is
    also told ``use_safetensors=True``).
    """
    pickles = pickle_only_weights(path, tuple(weight_names))
    if pickles:
        raise ValueError(
            f"{model_id}: the {what} at {path} has only pickle weights ({', '.join(pickles)}), which can run "
            "arbitrary code when loaded. Convert them to safetensors (e.g. `model.save_pretrained(dir, "
            "safe_serialization=True)`), or pass use_safetensors=false in --model_args if you trust the files."
        )


def _to_images(visuals: Any, model_id: str) -> list:
    """Flatten what ``doc_to_visual`` returned into a list of PIL images (``None`` and ``[]`` mean no image)."""
    from PIL import Image

    out: list = []

    def add(v: Any) -> None:
        if v is None:
            return
        if isinstance(v, Image.Image):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            for item in v:
                add(item)
        elif isinstance(v, dict) and ("bytes" in v or "path" in v):  # an undecoded datasets Image feature
            if v.get("bytes"):
                import io

                out.append(Image.open(io.BytesIO(v["bytes"])))
            else:
                add(v.get("path"))
        elif isinstance(v, (str, os.PathLike)):
            if str(v).lower().endswith(_VIDEO_SUFFIXES):
                raise ValueError(f"video input is not supported by {model_id}: {v}")
            out.append(Image.open(v))
        elif hasattr(v, "__array__"):
            import numpy as np

            out.append(Image.fromarray(np.asarray(v)))
        else:
            raise TypeError(f"unsupported visual of type {type(v).__name__}")

    add(visuals)
    return out


class PfmvgLlava(lmms):
    """LLaVA-family checkpoint (+ optional PEFT adapter) as an lmms-eval simple model.

    Model args (``--model_args k=v,...``):
        pretrained: local checkpoint directory (or a Hub id already in the local cache; no download is attempted
            when ``HF_HUB_OFFLINE=1``).
        adapter: PEFT adapter directory (optional).
        merge_adapter: merge the adapter into the weights (``merge_and_unload``) instead of keeping a ``PeftModel``.
        box_format / convention: the prompt convention of :mod:`pfmvg_plugin.prompts` the model was trained with
            (default: the adapter's training metadata, else ``qwen2vl`` / ``qwen25vl`` for those checkpoints, else
            ``llava``; also ``minigptv2``, ``api``). Tasks whose kwargs say
            ``convention: model`` prompt and score in it.
        dtype: ``auto`` (the checkpoint's dtype on GPU, float32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        device: ``auto`` (GPU if there is one), ``cpu``, ``cuda`` or ``cuda:N``. Under ``accelerate launch`` each
            process uses its own GPU (or the CPU).
        attn_implementation: passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).
        batch_size: samples per ``generate`` call (the CLI ``--batch_size`` arrives here, as int or str).
        max_new_tokens: default when a task's ``generation_kwargs`` set none.
        trust_remote_code: passed to ``from_pretrained`` only when true.
        use_safetensors: load weights from safetensors only (default); pickle-only checkpoints are refused.
    """

    is_simple = True
    #: The ``--model`` name this class is registered under (:data:`pfmvg_plugin.lmms.hook.MODEL_CLASSES`); every
    #: message, error and progress bar of the shared code starts with it.
    model_id: str = "pfmvg_llava"

    def __init__(
        self,
        pretrained: str,
        adapter: str | None = None,
        merge_adapter: bool | str = False,
        box_format: str | None = None,
        convention: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = 128,
        trust_remote_code: bool | str = False,
        use_safetensors: bool | str = True,
        max_batch_size: int | str | None = None,  # lmms-eval passes it; batches here have a fixed size
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(
                f"{self.model_id}: unknown model_args {sorted(kwargs)}; accepted: pretrained, adapter, merge_adapter, "
                "box_format (or convention), dtype, device, attn_implementation, batch_size, max_new_tokens, "
                "trust_remote_code, use_safetensors"
            )
        if not pretrained:
            raise ValueError(f"{self.model_id}: pretrained=DIR is required")
        if box_format and convention and box_format != convention:
            raise ValueError(f"{self.model_id}: box_format={box_format!r} and convention={convention!r} disagree")
        # Our recipe's adapters, full fine-tunes and merged models say how they were trained; other checkpoints are
        # recognised by their config.json model_type.
        trained = read_training_meta(adapter, self.model_id) or read_training_meta(pretrained, self.model_id)
        self._trained = trained
        family_name = trained.get("backbone") or family_for_checkpoint(pretrained)
        self.family = get_family(family_name) if family_name else None  # a hub id: known once the model is loaded
        explicit = box_format or convention or trained.get("convention")
        if explicit and explicit not in CONVENTIONS:
            raise ValueError(
                f"{self.model_id}: unknown box_format {explicit!r}; choose one of {', '.join(CONVENTIONS)}"
            )
        self._explicit_convention = explicit
        self.convention = str(explicit or (self.family.prompt_convention if self.family else state.DEFAULT_CONVENTION))
        # How training showed the images (None: the family's default), and so the frame of the answers.
        self.image_resize = trained.get("image_resize")
        self.image_fn = None  # the family's image function, set in _load once the processor is known
        state.set_model_convention(self.convention)

        self.pretrained = str(pretrained)
        self.adapter = str(adapter) if adapter else None
        self.merge_adapter = _as_bool(merge_adapter, "merge_adapter", self.model_id)
        self.batch_size_per_gpu = _as_int(batch_size, "batch_size", self.model_id)
        self.max_new_tokens = _as_int(max_new_tokens, "max_new_tokens", self.model_id)
        self.trust_remote_code = _as_bool(trust_remote_code, "trust_remote_code", self.model_id)
        self.use_safetensors = _as_bool(use_safetensors, "use_safetensors", self.model_id)
        self.generation_errors = 0
        self._setup_parallel(str(device))
        self._load(str(dtype), attn_implementation)

    # ---- setup -------------------------------------------------------------------------------------------------
    def _setup_parallel(self, device: str) -> None:
        """Rank, world size, device and accelerator; several processes come from ``accelerate launch``/``torchrun``."""
        want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise ValueError(f"{self.model_id}: device={device!r} but no CUDA device is available")
        accelerator = None
        try:
            from accelerate import Accelerator
        except ImportError:  # accelerate is a dependency of lmms-eval; without it we run single-process
            Accelerator = None
        if Accelerator is not None:
            try:  # the accelerate state is a process-wide singleton: lmms-eval's CLI has usually created it already
                accelerator = Accelerator(cpu=not want_cuda)
            except ValueError:  # created for a GPU while this model was asked to run on the CPU: reuse it
                accelerator = Accelerator()
        num_processes = accelerator.num_processes if accelerator is not None else 1
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if launched > 1 and num_processes != launched:
            raise RuntimeError(
                f"{self.model_id}: launched as {launched} processes (WORLD_SIZE) but accelerate sees {num_processes}. "
                "On CPU-only machines set ACCELERATE_USE_CPU=1 before launching, e.g. `ACCELERATE_USE_CPU=1 "
                f"accelerate launch --multi_gpu --num_processes 2 -m lmms_eval --model {self.model_id} ...`, so that "
                "lmms-eval's own Accelerator joins the gloo process group."
            )
        if num_processes > 1:
            self._device = torch.device(f"cuda:{accelerator.local_process_index}" if want_cuda else "cpu")
            self._rank = accelerator.process_index
            self._world_size = num_processes
        else:
            self._device = torch.device(("cuda" if device == "auto" else device) if want_cuda else "cpu")
            self._rank, self._world_size = 0, 1
        if accelerator is not None:
            self.accelerator = accelerator
        if num_processes > 1 and self._rank == 0:
            logger.info(f"{self.model_id}: data parallel over {num_processes} processes")

    def _load(self, dtype: str, attn_implementation: str | None) -> None:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if dtype == "auto":
            torch_dtype: Any = "auto" if self._device.type == "cuda" else torch.float32
        elif dtype in _DTYPES:
            torch_dtype = _DTYPES[dtype]
        else:
            raise ValueError(f"{self.model_id}: dtype={dtype!r}; choose auto, float32, bfloat16 or float16")
        if self.use_safetensors:
            check_safetensors(self.pretrained, "checkpoint", ("model", "pytorch_model"), self.model_id)
            if self.adapter:
                check_safetensors(self.adapter, "adapter", ("adapter_model",), self.model_id)
        extra: dict[str, Any] = {"trust_remote_code": True} if self.trust_remote_code else {}
        load_kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": self.use_safetensors, **extra}
        if attn_implementation:
            load_kwargs["attn_implementation"] = str(attn_implementation)
        if self._device.type == "cuda":  # load straight onto the GPU instead of staging the weights in host memory
            load_kwargs["device_map"] = str(self._device)

        try:
            model = AutoModelForImageTextToText.from_pretrained(self.pretrained, **load_kwargs)
        except ValueError as auto_error:  # a config the auto class does not map: use the LLaVA class for its type
            model_type = getattr(AutoConfig.from_pretrained(self.pretrained, **extra), "model_type", None)
            model_class = _llava_classes().get(model_type)
            if model_class is None:
                raise ValueError(
                    f"{self.model_id}: cannot load {self.pretrained} (model_type {model_type!r}): {auto_error}"
                ) from auto_error
            model = model_class.from_pretrained(self.pretrained, **load_kwargs)

        if self.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter, is_trainable=False)
            if self.merge_adapter:
                model = model.merge_and_unload()
        self._model = model.to(self._device).eval()
        self._config = getattr(model, "config", None)

        # the processor training used: saved with our recipe's adapters (with its model.processor settings)
        self.processor = AutoProcessor.from_pretrained(processor_dir(self.adapter, self.pretrained), **extra)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        image_token = getattr(self.processor, "image_token", None)
        self.image_token = image_token if isinstance(image_token, str) else IMAGE_TOKEN
        self._set_frame()
        logger.info(
            f"{self.model_id}: {self.pretrained}" + (f" + adapter {self.adapter}" if self.adapter else "")
            + (" (merged)" if self.adapter and self.merge_adapter else "")
            + f" on {self._device}, dtype {self.model.dtype}, batch {self.batch_size_per_gpu}, "
            f"box_format {self.convention}"
        )

    def _set_frame(self) -> None:
        """The family's image function and the codec (with its frame) answers are decoded with."""
        trained = self._trained
        if self.family is None:
            family_name = family_for_model_type(getattr(self._config, "model_type", None))
            self.family = get_family(family_name) if family_name else None
            if self.family is not None and not self._explicit_convention:
                self.convention = self.family.prompt_convention
        codec, options = None, None
        if trained.get("convention") == self.convention and trained.get("box_codec"):
            codec, options = trained["box_codec"], trained.get("box_codec_options")
        if self.family is not None:
            self.family.attach(None, self.processor)
            transform = self.family.image_transform(self.image_resize)
            self.image_resize = transform.mode
            if transform.mode != "native":
                self.image_fn = transform
            if codec is None:
                try:
                    family_codec = self.family.codec(self.convention, transform)
                except ValueError:  # a box_format the training frame cannot express: the format's own codec
                    family_codec = None
                if family_codec is not None:
                    codec = "llava_pad" if getattr(family_codec, "pad_to_square", False) else family_codec.name
                    options = family_codec.options()
        state.set_model_convention(self.convention, codec, options)

    # ---- what lmms-eval reads ----------------------------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def config(self):
        return self._config

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    # ---- prompts -----------------------------------------------------------------------------------------------
    def build_prompt(self, context: str, n_images: int) -> str:
        """The chat-formatted prompt for a task's instruction ``context`` and ``n_images`` images.

        Images go first as placeholders, unless ``context`` already places them (then it is used verbatim). The
        processor's chat template is used when it has one, else the tokenizer's, else LLaVA-1.5's
        ``USER: <image>\\n{context} ASSISTANT:``.
        """
        inline = self.image_token in context
        if getattr(self.processor, "chat_template", None):
            content: list[dict] = [] if inline else [{"type": "image"} for _ in range(n_images)]
            content.append({"type": "text", "text": context})
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        text = context if inline else f"{self.image_token}\n" * n_images + context
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        return f"USER: {text} ASSISTANT:"

    # ---- generation --------------------------------------------------------------------------------------------
    def _prepare(self, request) -> tuple[str, list, dict]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else None
        images = _to_images(visuals, self.model_id)
        if self.image_fn is not None:
            images = [self.image_fn(image.convert("RGB")) for image in images]
        return self.build_prompt(context, len(images)), images, gen_kwargs

    def _generation_settings(self, gen_kwargs: dict | None) -> tuple[dict, list[str]]:
        gen = dict(gen_kwargs or {})
        until = gen.pop("until", None)
        if until is None:
            until = []
        elif isinstance(until, str):
            until = [until]
        elif not isinstance(until, (list, tuple)):
            raise ValueError(f"gen_kwargs['until'] must be a string or a list of strings, got {type(until).__name__}")
        settings = {k: gen[k] for k in GEN_KEYS if k in gen and gen[k] is not None}
        settings["max_new_tokens"] = int(settings.get("max_new_tokens", self.max_new_tokens))
        if "num_beams" in settings:
            settings["num_beams"] = int(settings["num_beams"])
        temperature = float(settings.get("temperature", 0.0) or 0.0)
        do_sample = bool(settings.get("do_sample", temperature > 0))
        settings["do_sample"] = do_sample
        if not do_sample:
            for key in _SAMPLING_ONLY:  # greedy: sampling knobs only draw warnings
                settings.pop(key, None)
        return settings, [s for s in until if s]

    def _generate(self, prompts: list[str], images: list, settings: dict) -> list[str]:
        """One ``generate`` call for left-padded ``prompts``; returns the decoded continuations."""
        inputs = self.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
        inputs = inputs.to(self._device)
        inputs.pop("token_type_ids", None)  # LLaVA takes none; transformers 4.x's generate rejects unused kwargs
        if "pixel_values" in inputs and torch.is_floating_point(inputs["pixel_values"]):
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            output = self.model.generate(**inputs, pad_token_id=self._tokenizer.pad_token_id, **settings)
        continuation = output[:, inputs["input_ids"].shape[1]:]
        return self._tokenizer.batch_decode(continuation, skip_special_tokens=True)

    @staticmethod
    def _truncate(text: str, until: Iterable[str]) -> str:
        cut = len(text)
        for stop in until:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
        return text[:cut]

    def _fail(self, request, exc: BaseException) -> str:
        self.generation_errors += 1
        _, _, _, doc_id, task, split = request.args
        answer = error_answer(exc)
        logger.error(f"{self.model_id}: generation failed for {task}/{split}/doc {doc_id}: {answer}")
        return answer

    def _run_batch(self, batch: list[tuple[int, Any]], settings: dict, until: list[str]) -> dict[int, str]:
        """Answers for ``batch`` (index, request); on failure retry one at a time; a failing sample gets the marker."""
        answers: dict[int, str] = {}
        try:
            prepared = [self._prepare(req) for _, req in batch]
            texts = self._generate([p for p, _, _ in prepared], [im for _, ims, _ in prepared for im in ims], settings)
            return {i: self._truncate(t, until) for (i, _), t in zip(batch, texts)}
        except Exception as batch_error:
            if len(batch) == 1:
                i, req = batch[0]
                return {i: self._fail(req, batch_error)}
            logger.warning(
                f"{self.model_id}: batch of {len(batch)} failed ({type(batch_error).__name__}: {batch_error}); "
                "retrying one sample at a time"
            )
            if self._device.type == "cuda":  # e.g. out of memory: give the single-sample retries a clean slate
                torch.cuda.empty_cache()
        for i, req in batch:
            try:
                prompt, images, _ = self._prepare(req)
                answers[i] = self._truncate(self._generate([prompt], images, settings)[0], until)
            except Exception as exc:
                answers[i] = self._fail(req, exc)
        return answers

    def _length(self, request) -> int:
        """Rough prompt length for sorting: instruction tokens (images add the same amount to every sample)."""
        try:
            return len(self._tokenizer(request.args[0], add_special_tokens=False)["input_ids"])
        except Exception:
            return len(str(request.args[0]))

    def generate_until(self, requests) -> list[str]:
        if not requests:
            return []
        errors_before = self.generation_errors
        groups: dict[str, list[tuple[int, Any]]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(request.args[1] or {}, sort_keys=True, default=str)
            groups.setdefault(key, []).append((index, request))

        answers: list[str | None] = [None] * len(requests)
        disable = self._rank != 0 or os.environ.get("PFMVG_NO_PROGRESS", "") not in ("", "0")
        bar = tqdm(total=len(requests), desc=self.model_id, unit="sample", disable=disable, dynamic_ncols=True)
        for members in groups.values():
            try:
                settings, until = self._generation_settings(members[0][1].args[1])
            except Exception as exc:  # malformed generation kwargs: every sample of the group fails visibly
                for i, req in members:
                    answers[i] = self._fail(req, exc)
                bar.update(len(members))
                continue
            members.sort(key=lambda item: -self._length(item[1]))  # stable: equal lengths keep request order
            for start in range(0, len(members), self.batch_size_per_gpu):
                batch = members[start : start + self.batch_size_per_gpu]
                for i, text in self._run_batch(batch, settings, until).items():
                    answers[i] = text
                bar.update(len(batch))
        bar.close()
        failed = self.generation_errors - errors_before
        summary = (f"{self.model_id}: {len(requests)} samples, {failed} generation errors "
                   f"({self.generation_errors} in this process so far)")
        if failed:
            logger.warning(f"{summary}; failed answers start with {GENERATION_ERROR_MARKER}")
        else:
            logger.info(summary)
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:  # cannot happen: every request is answered or marked; never hand back a silent empty answer
            raise RuntimeError(f"{self.model_id}: no answer for requests {missing}")
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError(
            f"{self.model_id} supports generate_until tasks only (grounding, VQA, reports); "
            "loglikelihood / multiple-choice tasks are not implemented"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{self.model_id} does not implement multi-round generation "
                                  "(generate_until_multi_round)")


def _llava_classes() -> dict[str, Any]:
    """LLaVA model classes by ``config.model_type`` (those this transformers version has)."""
    import transformers

    names = {
        "llava": "LlavaForConditionalGeneration",
        "llava_next": "LlavaNextForConditionalGeneration",
        "llava_onevision": "LlavaOnevisionForConditionalGeneration",
        "llava_next_video": "LlavaNextVideoForConditionalGeneration",
    }
    return {k: getattr(transformers, v) for k, v in names.items() if hasattr(transformers, v)}
