"""Component-level parity checks on a group of CPU ranks (run by tests/test_parallel_components.py).

    torchrun --nproc_per_node=2 tests/parallel_checks.py CKPT OUT.json

Every rank runs each check; rank 0 writes one JSON object of measurements. The frames-level
parity of whole jobs is in tests/test_parallel_parity.py; these checks look underneath: are
the sharded parameters bit-identical, how far do split computations drift in float32.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: E402
from transformers import UMT5EncoderModel  # noqa: E402

from inference.parallel.context import ParallelContext  # noqa: E402
from inference.parallel.topology import TopologyRequest, build_meshes, resolve_topology  # noqa: E402
from inference.parallel.vae import Strips, split_rows  # noqa: E402
from inference.pipeline.loading import sharded_text_encoder, sharded_transformer  # noqa: E402
from inference.runtime import init_runtime  # noqa: E402


def _context(runtime, **switches) -> ParallelContext:
    topology, _ = resolve_topology(TopologyRequest(**switches), world_size=runtime.world_size, num_heads=4, device_kind="cpu")
    return ParallelContext(topology=topology, rank=runtime.rank, device=runtime.device,
                           meshes=build_meshes(topology, "cpu"), control_group=runtime.control_group)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def dit_checks(ckpt: Path, runtime) -> dict:
    """FSDP: parameters bit-identical; one forward against the whole model. Ulysses: one forward."""
    reference = WanTransformer3DModel.from_pretrained(ckpt, subfolder="transformer").eval()
    ctx = _context(runtime, cfg_size=runtime.world_size, dit_fsdp=True)
    sharded = sharded_transformer(ckpt / "transformer", torch.float32, ctx)
    mismatched = [name for (name, p), (_, q) in zip(sharded.named_parameters(), reference.named_parameters())
                  if not torch.equal(p.full_tensor(), q)]
    rope_equal = all(torch.equal(getattr(sharded.rope, n), getattr(reference.rope, n)) for n in ("freqs_cos", "freqs_sin"))
    local_bytes = sum(p.to_local().numel() * p.element_size() for p in sharded.parameters())
    full_bytes = sum(p.numel() * p.element_size() for p in reference.parameters())
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 36, 3, 10, 8, generator=generator),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 512, 32, generator=generator),
        "encoder_hidden_states_image": torch.randn(1, 50, 80, generator=generator),
    }
    with torch.inference_mode():
        expected = reference(**inputs, return_dict=False)[0]
        fsdp_out = sharded(**inputs, return_dict=False)[0]
    # Ulysses over the whole group on the reference model itself.
    from inference.parallel.sequence import enable_sequence_parallel

    ulysses_ctx = _context(runtime)  # unset ULYSSES_SIZE takes the whole group
    enable_sequence_parallel(reference, ulysses_ctx.topology, ulysses_ctx.meshes, "cpu")
    with torch.inference_mode():
        ulysses_out = reference(**inputs, return_dict=False)[0]
    return {
        "fsdp_param_mismatches": mismatched,
        "fsdp_rope_equal": rope_equal,
        "fsdp_local_param_fraction": local_bytes / full_bytes,
        "fsdp_forward_max_diff": _max_diff(fsdp_out, expected),
        "ulysses_forward_max_diff": _max_diff(ulysses_out, expected),
        "forward_max_abs": float(expected.abs().max()),
    }


def t5_checks(ckpt: Path, runtime) -> dict:
    reference = UMT5EncoderModel.from_pretrained(ckpt / "text_encoder").eval()
    ctx = _context(runtime, cfg_size=runtime.world_size, t5_fsdp=True)
    sharded = sharded_text_encoder(ckpt / "text_encoder", torch.float32, ctx)
    mismatched = [name for (name, p), (_, q) in zip(sharded.named_parameters(), reference.named_parameters())
                  if not torch.equal(p.full_tensor(), q)]
    tokens = torch.tensor([[5, 9, 17, 3, 1] + [0] * 11])
    mask = (tokens > 0).long()
    with torch.inference_mode():
        diff = _max_diff(sharded(tokens, mask).last_hidden_state, reference(tokens, mask).last_hidden_state)
    return {"t5_param_mismatches": mismatched, "t5_forward_max_diff": diff,
            "t5_tied": sharded.encoder.embed_tokens.weight is sharded.shared.weight}


def vae_checks(ckpt: Path, runtime) -> dict:
    """Strip-parallel encoder and decoder against the whole frame, in float32, uneven strips."""
    vae = AutoencoderKLWan.from_pretrained(ckpt, subfolder="vae").eval()
    strips = Strips.split(5 * runtime.world_size - 1, dist.group.WORLD)  # uneven: one rank has a row less
    rows = sum(strips.counts)
    generator = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 5, 8 * rows, 24, generator=generator) * 2 - 1
    latents = torch.randn(1, 16, 2, rows, 3, generator=generator)
    start, stop = strips.bounds(8)
    with torch.inference_mode():
        whole_enc = vae.encode(video).latent_dist.mean
        whole_dec = vae.decode(latents).sample
        with split_rows(vae.encoder, strips):
            vae.clear_cache()
            part_enc = vae.encode(video[..., start:stop, :]).latent_dist.mean
        with split_rows(vae.decoder, strips):
            lo, hi = strips.bounds()
            part_dec = vae.decode(latents[..., lo:hi, :]).sample
        enc = strips.gather_rows(part_enc)
        dec = strips.gather_rows(part_dec)
    return {"vae_counts": list(strips.counts), "vae_encode_max_diff": _max_diff(enc, whole_enc),
            "vae_decode_max_diff": _max_diff(dec, whole_dec), "vae_decode_max_abs": float(whole_dec.abs().max())}


def main() -> None:
    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    runtime = init_runtime(device="cpu", timeout_seconds=300)
    report = {"world_size": runtime.world_size}
    for check in (dit_checks, t5_checks, vae_checks):
        report.update(check(ckpt, runtime))
    if runtime.rank == 0:
        out.write_text(json.dumps(report, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
