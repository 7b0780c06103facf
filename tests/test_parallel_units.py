"""Single-process pieces of inference.parallel: dtypes, shard sizes, attention, traffic model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from inference.parallel.fsdp import apply_dtypes, diffusers_fp32_patterns, transformers_fp32_patterns
from inference.parallel.sequence import NATIVE, NATIVE_CUDNN, NATIVE_NPU, _cpu_attention_with_lse, attention_backend_for
from inference.parallel.topology import TopologyRequest, resolve_topology
from inference.parallel.traffic import fsdp_shard_bytes, sent_bytes, step_traffic
from inference.parallel.vae import Strips


def test_meta_built_dit_gets_exactly_from_pretrained_dtypes(tiny_ckpt: Path) -> None:  # noqa: F811
    reference = WanTransformer3DModel.from_pretrained(tiny_ckpt, subfolder="transformer", torch_dtype=torch.bfloat16)
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(tiny_ckpt / "transformer"))
    apply_dtypes(model, torch.bfloat16, diffusers_fp32_patterns(WanTransformer3DModel))
    expected = {n: t.dtype for n, t in [*reference.named_parameters(), *reference.named_buffers()]}
    got = {n: t.dtype for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert got == expected
    assert got["blocks.0.scale_shift_table"] == torch.float32 and got["blocks.0.attn1.to_q.weight"] == torch.bfloat16


def test_t5_keeps_wo_in_fp32_only_under_fp16() -> None:
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
    assert transformers_fp32_patterns(model, torch.bfloat16) == ()
    assert transformers_fp32_patterns(model, torch.float16) == ("wo",)
    apply_dtypes(model, torch.float16, ("wo",))
    assert model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert model.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == torch.float16


def test_fsdp_shards_round_rows_up() -> None:
    layer = torch.nn.Linear(3, 5)  # weight (5, 3), bias (5,): 2 rows per rank of 4 after padding
    assert fsdp_shard_bytes(layer, 4) == (2 * 3 + 2) * 4


@pytest.mark.parametrize(
    ("device", "ring", "dtype", "backend"),
    [("cpu", False, torch.float32, NATIVE), ("cpu", True, torch.float32, NATIVE), ("cuda", False, torch.bfloat16, NATIVE_CUDNN),
     ("cuda", False, torch.float32, NATIVE), ("cuda", True, torch.bfloat16, NATIVE_CUDNN), ("npu", False, torch.bfloat16, NATIVE_NPU)],
)
def test_attention_backend_per_device(device, ring, dtype, backend) -> None:
    assert attention_backend_for(device, ring=ring, dtype=dtype) == backend


def test_a_named_backend_is_checked_against_diffusers_and_ring() -> None:
    assert attention_backend_for("cuda", ring=False, dtype=torch.bfloat16, requested="_native_flash") == "_native_flash"
    with pytest.raises(ValueError, match="ATTENTION_BACKEND='fastest' is not a diffusers attention backend"):
        attention_backend_for("cuda", ring=False, dtype=torch.bfloat16, requested="fastest")
    with pytest.raises(ValueError, match="returns no log-sum-exp, which RING_SIZE > 1 needs"):
        attention_backend_for("cuda", ring=True, dtype=torch.bfloat16, requested="_native_efficient")
    with pytest.raises(ValueError, match="returns no log-sum-exp"):
        attention_backend_for("cuda", ring=True, dtype=torch.bfloat16, requested="native")
    assert attention_backend_for("cpu", ring=True, dtype=torch.float32, requested="native") == "native"


def test_ring_on_npu_or_fp32_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="log-sum-exp"):
        attention_backend_for("npu", ring=True, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bf16 or fp16 DiT"):
        attention_backend_for("cuda", ring=True, dtype=torch.float32)


def test_the_npu_backend_name_is_one_diffusers_knows() -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName

    assert AttentionBackendName(NATIVE_NPU) is AttentionBackendName._NATIVE_NPU
    assert AttentionBackendName(NATIVE_CUDNN) is AttentionBackendName._NATIVE_CUDNN


def test_cpu_attention_returns_the_exact_log_sum_exp() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 8, generator=generator) for _ in range(3))  # (B, S, H, D)
    out, lse = _cpu_attention_with_lse(None, q, k, v, return_lse=True)
    scores = torch.einsum("bshd,bthd->bhst", q, k) / 8**0.5
    expected = torch.softmax(scores, dim=-1) @ v.transpose(1, 2)  # (B, H, S, D)
    torch.testing.assert_close(out, expected.transpose(1, 2))
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1).transpose(1, 2))


def test_one_rank_sends_nothing() -> None:
    topology, _ = resolve_topology(TopologyRequest(), world_size=1)
    with torch.device("meta"):
        dit = WanTransformer3DModel(num_layers=1, num_attention_heads=2, attention_head_dim=12)
    assert step_traffic(topology=topology, config=dit.config, tokens=64, activation_bytes=2, guidance=True) == {}


def test_collective_costs_follow_the_algorithms() -> None:
    # all-gather of 8 bytes among 4: 3 peers each get them; all-reduce: 2 (n-1)/n.
    assert sent_bytes("all_gather_into_tensor", (torch.zeros(2), 4, "unused")) == 24
    assert sent_bytes("wait_tensor", (torch.zeros(2),)) is None


def test_strips_split_rows_as_evenly_as_possible() -> None:
    strips = Strips(group=None, rank=2, counts=(3, 3, 2, 2))
    assert strips.bounds() == (6, 8) and strips.bounds(8) == (48, 64)
