"""The samplers' sigma grids, as the official Wan2.1 code spaces them (issue 19).

diffusers' flow-matching UniPC and DPM++ schedulers do the same step maths as Wan's, but space
their sigmas differently (UniPC from 1 down to 1/1000 before the shift; DPM++ likewise), which
moves every default video away from the one the model's authors sample. These subclasses keep
diffusers' stepping and replace only the grid:

- UniPC (Wan's wan/utils/fm_solvers_unipc.py as wan/image2video.py builds it):
  sigmas = shift(linspace(1 - 1/1000, 0, N + 1)[:-1]).
- DPM++ (Wan's wan/utils/fm_solvers.py get_sampling_sigmas):
  sigmas = shift(linspace(1, 0, N + 1)[:N]), so the first step is at sigma 1, t = 1000.

Both: timesteps = int64(sigma * num_train_timesteps), and a final sigma of 0; shift(s) is the
flow shift, shift * s / (1 + (shift - 1) * s).
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler


def flow_shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def wan_grid(solver: str, steps: int, shift: float, num_train_timesteps: int) -> tuple[np.ndarray, np.ndarray]:
    """(sigmas: N + 1 float32 ending with 0, timesteps: N int64) of Wan's sampler ``solver``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if solver == "unipc":
        unshifted = np.linspace(1 - 1 / num_train_timesteps, 0, steps + 1)[:-1]
    elif solver == "dpm++":
        unshifted = np.linspace(1, 0, steps + 1)[:steps]
    else:
        raise ValueError(f"no Wan grid for solver {solver!r}")
    sigmas = flow_shift(unshifted, shift)  # float64, as Wan computes them
    timesteps = (sigmas * num_train_timesteps).astype(np.int64)
    return np.concatenate([sigmas, [0.0]]).astype(np.float32), timesteps


def _install(scheduler, solver: str, steps: int, device) -> None:
    """Replace the grid diffusers' set_timesteps just built (its per-run state already reset)."""
    sigmas, timesteps = wan_grid(solver, steps, scheduler.config.flow_shift, scheduler.config.num_train_timesteps)
    scheduler.sigmas = torch.from_numpy(sigmas)
    scheduler.timesteps = torch.from_numpy(timesteps).to(device=device)
    # int64(sigma * 1000) can repeat near sigma 1 (large shift, many steps): start at the first
    # step explicitly rather than let diffusers look the first timestep up in the grid.
    scheduler.set_begin_index(0)


class WanUniPCScheduler(UniPCMultistepScheduler):
    """diffusers' flow UniPC (bh2, order 2) on Wan's UniPC grid."""

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, sigmas=None, mu=None) -> None:
        if sigmas is not None or mu is not None:
            raise ValueError("the Wan UniPC grid comes from the step count alone (no sigmas, no mu)")
        super().set_timesteps(num_inference_steps, device=device)
        _install(self, "unipc", num_inference_steps, device)


class WanDPMSolverScheduler(DPMSolverMultistepScheduler):
    """diffusers' flow DPM-Solver++ (midpoint, order 2) on Wan's DPM++ grid."""

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, mu=None,
                      timesteps=None) -> None:
        if mu is not None or timesteps is not None:
            raise ValueError("the Wan DPM++ grid comes from the step count alone (no mu, no timesteps)")
        super().set_timesteps(num_inference_steps, device=device)
        _install(self, "dpm++", num_inference_steps, device)
