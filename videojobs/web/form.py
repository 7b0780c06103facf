"""The job page's submit form: which inputs it shows, and the bridge to the API's serializer.

The form validates nothing itself. Its inputs carry the API's ranges and defaults (read from
``videojobs.params`` and the serializer, so the page cannot drift from the API) for the
browser's own hints; the request is read by ``serializers.form_data`` and checked by the same
``SubmitSerializer`` as a multipart ``/video/submit``, and its messages are shown under the
inputs they concern.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import QueryDict

from videojobs import params as P
from videojobs import selectors
from videojobs.api.serializers import allowed_image_sizes

NON_FIELD = "non_field_errors"
FORM_KEY_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Input:
    name: str
    label: str
    widget: str  # number, select, textarea, url, file
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | str | None = None
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()  # what each choice reads as (the choice itself when empty)
    hint: str = ""
    advanced: bool = False
    required: bool = False
    minlength: int | None = None
    maxlength: int | None = None

    @property
    def options(self) -> list[tuple[str, str]]:
        return list(zip(self.choices, self.choice_labels or self.choices))


# The page's presets: "fast" is the 4-step distilled sampler (a distilled model), "quality" the
# original sampler. A preset fills only what the visitor left empty (solver, steps, guidance).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"sample_solver": P.DISTILL_SOLVER},
    "quality": {"sample_solver": P.SOLVER_DEFAULT},
}
PRESET_LABELS = {"fast": f"Fast ({P.DISTILL_STEPS_DEFAULT} steps)", "quality": "Quality"}


def default_preset() -> str:
    return "fast" if settings.DEFAULT_SAMPLE_SOLVER == P.DISTILL_SOLVER else "quality"


def with_preset(data: dict[str, Any]) -> dict[str, Any]:
    """The form's data with its preset applied: the preset's sampler unless one was chosen (the
    steps and guidance then default to that sampler's in the serializer)."""
    data = dict(data)
    preset = data.pop("preset", None)
    for name, value in PRESETS.get(preset, {}).items():
        data.setdefault(name, value)
    return data


@dataclass
class BoundInput:
    """An input with what the visitor sent and what the serializer said about it."""

    spec: Input
    value: str = ""
    errors: list[str] = field(default_factory=list)


def _frames_range() -> tuple[int, int]:
    """The first and last 4k+1 frame counts inside the API's range."""
    return P.nearest_valid_num_frames(P.NUM_FRAMES_MIN)[1], P.nearest_valid_num_frames(P.NUM_FRAMES_MAX)[0]


def inputs() -> list[Input]:
    """The form's inputs in page order; image sizes depend on settings, so built per request."""
    first_frames, last_frames = _frames_range()
    return [
        Input("image", "Image file", "file", hint="PNG, JPEG, WebP, GIF or BMP"),
        Input("image_url", "or an image URL", "url", maxlength=2048, hint="fetched by the server"),
        Input("prompt", "Prompt", "textarea", required=True, minlength=P.PROMPT_MIN_CHARS,
              maxlength=P.PROMPT_MAX_CHARS, hint=f"{P.PROMPT_MIN_CHARS}-{P.PROMPT_MAX_CHARS} characters"),
        Input("image_size", "Size (width*height)", "select", default=P.IMAGE_SIZE_DEFAULT,
              choices=tuple(allowed_image_sizes()), hint=f"default {P.IMAGE_SIZE_DEFAULT}"),
        Input("aspect", "Framing", "select", default=P.ASPECT_DEFAULT, choices=P.ASPECT_MODES,
              hint="crop: exactly the size, centre-cropped (the preview shows what is kept); "
                   "auto: the whole picture, its own aspect ratio at the size's area"),
        Input("num_frames", "Frames", "number", default=P.NUM_FRAMES_DEFAULT, min=first_frames, max=last_frames,
              step=4, hint=f"4k+1, {first_frames}-{last_frames}, default {P.NUM_FRAMES_DEFAULT} (16 fps)"),
        Input("preset", "Speed", "select", default=default_preset(), choices=tuple(PRESETS),
              choice_labels=tuple(PRESET_LABELS[name] for name in PRESETS),
              hint=f"Fast: the distilled sampler, {P.DISTILL_STEPS_DEFAULT} steps without guidance (a distilled "
                   f"model); Quality: {P.SOLVER_DEFAULT}, {P.STEPS_DEFAULT} steps with guidance"),
        Input("infer_steps", "Denoising steps", "number", min=P.DISTILL_STEPS_MIN, max=P.STEPS_MAX, step=1,
              hint=f"empty for the preset's: Quality {P.STEPS_MIN}-{P.STEPS_MAX} (default {P.STEPS_DEFAULT}), "
                   f"Fast {P.DISTILL_STEPS_MIN}-{P.DISTILL_STEPS_MAX} (default {P.DISTILL_STEPS_DEFAULT})"),
        Input("guidance_scale", "Guidance scale", "number", min=P.GUIDANCE_MIN,
              max=P.GUIDANCE_MAX, step="any", advanced=True,
              hint=f"{P.GUIDANCE_MIN:g}-{P.GUIDANCE_MAX:g}; empty for {P.GUIDANCE_DEFAULT:g} (Quality) or 1 (Fast, "
                   "which never applies guidance)"),
        Input("sample_shift", "Sample shift", "number", min=P.SHIFT_MIN, max=P.SHIFT_MAX, step="any", advanced=True,
              hint=f"{P.SHIFT_MIN:g}-{P.SHIFT_MAX:g}; empty for the official value: {P.SHIFT_DEFAULT_480P:g} at 480p, "
                   f"{P.SHIFT_DEFAULT:g} at 720p"),
        Input("seed", "Seed", "number", min=P.SEED_MIN, max=P.SEED_MAX, step=1, advanced=True,
              hint=f"{P.SEED_MIN}-{P.SEED_MAX}; empty for a random one"),
        Input("sample_solver", "Solver", "select", default="", choices=("", *P.SAMPLE_SOLVERS),
              choice_labels=("the preset's", *P.SAMPLE_SOLVERS), advanced=True,
              hint=f"the preset's: {P.DISTILL_SOLVER} (Fast) or {P.SOLVER_DEFAULT} (Quality)"),
        Input("cache_method", "Step cache", "select", default="none", choices=P.CACHE_METHODS, advanced=True,
              hint="none, the attention cache, or the adaptive block cache (dbcache)"),
        _lora_input(),
        Input("negative_prompt", "Negative prompt", "textarea", maxlength=P.NEGATIVE_PROMPT_MAX_CHARS,
              advanced=True, hint=f"up to {P.NEGATIVE_PROMPT_MAX_CHARS} characters; empty for Wan2.1's default"),
    ]


def _lora_input() -> Input:
    """The LoRA picker: the adapters the workers hold as suggestions, "name:scale" each."""
    held = tuple(selectors.available_lora_names())
    default = ",".join(f"{item['name']}:{item['scale']:g}" for item in settings.DEFAULT_LORAS) or "none"
    return Input("loras", "LoRA adapters", "lora", choices=held, advanced=True,
                 hint=f"name:scale, comma-separated, at most {P.LORAS_MAX}, scale {P.LORA_SCALE_MIN:g} to "
                      f"{P.LORA_SCALE_MAX:g}; \"none\" for none; empty for the server's default ({default}). "
                      f"Held: {', '.join(held) or 'none'}")


def bound_inputs(*, values: QueryDict | None = None, errors: dict[str, list[str]] | None = None) -> dict[str, BoundInput]:
    """Every input by name, with the visitor's value (or the default) and its errors."""
    bound = {}
    for spec in inputs():
        sent = values.get(spec.name) if values is not None else None
        value = sent if sent is not None else ("" if spec.default is None else str(spec.default))
        bound[spec.name] = BoundInput(spec, value if spec.widget != "file" else "", list((errors or {}).get(spec.name, [])))
    return bound


def field_errors(detail: dict[str, Any] | list[Any]) -> dict[str, list[str]]:
    """The serializer's errors by input; those about a field the form does not show (a rule
    across fields, such as start_step) go to the top of the form, named."""
    if not isinstance(detail, dict):
        detail = {NON_FIELD: detail}
    shown = {spec.name for spec in inputs()}
    errors: dict[str, list[str]] = {}
    for name, messages in detail.items():
        texts = [str(m) for m in (messages if isinstance(messages, list) else [messages])]
        if name in shown or name == NON_FIELD:
            errors.setdefault(name, []).extend(texts)
        else:
            errors.setdefault(NON_FIELD, []).extend(f"{name}: {text}" for text in texts)
    return errors


def form_key(post: QueryDict) -> str | None:
    """The idempotency key the form was rendered with: a double-clicked or resent submit
    returns the first job instead of queueing a second."""
    key = post.get("form_key", "")
    return key if FORM_KEY_RE.match(key) else None
