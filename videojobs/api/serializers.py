"""Request and response shapes of the public API. Validation only, no behaviour."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings
from rest_framework import serializers

from videojobs import params as P
from videojobs.models import JobStatus, WebhookEvent

IDEMPOTENCY_KEY_MAX_CHARS = 128
# /video/jobs pages: more than any caller has, and an OFFSET Postgres can hold (page x page_size).
PAGE_MAX = 1_000_000
PAGE_SIZE_MAX = 100


def allowed_image_sizes() -> list[str]:
    return list(dict.fromkeys([*P.SUPPORTED_IMAGE_SIZES, *settings.EXTRA_IMAGE_SIZES]))


def validate_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: absent, or 1-128 printable ASCII characters."""
    if value is None:
        return None
    if not value or len(value) > IDEMPOTENCY_KEY_MAX_CHARS or not (value.isascii() and value.isprintable()):
        raise serializers.ValidationError(
            {"Idempotency-Key": [f"must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters (got {len(value)})"]}
        )
    return value


# Strict JSON types, as the OpenAPI schema states them: DRF would otherwise take "81" or 81.0
# for an integer and "yes" for a boolean. A client's type error is a 400, not a guess.
class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class _StrictText:
    """A JSON string, nothing else: DRF's text fields take 12345678901 for "12345678901"."""

    default_error_messages = {"not_a_string": "Must be a JSON string (got {kind})."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string", kind="a boolean" if isinstance(data, bool)
                      else "a number" if isinstance(data, (int, float)) else type(data).__name__)
        return super().to_internal_value(data)


class StrictCharField(_StrictText, serializers.CharField):
    pass


class StrictURLField(_StrictText, serializers.URLField):
    pass


class StrictChoiceField(_StrictText, serializers.ChoiceField):
    pass


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be a JSON boolean (true or false)."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class LoraChoiceSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100, help_text="an adapter's file stem, as GET /loras lists it")
    scale = StrictFloatField(default=P.LORA_SCALE_DEFAULT, min_value=P.LORA_SCALE_MIN, max_value=P.LORA_SCALE_MAX,
                             help_text=f"{P.LORA_SCALE_MIN} to {P.LORA_SCALE_MAX}; 0 leaves the model unchanged")

    def validate_name(self, value: str) -> str:
        if not re.match(P.LORA_NAME_PATTERN, value):
            raise serializers.ValidationError("letters, digits, '.', '_' and '-' only")
        return value


