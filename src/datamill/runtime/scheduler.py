"""The scheduler process: holds the lease, ticks at each due fire time, hands over on exit."""

from __future__ import annotations

import multiprocessing
import os
import threading
from datetime import timedelta
from multiprocessing.process import BaseProcess

import structlog
from sqlalchemy.orm import Session

from datamill.config import Settings
from datamill.runtime.lifecycle import child_runtime, parent_alive
from datamill.services import runs
from datamill.services import scheduler as scheduling
from datamill.services.runtime import Runtime
from datamill.store.base import utcnow

log = structlog.get_logger("datamill.scheduler")


class SchedulerLoop:
    """Ticks while holding the lease; sleeps until the next fire time (at most ``idle``)."""

    def __init__(
        self, runtime: Runtime, holder: str, shutdown: threading.Event | None = None
    ) -> None:
        self.runtime = runtime
        self.holder = holder
        self.shutdown = shutdown or threading.Event()
        settings = runtime.settings
        self.ttl = timedelta(seconds=settings.scheduler_lease_seconds)
        self.idle = settings.scheduler_idle_seconds

    def run_forever(self, parent: int | None = None) -> None:
        leader = False
        with self.runtime.sessions() as session:
            try:
                while not self.shutdown.is_set():
                    if parent is not None and not parent_alive(parent):
                        return
                    leader = self._step(session, leader)
            finally:
                if leader:
                    scheduling.release_lease(session, self.holder)

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
            delay = min(delay, max(0.0, (result.next_wake - utcnow()).total_seconds()))
        renew_by = self.ttl.total_seconds() / 3
        self.shutdown.wait(min(delay, renew_by))
        return True


def scheduler_main(settings_json: str, parent_pid: int) -> None:
    """Entry point of the scheduler process."""
    shutdown = threading.Event()
    parent, runtime = child_runtime(settings_json, parent_pid, shutdown.set)
    loop = SchedulerLoop(runtime, f"{runs.worker_name()}/scheduler", shutdown)
    try:
        loop.run_forever(parent)
    finally:
        runtime.close()


def start_scheduler(settings: Settings) -> BaseProcess:
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=scheduler_main,
        args=(settings.model_dump_json(), os.getpid()),
        name="datamill-scheduler",
        daemon=True,
    )
    process.start()
    return process


def stop_scheduler(process: BaseProcess, timeout: float = 10.0) -> None:
    if process.is_alive():
        process.terminate()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
