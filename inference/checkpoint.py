"""A Wan2.1 image-to-video checkpoint in the diffusers layout: what it must contain, checked
before any weight is read (the loading itself is in ``inference.pipeline.loading``).

The folder (MODEL_CKPT_DIR) is what ``Wan-AI/Wan2.1-I2V-14B-*-Diffusers`` ships, or what
``inference.tiny.create_tiny_checkpoint`` writes: model_index.json and one sub-folder per
component. Nothing is ever fetched from the network.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from inference.original_layout import is_original_layout

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
        if is_original_layout(ckpt_dir):
            raise CheckpointError(
                f"MODEL_CKPT_DIR {ckpt_dir} is in the original Wan2.1 layout (Wan2.1_VAE.pth, models_t5_*.pth); "
                f"convert it once with `manage.py convert_wan_checkpoint {ckpt_dir} {ckpt_dir}-diffusers` "
                f"and set MODEL_CKPT_DIR={ckpt_dir}-diffusers"
            )
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


def read_model_index(ckpt_dir: Path) -> dict[str, Any]:
    return _read_model_index(Path(ckpt_dir))


def scheduler_class(index: dict[str, Any], ckpt_dir: Path) -> type[SchedulerMixin]:
    entry = index.get("scheduler") or [None, None]
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if name not in _SCHEDULER_CLASSES:
        raise CheckpointError(
            f"MODEL_CKPT_DIR {ckpt_dir} names an unsupported scheduler {name!r}; "
            f"supported: {', '.join(_SCHEDULER_CLASSES)}"
        )
    return _SCHEDULER_CLASSES[name]


def transformer_config(ckpt_dir: Path | str) -> dict[str, Any]:
    """The DiT's config.json (head count, patch size, ...) without loading any weight."""
    path = Path(ckpt_dir) / "transformer" / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"MODEL_CKPT_DIR {ckpt_dir} has an unreadable transformer/config.json: {exc}") from None