class SubmitSerializer(serializers.Serializer):
    # Basic parameters (original contract).
    prompt = StrictCharField(min_length=P.PROMPT_MIN_CHARS, max_length=P.PROMPT_MAX_CHARS)
    # The input: a URL the server fetches, or (multipart/form-data) the image file itself.
    image_url = StrictURLField(max_length=2048, required=False)
    image = serializers.FileField(required=False, allow_empty_file=False,
                                  help_text="multipart/form-data only: a JPEG, PNG, WebP, GIF or BMP file")
    image_size = StrictCharField(default=P.IMAGE_SIZE_DEFAULT, max_length=16)
    aspect = StrictChoiceField(
        choices=P.ASPECT_MODES, default=P.ASPECT_DEFAULT,
        help_text='"crop" (the default): exactly image_size, the image scaled to cover it and centre-cropped; '
                  '"auto": the whole image, at the size its aspect ratio gives at image_size\'s area (Wan2.1\'s '
                  'own rule, sides in multiples of 16); the status document\'s "size" says which size runs',
    )
    num_frames = StrictIntegerField(default=P.NUM_FRAMES_DEFAULT)
    guidance_scale = StrictFloatField(
        required=False, min_value=P.GUIDANCE_MIN, max_value=P.GUIDANCE_MAX,
        help_text=f"classifier-free guidance; default {P.GUIDANCE_DEFAULT:g}, or 1 (none) with sample_solver distill, "
                  "which never applies guidance (a value above 1 with distill gets a warning in the status)",
    )
    infer_steps = StrictIntegerField(
        required=False, min_value=P.DISTILL_STEPS_MIN, max_value=P.STEPS_MAX,
        help_text=f"denoising steps: {P.STEPS_MIN}-{P.STEPS_MAX} (default {P.STEPS_DEFAULT}) for unipc, dpm++ and "
                  f"euler; {P.DISTILL_STEPS_MIN}-{P.DISTILL_STEPS_MAX} (default {P.DISTILL_STEPS_DEFAULT}) for distill",
    )
    seed = StrictIntegerField(default=None, allow_null=True, min_value=P.SEED_MIN, max_value=P.SEED_MAX)
    negative_prompt = StrictCharField(
        default=None, allow_null=True, allow_blank=True, max_length=P.NEGATIVE_PROMPT_MAX_CHARS
    )
    # Distributed parameters: how the original server was started. Accepted, compared with
    # the topology of the worker that runs the job, reported in the status document.
    vae_parallel = StrictBooleanField(default=False)
    ulysses_size = StrictIntegerField(default=1, min_value=1, max_value=64)
    dit_fsdp = StrictBooleanField(default=False)
    t5_fsdp = StrictBooleanField(default=False)
    cfg_size = StrictIntegerField(default=1, min_value=1, max_value=2)
    # Performance parameters.
    use_attentioncache = StrictBooleanField(default=False)
    start_step = StrictIntegerField(default=P.ATTENTIONCACHE_DEFAULTS["start_step"], min_value=0, max_value=P.STEPS_MAX)
    attentioncache_interval = StrictIntegerField(
        default=P.ATTENTIONCACHE_DEFAULTS["attentioncache_interval"], min_value=1, max_value=P.STEPS_MAX
    )
    end_step = StrictIntegerField(default=P.ATTENTIONCACHE_DEFAULTS["end_step"], min_value=0, max_value=P.STEPS_MAX)
    cache_method = StrictChoiceField(choices=P.CACHE_METHODS, default=None, allow_null=True)
    cache_threshold = StrictFloatField(
        default=P.CACHE_THRESHOLD_DEFAULT, min_value=P.CACHE_THRESHOLD_MIN, max_value=P.CACHE_THRESHOLD_MAX
    )
    sample_solver = StrictChoiceField(
        choices=P.SAMPLE_SOLVERS, required=False,
        help_text="the sampler; when left out, the server's DEFAULT_SAMPLE_SOLVER (unipc unless the operator chose "
                  "otherwise; with distill as the default, a request that sends 20-100 infer_steps gets unipc). "
                  "distill: the step-distilled sampler (a distilled model; one DiT pass per step, no guidance)",
    )
    sample_shift = StrictFloatField(
        required=False, min_value=P.SHIFT_MIN, max_value=P.SHIFT_MAX,
        help_text="flow shift; when left out, the official value for image_size: 3.0 at or below "
                  "832*480's area (the 480p sizes), else 5.0 (720p)",
    )
    loras = serializers.ListField(
        child=LoraChoiceSerializer(), required=False, allow_null=True, max_length=P.LORAS_MAX,
        help_text=f"at most {P.LORAS_MAX} LoRA adapters (GET /loras lists them) with their scales; left out: the "
                  "server's DEFAULT_LORAS; an empty list: none. As a form field: name:scale,name:scale (or none)",
    )
    # Webhooks: the job's status document POSTed to webhook_url, signed (X-Signature).
    webhook_url = StrictURLField(max_length=2048, required=False, allow_blank=True)
    webhook_events = serializers.ListField(
        child=StrictChoiceField(choices=WebhookEvent.values), required=False, allow_empty=False,
        min_length=1, max_length=3,  # min_length: the schema's minItems (allow_empty is not in it)
        help_text='which events to send: "completed" (the default: the job ended, whichever way), "started", "progress"',
    )

    def validate_image_url(self, value: str) -> str:
        return _http_url(value)

    def validate_webhook_url(self, value: str) -> str:
        return _http_url(value) if value else value

    def validate_loras(self, value: list | None) -> list | None:
        if value is None:
            return None
        names = [item["name"] for item in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise serializers.ValidationError(f"{', '.join(repeated)} named more than once")
        return [{"name": item["name"], "scale": item["scale"]} for item in value]

    def validate_image_size(self, value: str) -> str:
        allowed = allowed_image_sizes()
        if value not in allowed:
            raise serializers.ValidationError(f"{value!r} is not supported; choose one of {', '.join(allowed)}")
        return value

    def validate_num_frames(self, value: int) -> int:
        if not P.NUM_FRAMES_MIN <= value <= P.NUM_FRAMES_MAX:
            raise serializers.ValidationError(
                f"must be between {P.NUM_FRAMES_MIN} and {P.NUM_FRAMES_MAX} (got {value})"
            )
        if not P.is_valid_num_frames(value):
            nearest = " or ".join(str(v) for v in P.valid_num_frames_in_range(value))
            raise serializers.ValidationError(
                f"must be of the form 4k+1 for the Wan model (got {value}); nearest valid values: {nearest}"
            )
        return value

    def validate(self, attrs: dict) -> dict:
        if "image" in attrs and attrs.get("image_url"):
            raise serializers.ValidationError({"image_url": "give an image file or an image_url, not both"})
        if "image" not in attrs and not attrs.get("image_url"):
            # A form (the page, a multipart client) misses its file; a JSON body its URL.
            if self.context.get("multipart"):
                raise serializers.ValidationError({"image": "upload an image file, or give an image_url"})
            raise serializers.ValidationError({"image_url": "This field is required (or send the image file itself "
                                                            "as multipart/form-data)."})
        if attrs.get("webhook_events") and not attrs.get("webhook_url"):
            raise serializers.ValidationError({"webhook_url": "webhook_events needs a webhook_url"})
        # use_attentioncache (the original's switch) means cache_method "attention".
        method = attrs.get("cache_method")
        if attrs["use_attentioncache"] and method not in (None, "attention"):
            raise serializers.ValidationError(
                {"cache_method": f"{method!r} contradicts use_attentioncache=true (the attention cache)"}
            )
        attrs["cache_method"] = method or ("attention" if attrs["use_attentioncache"] else "none")
        attrs.setdefault("sample_shift", P.default_shift(attrs["image_size"]))
        attrs["sample_solver"], attrs["infer_steps"] = _solver_and_steps(attrs.get("sample_solver"),
                                                                         attrs.get("infer_steps"))
        attrs.setdefault("guidance_scale", 1.0 if attrs["sample_solver"] == P.DISTILL_SOLVER else P.GUIDANCE_DEFAULT)
        if attrs["cache_method"] == "attention" and attrs["start_step"] >= attrs["end_step"]:
            raise serializers.ValidationError(
                {"start_step": f"must be less than end_step ({attrs['end_step']}), got {attrs['start_step']}"}
            )
        return attrs


class SubmitJSONSerializer(SubmitSerializer):
    """A submit as JSON: the input image is given by image_url (the file itself travels only in a
    multipart/form-data body)."""

    image = None


def _solver_and_steps(solver: str | None, steps: int | None) -> tuple[str, int]:
    """The sampler (the server's default when none was sent) and infer_steps within its range
    (its default when none was sent). Under DEFAULT_SAMPLE_SOLVER=distill a request that names no
    sampler but sends the original contract's 20-100 steps gets the original sampler."""
    if solver is None:
        solver = settings.DEFAULT_SAMPLE_SOLVER
        if solver == P.DISTILL_SOLVER and steps is not None and steps > P.DISTILL_STEPS_MAX:
            solver = P.SOLVER_DEFAULT
    low, high, default = P.steps_range(solver)
    if steps is None:
        return solver, default
    if not low <= steps <= high:
        other = (f"sample_solver distill takes {P.DISTILL_STEPS_MIN}-{P.DISTILL_STEPS_MAX}" if solver != P.DISTILL_SOLVER
                 else f"the other samplers take {P.STEPS_MIN}-{P.STEPS_MAX}")
        raise serializers.ValidationError(
            {"infer_steps": f"must be between {low} and {high} for sample_solver {solver} (got {steps}); {other}"})
    return solver, steps


def _http_url(value: str) -> str:
    if urlsplit(value).scheme.lower() not in ("http", "https"):
        raise serializers.ValidationError("must be an http or https URL")
    return value


def form_data(post, files) -> dict:
    """A multipart form as the JSON body it stands for: typed fields from their text, the image
    file beside them. Text that is not a number or a boolean is left for the field to refuse."""
    fields = SubmitSerializer().fields
    data: dict = {}
    for name in post:
        if name == "loras":
            text = ",".join(item for item in post.getlist(name) if item.strip())
            if text:  # empty: the server's DEFAULT_LORAS, as when the field is left out
                data[name] = _form_loras(text)
            continue
        if name == "webhook_events":
            values = [v.strip() for item in post.getlist(name) for v in item.split(",") if v.strip()]
            data[name] = values
            continue
        value = post.get(name)
        field = fields.get(name)
        if value == "" and name not in ("prompt", "negative_prompt"):
            continue  # an empty optional input means its default
        data[name] = _typed(field, value)
    if "image" in files:
        data["image"] = files["image"]
    return data


def _form_loras(text: str) -> list[dict]:
    """"style:0.6,distill" as the JSON list it stands for (the scale left for its field to check);
    "none": no adapter at all."""
    loras: list[dict] = []
    if text.strip().lower() in ("none", "[]"):
        return loras
    for name, scale in P.lora_text_items(text):
        entry: dict = {"name": name}
        if scale:
            entry["scale"] = _typed(StrictFloatField(), scale)
        loras.append(entry)
    return loras


def _typed(field, value: str):
    try:
        if isinstance(field, StrictBooleanField):
            return {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}.get(
                value.strip().lower(), value)
        if isinstance(field, StrictIntegerField):
            return int(value)
        if isinstance(field, StrictFloatField):
            return float(value)
    except ValueError:
        return value
    return value


class JobListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=JobStatus.values,
                                     required=False)
    page = serializers.IntegerField(default=1, min_value=1, max_value=PAGE_MAX)
    page_size = serializers.IntegerField(default=20, min_value=1, max_value=PAGE_SIZE_MAX)


