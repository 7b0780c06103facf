"""The one place where the process environment is read.

Every setting goes through these helpers, so a bad value always fails the same way: an
``ImproperlyConfigured`` that names the variable and says what was expected.
"""
from __future__ import annotations

import ipaddress
import os
import re

from django.core.exceptions import ImproperlyConfigured

from videojobs.params import parse_lora_list  # pure Python: the LoRA vocabulary the API checks requests with

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def string(name: str, default: str) -> str:
    value = raw(name)
    return default if value is None or value == "" else value


_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


def model_id(name: str, default: str) -> str:
    """A model id as OpenAI's API spells them: letters, digits and . _ : / -, at most 128."""
    value = string(name, default)
    if not _MODEL_ID.fullmatch(value):
        raise ImproperlyConfigured(f"{name} must be 1-128 letters, digits, '.', '_', ':', '/' or '-' "
                                   f"(starting with a letter or digit), got {value!r}")
    return value


def boolean(name: str, default: bool) -> bool:
    value = raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false/1/0), got {value!r}")


def integer(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    _check_range(name, number, minimum, maximum)
    return number


def optional_integer(name: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """An integer, or None when the variable is unset or empty (the caller derives a value)."""
    value = raw(name)
    if value is None or value == "":
        return None
    return integer(name, 0, minimum=minimum, maximum=maximum)


def number(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = raw(name)
    if value is None or value == "":
        return default
    try:
        result = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    _check_range(name, result, minimum, maximum)
    return result


def csv(name: str, default: list[str]) -> list[str]:
    value = raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = string(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def networks(name: str) -> list[str]:
    """A comma-separated CIDR list, validated here and kept as strings for the settings."""
    items = csv(name, [])
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be comma-separated CIDR networks, bad entry {item!r}") from None
    return items


def image_sizes(name: str) -> list[str]:
    """Extra "W*H" output sizes an operator allows besides the model's native ones."""
    items = csv(name, [])
    for item in items:
        parts = item.split("*")
        ok = len(parts) == 2 and all(p.isdigit() and int(p) > 0 and int(p) % 16 == 0 for p in parts)
        if not ok:
            raise ImproperlyConfigured(
                f"{name} must be a comma list of WIDTH*HEIGHT with both multiples of 16, bad entry {item!r}"
            )
    return items


def shapes(name: str, default: list[str]) -> list[str]:
    """Video shapes as "WIDTH*HEIGHTxFRAMES" (e.g. 1280*720x81): sizes multiples of 16, frames 4k+1."""
    items = csv(name, default)
    for item in items:
        size, _, frames = item.partition("x")
        parts = size.split("*")
        ok = len(parts) == 2 and all(p.isdigit() and int(p) > 0 and int(p) % 16 == 0 for p in parts)
        if not ok or not frames.isdigit() or int(frames) % 4 != 1:
            raise ImproperlyConfigured(
                f"{name} must be a comma list of WIDTH*HEIGHTxFRAMES (multiples of 16, frames 4k+1), bad entry {item!r}"
            )
    return items


def loras(name: str) -> list[dict[str, object]]:
    """LoRA adapters with scales, "name:scale,name:scale" (videojobs.params.parse_lora_list)."""
    try:
        return parse_lora_list(raw(name) or "")
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {value}")
