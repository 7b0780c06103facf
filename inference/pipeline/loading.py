"""Loading the pipeline of one rank: which component goes where, whole or sharded.

The placement plan, per component and topology switch:

| component | default | switch |
|---|---|---|
| DiT | whole, on the device | DIT_FSDP: FSDP2 shards, each rank reading only its rows |
| UMT5 text encoder | whole, on the device | T5_FSDP: sharded as the DiT; T5_CPU: rank 0's host memory only |
| CLIP image encoder, VAE | whole, on the device | (VAE_PARALLEL splits the VAE's work, not its weights) |

Every component gets an explicit dtype (``default_dtypes`` of the device, or an override).
After loading, the DiT gets its attention backend and, when the sequence is split, diffusers'
context parallelism over the group's (ring, ulysses) mesh.
"""
from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from inference.cache.adaptive import AdaptiveCache
from inference.cache.prompts import PromptCache
from inference.cache.steps import StepCaches
from inference.checkpoint import read_model_index, scheduler_class, validate_checkpoint_dir
from inference.devices import DeviceSpec, default_dtypes, memory_stats
from inference.lora import AdapterFile, LoraBank, read_adapters
from inference.lora.inject import fill_rows, inject, is_lora_parameter
from inference.parallel.context import ParallelContext
from inference.parallel.fsdp import (
    apply_dtypes,
    diffusers_fp32_patterns,
    load_into,
    non_persistent_buffers,
    shard_blocks,
    transformers_fp32_patterns,
    weight_map,
)
from inference.parallel.sequence import enable_sequence_parallel
from inference.pipeline.compile import compile_and_warm_up
from inference.pipeline.components import WanComponents
from inference.quant.apply import check_modes_on_device, quantize_components
from inference.quant.attention import attention_report
from inference.quant.memory import weight_bytes
from inference.quant.modes import check_combination
from inference.quant.prequantized import check_prequantized, load_prequantized_transformer

logger = logging.getLogger(__name__)

MODEL_COMPONENTS: tuple[str, ...] = ("transformer", "vae", "text_encoder", "image_encoder")


@dataclass
class LoadOptions:
    ckpt_dir: Path
    device: DeviceSpec
    dtypes: dict[str, torch.dtype] | None = None  # None -> default_dtypes(device)
    attention_backend: str = "auto"  # ATTENTION_BACKEND: auto, or a diffusers backend name
    prompt_cache_size: int = 32  # PROMPT_CACHE_SIZE: text embeddings kept (0: none)
    # COMPILE: regional compilation, warmed up for these (width, height, frames); None: eager.
    compile_shapes: list[tuple[int, int, int]] | None = None
    dit_quant: str = "none"  # DIT_QUANT: none | fp8 | int8 (inference.quant)
    t5_quant: str = "none"  # T5_QUANT: none | int8
    lora_dir: Path | None = None  # LORA_DIR: every *.safetensors adapter in it, injected before sharding


def resolve_dtypes(options: LoadOptions) -> dict[str, torch.dtype]:
    dtypes = dict(default_dtypes(options.device))
    if options.dtypes is not None:
        unknown = sorted(set(options.dtypes) - set(MODEL_COMPONENTS))
        if unknown:
            raise ValueError(f"dtypes has unknown components {unknown}; allowed: {', '.join(MODEL_COMPONENTS)}")
        dtypes.update(options.dtypes)
    return dtypes


def _frozen(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """An inference-only module on device, in eval mode and without gradients.

    On the CPU, from_pretrained leaves the weights as views into the memory-mapped checkpoint
    files, at whatever offsets the file layout gives them; CPU BLAS rounds differently for
    differently aligned operands, so the same weights in another file layout (a converted or
    resharded checkpoint) would give a slightly different video. Fresh allocations make the
    result depend on the weights alone (an accelerator copies them anyway)."""
    module = module.to(device)
    if device.type == "cpu":
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
    module.eval()
    module.requires_grad_(False)
    return module


# --------------------------------------------------------------------------- sharded (FSDP2)


def _meta_prepared(model: torch.nn.Module, dtype: torch.dtype, fp32_patterns: tuple[str, ...]) -> None:
    apply_dtypes(model, dtype, fp32_patterns)
    model.eval()
    model.requires_grad_(False)


def sharded_transformer(folder: Path, dtype: torch.dtype, ctx: ParallelContext,
                        adapters: list[AdapterFile] | None = None) -> WanTransformer3DModel:
    """The DiT built on the meta device, sharded per block, filled from this rank's rows."""
    # 1. Structure without memory, in from_pretrained's dtypes, with the LoRA adapters' structure
    # (so that FSDP2 shards them with their blocks).
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder))
    _meta_prepared(model, dtype, diffusers_fp32_patterns(WanTransformer3DModel))
    ids = inject(model, adapters or [])
    # 2. Shard, materialise empty, then read the local rows (peft renamed each adapted layer's
    # weight to <layer>.base_layer.weight); then each adapter's rows.
    shard_blocks(model, model.blocks, ctx.meshes.flat)
    model.to_empty(device=ctx.device.torch_device)
    load_into(model, weight_map(folder, "diffusion_pytorch_model"), rename=lambda name: name.replace(".base_layer.", "."),
              skip=is_lora_parameter)
    fill_rows(model, adapters or [], ids)
    # 3. The rotary tables are not in any checkpoint: to_empty left garbage in them.
    config = model.config
    fresh = WanRotaryPosEmbed(config.attention_head_dim, config.patch_size, config.rope_max_seq_len)
    for name in ("freqs_cos", "freqs_sin"):
        setattr(model.rope, name, getattr(fresh, name).to(device=ctx.device.torch_device, dtype=getattr(model.rope, name).dtype))
    _expect_no_other_derived_buffers(model, {"rope.freqs_cos", "rope.freqs_sin"})
    return model


