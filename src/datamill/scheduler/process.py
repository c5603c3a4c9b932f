"""The scheduler process: holds the lease, ticks at each due fire time, hands over on exit."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import structlog
from sqlalchemy.orm import Session

from datamill.runtime.process import ServiceProcess
from datamill.scheduler import tick as scheduling
from datamill.services.processes import Holder
from datamill.services.runtime import Runtime

log = structlog.get_logger("datamill.scheduler")


class SchedulerLoop(ServiceProcess):
    """Ticks while holding the lease; sleeps until the next fire time (at most ``idle``)."""

    role: ClassVar[str] = "scheduler"

    def __init__(
        self, runtime: Runtime, name: str, shutdown: threading.Event | None = None
    ) -> None:
        super().__init__(runtime, name, shutdown)
        settings = self.runtime.settings
        self.ttl = timedelta(seconds=settings.scheduler_lease_seconds)
        self.idle = settings.scheduler_idle_seconds
        self.holder = str(Holder.of_process(name))
        """The lease holder's name: this process's name, machine and start time, so that
        a server started again on this machine takes the lease of a dead one at once."""
        self.leader = False
        self._session: Session | None = None

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """One session for the process's life; the lease is given back on the way out."""
        with self.runtime.sessions() as session:
            self._session = session
            try:
                yield
            finally:
                if self.leader:
                    scheduling.release_lease(session, self.holder)
                self._session = None

    def cycle(self) -> None:
        assert self._session is not None, "cycle() runs inside serving()"
        self.leader = self._step(self._session, self.leader)

    def _step(self, session: Session, was_leader: bool) -> bool:
        try:
            leader = scheduling.acquire_lease(session, self.holder, self.ttl)
        except Exception:
            session.rollback()
            log.exception("lease check failed")
            self.shutdown.wait(self.idle)
            return False
        if leader != was_leader:
            log.info("scheduler lease", holder=self.holder, leader=leader)
        if not leader:
            self.shutdown.wait(min(self.idle, self.ttl.total_seconds() / 3))
            return False
        try:
            result = scheduling.tick(session)
        except Exception:
            session.rollback()
            log.exception("scheduler tick failed")
            self.shutdown.wait(self.idle)
            return True
        delay = self.idle
        if result.next_wake is not None:
            delay = min(delay, max(0.0, (result.next_wake - datetime.now(UTC)).total_seconds()))
        renew_by = self.ttl.total_seconds() / 3
        self.shutdown.wait(min(delay, renew_by))
        return True
