"""Wake-ups: a process that queues or ends runs tells the waiting processes on its host.

Each process that waits for runs (an idle worker for a run to claim, the API for a run to
end) binds a Unix datagram socket in one folder per data folder. A session whose commit
queued, requeued or ended a run (marked with :func:`mark_runs_changed`) then sends one
byte to every socket in that folder, after the commit, so a woken process reads the new
state. A wake-up is only a hint: the woken process reads the store as it always does, and
every waiter still looks on its own every so often, so a lost datagram or a process on
another host (several servers on one PostgreSQL) costs latency, never correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import select
import socket
import tempfile
import threading
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

RUNS_CHANGED = "datamill.runs_changed"
SUFFIX = ".sock"
_LISTENERS = itertools.count(1)
MAX_SOCKET_PATH = 100
"""Unix socket paths are limited to 107 bytes; longer data folders use a folder in /tmp."""


def mark_runs_changed(session: Session) -> None:
    """Wake the waiting processes once the session's current transaction commits."""
    session.info[RUNS_CHANGED] = True


def wakeup_folder(data_dir: Path) -> Path:
    """The folder of the listeners' sockets: in the data folder, or in /tmp when too long."""
    folder = data_dir / "wakeups"
    if len(str(folder)) + 24 <= MAX_SOCKET_PATH:
        return folder
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"datamill-{os.getuid()}-{digest}"


class Listener:
    """One process's socket; readable when a wake-up arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock.bind(str(path))

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read every pending wake-up; True when there was one."""
        woken = False
        while True:
            try:
                self.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return woken
            except OSError:
                return woken
            woken = True

    def wait(self, timeout: float) -> bool:
        """Block until a wake-up arrives (True) or ``timeout`` seconds pass (False)."""
        if self.drain():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        except (OSError, ValueError):  # closed meanwhile
            return False
        return bool(readable) and self.drain()

    def poke(self) -> None:
        """Wake this listener (from a signal handler or another thread)."""
        with contextlib.suppress(OSError):
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sender.setblocking(False)
                sender.sendto(b"!", str(self.path))
            finally:
                sender.close()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class Wakeups:
    """Publishes wake-ups to, and opens listeners in, one folder (None: disabled)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._sender: socket.socket | None = None
        self._lock = threading.Lock()
        if folder is not None:
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                if folder.stat().st_uid != os.getuid():  # someone else's folder: do not use
                    self.folder = None
            except OSError:
                self.folder = None

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def listen(self, role: str) -> Listener | None:
        """A listener for this process (``role``: a short name); None when disabled."""
        if self.folder is None:
            return None
        name = f"{role}-{os.getpid()}-{next(_LISTENERS)}{SUFFIX}"
        try:
            return Listener(self.folder / name)
        except OSError:
            return None

    def publish(self) -> None:
        """Send one wake-up to every listener; a dead listener's socket is removed."""
        if self.folder is None:
            return
        with self._lock:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            sender = self._sender
            try:
                entries = [e.path for e in os.scandir(self.folder) if e.name.endswith(SUFFIX)]
            except OSError:
                return
            for path in entries:
                try:
                    sender.sendto(b"!", path)
                except (BlockingIOError, InterruptedError):
                    pass  # its queue is full: it has wake-ups to read already
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # its process is gone
                except OSError:
                    pass

    def install(self, sessions: sessionmaker[Session]) -> None:
        """Publish after each commit of a session marked with :func:`mark_runs_changed`."""

        def after_commit(session: Session) -> None:
            if session.info.pop(RUNS_CHANGED, False):
                self.publish()

        def after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
            if not previous.nested:  # the whole transaction is undone
                session.info.pop(RUNS_CHANGED, None)

        event.listen(sessions, "after_commit", after_commit)
        event.listen(sessions, "after_soft_rollback", after_soft_rollback)

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
