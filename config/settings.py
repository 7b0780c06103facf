"""Settings for the video generation service, all read from the environment via config.env."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config import embedded_db, env
from config.logging import LOG_FORMATS
from videojobs.params import SAMPLE_SOLVERS, SOLVER_DEFAULT

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.string("VAR_DIR", str(BASE_DIR / "var")))

# --- core -----------------------------------------------------------------------------
DEBUG = env.boolean("DEBUG", False)
# DJANGO_ENV=production: a secret key and the served host names are required, the security
# headers and secure cookies are on, API keys are required, and `manage.py check --deploy` is
# clean. The development default (the quick start) binds 127.0.0.1 and needs nothing set.
# DEV_MODE=false, the older spelling, still means production.
DJANGO_ENV = env.choice(
    "DJANGO_ENV", "development" if env.boolean("DEV_MODE", True) else "production", ("development", "production")
)
PRODUCTION = DJANGO_ENV == "production"
INSECURE_DEV_KEY = "insecure-development-key-set-SECRET_KEY-in-production"
SECRET_KEY = env.string("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    SECRET_KEY = INSECURE_DEV_KEY
# Production serves only the names listed (videojobs.E006 refuses "*" or none there).
ALLOWED_HOSTS = env.csv("ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
SERVER_HOST = env.string("SERVER_HOST", "0.0.0.0" if PRODUCTION else "127.0.0.1")
SERVER_PORT = env.integer("SERVER_PORT", 8088, minimum=1, maximum=65535)
WEB_WORKERS = env.integer("WEB_WORKERS", 2, minimum=1, maximum=64)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "rest_framework_api_key",
    "django_q",
    "csp",
    "axes",
    "videojobs",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # /v1's errors in OpenAI's shape, including the two guards' answers below.
    "videojobs.api.openai.errors.OpenAIErrorShapeMiddleware",
    "videojobs.api.errors.BodySizeLimitMiddleware",
    "videojobs.api.errors.NulByteGuardMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: answers a locked-out login (the login throttle below).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database: Postgres only ----------------------------------------------------------
DATABASE_URL = env.string("DATABASE_URL", "")
EMBEDDED_DB_DIR = Path(env.string("EMBEDDED_DB_DIR", str(VAR_DIR / "pgdata")))
# Unset: the embedded Postgres of EMBEDDED_DB_DIR, named here, never started here: `make run`
# supervises it, and manage.py's commands, the WSGI/ASGI entries and the tests start it on demand
# (config.embedded_db.start_if_configured).
EMBEDDED_DB = not DATABASE_URL
if EMBEDDED_DB:
    DATABASE_URL = embedded_db.database_url(EMBEDDED_DB_DIR)
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point to PostgreSQL (postgres:// or postgresql://)")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- static, media, videos ------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.string("STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env.string("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
OUTPUT_DIR = Path(env.string("OUTPUT_DIR", str(BASE_DIR / "generated_videos")))
MAX_OUTPUT_DIR_SIZE_GB = env.number("MAX_OUTPUT_DIR_SIZE", 50.0, minimum=0.001)
# Free space the daemon needs on OUTPUT_DIR's disk before it runs a job (else DISK_FULL, at once).
MIN_FREE_DISK_MB = env.integer("MIN_FREE_DISK_MB", 1024, minimum=0)

# --- request limits -------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env.integer("MAX_REQUEST_BYTES", 64 * 1024, minimum=1024)

# --- the job queue --------------------------------------------------------------------
MAX_CONCURRENT_TASKS = env.integer("MAX_CONCURRENT_TASKS", 5, minimum=1)
# Clients: API keys (Authorization: Bearer), required in production. Where they are, one
# client may hold all but one of the queue's slots by default, and submit OWNER_SUBMITS_PER_MINUTE.
API_KEYS_REQUIRED = env.boolean("API_KEYS_REQUIRED", PRODUCTION)
OWNER_MAX_UNFINISHED = env.integer(
    "OWNER_MAX_UNFINISHED", max(1, MAX_CONCURRENT_TASKS - 1) if API_KEYS_REQUIRED else MAX_CONCURRENT_TASKS, minimum=1
)
OWNER_SUBMITS_PER_MINUTE = env.integer("OWNER_SUBMITS_PER_MINUTE", 60, minimum=1)
TASK_TIMEOUT = env.integer("TASK_TIMEOUT", 1800, minimum=1)
CLEANUP_INTERVAL = env.integer("CLEANUP_INTERVAL", 300, minimum=10)
LEASE_SECONDS = env.integer("LEASE_SECONDS", 120, minimum=2)
JOB_MAX_ATTEMPTS = env.integer("JOB_MAX_ATTEMPTS", 3, minimum=1, maximum=100)
JOB_HISTORY_DAYS = env.integer("JOB_HISTORY_DAYS", 30, minimum=1)
RETRY_AFTER_SECONDS = env.integer("RETRY_AFTER_SECONDS", 30, minimum=1)
EXTRA_IMAGE_SIZES = env.image_sizes("EXTRA_IMAGE_SIZES")
# The OpenAI-compatible API (/v1): the id of the served model (GET /v1/models, a create's `model`).
OPENAI_MODEL_ID = env.model_id("OPENAI_MODEL_ID", "wan2.1-i2v-14b-720p")
# The sampler a request gets when it names none ("distill" serves the 4-step distilled model by
# default; a request that sends the original contract's 20-100 infer_steps still gets unipc).
DEFAULT_SAMPLE_SOLVER = env.choice("DEFAULT_SAMPLE_SOLVER", SOLVER_DEFAULT, SAMPLE_SOLVERS)

# --- input images ---------------------------------------------------------------------
IMAGE_URL_ALLOWED_NETWORKS = env.networks("IMAGE_URL_ALLOWED_NETWORKS")
IMAGE_MAX_BYTES = env.integer("IMAGE_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
IMAGE_MAX_PIXELS = env.integer("IMAGE_MAX_PIXELS", 40_000_000, minimum=64 * 64)
IMAGE_CONNECT_TIMEOUT = env.number("IMAGE_CONNECT_TIMEOUT", 5.0, minimum=0.1)
IMAGE_TOTAL_TIMEOUT = env.number("IMAGE_TOTAL_TIMEOUT", 30.0, minimum=0.5)

# An upload (multipart /video/submit or the job page) may carry one image of IMAGE_MAX_BYTES.
MAX_UPLOAD_REQUEST_BYTES = IMAGE_MAX_BYTES + DATA_UPLOAD_MAX_MEMORY_SIZE

# --- webhooks ---------------------------------------------------------------------------
# The HMAC key of X-Signature. Production has no default: without it, a submit with a
# webhook_url is refused (WEBHOOKS_DISABLED) and `manage.py check` warns (videojobs.W005).
INSECURE_DEV_WEBHOOK_SECRET = "insecure-development-webhook-secret"
WEBHOOK_SECRET = env.string("WEBHOOK_SECRET", "" if PRODUCTION else INSECURE_DEV_WEBHOOK_SECRET)
# Private networks a webhook_url may reach (an internal receiver); public addresses always can.
WEBHOOK_ALLOWED_NETWORKS = env.networks("WEBHOOK_ALLOWED_NETWORKS")
WEBHOOK_TIMEOUT = env.number("WEBHOOK_TIMEOUT", 10.0, minimum=0.5, maximum=120)
WEBHOOK_MAX_ATTEMPTS = env.integer("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1, maximum=50)
# First retry after this many seconds, tripled each time (at most an hour); the retry sweep
# runs every minute.
WEBHOOK_RETRY_SECONDS = env.integer("WEBHOOK_RETRY_SECONDS", 30, minimum=1)
# Where clients reach this service (https://video.example.com): makes the video_url of
# webhook bodies absolute. Empty: paths relative to the service, as in the API.
PUBLIC_BASE_URL = env.string("PUBLIC_BASE_URL", "").rstrip("/")

# --- the inference daemon -------------------------------------------------------------
MODEL_CKPT_DIR = env.string("MODEL_CKPT_DIR", "")
TINY_CKPT_DIR = Path(env.string("TINY_CKPT_DIR", str(VAR_DIR / "tiny-wan-i2v")))
DEVICE = env.choice("DEVICE", "auto", ("auto", "cuda", "npu", "cpu"))
DAEMON_POLL_SECONDS = env.number("DAEMON_POLL_SECONDS", 2.0, minimum=0.05)
DAEMON_IDLE_TICK_SECONDS = env.number("DAEMON_IDLE_TICK_SECONDS", 5.0, minimum=0.05)
# Per-component dtypes; empty keeps the device default (bf16 DiT and T5 on accelerators,
# fp32 VAE and CLIP; fp32 everywhere on the CPU).
_DTYPES = ("", "bf16", "fp16", "fp32")
MODEL_DTYPES = {
    component: env.choice(variable, "", _DTYPES)
    for component, variable in (
        ("transformer", "DIT_DTYPE"),
        ("text_encoder", "T5_DTYPE"),
        ("vae", "VAE_DTYPE"),
        ("image_encoder", "CLIP_DTYPE"),
    )
}
# Acceleration: the DiT's attention kernel (auto: the fastest exact one for the device),
# regional compilation warmed up at start for COMPILE_WARMUP's "W*HxF" shapes, and the number
# of prompt embeddings kept (the default negative prompt is always kept).
ATTENTION_BACKEND = env.string("ATTENTION_BACKEND", "auto")
COMPILE = env.boolean("COMPILE", False)
COMPILE_WARMUP = env.shapes("COMPILE_WARMUP", ["1280*720x81"])
PROMPT_CACHE_SIZE = env.integer("PROMPT_CACHE_SIZE", 32, minimum=0, maximum=100_000)
# Quantized weights, applied once at daemon start (README, "Quantized inference"): the DiT's
# blocks in fp8 (CUDA sm89+) or int8 weight-only (anywhere), UMT5's in int8 weight-only.
DIT_QUANT = env.choice("DIT_QUANT", "none", ("none", "fp8", "int8"))
T5_QUANT = env.choice("T5_QUANT", "none", ("none", "int8"))
# LoRA adapters: every *.safetensors file in LORA_DIR is loaded by every daemon rank at start;
# DEFAULT_LORAS ("name:scale,...") applies to every job that sends no `loras` of its own.
LORA_DIR = Path(env.string("LORA_DIR", str(VAR_DIR / "loras")))
DEFAULT_LORAS = env.loras("DEFAULT_LORAS")
# A queued job whose adapters no loaded worker holds (its daemon restarted without them) fails
# after this long, while some worker is loaded to judge by; it never waits for ever.
LORA_WAIT_SECONDS = env.integer("LORA_WAIT_SECONDS", 900, minimum=60)
INFERENCE_NPROC = env.integer("INFERENCE_NPROC", 1, minimum=1, maximum=64)
# One daemon group across several hosts (torchrun --nnodes): every host runs the supervisor
# (or torchrun) with the same NNODES, MASTER_ADDR and MASTER_PORT and its own NODE_RANK.
INFERENCE_NNODES = env.integer("NNODES", 1, minimum=1, maximum=1024)
INFERENCE_NODE_RANK = env.integer("NODE_RANK", 0, minimum=0, maximum=1023)
MASTER_ADDR = env.string("MASTER_ADDR", "127.0.0.1")
MASTER_PORT = env.integer("MASTER_PORT", 29500, minimum=1, maximum=65535)
if INFERENCE_NODE_RANK >= INFERENCE_NNODES:
    raise ImproperlyConfigured(f"NODE_RANK must be < NNODES ({INFERENCE_NNODES}), got {INFERENCE_NODE_RANK}")
# Which processes `make run` / scripts/start_service.sh supervise on this host: the other
# nodes of a multi-host group, or extra daemon hosts, run only "inference".
# Set by `make run`'s supervisor for its children (not an operator setting): the daemon gives its
# job back and exits when that process is gone, even under torchrun.
SUPERVISOR_PID = env.integer("SERVICE_SUPERVISOR_PID", 0, minimum=0)
SERVICE_ROLES = env.csv("SERVICE_ROLES", ["web", "qcluster", "inference"])
if not SERVICE_ROLES or set(SERVICE_ROLES) - {"web", "qcluster", "inference"}:
    raise ImproperlyConfigured(f"SERVICE_ROLES must be a comma list of web, qcluster, inference, got {SERVICE_ROLES!r}")
DIST_TIMEOUT_SECONDS = env.integer("DIST_TIMEOUT_SECONDS", 1800, minimum=10)
WORKER_STALE_SECONDS = env.integer("WORKER_STALE_SECONDS", 60, minimum=5)
# A worker silent this long is lost: its row says so and its running job is rescued at once.
WORKER_LOST_SECONDS = env.integer("WORKER_LOST_SECONDS", 180, minimum=10)
VIDEO_FPS = 16
# Original-spec topology variables: how the daemon group splits the pipeline (see README,
# "Topology"). Unset ULYSSES_SIZE takes whatever RING_SIZE x CFG_SIZE leave of the world size.
T5_CPU = env.boolean("T5_CPU", False)
DIT_FSDP = env.boolean("DIT_FSDP", False)
T5_FSDP = env.boolean("T5_FSDP", False)
VAE_PARALLEL = env.boolean("VAE_PARALLEL", False)
ULYSSES_SIZE = env.optional_integer("ULYSSES_SIZE", minimum=1, maximum=1024)
RING_SIZE = env.optional_integer("RING_SIZE", minimum=1, maximum=1024)
CFG_SIZE = env.integer("CFG_SIZE", 1, minimum=1, maximum=2)

# --- django-q2: ORM broker on the same Postgres ---------------------------------------
# Two clusters, each its own queue and workers: the default one prepares inputs and runs the
# sweeps; WEBHOOK_CLUSTER only delivers webhooks (`qcluster` with Q_CLUSTER_NAME=webhooks), so a
# receiver that hangs holds a delivery worker for WEBHOOK_TIMEOUT, never an input's.
WEBHOOK_CLUSTER = "webhooks"
_WEBHOOK_TASK_TIMEOUT = int(WEBHOOK_TIMEOUT + 30)  # one POST, with room to record it
Q_CLUSTER = {
    "name": "videogen",
    "orm": "default",
    "workers": env.integer("Q_WORKERS", 2, minimum=1),
    # A task may take as long as the image download's deadline, with room to store it.
    "timeout": int(max(120, IMAGE_TOTAL_TIMEOUT + 60)),
    "retry": int(max(180, IMAGE_TOTAL_TIMEOUT + 120)),
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "poll": 0.5,
    "label": "Django Q2",
    "ALT_CLUSTERS": {
        WEBHOOK_CLUSTER: {
            "workers": env.integer("WEBHOOK_WORKERS", 2, minimum=1, maximum=64),
            "timeout": _WEBHOOK_TASK_TIMEOUT,
            "retry": _WEBHOOK_TASK_TIMEOUT + 60,
        },
    },
}

# --- DRF and OpenAPI ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": ["videojobs.api.parsers.GuardedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["videojobs.api.auth.BearerAPIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["videojobs.api.auth.KeyRequiredWhenConfigured"],
    "EXCEPTION_HANDLER": "videojobs.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "videojobs.api.auth.anonymous",
    # ?format= selects Prometheus text on /metrics, not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Video generation API (Wan2.1 I2V)",
    "DESCRIPTION": "Submit an image and a prompt, poll the job, cancel it, download the mp4.",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request and response components apart: the upload is a binary file in a multipart body.
    "COMPONENT_SPLIT_REQUEST": True,
    # The error answers operations share (401, 400, 413, 415), documented on each operation.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "videojobs.api.schema.document_error_responses"],
}

# --- security (production sits behind a TLS reverse proxy; see the README) ------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", True)
    # Load balancers probe over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.boolean("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.csv("CSRF_TRUSTED_ORIGINS", [])
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy on every response (django-csp): the job page, the admin and /docs load
# scripts, styles, images and media from this origin only, and run no inline script or style
# (templates/ keep theirs in static files; htmx's indicator style is off in templates/base.html).
# Swagger UI shows its icons as data: images.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- the login throttle (django-axes) -------------------------------------------------
# /accounts/login/ and /admin/login/ count failures per client address and per username in the
# database, so every gunicorn worker sees the same counts: LOGIN_FAILURE_LIMIT failures in a
# row (each within LOGIN_LOCKOUT_MINUTES of the last) lock that address, or that username, out
# for LOGIN_LOCKOUT_MINUTES: 429 and the form saying so (videojobs/web/login_throttle.py).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.integer("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.integer("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_LOCKOUT_CALLABLE = "videojobs.web.login_throttle.lockout_response"
AXES_CLIENT_IP_CALLABLE = "videojobs.web.login_throttle.client_address"
# Failed attempts only: no row per successful login; no banner in every process's log at start.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
# Reverse proxies in front that append the client's address to X-Forwarded-For: production's
# nginx (deploy/nginx-videogen.conf) is one. The throttle reads the address the nearest of them saw.
TRUSTED_PROXY_COUNT = env.integer("TRUSTED_PROXY_COUNT", 1 if PRODUCTION else 0, minimum=0, maximum=10)

# --- i18n, logging --------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOG_LEVEL = env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
# json: one JSON object per console line (time, level, logger, message, the job's extras), for
# journald and log shippers; plain: one readable line (config/logging.py).
LOG_FORMAT = env.choice("LOG_FORMAT", "plain", LOG_FORMATS)
LOGGING_CONFIG = "config.logging.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "config.logging.PlainFormatter"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "filters": {"health_probe_unavailable": {"()": "config.logging.HealthProbeUnavailableFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL.upper()},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # A /health 503 while the daemon loads is an answer, not an error.
        "django.request": {"filters": ["health_probe_unavailable"]},
    },
}
