"""The service processes (workers, scheduler, streaming supervisor): one skeleton for all.

:class:`ServiceProcess` is spawned by the server (:meth:`ServiceProcess.spawn`), and in
the child dies with its parent, logs, opens the store, turns SIGTERM into a graceful stop
and loops until then. A subclass says what one pass of its loop does.

On Linux the kernel delivers SIGKILL to the child when its parent exits, however it exits
(``PR_SET_PDEATHSIG``); elsewhere the loops also watch their parent's pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import socket
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import ClassVar

import structlog

from datamill.config import Settings
from datamill.logs import configure_logging
from datamill.services.runtime import Runtime

_PR_SET_PDEATHSIG = 1

log = structlog.get_logger("datamill.process")


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


def host_process_name() -> str:
    """``host:pid``: names this process as a lease holder or a run's worker."""
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


class ServiceProcess(ABC):
    """One service process's loop; ``run_forever`` returns once ``shutdown`` is set.

    Subclasses implement :meth:`cycle` (one pass of the loop, including its wait on
    ``shutdown``) and may wrap the loop in :meth:`serving` (what it holds while it runs).
    The loop also ends when the parent process is gone.
    """

    role: ClassVar[str]
    """The process's role, in its name (``datamill-<role>``) and its holder name."""
    daemon: ClassVar[bool] = True
    """A daemon process cannot start processes of its own."""

    def __init__(
        self, runtime: Runtime, name: str, shutdown: threading.Event | None = None
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.shutdown = shutdown or threading.Event()

    @abstractmethod
    def cycle(self) -> None:
        """One pass of the loop, including its wait on ``shutdown``."""

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        yield

    def run_forever(self, parent: int | None = None) -> None:
        with self.serving():
            while not self.shutdown.is_set():
                if parent is not None and not parent_alive(parent):
                    return
                self.cycle()

    def stop(self) -> None:
        """Ask the loop to return (from a signal handler or another thread)."""
        self.shutdown.set()

    # ------------------------------------------------------------------ the process

    @classmethod
    def spawn(cls, settings: Settings, index: int | None = None) -> BaseProcess:
        """Start the process (``index``: which of several of its kind, as for workers)."""
        suffix = "" if index is None else f"-{index}"
        process = multiprocessing.get_context("spawn").Process(
            target=serve_process,
            args=(cls, settings.model_dump_json(), os.getpid(), index),
            name=f"datamill-{cls.role}{suffix}",
            daemon=cls.daemon,
        )
        process.start()
        return process


def serve_process(
    kind: type[ServiceProcess], settings_json: str, parent: int, index: int | None
) -> None:
    """Entry point of a service process: die with the parent, log, open the store, stop
    gracefully on SIGTERM (Ctrl-C is the parent's to handle), loop."""
    die_with_parent(parent)
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level, settings.log_json)
    shutdown = threading.Event()
    started: list[ServiceProcess] = []

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        shutdown.set()
        for loop in started:
            loop.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime = Runtime.open(settings, migrate=False)
    role = kind.role if index is None else str(index)
    loop = kind(runtime, f"{host_process_name()}/{role}", shutdown)
    started.append(loop)
    log.info("service process started", role=kind.role, name=loop.name)
    try:
        loop.run_forever(parent)
    finally:
        runtime.close()


def stop_process(process: BaseProcess, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.is_alive():
        process.terminate()
    process.join(timeout)
    if process.is_alive():
        with contextlib.suppress(Exception):
            process.kill()
        process.join()
