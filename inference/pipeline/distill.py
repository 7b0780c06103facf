"""The step-distilled sampler (``sample_solver: "distill"``), after LightX2V's step-distill scheduler.

LightX2V (ModelTC/LightX2V, lightx2v/models/schedulers/wan/step_distill/scheduler.py) samples its
step- and CFG-distilled Wan2.1 (the full StepDistill-CfgDistill checkpoints, or the 4-step
distill LoRA on the base model) like this, which is what we reproduce (our own code):

1. A denoising step list on the 1000 training timesteps: [1000, 750, 500, 250] for 4 steps; for
   N = 1..8 steps, evenly spaced from 1000: round(1000 * (N - k) / N), k = 0..N-1.
2. Its sigmas: LightX2V indexes ``linspace(1, 0, 1001)[:-1]`` at 1000 - step, i.e. the unshifted
   sigma of a step is step / 1000; then the flow shift, shift * s / (1 + (shift - 1) * s), with
   sample_shift (5.0 by default). The DiT's timestep is sigma * 1000, a float (not rounded).
3. Euler flow updates, in LightX2V's order of operations, in float32:
   x0 = x - sigma_i * v; then, except after the last step, x = x0 + v * sigma_(i+1).
   The last step lands on x0 (a final sigma of 0).
4. No classifier-free guidance: the model was distilled to need none, so one DiT pass per step.
"""
from __future__ import annotations

import numpy as np
import torch

from inference.pipeline.schedule import flow_shift
from videojobs.params import DISTILL_SOLVER, DISTILL_STEPS_MAX, DISTILL_STEPS_MIN


def denoising_step_list(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """The training timesteps a distilled job denoises at: [1000, 750, 500, 250] for 4 steps."""
    if not DISTILL_STEPS_MIN <= steps <= DISTILL_STEPS_MAX:
        raise ValueError(f"the distilled sampler takes {DISTILL_STEPS_MIN}-{DISTILL_STEPS_MAX} steps, got {steps}")
    return [round(num_train_timesteps * (steps - k) / steps) for k in range(steps)]


def distill_grid(steps: int, shift: float, num_train_timesteps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(sigmas: N + 1 float32 ending with 0, timesteps: N float32 = sigma * num_train_timesteps)."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    unshifted = np.asarray(denoising_step_list(steps, num_train_timesteps), dtype=np.float64) / num_train_timesteps
    sigmas = flow_shift(unshifted, shift)  # (N,) float64
    timesteps = (sigmas * num_train_timesteps).astype(np.float32)
    return np.concatenate([sigmas, [0.0]]).astype(np.float32), timesteps


class StepDistillScheduler:
    """The distilled sampler behind the scheduler interface our loop drives (set_timesteps,
    timesteps, step). A new instance per job: it keeps the step index."""

    order = 1

    def __init__(self, *, shift: float, num_train_timesteps: int = 1000) -> None:
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.shift = float(shift)
        self.num_train_timesteps = int(num_train_timesteps)
        self.step_list: list[int] = []
        self.sigmas = torch.zeros(0)
        self.timesteps = torch.zeros(0)
        self.step_index = 0

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        sigmas, timesteps = distill_grid(num_inference_steps, self.shift, self.num_train_timesteps)
        self.step_list = denoising_step_list(num_inference_steps, self.num_train_timesteps)
        self.sigmas = torch.from_numpy(sigmas)  # (N + 1,) float32 on the CPU, as LightX2V keeps them
        self.timesteps = torch.from_numpy(timesteps).to(device=device)  # (N,) float32
        self.step_index = 0

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor,
             return_dict: bool = False) -> tuple[torch.Tensor]:
        """One Euler flow update; model_output and sample are (1, 16, T, h, w)."""
        index = self.step_index
        if not 0 <= index < len(self.timesteps):
            raise ValueError(f"step {index} is past the {len(self.timesteps)} steps set by set_timesteps")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} differ")
        flow = model_output.to(torch.float32)
        denoised = sample.to(torch.float32) - self.sigmas[index].item() * flow  # the prediction of x0
        if index < len(self.timesteps) - 1:
            denoised = denoised + flow * self.sigmas[index + 1].item()
        self.step_index += 1
        return (denoised.to(sample.dtype),)


def distill_guidance(solver: str, guidance_scale: float) -> tuple[float, list[str]]:
    """The guidance scale a job runs with, and the warning when distill drops the one it asked for."""
    if solver != DISTILL_SOLVER or guidance_scale <= 1.0:
        return guidance_scale, []
    return 1.0, [f"sample_solver distill runs one DiT pass per step without classifier-free guidance (the model is "
                 f"CFG-distilled); guidance_scale {guidance_scale:g} was not applied"]


def distill_cache_warnings(solver: str, cache_report: dict, steps: int) -> list[str]:
    """A step cache on a distilled job is applied as asked; say what it reused (never silent)."""
    method = cache_report.get("method", "none")
    if solver != DISTILL_SOLVER or method == "none":
        return []
    reused = cache_report.get("reused_steps_per_pass")
    if reused is None:
        reused = max(cache_report.get("cached_steps", {}).values(), default=0)
    return [f"cache_method {method} was applied to a {steps}-step distilled job and reused {reused} of its "
            f"{steps} steps per pass: each distilled step moves the video far, so any reuse costs visible "
            "quality; distilled jobs are best run without a step cache"]
