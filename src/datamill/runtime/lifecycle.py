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
from collections.abc import Callable
from types import FrameType

from datamill.config import Settings
from datamill.logs import configure_logging
from datamill.services.runtime import Runtime

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> int:
    """Ask the kernel to kill this process when ``parent`` (the spawning process) dies.

    The parent may already be gone by the time a slow child gets here: then the child
    exits at once instead of running on as an orphan.
    """
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


def child_runtime(
    settings_json: str, parent: int, shutdown: Callable[[], None]
) -> tuple[int, Runtime]:
    """Start of a child process: die with the parent, log, open the store, handle SIGTERM.

    Returns the parent's pid (for loops that also watch it) and the child's runtime.
    """
    die_with_parent(parent)
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level, settings.log_json)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        shutdown()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return parent, Runtime.open(settings, migrate=False)
