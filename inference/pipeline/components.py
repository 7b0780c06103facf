"""The loaded parts of the pipeline on one rank."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class WanComponents:
    tokenizer: Any
    text_encoder: Any | None  # None on the ranks that do not hold T5 (T5_CPU: only rank 0 does)
    image_processor: Any
    image_encoder: torch.nn.Module
    vae: torch.nn.Module
    transformer: torch.nn.Module
    scheduler_config: dict[str, Any]
    text_on_cpu: bool = False  # T5_CPU: rank 0 encodes on the host and broadcasts the embeddings
    attention_backend: str = "native"
    caches: Any = None  # inference.cache.steps.StepCaches, installed on the transformer by the loader
    prompts: Any = None  # inference.cache.prompts.PromptCache
    loras: Any = None  # inference.lora.LoraBank when LORA_DIR holds adapters, else None
    # Bytes of parameters and buffers this rank holds, per component (shards only when sharded).
    held_bytes: dict[str, int] = field(default_factory=dict)
    # What ran (inference.quant): {"dit": "none|fp8|int8", "t5": "none|int8", "attention": {"backend", "quantized"}}.
    quantization: dict[str, Any] = field(default_factory=lambda: {"dit": "none", "t5": "none"})

    @property
    def transformer_dtype(self) -> torch.dtype:
        return self.transformer.dtype  # diffusers' rule: the first parameter not kept in fp32

    @property
    def num_heads(self) -> int:
        return int(self.transformer.config.num_attention_heads)

    def as_diffusers_components(self) -> dict[str, Any]:
        """The parts in the form WanImageToVideoPipeline(**...) takes (for comparisons in tests)."""
        from diffusers import UniPCMultistepScheduler

        return {
            "tokenizer": self.tokenizer,
            "text_encoder": self.text_encoder,
            "image_processor": self.image_processor,
            "image_encoder": self.image_encoder,
            "vae": self.vae,
            "transformer": self.transformer,
            "scheduler": UniPCMultistepScheduler.from_config(self.scheduler_config),
        }