def sharded_text_encoder(folder: Path, dtype: torch.dtype, ctx: ParallelContext) -> UMT5EncoderModel:
    """UMT5 built on the meta device, sharded per block, filled from this rank's rows."""
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config.from_pretrained(folder))
    _meta_prepared(model, dtype, transformers_fp32_patterns(model, dtype))
    shard_blocks(model, model.encoder.block, ctx.meshes.flat)
    model.to_empty(device=ctx.device.torch_device)
    load_into(model, weight_map(folder, "model"))
    _expect_no_other_derived_buffers(model, set())
    return model


def _expect_no_other_derived_buffers(model: torch.nn.Module, recomputed: set[str]) -> None:
    # A buffer that no checkpoint holds would be garbage after to_empty: fail loudly instead.
    left = sorted(set(non_persistent_buffers(model)) - recomputed)
    if left:
        raise RuntimeError(f"{type(model).__name__} has derived buffers {left} that sharded loading does not rebuild")


# --------------------------------------------------------------------------- the plan


def _load_transformer(ckpt_dir: Path, dtype: torch.dtype, ctx: ParallelContext,
                      adapters: list[AdapterFile]) -> WanTransformer3DModel:
    if ctx.topology.dit_fsdp:
        return sharded_transformer(ckpt_dir / "transformer", dtype, ctx, adapters)
    model = WanTransformer3DModel.from_pretrained(ckpt_dir, subfolder="transformer", torch_dtype=dtype, local_files_only=True)
    model = _frozen(model, ctx.device.torch_device)
    inject(model, adapters)
    return model


def _load_text_encoder(ckpt_dir: Path, dtype: torch.dtype, ctx: ParallelContext) -> UMT5EncoderModel | None:
    folder = ckpt_dir / "text_encoder"
    if ctx.topology.t5_cpu:
        # One copy in host memory, on rank 0; the others receive the embeddings.
        if not ctx.is_leader:
            return None
        return _frozen(UMT5EncoderModel.from_pretrained(folder, dtype=dtype, local_files_only=True), torch.device("cpu"))
    if ctx.topology.t5_fsdp:
        return sharded_text_encoder(folder, dtype, ctx)
    # transformers 5 takes `dtype`; `torch_dtype` is deprecated there.
    return _frozen(UMT5EncoderModel.from_pretrained(folder, dtype=dtype, local_files_only=True), ctx.device.torch_device)


def _load_dit_with_adapters(ckpt_dir: Path, options: LoadOptions, dtype: torch.dtype,
                            ctx: ParallelContext) -> tuple[WanTransformer3DModel, list[AdapterFile], bool]:
    """The DiT with every LoRA adapter of LORA_DIR injected, and whether it was stored pre-quantized.

    The adapters go in before anything shards, quantizes or compiles the DiT. A DiT stored
    pre-quantized (LightX2V's int8 format) loads as it is stored, and gets its adapters after."""
    config = WanTransformer3DModel.load_config(ckpt_dir / "transformer")
    adapters = read_adapters(options.lora_dir, image_dim=config.get("image_dim"))
    prequantized = check_prequantized(ckpt_dir / "transformer", options.dit_quant) is not None
    if prequantized:
        transformer = load_prequantized_transformer(ckpt_dir / "transformer", dtype, ctx.device.torch_device)
        inject(transformer, adapters)
    else:
        transformer = _load_transformer(ckpt_dir, dtype, ctx, adapters)
    return transformer, adapters, prequantized


