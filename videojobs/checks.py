"""System checks for configuration that would otherwise fail later, at the first job."""
from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Warning, register

CKPT_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler")


@register()
def check_output_dir(app_configs=None, **kwargs):
    """OUTPUT_DIR must be a writable folder, or creatable under its nearest existing ancestor."""
    folder = Path(settings.OUTPUT_DIR)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return [Error(f"OUTPUT_DIR {folder} is not a writable folder (checked {probe})", id="videojobs.E001")]
    return []


@register()
def check_model_dir(app_configs=None, **kwargs):
    # A warning, not an error: the web and the django-q2 cluster never load the model, and
    # the daemon refuses a bad checkpoint at start with one line naming the missing part.
    if not settings.MODEL_CKPT_DIR:
        return []
    folder = Path(settings.MODEL_CKPT_DIR)
    if not folder.is_dir():
        return [Warning(f"MODEL_CKPT_DIR {folder} is not a folder", id="videojobs.W003")]
    missing = [part for part in CKPT_PARTS if not (folder / part).exists()]
    if missing:
        return [
            Warning(
                f"MODEL_CKPT_DIR {folder} is not a diffusers Wan I2V checkpoint: missing {', '.join(missing)}",
                hint="Use the diffusers layout (e.g. Wan-AI/Wan2.1-I2V-14B-720P-Diffusers).",
                id="videojobs.W003",
            )
        ]
    return []


@register()
def check_lease_and_timeouts(app_configs=None, **kwargs):
    errors = []
    # rank 0 heartbeats every LEASE_SECONDS / 3; a shorter lease than the poll would flap.
    if settings.LEASE_SECONDS < 3 * settings.DAEMON_POLL_SECONDS:
        errors.append(
            Error("LEASE_SECONDS must be at least 3 x DAEMON_POLL_SECONDS", id="videojobs.E003")
        )
    if settings.DIST_TIMEOUT_SECONDS < 4 * settings.DAEMON_IDLE_TICK_SECONDS:
        errors.append(
            Error("DIST_TIMEOUT_SECONDS must be at least 4 x DAEMON_IDLE_TICK_SECONDS", id="videojobs.E004")
        )
    return errors


@register(deploy=True)
def check_production_secrets(app_configs=None, **kwargs):
    warnings = []
    if settings.SECRET_KEY == settings.INSECURE_DEV_KEY:
        warnings.append(Warning("SECRET_KEY is the development default; set DJANGO_ENV=production and SECRET_KEY",
                                id="videojobs.W001"))
    if settings.DEBUG:
        warnings.append(Warning("DEBUG is on", id="videojobs.W002"))
    return warnings


@register()
def check_production_hosts(app_configs=None, **kwargs):
    if not settings.PRODUCTION:
        return []
    if not settings.ALLOWED_HOSTS or "*" in settings.ALLOWED_HOSTS:
        return [Error("ALLOWED_HOSTS must list the host names this service answers to in production (not '*')",
                      hint="e.g. ALLOWED_HOSTS=video.example.com", id="videojobs.E006")]
    return []


@register(deploy=True)
def check_webhook_secret(app_configs=None, **kwargs):
    """Webhooks are signed with WEBHOOK_SECRET: without one in production they are refused."""
    if not settings.PRODUCTION:
        return []
    if not settings.WEBHOOK_SECRET:
        return [Warning("WEBHOOK_SECRET is not set: submits with a webhook_url are refused (WEBHOOKS_DISABLED)",
                        hint="set WEBHOOK_SECRET to a long random value to sign webhook deliveries",
                        id="videojobs.W005")]
    if settings.WEBHOOK_SECRET == settings.INSECURE_DEV_WEBHOOK_SECRET or len(settings.WEBHOOK_SECRET) < 32:
        return [Error("WEBHOOK_SECRET is the development value or shorter than 32 characters",
                      hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                      id="videojobs.E007")]
    return []


@register()
def check_loras(app_configs=None, **kwargs):
    """LORA_DIR must be a folder when it exists (every daemon rank reads it at start); a
    DEFAULT_LORAS adapter missing from it would make every job that chooses none a 400."""
    folder = Path(settings.LORA_DIR)
    if folder.exists() and not folder.is_dir():
        return [Error(f"LORA_DIR {folder} is not a folder", id="videojobs.E017")]
    missing = [item["name"] for item in settings.DEFAULT_LORAS if not (folder / f"{item['name']}.safetensors").is_file()]
    if missing:
        return [Warning(f"DEFAULT_LORAS names {', '.join(missing)}, but LORA_DIR {folder} has no such .safetensors "
                        "file here", hint="Jobs that send no loras are refused until a worker holds them "
                        "(fine if the daemons run on another host with their own LORA_DIR).", id="videojobs.W017")]
    return []
