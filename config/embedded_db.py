"""The embedded Postgres used when DATABASE_URL is unset.

pgserver ships real PostgreSQL binaries in a wheel. The server is started once per data
folder and outlives the process that started it (web, qcluster and the daemon share it);
``make run``'s supervisor stops it on exit. Never SQLite: the queue relies on
``FOR UPDATE SKIP LOCKED`` and ``LISTEN/NOTIFY``.
"""
from __future__ import annotations

import fcntl
from pathlib import Path

# Whether this process started the server (rather than finding it running): whoever started
# it may stop it when done (the test session does; `make run` always stops it).
STARTED_HERE = False


def embedded_database_url(data_dir: Path) -> str:
    import logging
    import os
    import warnings

    # pgserver logs every handle at INFO and platformdirs warns without XDG_RUNTIME_DIR.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only the embedded default needs it

    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.geteuid()}")
    data_dir.mkdir(parents=True, exist_ok=True)
    # web, qcluster and the daemon may start at the same moment: one initdb, one postmaster.
    global STARTED_HERE
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = (data_dir / "postmaster.pid").exists()
        server = pgserver.get_server(str(data_dir), cleanup_mode=None)
        STARTED_HERE = not running
        return server.get_uri()


def stop_embedded_database(data_dir: Path) -> None:
    """Fast shutdown of the embedded server, if one runs on ``data_dir``."""
    import os

    from pgserver._commands import pg_ctl  # the same helper pgserver starts it with

    if not (data_dir / "postmaster.pid").exists():
        return
    # pgserver runs postgres as the system user "pgserver" when started by root.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
