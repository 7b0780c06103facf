"""The embedded Postgres used when DATABASE_URL is unset.

pgserver ships real PostgreSQL binaries in a wheel. The settings only name the server
(``database_url``: its Unix socket in the data folder) and never start it; what needs it does:

- **Supervised** (``make run`` and ``scripts/start_service.sh``): the supervisor runs the
  postmaster as its own child (``EmbeddedPostgres``), restarts it if it dies, and takes it
  down with everything else.
- **On demand** (``start_if_configured``: manage.py's commands that need a database, the WSGI
  and ASGI entries run standalone, the test session, the benchmarks): the server is started once
  per data folder (pgserver, detached) and later processes share it; whoever started it may
  stop it (the test session does).

Never SQLite: the queue relies on ``FOR UPDATE SKIP LOCKED`` and ``LISTEN/NOTIFY``.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

from django.conf import settings

# Whether this process started the server (rather than finding it running): whoever started
# it may stop it when done (the test session does; `make run` always stops it).
STARTED_HERE = False
# Every platform's sun_path holds a socket path this long (Linux 108 bytes, macOS 104).
_SOCKET_PATH_MAX = 103


# Where each data folder's runtime directory is made: short, so that a socket path fits below it.
RUNTIME_ROOT = Path("/tmp")


def runtime_dir(data_dir: Path) -> Path:
    """``data_dir``'s own runtime directory (pgserver's lock file, and the server's socket when
    the folder's path is too long for one): private to this user, one per data folder, so two
    services on one machine share none of it. Made on first use."""
    data_dir = Path(data_dir).expanduser().resolve()
    path = RUNTIME_ROOT / f"videogen-{os.geteuid()}-{hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        found = path.lstat()
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
            raise RuntimeError(f"{path} is not a directory of this user; remove it") from None
    return path


@contextlib.contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _pgserver(data_dir: Path):
    """pgserver (imported lazily: only the embedded default needs it), quiet, set to work on
    ``data_dir`` with that folder's own runtime directory."""
    import logging
    import warnings

    import fasteners

    # pgserver logs every handle at INFO and platformdirs warns about XDG_RUNTIME_DIR.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    runtime = runtime_dir(data_dir)
    # pgserver fixes one runtime directory per user when imported ($XDG_RUNTIME_DIR/python_PostgresServer:
    # a lock file every server start takes, the sockets of long data paths): the folder's own
    # instead. XDG_RUNTIME_DIR only for the import: the processes started later keep theirs.
    with warnings.catch_warnings(), _environment("XDG_RUNTIME_DIR", str(runtime)):
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver.postgres_server import PostgresServer
    if PostgresServer.runtime_path != runtime:
        PostgresServer.runtime_path = runtime
        PostgresServer.lock_path = runtime / ".lockfile"
        PostgresServer._lock = fasteners.InterProcessLock(PostgresServer.lock_path)
    return pgserver


def _lock(data_dir: Path):
    return open(data_dir.parent / f".{data_dir.name}.lock", "w")


def socket_dir(data_dir: Path) -> Path:
    """Where the server's Unix socket lives: pgserver's rule (the data folder if its path is short
    enough), on the resolved path as pgserver sees it. Touches nothing for a short path."""
    data_dir = Path(data_dir).expanduser().resolve()
    if len(os.fsencode(data_dir / ".s.PGSQL.5432")) <= _SOCKET_PATH_MAX:
        return data_dir
    # Longer: pgserver's own probe (a bind in the folder, or a folder named by its inode in the
    # folder's runtime directory).
    _pgserver(data_dir)
    from pgserver.utils import find_suitable_socket_dir

    data_dir.mkdir(parents=True, exist_ok=True)
    return find_suitable_socket_dir(data_dir, runtime_dir(data_dir))


def database_url(data_dir: Path) -> str:
    """The embedded server's URL (the settings' DATABASE_URL when it is unset). Starts nothing."""
    return f"postgresql://postgres:@/postgres?host={socket_dir(data_dir)}"


