"""DJANGO_ENV=production: required secrets and hosts, security headers, a clean check --deploy."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "x7$Qp!v2@Lm9#Rt4^Wz8&Yb1*Nc6(Hd3)Jf5_Kg0+Se7-Ua2=Io9%Pl4"
# Checks need no database: a URL that is never connected to keeps the embedded one asleep.
NO_DB = "postgres://nobody@127.0.0.1:1/none"


def manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEV_MODE", "ALLOWED_HOSTS", "SECRET_KEY", "DEBUG", "WEBHOOK_SECRET")}
    env.update({"DATABASE_URL": NO_DB, **environ})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def production(**extra: str) -> dict[str, str]:
    return {"DJANGO_ENV": "production", "SECRET_KEY": STRONG_KEY, "ALLOWED_HOSTS": "video.example.com",
            "WEBHOOK_SECRET": STRONG_KEY[::-1], **extra}


def test_check_deploy_is_clean_in_production():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_without_webhook_secret_warns_and_a_weak_one_is_an_error():
    result = manage("check", "--deploy", **production(WEBHOOK_SECRET=""))
    assert "videojobs.W005" in result.stderr + result.stdout
    result = manage("check", "--deploy", **production(WEBHOOK_SECRET="short"))
    assert result.returncode != 0 and "videojobs.E007" in result.stderr


def test_production_refuses_a_wildcard_or_missing_host_list():
    for hosts in ("*", ""):
        result = manage("check", **production(ALLOWED_HOSTS=hosts))
        assert result.returncode != 0 and "videojobs.E006" in result.stderr, hosts


def test_production_requires_a_secret_key():
    result = manage("check", DJANGO_ENV="production", ALLOWED_HOSTS="video.example.com", SECRET_KEY="")
    assert result.returncode != 0 and "SECRET_KEY must be set when DJANGO_ENV=production" in result.stderr


def test_the_older_dev_mode_switch_still_means_production():
    result = manage("check", DEV_MODE="false", ALLOWED_HOSTS="video.example.com", SECRET_KEY="")
    assert "SECRET_KEY must be set when DJANGO_ENV=production" in result.stderr


@pytest.mark.parametrize(("environ", "host"), [({}, "127.0.0.1"), (production(), "0.0.0.0"),
                                               (production(SERVER_HOST="10.1.2.3"), "10.1.2.3")])
def test_development_binds_loopback_and_production_what_server_host_says(environ, host):
    code = "import django; django.setup(); from django.conf import settings; print(settings.SERVER_HOST)"
    env = {k: v for k, v in os.environ.items() if k not in ("SERVER_HOST", "DEV_MODE")}
    env.update({"DATABASE_URL": NO_DB, "DJANGO_SETTINGS_MODULE": "config.settings", **environ})
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == host, result.stderr


@pytest.mark.django_db
def test_responses_carry_the_security_headers(api):
    response = api.get("/health")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
