"""Our pipeline against the official Wan2.1 code, on the same tiny random weights, in float32.

    python bench/official_parity.py --wan-repo /path/to/Wan2.1   # a checkout of Wan-Video/Wan2.1 (9737cba)

1. Tiny random weights: inference/tiny.py's checkpoint, written in the original Wan2.1 layout
   (tests/original_layout.py), then converted back by our converter (inference/convert.py).
2. The official modules (wan/modules/model.py, vae.py, t5.py, clip.py, wan/utils/fm_solvers*.py)
   load the original-layout files; ours load the converted checkpoint (inference.pipeline.loading).
3. Compared on the same inputs: the DiT forward (t = 999, 500, 1), the VAE encode of
   [image, zeros...] and the decode, the UMT5 encoder (padded to 512 tokens), the CLIP encoder
   (the official whole-image bicubic stretch), and a 40-step, shift-5, guidance-5 CFG loop with
   UniPC and with DPM++ (the latents before decoding), each mirroring wan/image2video.py.

Prints one row per comparison (max abs error, relative error = max abs error / max abs of the
official output) and exits 1 when any error is above --tolerance (1e-4: float32 round-off through
a few layers is around 1e-6; a real difference, such as a sigma grid, shows at 1e-3 or more).

What the official code needs and this machine lacks is shimmed here, nothing is installed:
flash-attn (its attention is replaced by torch SDPA with the same key-length masking), einops
(the VAE's two rearrange patterns), torchvision (imported by clip.py, unused on this path),
easydict and the package __init__ files (the modules are imported one by one), and a CUDA device
(t5.py evaluates torch.cuda.current_device() at import). The official constructors hard-code the
14B sizes; they are given the tiny ones (the DiT's image projection takes CLIP's 80 channels
instead of 1280). No official code is copied into this repository.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from inference.cache.steps import CacheRequest  # noqa: E402
from inference.convert import convert_checkpoint  # noqa: E402
from inference.devices import resolve_device  # noqa: E402
from inference.generate import make_scheduler  # noqa: E402
from inference.original_layout import CLIP_FILE, T5_FILE, TOKENIZER_DIR, VAE_FILE  # noqa: E402
from inference.parallel.context import ParallelContext  # noqa: E402
from inference.pipeline.decode import _decode_chunks  # noqa: E402
from inference.pipeline.denoise import denoise  # noqa: E402
from inference.pipeline.encode import Embeddings, _vae_stats, condition_latents, encode_image, encode_texts  # noqa: E402
from inference.pipeline.loading import LoadOptions, load_components  # noqa: E402
from inference.tiny import create_tiny_checkpoint  # noqa: E402
from tests.original_layout import write_original_layout  # noqa: E402
from videojobs.params import DEFAULT_NEGATIVE_PROMPT  # noqa: E402

TOLERANCE = 1e-4
WIDTH, HEIGHT, FRAMES = 64, 48, 9  # latents (16, 3, 6, 8): 36 DiT tokens
STEPS, SHIFT, GUIDANCE, SEED = 40, 5.0, 5.0, 42
PROMPT = "a cat walks slowly across a sunny garden while the camera follows"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # wan/modules/clip.py's normalisation (OpenAI CLIP)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------- the official modules


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_lens: Any = None, k_lens: Any = None,
                   dropout_p: float = 0.0, softmax_scale: float | None = None, q_scale: Any = None,
                   causal: bool = False, window_size: Any = (-1, -1), deterministic: bool = False,
                   dtype: Any = None, version: Any = None) -> torch.Tensor:
    """wan.modules.attention.flash_attention's contract on torch SDPA: q (B, Lq, N, C), k and v
    (B, Lk, N, C); keys past k_lens[b] are not attended to. Returns (B, Lq, N, C) in q's dtype."""
    if window_size != (-1, -1) or q_scale is not None:
        raise ValueError("the SDPA stand-in has no sliding window or q_scale (Wan2.1 I2V uses neither)")
    mask = None
    if k_lens is not None:
        positions = torch.arange(k.size(1), device=k.device)
        mask = (positions[None, :] < k_lens.to(k.device)[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                         dropout_p=dropout_p, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).contiguous().to(q.dtype)


def _rearrange(x: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """The two einops patterns wan/modules/vae.py uses."""
    compact = pattern.replace(" ", "")
    if compact == "bcthw->(bt)chw":
        b, c, t, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    if compact == "(bt)chw->bcthw":
        bt, c, h, w = x.shape
        t = sizes["t"]
        return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)
    raise ValueError(f"no stand-in for the einops pattern {pattern!r}")


def _install_shims(repo: Path) -> None:
    """Packages for wan, wan.modules and wan.utils without running their __init__ files, and
    stand-ins for the imports this machine lacks."""
    for name in ("wan", "wan.modules", "wan.utils"):
        package = types.ModuleType(name)
        package.__path__ = [str(repo.joinpath(*name.split(".")))]
        sys.modules[name] = package
    if importlib.util.find_spec("einops") is None:
        sys.modules["einops"] = types.SimpleNamespace(rearrange=_rearrange)
    if importlib.util.find_spec("torchvision") is None:
        torchvision = types.ModuleType("torchvision")
        torchvision.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": torchvision, "torchvision.transforms": torchvision.transforms})


def import_official(repo: Path) -> types.SimpleNamespace:
    """The official modules, imported from the checkout, attention on SDPA."""
    if not (repo / "wan" / "image2video.py").is_file():
        raise SystemExit(f"{repo} is not a Wan2.1 checkout (no wan/image2video.py)")
    _install_shims(repo)
    real_current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0  # t5.py's default argument, evaluated at import
    try:
        modules = {name: importlib.import_module(f"wan.{name}") for name in (
            "modules.model", "modules.vae", "modules.t5", "modules.clip", "utils.fm_solvers", "utils.fm_solvers_unipc")}
    finally:
        torch.cuda.current_device = real_current_device
    modules["modules.model"].flash_attention = sdpa_attention
    modules["modules.clip"].flash_attention = sdpa_attention
    return types.SimpleNamespace(**{name.split(".")[1]: module for name, module in modules.items()})


def load_official(wan: types.SimpleNamespace, original: Path, ours: Any) -> types.SimpleNamespace:
    """The official DiT, VAE, T5 and CLIP on the original-layout files, at the tiny sizes."""
    # 1. DiT: WanModel from config.json; its image projection takes the tiny CLIP's width.
    config = {k: v for k, v in json.loads((original / "config.json").read_text()).items()
              if not k.startswith("_")}
    config.setdefault("text_dim", ours.transformer.config.text_dim)  # the 14B config.json leaves it to 4096
    dit = wan.model.WanModel(**config)
    dit.img_emb = wan.model.MLPProj(ours.image_encoder.config.hidden_size, config["dim"])
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(original.glob("diffusion_pytorch_model-*.safetensors")):
        state.update(load_file(shard))
    dit.load_state_dict(state, strict=True)
    # 2. VAE: the official wrapper, its 3D VAE at the tiny base width.
    wan.vae._video_vae = functools.partial(wan.vae._video_vae, dim=ours.vae.config.base_dim)
    vae = wan.vae.WanVAE(z_dim=ours.vae.config.z_dim, vae_pth=str(original / VAE_FILE), dtype=torch.float32,
                         device="cpu")
    # 3. T5: the official wrapper (its tokenizer, its trimming), umt5 at the tiny sizes.
    t5c = ours.text_encoder.config
    wan.t5.umt5_xxl = functools.partial(
        wan.t5.umt5_xxl, vocab_size=t5c.vocab_size, dim=t5c.d_model, dim_attn=t5c.d_kv * t5c.num_heads,
        dim_ffn=t5c.d_ff, num_heads=t5c.num_heads, encoder_layers=t5c.num_layers, decoder_layers=t5c.num_layers,
        num_buckets=t5c.relative_attention_num_buckets, dropout=0.0)
    t5 = wan.t5.T5EncoderModel(text_len=512, dtype=torch.float32, device=torch.device("cpu"),
                               checkpoint_path=str(original / T5_FILE), tokenizer_path=str(original / TOKENIZER_DIR))
    return types.SimpleNamespace(dit=dit.eval(), vae=vae, t5=t5, clip=_official_clip(wan, original, ours))


def _official_clip(wan: types.SimpleNamespace, original: Path, ours: Any) -> Any:
    """wan.modules.clip.CLIPModel with its ViT at the tiny sizes; its visual() runs as written.
    (Its constructor would build the 14B text tower too, and torchvision's transforms.)"""
    cfg = ours.image_encoder.config
    state = torch.load(original / CLIP_FILE, map_location="cpu")
    visual = wan.clip.VisionTransformer(
        image_size=cfg.image_size, patch_size=cfg.patch_size, dim=cfg.hidden_size,
        mlp_ratio=cfg.intermediate_size / cfg.hidden_size, out_dim=state["visual.head"].shape[1],
        num_heads=cfg.num_attention_heads, num_layers=cfg.num_hidden_layers, pool_type="token",
        activation="gelu", norm_eps=cfg.layer_norm_eps)
    visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")})
    holder = torch.nn.Module()
    holder.visual, holder.image_size = visual.eval(), cfg.image_size
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    clip = object.__new__(wan.clip.CLIPModel)
    clip.model, clip.dtype = holder, torch.float32
    clip.transforms = types.SimpleNamespace(transforms=[lambda x: (x - mean) / std])  # T.Normalize(mean, std)
    return clip


# --------------------------------------------------------------------------- comparisons


def error(official: torch.Tensor, ours: torch.Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max abs of the official output), in float64."""
    official, ours = official.detach().double().cpu(), ours.detach().double().cpu()
    if official.shape != ours.shape:
        raise ValueError(f"shapes differ: official {tuple(official.shape)}, ours {tuple(ours.shape)}")
    worst = float((official - ours).abs().max())
    return worst, worst / max(float(official.abs().max()), 1e-30)


def _worse(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return max(a[0], b[0]), max(a[1], b[1])


def sample_image() -> PIL.Image.Image:
    """A smooth random picture at exactly WIDTH x HEIGHT (no resizing on either side)."""
    rng = np.random.default_rng(SEED)
    coarse = rng.integers(0, 256, size=(HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    return PIL.Image.fromarray(coarse).resize((WIDTH, HEIGHT), PIL.Image.Resampling.BICUBIC)


def official_pixels(image: PIL.Image.Image) -> torch.Tensor:
    """TF.to_tensor(img).sub_(0.5).div_(0.5), as wan/image2video.py starts: (3, H, W) in [-1, 1]."""
    unit = torch.from_numpy(np.asarray(image, dtype=np.uint8).astype(np.float32) / 255.0).permute(2, 0, 1)
    return (unit - 0.5) / 0.5


def latent_grid() -> tuple[int, int, int]:
    """(T, h, w) of the latents."""
    return (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8


def official_condition(official: types.SimpleNamespace, image: PIL.Image.Image) -> torch.Tensor:
    """y of wan/image2video.py: the 4 mask channels (the first frame fixed), then the VAE latents
    of [image, zeros...]. -> (20, T, h, w)."""
    frames, h, w = latent_grid()
    pixels = official_pixels(image)
    video = torch.cat([pixels[:, None], torch.zeros(3, FRAMES - 1, HEIGHT, WIDTH)], dim=1)  # (3, F, H, W)
    latents = official.vae.encode([video])[0]
    mask = torch.zeros(4, frames, h, w)
    mask[:, 0] = 1.0
    return torch.cat([mask, latents])


def compare_dit(official: types.SimpleNamespace, ours: Any, rng: torch.Generator) -> tuple[float, float]:
    frames, h, w = latent_grid()
    latents = torch.randn(16, frames, h, w, generator=rng)
    y = torch.randn(20, frames, h, w, generator=rng)
    context = torch.randn(11, ours.text_encoder.config.d_model, generator=rng)  # 11 tokens, padded to 512 below
    clip = torch.randn(1, 50, ours.image_encoder.config.hidden_size, generator=rng)
    padded = torch.cat([context, context.new_zeros(512 - context.size(0), context.size(1))])[None]
    worst = (0.0, 0.0)
    for t in (999.0, 500.0, 1.0):
        theirs = official.dit([latents], t=torch.tensor([t]), context=[context], seq_len=frames * h * w // 4,
                              clip_fea=clip, y=[y])[0]
        mine = ours.transformer(hidden_states=torch.cat([latents, y])[None], timestep=torch.tensor([t]),
                                encoder_hidden_states=padded, encoder_hidden_states_image=clip, return_dict=False)[0][0]
        worst = _worse(worst, error(theirs, mine))
    return worst


def compare_vae(official: types.SimpleNamespace, ours: Any, ctx: ParallelContext,
                rng: torch.Generator) -> dict[str, tuple[float, float]]:
    image = sample_image()
    theirs = official_condition(official, image)[4:]
    mine = condition_latents(ours, image, FRAMES, ctx, None, lambda *_: None)[0, 4:]
    z = torch.randn(1, 16, *latent_grid(), generator=rng)
    decoded = official.vae.decode([z[0]])[0]
    mean, inv_std = _vae_stats(ours.vae, z)
    mine_decoded = _decode_chunks(ours.vae, z / inv_std + mean, lambda *_: None)[0]  # inference/pipeline/decode.py
    return {"VAE encode of [image, zeros]": error(theirs, mine), "VAE decode": error(decoded, mine_decoded)}


def compare_t5(official: types.SimpleNamespace, ours: Any, ctx: ParallelContext) -> tuple[float, float]:
    worst = (0.0, 0.0)
    for text in (PROMPT, DEFAULT_NEGATIVE_PROMPT, "  a red car   drives through a rainy city street at night "):
        trimmed = official.t5([text], torch.device("cpu"))[0]  # (L, d)
        theirs = torch.cat([trimmed, trimmed.new_zeros(512 - trimmed.size(0), trimmed.size(1))])  # WanModel pads so
        mine = encode_texts(ours, [text], ctx)[0][0]
        worst = _worse(worst, error(theirs, mine))
    return worst


def compare_clip(official: types.SimpleNamespace, ours: Any, ctx: ParallelContext) -> tuple[float, float]:
    image = sample_image()
    theirs = official.clip.visual([official_pixels(image)[:, None]])  # wan/image2video.py: img[:, None, :, :]
    return error(theirs, encode_image(ours, image, ctx))


def official_loop(wan: types.SimpleNamespace, official: types.SimpleNamespace, solver: str,
                  noise: torch.Tensor) -> torch.Tensor:
    """The sampling of wan/image2video.py WanI2V.generate on the official modules. -> (16, T, h, w)."""
    # 1. The inputs: the prompts through T5, the image through CLIP and the VAE.
    frames, h, w = latent_grid()
    image = sample_image()
    context = official.t5([PROMPT], torch.device("cpu"))
    context_null = official.t5([DEFAULT_NEGATIVE_PROMPT], torch.device("cpu"))
    clip_context = official.clip.visual([official_pixels(image)[:, None]])
    y = official_condition(official, image)
    seq_len = frames * h * w // 4
    # 2. The scheduler, as there: UniPC sets its own grid; DPM++ takes get_sampling_sigmas.
    if solver == "unipc":
        scheduler = wan.fm_solvers_unipc.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1,
                                                                      use_dynamic_shifting=False)
        scheduler.set_timesteps(STEPS, device="cpu", shift=SHIFT)
        timesteps = scheduler.timesteps
    else:
        scheduler = wan.fm_solvers.FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1,
                                                                   use_dynamic_shifting=False)
        timesteps, _ = wan.fm_solvers.retrieve_timesteps(
            scheduler, device="cpu", sigmas=wan.fm_solvers.get_sampling_sigmas(STEPS, SHIFT))
    # 3. CFG: conditional and unconditional passes, combined, one solver step.
    latent = noise
    generator = torch.Generator().manual_seed(SEED)
    for t in timesteps:
        timestep = torch.stack([t])
        cond = official.dit([latent], t=timestep, context=[context[0]], clip_fea=clip_context, seq_len=seq_len, y=[y])[0]
        uncond = official.dit([latent], t=timestep, context=context_null, clip_fea=clip_context, seq_len=seq_len,
                              y=[y])[0]
        guided = uncond + GUIDANCE * (cond - uncond)
        latent = scheduler.step(guided.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False,
                                generator=generator)[0].squeeze(0)
    return latent


def our_loop(ours: Any, ctx: ParallelContext, solver: str, noise: torch.Tensor) -> torch.Tensor:
    """Our encoders, scheduler and loop (inference/generate.py's steps, the latents before decoding)."""
    image = sample_image()
    prompt, negative = encode_texts(ours, [PROMPT, DEFAULT_NEGATIVE_PROMPT], ctx)
    embeddings = Embeddings(prompt=prompt, negative=negative, image=encode_image(ours, image, ctx))
    condition = condition_latents(ours, image, FRAMES, ctx, None, lambda *_: None)
    scheduler = make_scheduler(ours.scheduler_config, solver, SHIFT)
    ours.caches.begin(CacheRequest(), STEPS, guidance=True)  # no step cache, as generate() starts a job
    try:
        return denoise(ours, scheduler, latents=noise[None], condition=condition, embeddings=embeddings,
                       guidance_scale=GUIDANCE, steps=STEPS, ctx=ctx, on_step=lambda *_: None)[0]
    finally:
        ours.caches.end()


# --------------------------------------------------------------------------- the run


def build(workdir: Path, wan: types.SimpleNamespace) -> tuple[types.SimpleNamespace, Any, ParallelContext]:
    """Tiny weights in both layouts; the official modules on one, ours on the other."""
    tiny = create_tiny_checkpoint(workdir / "tiny")
    original = write_original_layout(tiny, workdir / "original")
    converted = convert_checkpoint(original, workdir / "converted", progress=lambda _message: None)
    ctx = ParallelContext.single(resolve_device("cpu"))
    ours = load_components(LoadOptions(ckpt_dir=converted, device=ctx.device, prompt_cache_size=0), ctx)
    return load_official(wan, original, ours), ours, ctx


def run(repo: Path) -> list[tuple[str, float, float]]:
    wan = import_official(repo)
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory(prefix="official-parity-") as folder, torch.no_grad():
        official, ours, ctx = build(Path(folder), wan)
        rng = torch.Generator().manual_seed(SEED)
        rows: dict[str, tuple[float, float]] = {"DiT forward (t = 999, 500, 1)": compare_dit(official, ours, rng)}
        rows.update(compare_vae(official, ours, ctx, rng))
        rows["T5 encoder (UMT5, 512 tokens)"] = compare_t5(official, ours, ctx)
        rows["CLIP encoder (whole image, bicubic 224)"] = compare_clip(official, ours, ctx)
        noise = torch.randn(16, *latent_grid(), generator=rng)
        for solver in ("unipc", "dpm++"):
            label = f"{STEPS}-step CFG loop, {solver}, shift {SHIFT:g}, guidance {GUIDANCE:g}"
            rows[label] = error(official_loop(wan, official, solver, noise), our_loop(ours, ctx, solver, noise))
    return [(name, *values) for name, values in rows.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wan-repo", type=Path, required=True, help="a checkout of Wan-Video/Wan2.1 (tested: 9737cba)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"largest error accepted (default {TOLERANCE:g})")
    args = parser.parse_args(argv)
    rows = run(args.wan_repo.resolve())
    print(f"| component | max abs error | relative error | within {args.tolerance:g} |")
    print("|---|---|---|---|")
    failed = False
    for name, absolute, relative in rows:
        ok = absolute <= args.tolerance and relative <= args.tolerance
        failed |= not ok
        print(f"| {name} | {absolute:.2e} | {relative:.2e} | {'yes' if ok else 'NO'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
