"""config.env and config.settings: bad values fail at start, naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from django.core.exceptions import ImproperlyConfigured

from config import embedded_db, env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name,value,call",
    [
        ("X_INT", "abc", lambda: env.integer("X_INT", 1)),
        ("X_INT", "0", lambda: env.integer("X_INT", 1, minimum=1)),
        ("X_NUM", "fast", lambda: env.number("X_NUM", 1.0)),
        ("X_BOOL", "perhaps", lambda: env.boolean("X_BOOL", False)),
        ("X_CHOICE", "tpu", lambda: env.choice("X_CHOICE", "auto", ("auto", "cpu"))),
        ("X_NETS", "10.0.0.0/8,not-a-net", lambda: env.networks("X_NETS")),
        ("X_SIZES", "100*64", lambda: env.image_sizes("X_SIZES")),
        ("X_MODEL", "wan 2.1", lambda: env.model_id("X_MODEL", "m")),
    ],
)
def test_bad_value_raises_improperly_configured_naming_the_variable(monkeypatch, name, value, call):
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        call()


def test_good_values_parse(monkeypatch):
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_LIST", "a.example, b.example ,")
    monkeypatch.setenv("X_SIZES", "64*64,128*96")
    assert env.integer("X_INT", 1) == 42
    assert env.boolean("X_BOOL", False) is True
    assert env.csv("X_LIST", []) == ["a.example", "b.example"]
    assert env.image_sizes("X_SIZES") == ["64*64", "128*96"]
    monkeypatch.setenv("X_MODEL", "Wan-AI/Wan2.1-I2V-14B-720P")
    assert env.model_id("X_MODEL", "m") == "Wan-AI/Wan2.1-I2V-14B-720P"


def _settings_import(**environ) -> subprocess.CompletedProcess:
    full = {**os.environ, **environ}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.SERVER_PORT)"],
        cwd=ROOT, env={**full, "DJANGO_SETTINGS_MODULE": "config.settings"}, capture_output=True, text=True, timeout=60,
    )


def test_original_variables_have_their_original_defaults(settings):
    assert settings.SERVER_PORT == 8088 or os.environ.get("SERVER_PORT")
    assert settings.MAX_CONCURRENT_TASKS == 5 or os.environ.get("MAX_CONCURRENT_TASKS")
    assert settings.TASK_TIMEOUT == 1800 or os.environ.get("TASK_TIMEOUT")
    assert settings.CLEANUP_INTERVAL == 300 or os.environ.get("CLEANUP_INTERVAL")
    assert settings.MAX_OUTPUT_DIR_SIZE_GB == 50 or os.environ.get("MAX_OUTPUT_DIR_SIZE")


@pytest.mark.slow
def test_bad_server_port_stops_the_process_with_the_variable_named():
    result = _settings_import(SERVER_PORT="eighty")
    assert result.returncode != 0
    assert "SERVER_PORT must be an integer" in result.stderr


@pytest.mark.slow
def test_production_without_secret_key_refuses_to_start():
    environ = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT, env={**environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEV_MODE": "false"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_sqlite_database_url_is_refused(monkeypatch):
    result = _settings_import(DATABASE_URL="sqlite:///db.sqlite3")
    assert result.returncode != 0
    assert "DATABASE_URL must point to PostgreSQL" in result.stderr


@pytest.mark.slow
def test_web_process_never_imports_torch():
    code = (
        "import sys, django; django.setup();"
        "from django.test import Client; import config.urls, videojobs.admin, videojobs.tasks;"
        "Client().get('/docs/schema'); Client().get('/metrics'); Client().get('/health');"
        "from django.core.management import call_command; call_command('check', verbosity=0);"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def _embedded(data_dir: Path) -> dict[str, str]:
    """This environment with DATABASE_URL unset: the embedded Postgres of ``data_dir``."""
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**environ, "EMBEDDED_DB_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "config.settings"}


def _postmasters(data_dir: Path) -> list[psutil.Process]:
    """Running postmasters of ``data_dir`` (their backends are titled "postgres: ...", without -D)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "-D" in cmdline and str(data_dir.resolve()) in cmdline:
            found.append(process)
    return found


def test_importing_the_settings_starts_no_process(tmp_path):
    data_dir = tmp_path / "pgdata"
    code = ("import django; django.setup(); from django.conf import settings;"
            "print(settings.EMBEDDED_DB, settings.DATABASE_URL)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_embedded(data_dir), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    # The URL names the socket in the data folder; no folder, initdb or postmaster came of it.
    assert result.stdout.split() == ["True", f"postgresql://postgres:@/postgres?host={data_dir.resolve()}"]
    # Nor of a command that needs no database.
    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=_embedded(data_dir),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr[-2000:]
    assert not data_dir.exists()
    assert _postmasters(data_dir) == []


@pytest.mark.slow
def test_commands_that_need_the_database_start_the_embedded_one_once(tmp_path):
    data_dir = tmp_path / "pgdata"
    commands = [subprocess.Popen([sys.executable, "manage.py", "showmigrations", "videojobs"], cwd=ROOT,
                                 env=_embedded(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    try:
        # Two at once: one initdb, one postmaster, both commands served by it.
        outputs = [command.communicate(timeout=180) for command in commands]
        assert [command.returncode for command in commands] == [0, 0], [err[-2000:] for _, err in outputs]
        assert all("[" in out for out, _ in outputs)
        assert len(_postmasters(data_dir)) == 1
    finally:
        for command in commands:
            if command.poll() is None:
                command.kill()
                command.wait()
        embedded_db.stop_embedded_database(data_dir)
    assert _postmasters(data_dir) == []
