"""INT8 weights on Ascend: torch_npu's own weight-quantized matmul (W8A16), not torchao.

No NPU build of torchao exists; torch_npu ships ``npu_weight_quant_batchmatmul(x, weight,
antiquant_scale)``, which computes ``x @ (weight * antiquant_scale)`` with int8 weights (K, N)
and a per-output-channel scale (N,) in x's dtype, on Atlas A2/A3 (the 910B) in fp16 and bf16.
``DIT_QUANT=int8`` / ``T5_QUANT=int8`` on an NPU replace each block Linear with ``NpuInt8Linear``:
the same per-row symmetric int8 rows and scales that torchao's INT8 weight-only (and LightX2V's
int8 checkpoints) hold, multiplied by that kernel. The weight is kept (N, K) and handed to the
kernel transposed, the layout Ascend's documentation recommends for per-channel scales.

The kernel is looked up when a layer is built (``npu_matmul``), so a test on a machine without an
NPU can hand in a reference implementation of the documented formula instead.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch

# (x (M, K), weight (K, N) int8, antiquant_scale (N,)) -> (M, N) in x's dtype
Int8Matmul = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
KERNEL_NAME = "torch_npu.npu_weight_quant_batchmatmul"


def npu_matmul() -> Int8Matmul:
    """torch_npu's weight-quantized matmul; a clear error where torch_npu is missing."""
    try:
        torch_npu = importlib.import_module("torch_npu")
    except ImportError as exc:  # the device check refuses an NPU without torch_npu before this
        raise RuntimeError(f"int8 on an NPU needs torch_npu ({KERNEL_NAME}): {exc}") from exc
    return torch_npu.npu_weight_quant_batchmatmul


def symmetric_int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) weight -> int8 rows (out, in) and float32 scales (out,): w ~ q * scale, per row."""
    # 1. One scale per output channel: the row's largest magnitude maps to 127.
    rows = weight.detach().to(torch.float32)
    scale = rows.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
    # 2. Round to the nearest step, inside int8's range.
    qdata = torch.clamp(torch.round(rows / scale[:, None]), -128, 127).to(torch.int8)  # (out, in)
    return qdata, scale


class NpuInt8Linear(torch.nn.Module):
    """A Linear with int8 weight rows and per-row scales, multiplied by ``matmul`` (W8A16)."""

    def __init__(self, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, *,
                 dtype: torch.dtype, matmul: Int8Matmul) -> None:
        super().__init__()
        if qdata.dtype != torch.int8 or qdata.dim() != 2:
            raise ValueError(f"qdata must be int8 (out, in), got {qdata.dtype} {tuple(qdata.shape)}")
        if scale.shape != (qdata.shape[0],):
            raise ValueError(f"scale must be ({qdata.shape[0]},), one per output row, got {tuple(scale.shape)}")
        self.out_features, self.in_features = qdata.shape
        # Parameters without gradients, so that .to(), the weight-byte report and state dicts see them.
        self.weight = torch.nn.Parameter(qdata.contiguous(), requires_grad=False)  # (N, K) int8
        self.scale = torch.nn.Parameter(scale.to(dtype), requires_grad=False)  # (N,) in the activations' dtype
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self._matmul = matmul

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, *, matmul: Int8Matmul) -> NpuInt8Linear:
        qdata, scale = symmetric_int8_rows(linear.weight)
        dtype = linear.weight.dtype
        layer = cls(qdata.to(linear.weight.device), scale.to(linear.weight.device), linear.bias, dtype=dtype,
                    matmul=matmul)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. The 910B's kernel takes two dimensions: (..., K) -> (M, K).
        leading = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        # 2. x @ (W^T * scale): the (N, K) rows handed over as the (K, N) weight, transposed.
        out = self._matmul(flat, self.weight.t(), self.scale.to(x.dtype))  # (M, N)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 rows, {KERNEL_NAME}"


def quantize_module_npu(model: torch.nn.Module, keep: Callable[[torch.nn.Module, str], bool], *,
                        matmul: Int8Matmul | None = None) -> int:
    """Replace every Linear that ``keep`` selects by an NpuInt8Linear; returns how many."""
    matmul = matmul or npu_matmul()
    targets = [(name, module) for name, module in model.named_modules() if keep(module, name)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, NpuInt8Linear.from_linear(linear, matmul=matmul))
    return len(targets)


def adopt_int8_tensors(model: torch.nn.Module, keep: Callable[[torch.nn.Module, str], bool], *,
                       matmul: Int8Matmul | None = None) -> int:
    """Move Linears whose weights are torchao Int8Tensors (a pre-quantized checkpoint) onto
    NpuInt8Linear: the same int8 rows and scales, no dequantizing. Returns how many."""
    matmul = matmul or npu_matmul()
    count = 0
    for name, linear in list(model.named_modules()):
        weight = getattr(linear, "weight", None)
        if not keep(linear, name) or getattr(weight, "qdata", None) is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        scale = weight.scale.reshape(-1).to(torch.float32)  # (out, 1) -> (out,)
        setattr(parent, child, NpuInt8Linear(weight.qdata, scale, linear.bias, dtype=weight.dtype, matmul=matmul))
        count += 1
    return count
