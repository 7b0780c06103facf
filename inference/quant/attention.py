"""8-bit attention: SageAttention's kernels through diffusers' attention dispatcher.

``ATTENTION_BACKEND=auto`` always picks an exact kernel (``inference.parallel.sequence``);
a quantized one (INT8 Q/K, FP8 or FP16 P/V) runs only when the operator names it. diffusers
registers them all; they need the ``sageattention`` package (CUDA; a named backend whose package
is missing is refused at start by ``inference.parallel.sequence``). Of them, only ``sage``
(and ``sage_hub``) support diffusers' context parallelism (Ulysses/ring). On Ascend the fused
attention (``_native_npu``, ``torch_npu.npu_fusion_attention``) is exact and is auto's choice there.
"""
from __future__ import annotations

QUANTIZED_ATTENTION: frozenset[str] = frozenset({
    "sage", "sage_hub", "sage_blackwell_hub", "sage_varlen",
    "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90",
    "_sage_qk_int8_pv_fp16_cuda", "_sage_qk_int8_pv_fp16_triton",
})


def is_quantized_attention(backend: str) -> bool:
    return backend in QUANTIZED_ATTENTION


def attention_report(backend: str) -> dict[str, object]:
    """What /health and every job's result say of the DiT's attention."""
    return {"backend": backend, "quantized": is_quantized_attention(backend)}
