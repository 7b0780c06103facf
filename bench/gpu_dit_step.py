"""Seconds per denoising step of the full-size Wan2.1-I2V-14B DiT through our loop, against
diffusers' own WanImageToVideoPipeline call, on one accelerator. Random weights, no download.

Prepared for a lent NVIDIA H100/H200 (under 8 minutes there): the DiT is built from its
config with random bf16 weights (16.4 B parameters, 33 GB); the VAE is the real architecture
with random weights; text and image embeddings are random tensors of the real shapes, so
neither T5 nor CLIP is needed. Both paths run the same transformer, scheduler, seed and
480p/81-frame condition; the step time is the median gap between step callbacks (2 DiT
passes per step with CFG). Compare with ../shared/reference/figures.md (one 480p forward:
3.28 s on one H200, i.e. about 6.6 s per CFG step).

    python bench/gpu_dit_step.py                 # CUDA, full size, 480p
    python bench/gpu_dit_step.py --tiny --device cpu --steps 2   # the same code on the tiny config

On the device machine diffusers is not installed: build a wheel here (pip wheel diffusers==0.42.1
--no-deps -w wheels/) and carry it, then pip install --no-deps wheels/*.whl there.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: E402

from inference.devices import resolve_device  # noqa: E402
from inference.cache.steps import StepCaches  # noqa: E402
from inference.generate import make_scheduler  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.parallel.fsdp import apply_dtypes, diffusers_fp32_patterns  # noqa: E402
from inference.pipeline.components import WanComponents  # noqa: E402
from inference.pipeline.denoise import denoise, initial_noise  # noqa: E402
from inference.pipeline.encode import Embeddings, condition_latents  # noqa: E402
from tests.old_loop import WanI2VPipeline  # noqa: E402

WAN_14B = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36,
           "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
           "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 1280,
           "added_kv_proj_dim": 5120, "rope_max_seq_len": 1024}
TINY = {**WAN_14B, "num_attention_heads": 4, "attention_head_dim": 8, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64,
        "num_layers": 2, "image_dim": 80, "added_kv_proj_dim": 32}


def random_dit(config: dict, device: torch.device, dtype: torch.dtype) -> WanTransformer3DModel:
    """The DiT with random weights of a sane scale, allocated on the device directly."""
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    apply_dtypes(model, dtype, diffusers_fp32_patterns(WanTransformer3DModel))
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=generator)
        fresh = type(model.rope)(config["attention_head_dim"], config["patch_size"], config["rope_max_seq_len"])
        model.rope.freqs_cos, model.rope.freqs_sin = (t.to(device) for t in (fresh.freqs_cos, fresh.freqs_sin))
    return model.eval().requires_grad_(False)


def _median_step(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def _sync(spec) -> float:
    from inference.devices import synchronize

    synchronize(spec)
    return time.perf_counter()


def build(args: argparse.Namespace, spec) -> tuple[WanComponents, Embeddings, PIL.Image.Image]:
    """One set of parts for both paths: random DiT and VAE, random embeddings, a noise image."""
    device, dtype = spec.torch_device, (torch.float32 if spec.kind == "cpu" else torch.bfloat16)
    dit = random_dit(TINY if args.tiny else WAN_14B, device, dtype)
    dit.set_attention_backend(args.backend)
    vae = AutoencoderKLWan(base_dim=8) if args.tiny else AutoencoderKLWan()
    generator = torch.Generator().manual_seed(1)
    prompt, negative = (torch.randn(1, 512, dit.config.text_dim, generator=generator).to(device, dtype) for _ in range(2))
    image_embeds = torch.randn(1, 257, dit.config.image_dim, generator=generator).to(device, dtype)
    pixels = np.random.default_rng(2).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    # The step caches installed as the loader installs them (none in use unless a job asks).
    components = WanComponents(tokenizer=None, text_encoder=None, image_processor=None, image_encoder=None,
                               vae=vae.to(device).eval(), transformer=dit, scheduler_config={"num_train_timesteps": 1000},
                               caches=StepCaches(dit))
    return components, Embeddings(prompt=prompt, negative=negative, image=image_embeds), PIL.Image.fromarray(pixels)


def ours(args, spec, components: WanComponents, embeddings: Embeddings, image) -> list[float]:
    """Our loop: condition latents, then denoise; a time stamp before the first and after every step."""
    ctx = ParallelContext.single(spec)
    stamps: list[float] = []
    condition = condition_latents(components, image, args.frames, ctx, None, lambda done, total: None)
    noise = initial_noise(3, (1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8), spec.torch_device)
    stamps.append(_sync(spec))
    denoise(components, make_scheduler(components.scheduler_config, "unipc", 5.0), latents=noise, condition=condition,
            embeddings=embeddings, guidance_scale=5.0, steps=args.steps, ctx=ctx,
            on_step=lambda done, total: stamps.append(_sync(spec)))
    return stamps


def theirs(args, spec, components: WanComponents, embeddings: Embeddings, image) -> list[float]:
    """diffusers' own call on the same parts (latents out: no decode on either side)."""
    pipe = WanI2VPipeline(tokenizer=None, text_encoder=None, image_processor=None, image_encoder=None,
                          vae=components.vae, transformer=components.transformer,
                          scheduler=make_scheduler(components.scheduler_config, "unipc", 5.0))
    pipe.set_progress_bar_config(disable=True)
    stamps = [_sync(spec)]

    def on_step(_pipe, _index, _t, _tensors):
        stamps.append(_sync(spec))
        return {}

    pipe(image=image, prompt_embeds=embeddings.prompt, negative_prompt_embeds=embeddings.negative,
         image_embeds=embeddings.image, height=args.height, width=args.width, num_frames=args.frames,
         num_inference_steps=args.steps, guidance_scale=5.0, generator=torch.Generator().manual_seed(3),
         output_type="latent", callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=[])
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny config (to check the script on a CPU)")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--backend", default="native", help="diffusers attention backend for both paths")
    args = parser.parse_args()
    if args.tiny and args.width == 832:
        args.width, args.height, args.frames = 64, 48, 9
    spec = resolve_device(args.device)
    started = time.perf_counter()
    parts = build(args, spec)
    build_seconds = time.perf_counter() - started
    with torch.inference_mode():
        ours(args, spec, *parts)  # warm-up: kernels, allocator
        ours_steps, theirs_steps = ours(args, spec, *parts), theirs(args, spec, *parts)
    print(json.dumps({
        "device": torch.cuda.get_device_name(spec.index) if spec.kind == "cuda" else spec.kind,
        "config": "tiny" if args.tiny else "Wan2.1-I2V-14B", "size": f"{args.width}x{args.height}x{args.frames}",
        "backend": args.backend, "steps": args.steps, "build_seconds": round(build_seconds, 1),
        "ours_seconds_per_step": round(_median_step(ours_steps), 3),
        "diffusers_seconds_per_step": round(_median_step(theirs_steps), 3),
        "peak_device_gib": round(torch.cuda.max_memory_allocated(spec.index) / 2**30, 1) if spec.kind == "cuda" else None,
    }))


if __name__ == "__main__":
    main()
