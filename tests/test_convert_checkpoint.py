"""manage.py convert_wan_checkpoint: the original Wan2.1 layout into the diffusers layout.

A tiny checkpoint is written in the original key layout (tests/original_layout.py: Wan's own
module names, .pth files, a sharded DiT, the tokenizer under google/umt5-xxl/), converted, and
must give back every tensor bit for bit, load through the real loader and generate the very
frames of the diffusers-layout tiny model it came from.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command
from safetensors.torch import load_file

from inference.checkpoint import CheckpointError, validate_checkpoint_dir
from inference.convert import clip_tensors, t5_key
from inference.original_layout import T5_FILE
from tests.original_layout import write_original_layout


@pytest.fixture(scope="module")
def original(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return write_original_layout(tiny_ckpt, tmp_path_factory.mktemp("wan") / "Wan2.1-I2V-14B-720P")


@pytest.fixture(scope="module")
def converted(original: Path) -> Path:
    out = original.parent / "converted"
    call_command("convert_wan_checkpoint", str(original), str(out))
    return out


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update({k.removeprefix("vision_model."): v for k, v in load_file(path).items()})
    return tensors


@pytest.mark.parametrize("component", ["transformer", "vae", "text_encoder", "image_encoder"])
def test_conversion_gives_back_every_tensor_bit_for_bit(tiny_ckpt: Path, converted: Path, component: str) -> None:  # noqa: F811
    expected, got = _tensors(tiny_ckpt / component), _tensors(converted / component)
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if got[k].dtype != expected[k].dtype or not torch.equal(got[k], expected[k])] == []


def test_the_dit_keeps_its_shards_and_its_configuration(tiny_ckpt: Path, converted: Path) -> None:  # noqa: F811
    index = json.loads((converted / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    ours = json.loads((converted / "transformer" / "config.json").read_text())
    theirs = json.loads((tiny_ckpt / "transformer" / "config.json").read_text())
    for key in ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim", "ffn_dim",
                "num_layers", "image_dim", "added_kv_proj_dim", "patch_size", "qk_norm", "cross_attn_norm"):
        assert ours[key] == theirs[key], key


def test_the_converted_checkpoint_generates_the_same_frames(converted: Path, tiny_components, cpu_ctx) -> None:  # noqa: F811
    from inference.generate import GenerationRequest, generate
    from inference.trial import sample_image
    from inference.pipeline.loading import LoadOptions, load_components

    validate_checkpoint_dir(converted)
    loaded = load_components(LoadOptions(ckpt_dir=converted, device=cpu_ctx.device), cpu_ctx)
    request = GenerationRequest(prompt="a dog runs on green grass", negative_prompt=None, image=sample_image(64, 64),
                                width=64, height=64, num_frames=9, guidance_scale=4.0, infer_steps=2, seed=21,
                                sample_solver="unipc", sample_shift=5.0)
    ours = generate(loaded, request, ctx=cpu_ctx).frames
    theirs = generate(tiny_components, request, ctx=cpu_ctx).frames
    np.testing.assert_array_equal(ours, theirs)


def test_the_daemon_refuses_an_original_layout_folder_naming_the_conversion(original: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        validate_checkpoint_dir(original)
    message = str(caught.value)
    assert "original Wan2.1 layout" in message and "manage.py convert_wan_checkpoint" in message and "\n" not in message


def test_an_existing_destination_is_refused(original: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(CommandError, match="already exists"):
        call_command("convert_wan_checkpoint", str(original), str(tmp_path / "taken"))


def test_an_incomplete_source_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / T5_FILE).write_bytes(b"")
    with pytest.raises(CommandError, match=r"missing models_clip_open-clip.*\.pth, Wan2.1_VAE.pth, config.json"):
        call_command("convert_wan_checkpoint", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_t5_renames_follow_wans_module_names() -> None:
    assert t5_key("blocks.3.ffn.gate.0.weight") == "encoder.block.3.layer.1.DenseReluDense.wi_0.weight"
    assert t5_key("blocks.3.ffn.fc1.weight") == "encoder.block.3.layer.1.DenseReluDense.wi_1.weight"
    assert t5_key("blocks.0.pos_embedding.embedding.weight") == "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    with pytest.raises(KeyError, match="unknown T5 key"):
        t5_key("blocks.0.mystery.weight")


def test_clip_splits_the_fused_qkv_in_q_k_v_order() -> None:
    qkv = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2)
    out = clip_tensors({"visual.transformer.0.attn.to_qkv.weight": qkv, "visual.head": torch.zeros(2, 3),
                        "textual.x": torch.zeros(1), "log_scale": torch.zeros(())})
    assert sorted(out) == ["encoder.layers.0.self_attn.k_proj.weight", "encoder.layers.0.self_attn.q_proj.weight",
                           "encoder.layers.0.self_attn.v_proj.weight"]
    assert torch.equal(out["encoder.layers.0.self_attn.k_proj.weight"], qkv[2:4])
