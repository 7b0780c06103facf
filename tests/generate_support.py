"""What the tests of inference.generate share: a request at tiny sizes and one run on the CPU."""
from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image

from inference.devices import resolve_device
from inference.generate import (
    GenerationRequest,
    GenerationResult,
    JobHooks,
    generate,
)
from inference.parallel.context import ParallelContext
from inference.pipeline.components import WanComponents


def random_image(width: int = 120, height: int = 80) -> PIL.Image.Image:
    pixels = np.random.default_rng(7).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels, mode="RGB")


def tiny_request(**overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "prompt": "a cat walks across a sunny garden",
        "negative_prompt": None,
        "image": random_image(),
        "width": 64,
        "height": 64,
        "num_frames": 9,
        "guidance_scale": 5.0,
        "infer_steps": 2,
        "seed": 42,
        "sample_solver": "unipc",
        "sample_shift": 5.0,
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def run_on_cpu(components: WanComponents, request: GenerationRequest, hooks: JobHooks | None = None) -> GenerationResult:
    return generate(components, request, ctx=ParallelContext.single(resolve_device("cpu")), hooks=hooks)
