"""Lease holders: names that say which process holds a lease, and whether it is gone.

A holder name is ``<name>@<machine>.<pid>.<start>``: ``name`` is how the process calls
itself (``host:pid/role``), ``machine`` a short hash of what tells this machine's processes
apart from another's (the host name, boot id and pid namespace on Linux, so that two
containers with the same host name do not count as one machine), ``pid`` the process id and
``start`` the process's start time (clock ticks since boot, field 22 of
``/proc/<pid>/stat``), so that a pid reused by a later process is not taken for the holder.

A process on the same machine can then tell at once that a holder is gone: no process has
its pid, or the one that has it started at another time. A holder on another machine, or a
name in another form, cannot be judged here: its lease is taken over only once it expires.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_PROC = Path("/proc")
_HOLDER = re.compile(r"^(?P<name>.*)@(?P<machine>[0-9a-f]{12})\.(?P<pid>\d+)\.(?P<start>\d+)$")
UNKNOWN_START = 0
"""The start time of a process where ``/proc`` cannot tell it (it is then not compared)."""


@cache
def machine_id() -> str:
    """12 hex digits naming this machine (boot and pid namespace) to its own processes."""
    parts = [socket.gethostname()]
    try:
        parts.append((_PROC / "sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink(_PROC / "self/ns/pid"))
    except OSError:
        pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot); None if no such process runs
    (a zombie has ended), :data:`UNKNOWN_START` where ``/proc`` does not tell."""
    if not (_PROC / "self" / "stat").exists():
        return _alive_or_none(pid)
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name, in parentheses, may hold anything: the fields follow the last ")"
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return UNKNOWN_START


def _alive_or_none(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, and belongs to another user
    return UNKNOWN_START


@dataclass(frozen=True)
class Holder:
    """A lease holder: a named process (see the module's docstring for the name's form)."""

    name: str
    """How the process names itself (``host:pid/role``)."""
    pid: int
    machine: str
    start: int

    @classmethod
    def of_process(cls, name: str, pid: int | None = None) -> Holder:
        """The holder name of process ``pid`` (this one by default) called ``name``."""
        pid = os.getpid() if pid is None else pid
        return cls(name, pid, machine_id(), start_time(pid) or UNKNOWN_START)

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder named ``text``; None for a name in another form."""
        match = _HOLDER.match(text)
        if match is None:
            return None
        return cls(match["name"], int(match["pid"]), match["machine"], int(match["start"]))

    def __str__(self) -> str:
        return f"{self.name}@{self.machine}.{self.pid}.{self.start}"

    def is_gone(self) -> bool:
        """True only when this holder's process, on this machine, has surely ended."""
        if self.machine != machine_id():
            return False
        started = start_time(self.pid)
        if started is None:
            return True
        return UNKNOWN_START not in (started, self.start) and started != self.start


def is_gone(holder: str) -> bool:
    """Whether the process named by the holder name ``holder`` has surely ended."""
    parsed = Holder.parse(holder)
    return parsed is not None and parsed.is_gone()
