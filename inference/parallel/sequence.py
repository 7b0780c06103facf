"""Sequence parallel of the DiT: diffusers' context parallelism over the (ring, ulysses) mesh.

Each CFG half of the group splits the video tokens of every transformer pass over its
ULYSSES_SIZE x RING_SIZE ranks. diffusers does the splitting and gathering (the model's
``_cp_plan``) and the attention exchange (Ulysses all-to-all, ring all-gather of K/V merged by
log-sum-exp); we choose the attention backend, hand it our mesh, and shim two things that
diffusers 0.42 assumes an accelerator for:

1. ``_resolve_parallel_config`` computes ``rank % torch.accelerator.device_count()``, which is a
   division by zero on a CPU-only machine. While ``enable_parallelism`` runs on the CPU, the
   count answers 1 (the device it computes is only recorded, never used for placement).
2. Ring attention merges partial attentions by their log-sum-exp. The native (SDPA) backend
   refuses to return it, so on the CPU its context-parallel forward op is replaced by one
   built on torch's fused CPU flash-attention kernel, which returns the output and the LSE.
   Without the LSE request it defers to the original op, so Ulysses is unchanged.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from inference.parallel.topology import Meshes, Topology

logger = logging.getLogger(__name__)

# diffusers' attention dispatcher names (diffusers.models.attention_dispatch.AttentionBackendName).
NATIVE = "native"  # torch SDPA; picks flash / memory-efficient / math itself
NATIVE_CUDNN = "_native_cudnn"  # SDPA's cuDNN kernel; returns the LSE (bf16/fp16 only)
NATIVE_NPU = "_native_npu"  # torch_npu.npu_fusion_attention
# Backends whose context-parallel path returns the log-sum-exp ("native" only on the CPU, through shim 2).
LSE_BACKENDS = frozenset({NATIVE, NATIVE_CUDNN, "_native_flash", "flash", "flash_hub", "_flash_3_hub", "sage"})


def attention_backend_for(device_kind: str, *, ring: bool, dtype: torch.dtype, requested: str = "auto") -> str:
    """The DiT's attention backend (ATTENTION_BACKEND): ``auto`` picks the fastest exact one for
    the device; ring attention needs one that returns the log-sum-exp."""
    # 1. An operator's choice must be a backend diffusers knows, and fit ring attention.
    if requested != "auto":
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = {member.value for member in AttentionBackendName}
        if requested not in known:
            raise ValueError(f"ATTENTION_BACKEND={requested!r} is not a diffusers attention backend; "
                             f"use auto or one of {', '.join(sorted(known))}")
        if ring and (requested not in LSE_BACKENDS or (requested == NATIVE and device_kind != "cpu")):
            raise ValueError(f"ATTENTION_BACKEND={requested} returns no log-sum-exp, which RING_SIZE > 1 needs; "
                             f"use one of {', '.join(sorted(LSE_BACKENDS))} or auto")
        require_installed(requested)  # e.g. sage (8-bit attention) needs its package: one line at start if absent
        return requested
    # 2. auto: always an exact kernel (a quantized one, e.g. sage, only when named: inference.quant.attention).
    if device_kind == "npu":
        if ring:
            raise ValueError("ring attention needs a log-sum-exp, which the NPU attention backend does not return")
        return NATIVE_NPU
    if device_kind == "cuda" and dtype in (torch.bfloat16, torch.float16):
        # cuDNN's fused attention: 1.6x the flash backend at Wan's 720p shape on an H200
        # (figures.md); it also returns the LSE that ring attention merges with.
        return NATIVE_CUDNN
    if device_kind == "cuda" and ring:
        raise ValueError(
            f"ring attention on CUDA uses the cuDNN kernel, which needs a bf16 or fp16 DiT (DIT_DTYPE), got {dtype}"
        )
    return NATIVE


def require_installed(backend: str) -> None:
    """Refuse at start, in one line, a named backend whose package is missing (diffusers would
    raise a RuntimeError with a traceback at set_attention_backend otherwise)."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except RuntimeError as error:
        raise ValueError(f"ATTENTION_BACKEND={backend} cannot run here: {error}") from None


@contextmanager
def _accelerator_count_of_one() -> Iterator[None]:
    """Shim 1: torch.accelerator.device_count() answers 1 while diffusers resolves its config."""
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.accelerator.device_count = original  # type: ignore[assignment]


def _cpu_attention_with_lse(
    ctx: Any,
    query: torch.Tensor,  # (B, S, H, D)
    key: torch.Tensor,  # (B, S_kv, H, D)
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _save_ctx: bool = True,
    _parallel_config: Any = None,
    *,
    _fallback: Any = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Shim 2: the CP forward op of the native backend, with the LSE when asked for it."""
    if not return_lse:
        return _fallback(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, False,
                         _save_ctx=_save_ctx, _parallel_config=_parallel_config)
    if query.device.type != "cpu":
        raise ValueError(f"the CPU attention with log-sum-exp got tensors on {query.device}")
    if enable_gqa or dropout_p:
        raise ValueError("the CPU attention with log-sum-exp supports neither GQA nor dropout")
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, H, S, D)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, is_causal, attn_mask=attn_mask, scale=scale
    )  # out (B, H, S, D), lse (B, H, S)
    return out.transpose(1, 2), lse.transpose(1, 2)  # (B, S, H, D), (B, S, H)


@contextmanager
def _noop() -> Iterator[None]:
    yield


_installed_cpu_lse = False


def install_cpu_ring_attention() -> None:
    """Route the native backend's context-parallel op through ``_cpu_attention_with_lse``
    (once per process; it changes nothing for callers that do not ask for the LSE)."""
    global _installed_cpu_lse
    if _installed_cpu_lse:
        return
    import functools

    from diffusers.models import attention_dispatch

    original = attention_dispatch._native_attention_forward_op
    attention_dispatch._native_attention_forward_op = functools.partial(_cpu_attention_with_lse, _fallback=original)
    _installed_cpu_lse = True


def enable_sequence_parallel(
    transformer: torch.nn.Module, topology: Topology, meshes: Meshes, device_kind: str, requested: str = "auto"
) -> str:
    """Split the DiT's tokens over the (ring, ulysses) ranks of each CFG half; return the
    attention backend in use. A no-op (the plain backend) when the sequence is not split."""
    # 1. The attention kernel, set before enable_parallelism checks it supports CP.
    ring = topology.ring_size > 1
    backend = attention_backend_for(device_kind, ring=ring, dtype=transformer.dtype, requested=requested)
    transformer.set_attention_backend(backend)
    logger.info("DiT attention backend: %s (ATTENTION_BACKEND=%s)", backend, requested)
    if topology.sequence_size == 1:
        return backend

    # 2. The CPU shims (see the module docstring).
    if device_kind == "cpu" and ring:
        install_cpu_ring_attention()
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(
        ring_degree=topology.ring_size, ulysses_degree=topology.ulysses_size, mesh=meshes.grid
    )
    with _accelerator_count_of_one() if device_kind == "cpu" else _noop():
        transformer.enable_parallelism(config=config)
    logger.info("DiT sequence parallel: ulysses %d x ring %d, attention %s",
                topology.ulysses_size, topology.ring_size, backend)
    return backend
