"""Fixtures for the inference tests: one tiny checkpoint per session, loaded on the CPU.

Import them into a test module with
``from tests.inference_fixtures import tiny_ckpt, tiny_pipe  # noqa``.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.tiny import create_tiny_checkpoint

    return create_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-wan-i2v", seed=0)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_ckpt: Path):
    from inference.checkpoint import LoadOptions, load_pipeline
    from inference.devices import resolve_device

    return load_pipeline(LoadOptions(ckpt_dir=tiny_ckpt, device=resolve_device("cpu")))