class RequestIdSerializer(serializers.Serializer):
    requestId = StrictCharField(max_length=64)


class SubmitResponseSerializer(serializers.Serializer):
    requestId = serializers.CharField()


class CancelResponseSerializer(serializers.Serializer):
    status = serializers.CharField()
    requestId = serializers.CharField()
    job_status = serializers.CharField()
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    message = serializers.CharField()


class StatusResponseSerializer(serializers.Serializer):
    requestId = serializers.CharField()
    status = serializers.ChoiceField(choices=JobStatus.values)
    reason = serializers.CharField(allow_null=True)
    error_code = serializers.CharField(allow_null=True)
    results = serializers.DictField(allow_null=True, help_text=(
        "Once the job succeeded: video_url (the download) and video_path (the original contract's field: the video "
        "relative to the server's output folder, never a server path), then what ran (frames, fps, resolution, "
        "seed, topology, acceleration, dit_forwards: the DiT forward passes that ran, warnings, timings). A job that "
        "stopped or failed keeps what ran."))
    queue_position = serializers.IntegerField(allow_null=True)
    progress = serializers.FloatField()
    phase = serializers.CharField()
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    eta_seconds = serializers.FloatField(allow_null=True)
    attempt = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    cancel_requested = serializers.BooleanField()
    parameters = serializers.DictField()
    size = serializers.CharField(allow_null=True, help_text=(
        'The video\'s size, "WIDTH*HEIGHT": image_size under aspect "crop"; under "auto" the size the '
        'image\'s aspect ratio gives, null until the input image is ready'))
    loras = LoraChoiceSerializer(many=True, help_text="the LoRA adapters the job runs with (its own choice or the "
                                                      "server's DEFAULT_LORAS), with their scales")
    created_at = serializers.FloatField()
    updated_at = serializers.FloatField()
    started_at = serializers.FloatField(allow_null=True)
    finished_at = serializers.FloatField(allow_null=True)


class JobSummarySerializer(serializers.Serializer):
    requestId = serializers.CharField()
    status = serializers.CharField()
    phase = serializers.CharField()
    progress = serializers.FloatField()
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    prompt = serializers.CharField()
    image_size = serializers.CharField(allow_null=True)
    num_frames = serializers.IntegerField(allow_null=True)
    error_code = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    video_url = serializers.CharField(allow_null=True)
    created_at = serializers.FloatField()
    finished_at = serializers.FloatField(allow_null=True)


class JobListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    next_page = serializers.IntegerField(allow_null=True)
    results = JobSummarySerializer(many=True)
