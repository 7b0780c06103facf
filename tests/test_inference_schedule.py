"""The samplers' sigma and timestep grids follow the official Wan2.1 code (issue 19, items 1-2).

The expected values are Wan's formulas written out here, independently of our code:
- UniPC: wan/utils/fm_solvers_unipc.py (FlowUniPCMultistepScheduler.set_timesteps, with the
  scheduler built with shift=1 in wan/image2video.py, so sigma_max = 1 - 1/1000 and
  sigma_min = 0): sigmas = shift(linspace(1 - 1/1000, 0, N + 1)[:-1]),
  timesteps = int64(sigma * 1000), final sigma 0.
- DPM++: wan/utils/fm_solvers.py (get_sampling_sigmas, then set_timesteps(sigmas=...)):
  sigmas = shift(linspace(1, 0, N + 1)[:N]), timesteps = int64(sigma * 1000), final sigma 0.
where shift(s) = shift * s / (1 + (shift - 1) * s) (Wan2.1 at commit 9737cba).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.generate import make_scheduler


def _shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def wan_unipc_grid(steps: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    sigmas = _shift(np.linspace(1 - 1 / 1000, 0, steps + 1)[:-1], shift)
    return np.concatenate([sigmas, [0.0]]).astype(np.float32), (sigmas * 1000).astype(np.int64)


def wan_dpm_grid(steps: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    sigmas = _shift(np.linspace(1, 0, steps + 1)[:steps], shift)
    return np.concatenate([sigmas, [0.0]]).astype(np.float32), (sigmas * 1000).astype(np.int64)


WAN_GRIDS = {"unipc": wan_unipc_grid, "dpm++": wan_dpm_grid}


def _grid(solver: str, steps: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    scheduler = make_scheduler({"num_train_timesteps": 1000}, solver, shift)
    scheduler.set_timesteps(steps, device="cpu")
    assert scheduler.timesteps.dtype == torch.int64
    return scheduler.sigmas.numpy(), scheduler.timesteps.numpy()


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
@pytest.mark.parametrize(("steps", "shift"), [(40, 5.0), (30, 3.0), (20, 1.0), (100, 20.0), (50, 7.5)])
def test_solver_grid_is_wans_for_every_step_count_and_shift(solver: str, steps: int, shift: float) -> None:
    sigmas, timesteps = _grid(solver, steps, shift)
    expected_sigmas, expected_timesteps = WAN_GRIDS[solver](steps, shift)
    np.testing.assert_array_equal(sigmas, expected_sigmas)
    np.testing.assert_array_equal(timesteps, expected_timesteps)
    assert sigmas.dtype == np.float32 and len(sigmas) == steps + 1 and sigmas[-1] == 0.0


def test_unipc_grid_at_40_steps_shift_5_starts_at_0_9998_and_ends_at_113() -> None:
    # The issue's numbers: diffusers' own grid starts at 0.999999 and its last timestep is 117.
    sigmas, timesteps = _grid("unipc", 40, 5.0)
    assert sigmas[0] == pytest.approx(4.995 / 4.996, abs=1e-7)  # shift(0.999) = 0.99979984
    assert timesteps[0] == 999 and timesteps[-1] == 113
    assert len(timesteps) == 40


def test_dpm_grid_starts_at_t_1000_with_sigma_one() -> None:
    for steps, shift in ((40, 5.0), (30, 3.0)):
        sigmas, timesteps = _grid("dpm++", steps, shift)
        assert sigmas[0] == 1.0 and timesteps[0] == 1000
        # The last step starts from shift(1 / N).
        assert sigmas[-2] == pytest.approx(shift / steps / (1 + (shift - 1) / steps), rel=1e-6)


def test_a_timestep_that_repeats_does_not_skip_the_first_step() -> None:
    # At shift 20 and 100 steps, int64(sigma * 1000) gives 999 twice at the start; the solver
    # must still begin with the first sigma of the grid.
    scheduler = make_scheduler({"num_train_timesteps": 1000}, "unipc", 20.0)
    scheduler.set_timesteps(100, device="cpu")
    assert scheduler.timesteps[0] == scheduler.timesteps[1] == 999
    sample = torch.ones(1, 2)
    scheduler.step(torch.zeros(1, 2), scheduler.timesteps[0], sample)
    assert scheduler.step_index == 1
