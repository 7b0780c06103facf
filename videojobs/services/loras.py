"""Which LoRA adapters a new job runs with: its own choice, or DEFAULT_LORAS when it makes none,
checked against the adapters the inference workers hold."""
from __future__ import annotations

from typing import Any

from django.conf import settings

from videojobs.errors import UnknownLora
from videojobs.selectors.loras import available_lora_names


def choose_loras(*, requested: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """[{"name", "scale"}] for the job: ``requested`` when given (an empty list means none), else
    DEFAULT_LORAS. Raises UnknownLora naming the adapters no live worker holds."""
    chosen = [{"name": str(item["name"]), "scale": float(item["scale"])}
              for item in (settings.DEFAULT_LORAS if requested is None else requested)]
    if not chosen:
        return []
    available = available_lora_names()
    unknown = [item["name"] for item in chosen if item["name"] not in available]
    if unknown:
        raise UnknownLora(unknown, available)
    return chosen
