"""Loading a Wan2.1 image-to-video checkpoint in the diffusers layout from a local folder.

The folder (MODEL_CKPT_DIR) is what ``Wan-AI/Wan2.1-I2V-14B-*-Diffusers`` ships, or what
``inference.tiny.create_tiny_checkpoint`` writes: model_index.json and one sub-folder per
component. Both load through the same code below; nothing is ever fetched from the network.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from diffusers import (
    AutoencoderKLWan,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel, UMT5EncoderModel

from inference.devices import DeviceSpec, configure_attention, default_dtypes

PIPELINE_CLASS_NAME = "WanImageToVideoPipeline"

# The four neural components, which carry weights and get a dtype each.
MODEL_COMPONENTS: tuple[str, ...] = ("transformer", "vae", "text_encoder", "image_encoder")

# Schedulers that model_index.json may name; all of them have a flow-matching configuration.
_SCHEDULER_CLASSES: dict[str, type[SchedulerMixin]] = {
    "UniPCMultistepScheduler": UniPCMultistepScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    "FlowMatchEulerDiscreteScheduler": FlowMatchEulerDiscreteScheduler,
}

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}

_WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin")
_INDEX_SUFFIXES: tuple[str, ...] = (".safetensors.index.json", ".bin.index.json")


class CheckpointError(Exception):
    """MODEL_CKPT_DIR is missing, incomplete or not a Wan2.1 I2V checkpoint. The message is one
    line meant for the operator."""


def parse_dtype(name: str) -> torch.dtype:
    key = name.strip().lower()
    if key not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; allowed values: {', '.join(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[key]


# --------------------------------------------------------------------------- validation


def _read_model_index(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} has an unreadable model_index.json: {exc}") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} has a model_index.json that is not a JSON object")
    return index


def _first_missing_config(ckpt_dir: Path, component: str) -> str | None:
    """The relative path of the missing configuration file of component, or None."""
    folder = ckpt_dir / component
    if not folder.is_dir():
        return f"{component}/"
    if component == "tokenizer":
        # Fast tokenizers ship tokenizer.json; T5's sentencepiece tokenizers ship spiece.model.
        if not (folder / "tokenizer_config.json").is_file():
            return f"{component}/tokenizer_config.json"
        if not ((folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()):
            return f"{component}/tokenizer.json (or spiece.model)"
        return None
    config_name = {
        "image_processor": "preprocessor_config.json",
        "scheduler": "scheduler_config.json",
    }.get(component, "config.json")
    if not (folder / config_name).is_file():
        return f"{component}/{config_name}"
    return None


def _first_missing_weights(ckpt_dir: Path, component: str) -> str | None:
    """The relative path of missing weights of a model component, or None.

    A sharded checkpoint is complete only when every shard its index lists is present: an
    interrupted copy of the 14B model typically lacks the last shards.
    """
    folder = ckpt_dir / component
    indexes = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_INDEX_SUFFIXES))
    for index_path in indexes:
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"MODEL_CKPT_DIR {ckpt_dir} has an unreadable {component}/{index_path.name}: {exc!r}"
            ) from None
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                return f"{component}/{shard} (listed in {index_path.name})"
    if indexes:
        return None
    if any(p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir()):
        return None
    return f"{component}/ weights (*.safetensors or *.bin)"


def validate_checkpoint_dir(path: Path | str) -> None:
    """Raise CheckpointError naming the first missing part of a Wan2.1 I2V checkpoint."""
    # 1. The folder and its model_index.json.
    ckpt_dir = Path(path)
    if not ckpt_dir.exists():
        raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} does not exist")
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} is not a folder")
    if not (ckpt_dir / "model_index.json").is_file():
        raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} is incomplete: missing model_index.json")

    # 2. It must be a Wan2.1 I2V checkpoint (Wan2.2's two-expert layout loads differently).
    index = _read_model_index(ckpt_dir)
    class_name = index.get("_class_name")
    if class_name != PIPELINE_CLASS_NAME:
        raise CheckpointError(
            f"MODEL_CKPT_DIR {ckpt_dir} is not a Wan image-to-video checkpoint: "
            f"model_index.json names {class_name!r}, expected {PIPELINE_CLASS_NAME!r}"
        )
    if (index.get("transformer_2") or [None])[0] is not None:
        raise CheckpointError(
            f"MODEL_CKPT_DIR {ckpt_dir} is a Wan2.2 two-expert checkpoint (transformer_2); only Wan2.1 I2V is supported"
        )

    # 3. Every component folder with its configuration, then the weights of the models.
    components = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler")
    for component in components:
        missing = _first_missing_config(ckpt_dir, component)
        if missing is None and component in MODEL_COMPONENTS:
            missing = _first_missing_weights(ckpt_dir, component)
        if missing is not None:
            raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} is incomplete: missing {missing}")


# --------------------------------------------------------------------------- loading


class WanI2VPipeline(WanImageToVideoPipeline):
    """diffusers' Wan I2V pipeline, accepting precomputed image embeddings.

    Upstream ``check_inputs`` refuses ``image`` together with ``image_embeds``, yet ``__call__``
    still needs ``image`` to build the VAE condition latents, so precomputed CLIP embeddings
    cannot be passed at all. This subclass validates ``image`` itself in that case and hands the
    rest of the checks to diffusers unchanged.
    """

    def check_inputs(
        self,
        prompt: Any,
        negative_prompt: Any,
        image: Any,
        height: int,
        width: int,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        guidance_scale_2: float | None = None,
    ) -> None:
        if image_embeds is not None:
            if not isinstance(image, (PIL.Image.Image, torch.Tensor)):
                raise ValueError(
                    f"`image` is needed for the VAE condition even with `image_embeds`; got {type(image).__name__}"
                )
            image = None
        super().check_inputs(
            prompt,
            negative_prompt,
            image,
            height,
            width,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            image_embeds=image_embeds,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            guidance_scale_2=guidance_scale_2,
        )


@dataclass
class LoadOptions:
    ckpt_dir: Path
    device: DeviceSpec
    dtypes: dict[str, torch.dtype] | None = None  # None -> default_dtypes(device)


def _resolve_dtypes(options: LoadOptions) -> dict[str, torch.dtype]:
    dtypes = dict(default_dtypes(options.device))
    if options.dtypes is not None:
        unknown = sorted(set(options.dtypes) - set(MODEL_COMPONENTS))
        if unknown:
            raise ValueError(f"dtypes has unknown components {unknown}; allowed: {', '.join(MODEL_COMPONENTS)}")
        dtypes.update(options.dtypes)
    return dtypes


def _scheduler_class(index: dict[str, Any], ckpt_dir: Path) -> type[SchedulerMixin]:
    entry = index.get("scheduler") or [None, None]
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if name not in _SCHEDULER_CLASSES:
        raise CheckpointError(
            f"MODEL_CKPT_DIR {ckpt_dir} names an unsupported scheduler {name!r}; "
            f"supported: {', '.join(_SCHEDULER_CLASSES)}"
        )
    return _SCHEDULER_CLASSES[name]


def _frozen(module: torch.nn.Module, device: DeviceSpec) -> torch.nn.Module:
    """Move an inference-only module to the device, in eval mode and without gradients."""
    module = module.to(device.torch_device)
    module.eval()
    module.requires_grad_(False)
    return module


def load_pipeline(options: LoadOptions) -> WanImageToVideoPipeline:
    """Load every component of the checkpoint explicitly, with its class and dtype, onto the
    device, and assemble the pipeline. Returns a ``WanI2VPipeline`` (a WanImageToVideoPipeline)."""
    # 1. Fail fast, with one readable line, before spending minutes on the weights.
    ckpt_dir = Path(options.ckpt_dir)
    validate_checkpoint_dir(ckpt_dir)
    index = _read_model_index(ckpt_dir)
    dtypes = _resolve_dtypes(options)
    device = options.device

    # 2. The neural components, each in its own dtype. Wan keeps the VAE and CLIP in fp32.
    transformer = WanTransformer3DModel.from_pretrained(
        ckpt_dir, subfolder="transformer", torch_dtype=dtypes["transformer"], local_files_only=True
    )
    vae = AutoencoderKLWan.from_pretrained(ckpt_dir, subfolder="vae", torch_dtype=dtypes["vae"], local_files_only=True)
    # transformers 5 takes `dtype`; `torch_dtype` is deprecated there.
    text_encoder = UMT5EncoderModel.from_pretrained(
        ckpt_dir / "text_encoder", dtype=dtypes["text_encoder"], local_files_only=True
    )
    image_encoder = CLIPVisionModel.from_pretrained(
        ckpt_dir / "image_encoder", dtype=dtypes["image_encoder"], local_files_only=True
    )

    # 3. The non-neural components. The PIL image processor is chosen explicitly: without
    # torchvision transformers 5 silently swaps CLIPImageProcessor for it, and with torchvision
    # the default backend resizes slightly differently, so results would depend on the machine.
    tokenizer = AutoTokenizer.from_pretrained(ckpt_dir / "tokenizer", local_files_only=True)
    image_processor = CLIPImageProcessorPil.from_pretrained(ckpt_dir / "image_processor", local_files_only=True)
    scheduler = _scheduler_class(index, ckpt_dir).from_pretrained(
        ckpt_dir, subfolder="scheduler", local_files_only=True
    )

    # 4. Onto the device, frozen; NPUs get their fused attention kernel.
    transformer = _frozen(transformer, device)
    configure_attention(transformer, device)
    pipe = WanI2VPipeline(
        tokenizer=tokenizer,
        text_encoder=_frozen(text_encoder, device),
        vae=_frozen(vae, device),
        scheduler=scheduler,
        image_processor=image_processor,
        image_encoder=_frozen(image_encoder, device),
        transformer=transformer,
        boundary_ratio=None,
        expand_timesteps=False,
    )
    # A tqdm bar per job would only clutter the daemon's log; progress goes through on_step.
    pipe.set_progress_bar_config(disable=True)
    return pipe
