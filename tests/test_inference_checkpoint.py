"""inference.checkpoint and inference.tiny: validating, building and loading checkpoints."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from transformers import CLIPVisionModel, UMT5EncoderModel

from inference.checkpoint import CheckpointError, parse_dtype, validate_checkpoint_dir
from inference.pipeline.components import WanComponents
from inference.pipeline.loading import LoadOptions, load_components
from inference.tiny import create_tiny_checkpoint

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def ckpt_copy(tiny_ckpt: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))


def _error_for(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        validate_checkpoint_dir(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _weight_digests(ckpt: Path) -> dict[str, str]:
    return {
        str(p.relative_to(ckpt)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ckpt.rglob("*.safetensors"))
    }


# --------------------------------------------------------------------------- loading


def test_tiny_checkpoint_loads_through_the_real_loader(tiny_components: WanComponents) -> None:
    assert isinstance(tiny_components.transformer, WanTransformer3DModel)
    assert isinstance(tiny_components.vae, AutoencoderKLWan)
    assert isinstance(tiny_components.text_encoder, UMT5EncoderModel)
    assert isinstance(tiny_components.image_encoder, CLIPVisionModel)
    assert isinstance(UniPCMultistepScheduler.from_config(tiny_components.scheduler_config), UniPCMultistepScheduler)
    assert tiny_components.attention_backend == "native"
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        module = getattr(tiny_components, name)
        assert module.dtype == torch.float32, name
        assert module.device == torch.device("cpu"), name
        assert not module.training, name
        assert not any(p.requires_grad for p in module.parameters()), name


def test_tiny_model_has_the_real_model_channel_layout(tiny_components: WanComponents) -> None:
    tiny_pipe = WanImageToVideoPipeline(**tiny_components.as_diffusers_components())
    transformer = tiny_pipe.transformer.config
    inner_dim = transformer.num_attention_heads * transformer.attention_head_dim
    # 16 noise latents + 16 image-condition latents + 4 mask channels, as Wan2.1 I2V.
    assert tiny_pipe.vae.config.z_dim == 16
    assert transformer.in_channels == 36
    assert transformer.out_channels == 16
    assert tuple(transformer.patch_size) == (1, 2, 2)
    assert transformer.image_dim == tiny_pipe.image_encoder.config.hidden_size
    assert transformer.text_dim == tiny_pipe.text_encoder.config.d_model
    assert transformer.added_kv_proj_dim == inner_dim
    assert tiny_pipe.vae_scale_factor_temporal == 4
    assert tiny_pipe.vae_scale_factor_spatial == 8
    assert tiny_pipe.image_encoder.config.image_size == 224
    assert tiny_pipe.tokenizer.pad_token_id == 0


def test_tiny_scheduler_is_configured_like_wan(tiny_components: WanComponents) -> None:
    config = tiny_components.scheduler_config
    assert config["prediction_type"] == "flow_prediction"
    assert config["use_flow_sigmas"] is True
    assert config["flow_shift"] == 5.0
    assert config["num_train_timesteps"] == 1000


def test_dtype_overrides_apply_per_component(tiny_ckpt: Path, cpu_ctx) -> None:  # noqa: F811
    options = LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, dtypes={"transformer": torch.bfloat16})
    components = load_components(options, cpu_ctx)
    assert components.transformer.dtype == torch.bfloat16
    assert components.vae.dtype == torch.float32


def test_dtype_override_for_an_unknown_component_is_rejected(tiny_ckpt: Path, cpu_ctx) -> None:  # noqa: F811
    options = LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, dtypes={"unet": torch.float16})
    with pytest.raises(ValueError, match=r"dtypes has unknown components \['unet'\]"):
        load_components(options, cpu_ctx)


def test_load_components_validates_before_loading(ckpt_copy: Path, cpu_ctx) -> None:  # noqa: F811
    shutil.rmtree(ckpt_copy / "image_encoder")
    with pytest.raises(CheckpointError, match=r"is incomplete: missing image_encoder/$"):
        load_components(LoadOptions(ckpt_dir=ckpt_copy, device=cpu_ctx.device), cpu_ctx)


# --------------------------------------------------------------------------- validation


def test_complete_checkpoint_validates(tiny_ckpt: Path) -> None:
    validate_checkpoint_dir(tiny_ckpt)


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    assert _error_for(tmp_path / "nope") == f"MODEL_CKPT_DIR {tmp_path / 'nope'} does not exist"


def test_missing_model_index_is_named_in_the_error(ckpt_copy: Path) -> None:
    (ckpt_copy / "model_index.json").unlink()
    assert _error_for(ckpt_copy) == f"MODEL_CKPT_DIR {ckpt_copy} is incomplete: missing model_index.json"


def test_missing_transformer_folder_is_named_in_the_error(ckpt_copy: Path) -> None:
    shutil.rmtree(ckpt_copy / "transformer")
    assert _error_for(ckpt_copy) == f"MODEL_CKPT_DIR {ckpt_copy} is incomplete: missing transformer/"


@pytest.mark.parametrize(
    "relative",
    [
        "transformer/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer_config.json",
        "image_encoder/config.json",
        "image_processor/preprocessor_config.json",
        "scheduler/scheduler_config.json",
    ],
)
def test_missing_config_file_is_named_in_the_error(ckpt_copy: Path, relative: str) -> None:
    (ckpt_copy / relative).unlink()
    assert _error_for(ckpt_copy) == f"MODEL_CKPT_DIR {ckpt_copy} is incomplete: missing {relative}"


def test_missing_tokenizer_vocabulary_is_named_in_the_error(ckpt_copy: Path) -> None:
    (ckpt_copy / "tokenizer" / "tokenizer.json").unlink()
    assert _error_for(ckpt_copy).endswith("missing tokenizer/tokenizer.json (or spiece.model)")


def test_missing_weights_are_named_in_the_error(ckpt_copy: Path) -> None:
    (ckpt_copy / "text_encoder" / "model.safetensors").unlink()
    assert _error_for(ckpt_copy) == (
        f"MODEL_CKPT_DIR {ckpt_copy} is incomplete: missing text_encoder/ weights (*.safetensors or *.bin)"
    )


def test_missing_shard_of_a_sharded_model_is_named_in_the_error(ckpt_copy: Path) -> None:
    # 1. Turn the transformer into a two-shard checkpoint whose second shard never arrived.
    folder = ckpt_copy / "transformer"
    first_shard = folder / "diffusion_pytorch_model-00001-of-00002.safetensors"
    (folder / "diffusion_pytorch_model.safetensors").rename(first_shard)
    index = {
        "metadata": {},
        "weight_map": {
            "a.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "b.weight": "diffusion_pytorch_model-00002-of-00002.safetensors",
        },
    }
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))

    # 2. The missing shard, and the index that lists it, are named.
    assert _error_for(ckpt_copy) == (
        f"MODEL_CKPT_DIR {ckpt_copy} is incomplete: missing transformer/diffusion_pytorch_model-00002-of-00002"
        ".safetensors (listed in diffusion_pytorch_model.safetensors.index.json)"
    )


def test_a_checkpoint_of_another_pipeline_is_rejected(ckpt_copy: Path) -> None:
    index_path = ckpt_copy / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = "WanPipeline"
    index_path.write_text(json.dumps(index))
    assert "model_index.json names 'WanPipeline', expected 'WanImageToVideoPipeline'" in _error_for(ckpt_copy)


def test_a_wan22_two_expert_checkpoint_is_rejected(ckpt_copy: Path) -> None:
    index_path = ckpt_copy / "model_index.json"
    index = json.loads(index_path.read_text())
    index["transformer_2"] = ["diffusers", "WanTransformer3DModel"]
    index_path.write_text(json.dumps(index))
    assert "Wan2.2 two-expert checkpoint" in _error_for(ckpt_copy)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16), ("fp16", torch.float16), ("float16", torch.float16),
     ("fp32", torch.float32), (" float32 ", torch.float32)],
)
def test_parse_dtype_accepts_the_usual_names(name: str, dtype: torch.dtype) -> None:
    assert parse_dtype(name) is dtype


def test_parse_dtype_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown dtype 'int8'; allowed values: bf16, bfloat16, fp16"):
        parse_dtype("int8")


# --------------------------------------------------------------------------- the tiny checkpoint


def test_tiny_checkpoint_is_deterministic_for_a_seed(tiny_ckpt: Path, tmp_path: Path) -> None:
    same = create_tiny_checkpoint(tmp_path / "same", seed=0)
    other = create_tiny_checkpoint(tmp_path / "other", seed=1)
    assert _weight_digests(same) == _weight_digests(tiny_ckpt)
    assert _weight_digests(other) != _weight_digests(tiny_ckpt)


def test_tiny_checkpoint_has_the_diffusers_layout_and_stays_small(tiny_ckpt: Path) -> None:
    index = json.loads((tiny_ckpt / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    components = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler")
    for component in components:
        assert (tiny_ckpt / component).is_dir(), component
    assert not list(tiny_ckpt.rglob("*.bin")), "weights must be safetensors"
    total = sum(p.stat().st_size for p in tiny_ckpt.rglob("*") if p.is_file())
    assert total < 10 * 1024 * 1024


def test_tiny_checkpoint_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not an empty folder"):
        create_tiny_checkpoint(tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_management_command_writes_a_checkpoint_and_replaces_it_with_force(tmp_path: Path) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    target = tmp_path / "var" / "tiny"
    out = StringIO()
    call_command("create_tiny_checkpoint", str(target), "--seed", "3", stdout=out)
    assert out.getvalue().strip() == str(target.resolve())
    validate_checkpoint_dir(target)

    with pytest.raises(CommandError, match="pass --force to replace it"):
        call_command("create_tiny_checkpoint", str(target), stdout=StringIO())
    call_command("create_tiny_checkpoint", str(target), "--force", stdout=StringIO())
    validate_checkpoint_dir(target)


def test_management_command_force_never_deletes_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(CommandError, match="it is not a checkpoint"):
        call_command("create_tiny_checkpoint", str(tmp_path / "photos"), "--force", stdout=StringIO())
    assert (tmp_path / "photos" / "cat.jpg").exists()
