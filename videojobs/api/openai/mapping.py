"""The translation of a /v1 create request into the body /video/submit validates
(SubmitSerializer: the same rules and messages, and whatever fields /video/submit gains pass
through as extra fields with no change here).

OpenAI's fields: ``prompt``; ``input_reference`` (an uploaded file, or {"image_url": ...} with
an http(s) or a base64 data: URL); ``model`` (the served id); ``size`` ("1280x720"); ``seconds``
(at 16 fps, the nearest 4k+1 frame count inside the contract's range). Everything else is one
of /video/submit's fields or an error naming it."""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework import serializers

from videojobs import params as P
from videojobs.api.serializers import SubmitSerializer, allowed_image_sizes, form_data
from videojobs.selectors.openai_videos import MODEL_FPS, size_text

OPENAI_FIELDS = ("prompt", "model", "seconds", "size", "input_reference")
# The contract's frame counts (4k+1 inside NUM_FRAMES_MIN..MAX): 25, 29, ..., 117.
VALID_FRAMES = tuple(n for n in range(P.NUM_FRAMES_MIN, P.NUM_FRAMES_MAX + 1) if P.is_valid_num_frames(n))
MISSING_IMAGE = ('this is an image-to-video model: send the first frame as input_reference (an uploaded image '
                 'file, or {"image_url": "https://..."})')


def frames_for_seconds(seconds: float) -> int:
    """The valid frame count nearest ``seconds`` at 16 fps (the shorter one on a tie)."""
    return min(VALID_FRAMES, key=lambda frames: (abs(frames - seconds * MODEL_FPS), frames))


