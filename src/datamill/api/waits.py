"""Waiting for runs to end inside the API process, cheaply (long polls).

A waiting request sleeps on the event loop; it looks at its run's status (one small read
in the thread pool) when a wake-up says that some run ended (:mod:`datamill.services.wakeups`,
sent by the worker that finished it) and, as a safety net for runs finished on another
host, every ``recheck`` seconds. One listener serves every waiting request of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from datamill.services.runtime import Runtime
from datamill.services.wakeups import Listener

MAX_WAIT_SECONDS = 60
WaitSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description=(
            "hold the answer until the run is Successful, Failed or Canceled, for at "
            "most this many seconds; the answer is the run as it then is"
        ),
    ),
]
"""The ``waitSeconds`` query parameter of a long poll (0: answer at once)."""

T = TypeVar("T")

RECHECK_WOKEN = 0.1
"""Seconds between status reads of a waiting request when wake-ups reach this process."""
RECHECK_POLLING = 0.02
"""The same without wake-ups."""


class RunWatch:
    """Wakes the waiting requests of one event loop whenever a wake-up arrives."""

    def __init__(self, runtime: Runtime) -> None:
        self.generation = 0
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._listener: Listener | None = runtime.wakeups.listen("api")
        if self._listener is not None:
            try:
                self._loop.add_reader(self._listener.fileno(), self._woken)
            except (NotImplementedError, OSError):
                # Not every event loop can watch a socket (add_reader): waiting requests
                # then fall back to polling the store every RECHECK_POLLING seconds.
                self._listener.close()
                self._listener = None
        self.recheck = RECHECK_WOKEN if self._listener is not None else RECHECK_POLLING

    def serves_running_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _woken(self) -> None:
        if self._listener is not None:
            self._listener.drain()
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, done: Callable[[], Awaitable[bool]], seconds: float) -> bool:
        """Await ``done()`` after each wake-up (and every ``recheck`` seconds) until it is
        True (returns True) or ``seconds`` have passed (returns False)."""
        deadline = self._loop.time() + seconds
        while True:
            seen, event = self.generation, self._event
            if await done():
                return True
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            if self.generation != seen:  # woken while reading: read again at once
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, self.recheck))

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None


def run_watch(request: Request, runtime: Runtime) -> RunWatch:
    """The process's watch on run ends, made on first use in the serving event loop."""
    watch: RunWatch | None = getattr(request.app.state, "run_watch", None)
    if watch is None or not watch.serves_running_loop():
        if watch is not None:
            watch.close()
        watch = RunWatch(runtime)
        request.app.state.run_watch = watch
    return watch


async def wait_until(
    request: Request, runtime: Runtime, settled: Callable[[], bool], seconds: float
) -> bool:
    """Hold the request until ``settled()`` (a blocking store read, run in the thread
    pool after each wake-up) is True or ``seconds`` have passed; whether it was."""

    async def done() -> bool:
        return await run_in_threadpool(settled)

    return await run_watch(request, runtime).until(done, seconds)


async def read_released(session: Session, read: Callable[[], T]) -> T:
    """Run a blocking store read in the thread pool, then end its transaction: a waiting
    request holds no connection (or snapshot) of the pool."""

    def run() -> T:
        try:
            return read()
        finally:
            session.rollback()

    return await run_in_threadpool(run)
