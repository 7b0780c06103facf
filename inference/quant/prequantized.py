"""Loading a DiT whose Linear weights are already int8, as LightX2V publishes them, without
dequantizing.

LightX2V's format (tools/convert in LightX2V: ``--linear_dtype torch.int8``): each quantized
Linear stores ``<name>.weight`` as int8 (out, in), per output row symmetric, and
``<name>.weight_scale`` as float32 (out, 1), with weight ~ int8 x scale; every other tensor is
stored as is. After the key renaming into the diffusers layout (``manage.py convert_checkpoint``
keeps the scales), such a ``transformer/`` folder loads here straight into torchao's Int8Tensor
(the same data, the scale, a zero point of 0): what ``DIT_QUANT=int8`` runs, without a bf16 copy
ever existing. FP8 files (``float8_e4m3fn`` weights) are recognised and refused: their loader is
not written (torchao's Float8Tensor would need the activation-quantization settings of the run).
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from inference.parallel.fsdp import apply_dtypes, diffusers_fp32_patterns, weight_map
from inference.quant.modes import FP8, INT8, QuantizationError

logger = logging.getLogger(__name__)

SCALE_SUFFIX = "_scale"  # "<module>.weight" + "_scale": LightX2V's name for a weight's row scales
_MODES = {torch.int8: INT8, torch.float8_e4m3fn: FP8}


def _files(folder: Path) -> dict[str, Path]:
    try:
        return weight_map(folder, "diffusion_pytorch_model")
    except FileNotFoundError:
        return {}  # a .bin checkpoint: never pre-quantized


def prequantized_mode(folder: Path) -> str | None:
    """The mode of a pre-quantized DiT folder (int8 or fp8), or None for a plain checkpoint."""
    from safetensors import safe_open

    files = _files(folder)
    scaled = sorted(name[: -len(SCALE_SUFFIX)] for name in files if name.endswith(".weight" + SCALE_SUFFIX))
    if not scaled:
        return None
    with safe_open(files[scaled[0]], framework="pt", device="cpu") as handle:
        dtype = handle.get_slice(scaled[0]).get_dtype()
    mode = {"I8": INT8, "F8_E4M3": FP8}.get(dtype)
    if mode is None:
        raise QuantizationError(f"{folder}: {scaled[0]} has a scale but is stored as {dtype}; only int8 and "
                                "float8_e4m3fn pre-quantized weights are known")
    return mode


def check_prequantized(folder: Path, requested: str) -> str | None:
    """The checkpoint's own mode, refused when DIT_QUANT asks for another, or for fp8."""
    mode = prequantized_mode(folder)
    if mode is None:
        return None
    if mode == FP8:
        raise QuantizationError(f"{folder} holds a pre-quantized fp8 DiT (LightX2V format), which does not load "
                                "yet; use the bf16 checkpoint with DIT_QUANT=fp8")
    if requested != mode:
        raise QuantizationError(f"{folder} holds a pre-quantized {mode} DiT (LightX2V format): set DIT_QUANT={mode} "
                                f"(got {requested})")
    return mode


def _int8_weight(qdata: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torchao's Int8Tensor from LightX2V's int8 rows (out, in) and float32 scales (out, 1)."""
    from torchao.quantization import Int8Tensor

    out_features, in_features = qdata.shape
    scale = scale.to(torch.float32).reshape(out_features, 1)  # (out, 1), as Int8Tensor.from_hp keeps it
    zero_point = torch.zeros_like(scale, dtype=torch.int8)  # symmetric
    return Int8Tensor(qdata.contiguous(), scale, [1, in_features], dtype, zero_point=zero_point)


def _load_one(name: str, files: dict[str, Path], handles: dict[Path, Any], modules: dict[str, torch.nn.Module],
              tensors: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> None:
    """One tensor of the state dict: an int8 weight with its scale becomes an Int8Tensor parameter;
    anything else is copied into the model's tensor, in that tensor's dtype."""
    if name not in files:
        raise QuantizationError(f"the pre-quantized checkpoint has no tensor for {name!r}")
    stored = handles[files[name]].get_tensor(name)
    if name + SCALE_SUFFIX in files:
        owner, _, attribute = name.rpartition(".")
        scale = handles[files[name + SCALE_SUFFIX]].get_tensor(name + SCALE_SUFFIX)
        weight = _int8_weight(stored.to(device), scale.to(device), dtype)
        setattr(modules[owner], attribute, torch.nn.Parameter(weight, requires_grad=False))
    else:
        tensors[name].copy_(stored.to(dtype=tensors[name].dtype))


@torch.no_grad()
def load_prequantized_transformer(folder: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The DiT with its int8 Linear weights as Int8Tensor, every other tensor in its usual dtype."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from safetensors import safe_open

    # 1. Structure on the meta device, in from_pretrained's dtypes, then empty memory on the device.
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder))
    apply_dtypes(model, dtype, diffusers_fp32_patterns(WanTransformer3DModel))
    files = _files(folder)
    modules = dict(model.named_modules())
    for name in files:  # no bf16 memory for the weights that arrive quantized
        if name.endswith(".weight") and name + SCALE_SUFFIX in files:
            owner, _, attribute = name.rpartition(".")
            setattr(modules[owner], attribute, torch.nn.Parameter(torch.empty(0, device="meta"), requires_grad=False))
    model.to_empty(device=device)
    model.eval().requires_grad_(False)
    # 2. Every parameter and persistent buffer from the files: quantized weights as they are stored.
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    with ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(path, framework="pt", device="cpu")) for path in set(files.values())}
        for name in model.state_dict():
            _load_one(name, files, handles, modules, params | buffers, dtype, device)
    # 3. The rotary tables are in no checkpoint: to_empty left garbage in them.
    config = model.config
    fresh = WanRotaryPosEmbed(config.attention_head_dim, config.patch_size, config.rope_max_seq_len)
    for buffer in ("freqs_cos", "freqs_sin"):
        setattr(model.rope, buffer, getattr(fresh, buffer).to(device=device, dtype=getattr(model.rope, buffer).dtype))
    logger.info("DiT loaded pre-quantized (int8, LightX2V format) from %s", folder)
    return model
