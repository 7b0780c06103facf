"""Fixtures for the inference tests: one tiny checkpoint per session, loaded on the CPU.

Import them into a test module with
``from tests.inference_fixtures import tiny_ckpt, tiny_components  # noqa``.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.tiny import create_tiny_checkpoint

    return create_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-wan-i2v", seed=0)


@pytest.fixture(scope="session")
def cpu_ctx():
    from inference.devices import resolve_device
    from inference.parallel.context import ParallelContext

    return ParallelContext.single(resolve_device("cpu"))


@pytest.fixture(scope="session")
def tiny_components(tiny_ckpt: Path, cpu_ctx):
    from inference.pipeline.loading import LoadOptions, load_components

    return load_components(LoadOptions(ckpt_dir=tiny_ckpt, device=cpu_ctx.device), cpu_ctx)
