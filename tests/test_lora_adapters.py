"""LoRA adapters on one CPU rank: each key format, the offline-merged equivalent, scale 0, no leak."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.generate_support import run_on_cpu, tiny_request
from tests.lora_support import merged_checkpoint, random_deltas, write_lora, write_peft_with_metadata

SCALE = 0.7


@pytest.fixture(scope="module")
def lora_setup(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    folder = tmp_path_factory.mktemp("loras")
    deltas = random_deltas(tiny_ckpt, seed=1)
    for fmt in ("wan", "peft", "kohya"):
        write_lora(folder, f"style-{fmt}", deltas, fmt)
    write_peft_with_metadata(folder, "style-peft-metadata", deltas)
    write_lora(folder, "other.v1", random_deltas(tiny_ckpt, seed=2, rank=3, alpha=1.5), "wan")
    return folder, deltas


@pytest.fixture(scope="module")
def lora_components(tiny_ckpt: Path, cpu_ctx, lora_setup):  # noqa: F811
    from inference.pipeline.loading import LoadOptions, load_components

    return load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, lora_dir=lora_setup[0]), cpu_ctx)


def _effective_delta(components, name: str, module: str) -> torch.Tensor:
    layer = components.transformer.get_submodule(module)
    ident = components.loras.ids[name]
    base = layer.lora_alpha[ident] / layer.r[ident]
    return base * layer.lora_B[ident].weight @ layer.lora_A[ident].weight


def test_every_key_format_loads_to_the_same_weights(lora_components, lora_setup) -> None:
    _, deltas = lora_setup
    assert {entry["format"] for entry in lora_components.loras.describe()} == {"wan", "peft", "kohya"}
    for fmt in ("wan", "peft", "kohya", "peft-metadata"):  # the last: diffusers' saved r and lora_alpha
        for module in deltas.modules:
            torch.testing.assert_close(_effective_delta(lora_components, f"style-{fmt}", module), deltas.delta(module),
                                       rtol=1e-5, atol=1e-6, msg=f"{fmt} {module}")


def test_the_daemon_reports_each_adapter_and_its_memory(lora_components, lora_setup) -> None:
    entries = {entry["name"]: entry for entry in lora_components.loras.describe()}
    assert sorted(entries) == ["other.v1", "style-kohya", "style-peft", "style-peft-metadata", "style-wan"]
    _, deltas = lora_setup
    float32_numbers = sum(down.numel() + up.numel() for down, up, _ in deltas.modules.values())
    assert entries["style-wan"]["memory_bytes"] == 4 * float32_numbers
    assert entries["other.v1"]["rank"] == 3 and entries["style-wan"]["rank"] == 2
    assert len(entries["style-wan"]["sha256"]) == 12
    assert entries["style-wan"]["size_bytes"] == (lora_setup[0] / "style-wan.safetensors").stat().st_size


def test_a_lora_at_scale_s_equals_its_deltas_merged_offline(lora_components, lora_setup, tiny_ckpt, cpu_ctx,
                                                           tmp_path) -> None:  # noqa: F811
    from inference.pipeline.loading import LoadOptions, load_components

    merged = load_components(LoadOptions(ckpt_dir=merged_checkpoint(tiny_ckpt, tmp_path / "merged", lora_setup[1], SCALE),
                                         device=cpu_ctx.device), cpu_ctx)
    # 1. One DiT forward: float32 rounding only.
    lora_components.loras.activate([("style-wan", SCALE)])
    generator = torch.Generator().manual_seed(0)
    inputs = {"hidden_states": torch.randn(1, 36, 3, 8, 8, generator=generator), "timestep": torch.tensor([500.0]),
              "encoder_hidden_states": torch.randn(1, 512, 32, generator=generator),
              "encoder_hidden_states_image": torch.randn(1, 50, 80, generator=generator)}
    with torch.inference_mode():
        ours = lora_components.transformer(**inputs, return_dict=False)[0]
        theirs = merged.transformer(**inputs, return_dict=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # 2. A whole job: the frames agree to the last 8-bit step.
    with_lora = run_on_cpu(lora_components, tiny_request(loras=[("style-wan", SCALE)])).frames
    offline = run_on_cpu(merged, tiny_request()).frames
    assert np.abs(with_lora.astype(np.int16) - offline.astype(np.int16)).max() <= 1


def test_no_lora_and_scale_zero_give_the_video_of_a_daemon_without_adapters(lora_components, tiny_components) -> None:
    plain = run_on_cpu(tiny_components, tiny_request()).frames
    assert np.array_equal(run_on_cpu(lora_components, tiny_request(loras=[])).frames, plain)
    assert np.array_equal(run_on_cpu(lora_components, tiny_request(loras=[("style-wan", 0.0)])).frames, plain)


def test_nothing_of_one_jobs_lora_leaks_into_the_next(lora_components, tiny_components) -> None:
    plain = run_on_cpu(tiny_components, tiny_request()).frames
    first = run_on_cpu(lora_components, tiny_request(loras=[("style-wan", 1.0), ("other.v1", 0.5)])).frames
    assert not np.array_equal(first, plain)  # the adapters do change the video
    assert np.array_equal(run_on_cpu(lora_components, tiny_request()).frames, plain)
    only_other = run_on_cpu(lora_components, tiny_request(loras=[("other.v1", 0.5)])).frames
    assert not np.array_equal(only_other, first)
    again = run_on_cpu(lora_components, tiny_request(loras=[("style-wan", 1.0), ("other.v1", 0.5)])).frames
    assert np.array_equal(again, first)


def test_the_job_reports_the_loras_it_used(lora_components) -> None:
    result = run_on_cpu(lora_components, tiny_request(loras=[("style-kohya", 0.25)]))
    assert result.acceleration["loras"] == [{"name": "style-kohya", "scale": 0.25}]


def test_an_adapter_the_daemon_does_not_hold_fails_the_job_naming_it(lora_components, tiny_components) -> None:
    with pytest.raises(ValueError, match="unknown LoRA nope; this daemon holds: other.v1, style-kohya"):
        run_on_cpu(lora_components, tiny_request(loras=[("nope", 1.0)]))
    with pytest.raises(ValueError, match="holds no LoRA adapters"):
        run_on_cpu(tiny_components, tiny_request(loras=[("style-wan", 1.0)]))


def test_an_unrecognised_key_format_is_refused_with_the_file_name(tmp_path: Path, tiny_ckpt: Path) -> None:  # noqa: F811
    from safetensors.torch import save_file

    from inference.lora import read_adapters

    save_file({"something.weight": torch.zeros(2, 2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ValueError, match="odd.safetensors: unrecognised LoRA key format"):
        read_adapters(tmp_path, image_dim=80)


def test_the_attention_cache_runs_a_lora_job_as_it_runs_the_merged_weights(lora_components, lora_setup, tiny_ckpt,
                                                                          cpu_ctx, tmp_path) -> None:  # noqa: F811
    from inference.cache.steps import CacheRequest
    from inference.pipeline.loading import LoadOptions, load_components

    merged = load_components(LoadOptions(ckpt_dir=merged_checkpoint(tiny_ckpt, tmp_path / "merged", lora_setup[1], SCALE),
                                         device=cpu_ctx.device), cpu_ctx)
    cache = CacheRequest(method="attention", start_step=0, interval=2, end_step=3)
    with_lora = run_on_cpu(lora_components, tiny_request(infer_steps=4, cache=cache, loras=[("style-peft", SCALE)]))
    offline = run_on_cpu(merged, tiny_request(infer_steps=4, cache=cache))
    assert with_lora.acceleration["cache"]["reused"] == offline.acceleration["cache"]["reused"]
    assert sum(with_lora.acceleration["cache"]["reused"].values()) > 0
    assert np.abs(with_lora.frames.astype(np.int16) - offline.frames.astype(np.int16)).max() <= 1


def test_an_adapter_that_matches_no_module_stops_the_load_naming_it(tmp_path: Path, tiny_ckpt: Path, cpu_ctx) -> None:  # noqa: F811
    from safetensors.torch import save_file

    from inference.pipeline.loading import LoadOptions, load_components

    save_file({"transformer.nowhere.lora_A.weight": torch.zeros(2, 4), "transformer.nowhere.lora_B.weight": torch.zeros(4, 2)},
              str(tmp_path / "stray.safetensors"))
    with pytest.raises(ValueError, match="LoRA stray: .*not found in the base model"):
        load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, lora_dir=tmp_path), cpu_ctx)


def test_an_adapter_for_another_model_size_stops_the_load_naming_it(tmp_path: Path, tiny_ckpt: Path, cpu_ctx) -> None:  # noqa: F811
    from safetensors.torch import save_file

    from inference.pipeline.loading import LoadOptions, load_components

    # The tiny DiT's attention is 32 wide; this adapter was made for a 48-wide one.
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 48),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(48, 2)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="LoRA wrong: "):
        load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device, lora_dir=tmp_path), cpu_ctx)