def load_components(options: LoadOptions, ctx: ParallelContext) -> WanComponents:
    """Load every component of the checkpoint onto this rank as the topology places it."""
    # 1. Fail fast, with one readable line, before spending minutes on the weights.
    ckpt_dir = Path(options.ckpt_dir)
    validate_checkpoint_dir(ckpt_dir)
    check_combination(dit_quant=options.dit_quant, t5_quant=options.t5_quant,
                      dit_fsdp=ctx.topology.dit_fsdp, t5_fsdp=ctx.topology.t5_fsdp)
    check_modes_on_device(dit_mode=options.dit_quant, t5_mode=options.t5_quant, device=ctx.device)
    index = read_model_index(ckpt_dir)
    dtypes = resolve_dtypes(options)
    device = ctx.device.torch_device
    started = time.perf_counter()

    # 2. The neural components, each in its own dtype (LoRA adapters in the DiT).
    transformer, adapters, prequantized = _load_dit_with_adapters(ckpt_dir, options, dtypes["transformer"], ctx)
    text_encoder = _load_text_encoder(ckpt_dir, dtypes["text_encoder"], ctx)
    vae = AutoencoderKLWan.from_pretrained(ckpt_dir, subfolder="vae", torch_dtype=dtypes["vae"], local_files_only=True)
    image_encoder = CLIPVisionModel.from_pretrained(
        ckpt_dir / "image_encoder", dtype=dtypes["image_encoder"], local_files_only=True
    )

    # 2b. Quantized weights (DIT_QUANT, T5_QUANT), once, before sequence parallel and compilation.
    quantization = quantize_components(transformer=transformer, text_encoder=text_encoder, dit_mode=options.dit_quant,
                                       t5_mode=options.t5_quant, device=ctx.device, dit_prequantized=prequantized)

    # 3. The non-neural parts. Of the image processor only its config is used (CLIP's mean, std
    # and size; encode.clip_pixels stretches the frame itself, as Wan does, instead of its resize
    # and centre crop). The PIL class is named so that no torchvision backend is needed to load it.
    tokenizer = AutoTokenizer.from_pretrained(ckpt_dir / "tokenizer", local_files_only=True)
    image_processor = CLIPImageProcessorPil.from_pretrained(ckpt_dir / "image_processor", local_files_only=True)
    scheduler = scheduler_class(index, ckpt_dir).from_pretrained(ckpt_dir, subfolder="scheduler", local_files_only=True)

    # 4. The DiT's attention, split over the sequence ranks when the topology says so; then the
    # step caches (off until a job asks) and the prompt-embedding cache.
    backend = enable_sequence_parallel(transformer, ctx.topology, ctx.meshes, ctx.device.kind, options.attention_backend)
    components = WanComponents(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        image_processor=image_processor,
        image_encoder=_frozen(image_encoder, device),
        vae=_frozen(vae, device),
        transformer=transformer,
        scheduler_config=dict(scheduler.config),
        text_on_cpu=ctx.topology.t5_cpu,
        attention_backend=backend,
        caches=StepCaches(transformer, adaptive=_adaptive_cache(transformer, ctx)),
        prompts=PromptCache(capacity=options.prompt_cache_size),
        quantization={**quantization, "attention": attention_report(backend)},
        loras=LoraBank(transformer, adapters) if adapters else None,
    )
    for adapter in adapters:
        adapter.state_dict = {}  # the DiT holds the adapters now: free this rank's host copy
    components.held_bytes = {
        name: weight_bytes(getattr(components, name)) for name in ("transformer", "text_encoder", "image_encoder", "vae")
    }
    # 5. Compilation is paid here, before the worker reports ready, not by the first jobs.
    if options.compile_shapes is not None:
        if components.loras is not None:
            components.loras.make_static()  # jobs then change scale tensors only: no recompilation
        compile_and_warm_up(components, ctx, options.compile_shapes)
    _log_memory(components, ctx, time.perf_counter() - started)
    return components


def _adaptive_cache(transformer: torch.nn.Module, ctx: ParallelContext) -> object | None:
    """cache-dit's DBCache for ``cache_method: dbcache`` jobs, or None when cache-dit is missing
    (those jobs then fail with a reason; every other job runs as usual)."""
    try:
        return AdaptiveCache(transformer, ctx)
    except ImportError as exc:
        logger.warning("cache-dit is not available (%s): cache_method dbcache jobs will fail", exc)
        return None


def _log_memory(components: WanComponents, ctx: ParallelContext, seconds: float) -> None:
    """Per rank: parameter bytes held per component, peak host and device memory."""
    gib = 1024**3
    held = ", ".join(f"{name} {size / gib:.3f}" for name, size in components.held_bytes.items())
    if components.loras is not None:
        held += " (of which LoRA " + ", ".join(f"{name} {size / gib:.4f}" for name, size in
                                                components.loras.memory_bytes().items()) + ")"
    host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    device = memory_stats(ctx.device).get("max_allocated_bytes")
    device_text = f"{device / gib:.2f} GiB" if device is not None else "n/a (cpu)"
    logger.info(
        "rank %d loaded in %.1f s: parameters held (GiB) %s; quantization %s; peak host RSS %.2f GiB; peak device %s",
        ctx.rank, seconds, held, components.quantization, host_peak / gib, device_text,
    )
