"""Two services on one machine (two data folders, as `make run` starts each) share no runtime
path: no gunicorn control socket, no pgserver lock file or socket folder."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from config import embedded_db
from tests.daemon_support import ROOT

# The web child's command line and environment, as the supervisor of this environment builds them.
SUPERVISOR_WEB = (
    "import json, django; django.setup()\n"
    "from django.conf import settings; from config import service\n"
    "argv = service.web_command(host=settings.SERVER_HOST, port=settings.SERVER_PORT, workers=1)\n"
    "print(json.dumps({'argv': argv, 'env': service.child_env()}))\n"
)
# The control socket gunicorn opens for that command line, read as gunicorn reads its settings
# (the command line, then gunicorn.conf.py from the working directory); null: none.
GUNICORN_CONTROL_SOCKET = (
    "import json, sys\n"
    "from gunicorn.app.wsgiapp import WSGIApplication\n"
    "sys.argv = ['gunicorn', *json.loads(sys.argv[1])]\n"
    "cfg = WSGIApplication().cfg\n"
    "print(json.dumps(None if cfg.control_socket_disable else cfg.control_socket))\n"
)


def _json_of(argv: list[str], environ: dict[str, str]):
    result = subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def gunicorn_control_socket(var_dir, port: int, extra: dict[str, str]) -> str | None:
    """The control socket of the web `make run` starts on ``var_dir``."""
    built = _json_of([sys.executable, "-c", SUPERVISOR_WEB],
                     {**os.environ, **extra, "VAR_DIR": str(var_dir), "SERVER_PORT": str(port)})
    argv = built["argv"]
    gunicorn_args = argv[argv.index("gunicorn") + 1:]
    return _json_of([sys.executable, "-c", GUNICORN_CONTROL_SOCKET, json.dumps(gunicorn_args)], built["env"])


@pytest.mark.parametrize("session", ["no runtime directory", "a login session's runtime directory"])
def test_two_services_on_one_machine_share_no_gunicorn_control_socket(tmp_path, session):
    extra = {}
    if session != "no runtime directory":
        (tmp_path / "run").mkdir(mode=0o700)
        extra["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    first = gunicorn_control_socket(tmp_path / "first", 18081, extra)
    second = gunicorn_control_socket(tmp_path / "second", 18082, extra)
    # The last one to start would take a shared path from the other: none is opened at all.
    assert first is None or first != second
    assert (first, second) == (None, None)


@pytest.fixture
def runtime_root(monkeypatch):
    """Where this test's data folders get their runtime directories (short, removed after)."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    monkeypatch.setattr(embedded_db, "RUNTIME_ROOT", root, raising=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_each_data_folder_has_its_own_pgserver_runtime_directory(tmp_path, monkeypatch, runtime_root):
    with warnings.catch_warnings():  # platformdirs, about this process's XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer
    for name in ("runtime_path", "lock_path", "_lock"):  # as they were, after the test
        monkeypatch.setattr(PostgresServer, name, getattr(PostgresServer, name))
    environment = os.environ.get("XDG_RUNTIME_DIR")
    # Folders whose paths are too long for a socket inside: pgserver's runtime folder holds theirs.
    deep = tmp_path / ("d" * 100)
    folders = [deep / "first" / "pgdata", deep / "second" / "pgdata"]
    sockets, locks = [], []
    for folder in folders:
        sockets.append(embedded_db.socket_dir(folder))
        locks.append(PostgresServer.lock_path)  # what a server start on the folder takes
    assert all(len(os.fsencode(socket / ".s.PGSQL.5432")) <= 103 for socket in sockets)
    assert sockets[0].parent != sockets[1].parent
    assert locks[0] != locks[1]
    for folder, socket, lock in zip(folders, sockets, locks):
        runtime = embedded_db.runtime_dir(folder)
        assert socket.parent == runtime == lock.parent and runtime.parent == runtime_root
        found = runtime.lstat()
        assert stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid() and stat.S_IMODE(found.st_mode) == 0o700
    # Nothing of it reaches the processes started later (gunicorn's default path reads it).
    assert os.environ.get("XDG_RUNTIME_DIR") == environment