def ensure_running(data_dir: Path) -> str:
    """Start the server on ``data_dir`` unless it runs (initialising a new folder); its URL."""
    global STARTED_HERE
    data_dir = Path(data_dir)
    pgserver = _pgserver(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # web, qcluster and the daemon may start at the same moment: one initdb, one postmaster.
    with _lock(data_dir) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = _postmaster_alive(data_dir)
        server = _get_server(pgserver, data_dir)
        STARTED_HERE = STARTED_HERE or not running
        return server.get_uri()


def _get_server(pgserver, data_dir: Path, *, tries: int = 3, patience: float = 60.0):
    """pgserver's handle on the server, started if need be. pgserver gives pg_ctl 10 s to start
    it; a loaded machine can take longer, and the server goes on starting: wait for it, ask again."""
    for attempt in range(1, tries + 1):
        try:
            return pgserver.get_server(str(data_dir), cleanup_mode=None)
        except (subprocess.SubprocessError, OSError):
            if attempt == tries:
                raise
            deadline = time.monotonic() + patience
            while not _postmaster_alive(data_dir) and time.monotonic() < deadline:
                time.sleep(0.5)


def start_if_configured() -> None:
    """Start the embedded Postgres the settings name, if they name one (DATABASE_URL unset)."""
    if getattr(settings, "EMBEDDED_DB", False):
        ensure_running(settings.EMBEDDED_DB_DIR)


def stop_if_started_here() -> None:
    """Stop the settings' embedded Postgres if this process started it (the test session's end)."""
    if getattr(settings, "EMBEDDED_DB", False) and STARTED_HERE:
        stop_embedded_database(settings.EMBEDDED_DB_DIR)


def stop_embedded_database(data_dir: Path) -> None:
    """Fast shutdown of an on-demand server, if one runs on ``data_dir``."""
    _pgserver(data_dir)
    from pgserver._commands import pg_ctl  # the same helper pgserver starts it with

    if not (data_dir / "postmaster.pid").exists():
        return
    # pgserver runs postgres as the system user "pgserver" when started by root.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)


class EmbeddedPostgres:
    """The postmaster as the supervisor's child: started, watched, restarted, stopped."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.process: subprocess.Popen | None = None

    def start(self, *, preexec_fn, timeout: float = 60.0) -> None:
        """Initialise the folder if new, start the postmaster in the foreground, wait until ready."""
        # 1. The folder and its owner (postgres refuses to run as root: pgserver's system user).
        _pgserver(self.data_dir)
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.postgres_server import PostgresServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(self.data_dir, cleanup_mode=None)
        with _lock(self.data_dir) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            server.ensure_pgdata_inited()
            self._stop_unsupervised_server()
        # 2. The postmaster, listening on its Unix socket only.
        sockets = socket_dir(self.data_dir)
        user = server.system_user
        if user is not None and sockets != self.data_dir.resolve():
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(sockets)
            sockets.chmod(0o777)
        self._kill_leftovers()
        argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-h", "", "-k", str(sockets)]

        def prepare_child() -> None:
            if user is not None:
                import pwd

                record = pwd.getpwnam(user)
                os.setgid(record.pw_gid)
                os.setuid(record.pw_uid)
            preexec_fn()  # after the uid change, which would clear a parent-death signal

        log = open(self.data_dir / "supervised.log", "ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=prepare_child,
                                        start_new_session=True, cwd=self.data_dir)
        log.close()
        self._wait_ready(timeout)

    def _ready(self) -> bool:
        # postmaster.pid is written in steps; its 8th line turns "ready" once connections are accepted.
        lines = _postmaster_lines(self.data_dir)
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def _kill_leftovers(self) -> None:
        # A killed postmaster leaves its backends behind for a moment, attached to the shared
        # memory a new postmaster must own: they are in the old one's session, end them.
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _session_alive(self.process.pid):
            time.sleep(0.05)

    def _stop_unsupervised_server(self) -> None:
        # A server started on demand (a manage.py command, a test run) holds the folder: the
        # supervisor takes over. The supervisor's own lock guarantees it is not another's.
        if _postmaster_alive(self.data_dir):
            stop_embedded_database(self.data_dir)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded Postgres exited with {self.process.returncode} while starting "
                                   f"(see {self.data_dir / 'supervised.log'})")
            if _postmaster_lines(self.data_dir)[:1] == [str(self.process.pid)] and self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the embedded Postgres was not ready after {timeout:.0f} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit), then harder."""
        if not self.alive():
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                self.process.send_signal(sig)
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return


def _postmaster_lines(data_dir: Path) -> list[str]:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _postmaster_alive(data_dir: Path) -> bool:
    """A postmaster.pid whose process lives (a killed server leaves its file behind)."""
    import psutil

    lines = _postmaster_lines(data_dir)
    return bool(lines) and lines[0].isdigit() and psutil.pid_exists(int(lines[0]))


def _session_alive(session_id: int) -> bool:
    import psutil

    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session_id:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