def submit_data(*, data, files, multipart: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """A /v1 create body as /video/submit's, and which submit field came from which OpenAI
    field (to name the OpenAI field in errors). Raises ValidationError naming the param."""
    # 1. Split OpenAI's fields from the extra ones, typed as a /video/submit form would be.
    if multipart:
        extra = form_data(_without(data, OPENAI_FIELDS), {})
        openai = {name: data.get(name) for name in ("prompt", "model", "seconds", "size") if name in data}
        reference = _multipart_reference(data, files)
    else:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        extra = {k: v for k, v in data.items() if k not in OPENAI_FIELDS}
        openai = {k: data[k] for k in ("prompt", "model", "seconds", "size") if k in data}
        reference = data.get("input_reference")
    known = set(SubmitSerializer().fields) - {"image"}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise serializers.ValidationError({unknown[0]: [f"unknown parameter; besides {', '.join(OPENAI_FIELDS)} "
                                                        f"this API takes /video/submit's: {', '.join(sorted(known))}"]})
    # 2. Map OpenAI's fields onto /video/submit's.
    body, origin = dict(extra), {}
    if "prompt" in openai:
        body["prompt"] = openai["prompt"]
    _check_model(openai.get("model"))
    for name, target, convert in (("size", "image_size", _image_size), ("seconds", "num_frames", _num_frames)):
        if openai.get(name) in (None, ""):
            continue
        if target in body:
            raise serializers.ValidationError({name: [f"give {name} or {target}, not both"]})
        body[target], origin[target] = convert(openai[name]), name
    body.update(_input(reference, has_extra_url="image_url" in extra))
    if "image" in body or reference is not None:
        origin.update({"image": "input_reference", "image_url": "input_reference"})
    if "image" not in body and not body.get("image_url"):
        raise serializers.ValidationError({"input_reference": [MISSING_IMAGE]})
    return body, origin


def _without(data, names) -> Any:
    """The form less OpenAI's fields; a list the SDK sent as ``name[]`` fields under ``name``,
    and ``loras`` sent as objects (``loras[][name]``, ``loras[][scale]``) as /video/submit's
    form text ``name:scale,...``."""
    copy = data.copy()
    for name in list(copy):
        if name in names or name.startswith("input_reference["):
            del copy[name]
        elif name.endswith("[]"):
            copy.setlist(name[:-2], copy.getlist(name))
            del copy[name]
    if any(name.startswith("loras[][") for name in copy):
        copy["loras"] = _lora_form_text(copy)
    return copy


def _lora_form_text(form) -> str:
    """The SDK's multipart spelling of ``extra_body={"loras": [{"name", "scale"}, ...]}``: one
    ``loras[][name]`` and one ``loras[][scale]`` per object, in order (taken out of ``form``)."""
    names, scales = form.getlist("loras[][name]"), form.getlist("loras[][scale]")
    unknown = sorted(key for key in form if key.startswith("loras[][") and key not in ("loras[][name]", "loras[][scale]"))
    for key in ("loras[][name]", "loras[][scale]", *unknown):
        form.pop(key, None)
    if unknown or (scales and len(scales) != len(names)):
        raise serializers.ValidationError({"loras": ['each LoRA needs a "name" and, in a form, a "scale" too '
                                                     '(or send loras as JSON, or as "name:scale,..." text)']})
    return ",".join(f"{name}:{scale}" for name, scale in zip(names, scales or [""] * len(names)))


def _multipart_reference(data, files) -> Any:
    """input_reference from a form: the file, or the SDK's ``input_reference[image_url]``."""
    if "input_reference" in files:
        return files["input_reference"]
    nested = {key[len("input_reference["):-1]: data.get(key) for key in data
              if key.startswith("input_reference[") and key.endswith("]")}
    if nested:
        return nested
    text = data.get("input_reference")
    if text:
        try:
            return json.loads(text)
        except ValueError:
            raise serializers.ValidationError({"input_reference": ['must be an image file or a JSON object '
                                                                   '{"image_url": ...}']}) from None
    return None


def _check_model(model: Any) -> None:
    if model in (None, ""):
        return
    if model != settings.OPENAI_MODEL_ID:
        raise serializers.ValidationError({"model": [f"unknown model {model!r}; this server serves "
                                                     f"{settings.OPENAI_MODEL_ID}"]})


def _image_size(value: Any) -> str:
    allowed = [size_text(size) for size in allowed_image_sizes()]
    if not isinstance(value, str) or value.strip() not in allowed:
        raise serializers.ValidationError({"size": [f"{value!r} is not supported; choose one of {', '.join(allowed)}"]})
    return value.strip().replace("x", "*")


def _num_frames(value: Any) -> int:
    try:
        seconds = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise serializers.ValidationError({"seconds": [
            f"must be a positive number of seconds (got {value!r}); this model makes "
            f"{VALID_FRAMES[0] / MODEL_FPS:g}-{VALID_FRAMES[-1] / MODEL_FPS:g} s at {MODEL_FPS} fps"]})
    return frames_for_seconds(seconds)


def _input(reference: Any, *, has_extra_url: bool) -> dict[str, Any]:
    """input_reference as /video/submit's ``image`` (a file) or ``image_url``."""
    if reference is None:
        return {}
    if has_extra_url:
        raise serializers.ValidationError({"input_reference": ["give input_reference or image_url, not both"]})
    if hasattr(reference, "read"):
        return {"image": reference}
    if not isinstance(reference, dict) or set(reference) - {"image_url", "file_id"}:
        raise serializers.ValidationError({"input_reference": ['must be an image file or {"image_url": "..."}']})
    if reference.get("file_id"):
        raise serializers.ValidationError({"input_reference": ["file_id is not supported (this server has no "
                                                               "Files API): upload the file or give an image_url"]})
    url = reference.get("image_url")
    if not isinstance(url, str) or not url:
        raise serializers.ValidationError({"input_reference": ["image_url must be a non-empty string"]})
    if url.startswith("data:"):
        return {"image": _data_url_file(url)}
    return {"image_url": url}


def _data_url_file(url: str) -> SimpleUploadedFile:
    """A ``data:image/png;base64,...`` URL as the uploaded file it carries."""
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise serializers.ValidationError({"input_reference": ["a data: URL must be base64 (data:image/png;base64,...)"]})
    try:
        content = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise serializers.ValidationError({"input_reference": ["the data: URL is not valid base64"]}) from None
    if not content:
        raise serializers.ValidationError({"input_reference": ["the data: URL holds no bytes"]})
    return SimpleUploadedFile("input_reference", content)


def renamed_errors(detail: dict, origin: dict[str, str]) -> dict:
    """SubmitSerializer's errors under the OpenAI field a submit field came from."""
    return {origin.get(name, name): value for name, value in detail.items()}
