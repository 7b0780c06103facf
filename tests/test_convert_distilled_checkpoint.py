"""A full step-distilled checkpoint (LightX2V's StepDistill-CfgDistill models, the original Wan
layout) through the existing converter: the distilled DiT keeps the base model's key names, so
an operator puts its one file in place of the base DiT shards (T5, CLIP and the VAE are the
base model's) and converts; the result serves sample_solver distill.

The distilled model is stood in for by a tiny DiT of other weights (another seed)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from safetensors.torch import load_file, save_file

from inference.original_layout import DIT_STEM
from inference.tiny import create_tiny_checkpoint
from tests.generate_support import tiny_request
from tests.original_layout import write_original_layout


@pytest.fixture(scope="module")
def folders(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("distilled")
    base = write_original_layout(tiny_ckpt, root / "Wan2.1-I2V-14B-720P")
    distilled_ckpt = create_tiny_checkpoint(root / "tiny-distilled", seed=1)
    distilled = write_original_layout(distilled_ckpt, root / "distilled-original")
    # The distilled DiT as one file (as LightX2V ships it) in place of the base DiT's shards.
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(distilled.glob(f"{DIT_STEM}*.safetensors")):
        tensors.update(load_file(shard))
    for old in base.glob(f"{DIT_STEM}*"):
        old.unlink()
    save_file(tensors, base / f"{DIT_STEM}.safetensors")
    converted = root / "converted"
    call_command("convert_wan_checkpoint", str(base), str(converted))
    shutil.rmtree(distilled)
    return distilled_ckpt, converted


def test_the_converted_dit_is_the_distilled_one_bit_for_bit(folders: tuple[Path, Path]) -> None:
    distilled_ckpt, converted = folders
    expected = load_file(distilled_ckpt / "transformer" / "diffusion_pytorch_model.safetensors")
    got: dict[str, torch.Tensor] = {}
    for shard in (converted / "transformer").glob("*.safetensors"):
        got.update(load_file(shard))
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if not torch.equal(got[k], expected[k])] == []


def test_the_converted_distilled_checkpoint_serves_a_four_step_job(folders: tuple[Path, Path], cpu_ctx) -> None:
    from inference.generate import generate
    from inference.pipeline.loading import LoadOptions, load_components

    components = load_components(LoadOptions(ckpt_dir=folders[1], device=cpu_ctx.device), cpu_ctx)
    result = generate(components, tiny_request(sample_solver="distill", infer_steps=4, guidance_scale=1.0),
                      ctx=cpu_ctx)
    assert result.frames.shape == (9, 64, 64, 3) and result.dit_forwards == 4
