"""Child processes (workers, scheduler) end when the server that started them dies.

On Linux the kernel delivers SIGKILL to the child when its parent exits, however it exits
(``PR_SET_PDEATHSIG``); elsewhere the loops also watch their parent's pid.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> int:
    """Ask the kernel to kill this process when its parent dies; returns the parent pid."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc_name = ctypes.util.find_library("c")
        if libc_name:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return parent


def parent_alive(parent: int) -> bool:
    return os.getppid() == parent
