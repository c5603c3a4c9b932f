"""Wake-ups between the processes of one host: sent after commits that queue or end runs."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from datamill.services.wakeups import Listener, Wakeups, mark_runs_changed, wakeup_folder


def pending(listener: Listener) -> int:
    """The wake-ups waiting at ``listener``, read behind a poke sent now. A datagram is
    queued at its listener when ``sendto`` returns, so every wake-up sent before this call
    is read before the poke: no timeout decides that one did not come."""
    listener.poke()
    count = 0
    while True:
        try:
            listener.sock.recv(64)
        except BlockingIOError:
            break
        count += 1
    assert count >= 1, "the poke did not arrive"
    return count - 1


def _sessions(tmp_path: Path) -> sessionmaker[Session]:
    return sessionmaker(create_engine(f"sqlite:///{tmp_path / 'w.db'}"))


def test_a_commit_of_changed_runs_wakes_every_listener(tmp_path: Path) -> None:
    wakeups = Wakeups(tmp_path / "wakeups")
    sessions = _sessions(tmp_path)
    wakeups.install(sessions)
    first, second = wakeups.listen("worker"), wakeups.listen("api")
    assert first is not None
    assert second is not None
    assert pending(first) == 0  # nothing happened yet
    with sessions() as session:
        session.execute(text("SELECT 1"))
        mark_runs_changed(session)
        session.rollback()  # undone: nobody is woken
        session.execute(text("SELECT 1"))
        session.commit()
    assert pending(first) == 0
    with sessions() as session:
        session.execute(text("SELECT 1"))
        mark_runs_changed(session)
        session.commit()
    began = time.monotonic()
    assert first.wait(5)
    assert second.wait(5)
    assert time.monotonic() - began < 1
    assert pending(first) == 0  # one wake-up per commit, read once
    first.close()
    second.close()
    assert list((tmp_path / "wakeups").iterdir()) == []


def test_dead_listeners_are_forgotten_and_poke_interrupts_a_wait(tmp_path: Path) -> None:
    folder = tmp_path / "wakeups"
    wakeups = Wakeups(folder)
    stale = folder / "worker-0-0.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(stale))
    dead.close()  # its process is gone; the file stays
    listener = wakeups.listen("worker")
    assert listener is not None
    wakeups.publish()
    assert not stale.exists()
    assert listener.wait(5)
    listener.poke()
    began = time.monotonic()
    assert listener.wait(10)
    assert time.monotonic() - began < 1
    listener.close()


def test_long_data_folders_use_a_short_socket_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    folder = wakeup_folder(deep)
    assert len(str(folder)) < 80
    assert folder == wakeup_folder(deep)  # every process of the server finds the same one
    assert wakeup_folder(Path("/srv/dm")) == Path("/srv/dm/wakeups")
    disabled = Wakeups(None)
    assert not disabled.enabled
    assert disabled.listen("worker") is None
    disabled.publish()  # nothing to do, no error
