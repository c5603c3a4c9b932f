"""The streaming supervisor: a process started by ``datamill server`` that runs jobs.

Every ``streaming_poll_seconds`` it renews its lease on the jobs it holds, claims the jobs
that need an engine (STARTING ones, and active ones whose runner went silent for
``streaming_lease_seconds`` — so with several servers on one database each job runs in one
place only), and watches the engine process of each job:

* the engine is ready (recovered from its last checkpoint): STARTING / RESTARTING -> RUNNING;
* the job became STOPPING: the engine gets SIGTERM, checkpoints and exits: -> STOPPED;
* the engine died (an exception, or killed): with ``runtime.restartWhenException`` and
  fewer than ``runtime.resumeMaxNum`` restarts in the last hour (-1: no limit) the job goes
  through RESTARTING and a new engine resumes from the last checkpoint; otherwise FAILED,
  with the reason in the job's state message.

Each engine is a child process of its own (killed with the supervisor), so a crash in one
pipeline never takes down another.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from typing import ClassVar

import structlog
from sqlalchemy.orm import Session

from datamill.config import Settings
from datamill.connectors.streams.base import StreamConnection
from datamill.connectors.streams.ingest_log import job_dir
from datamill.domain.streaming import JobState, StreamingJobBody
from datamill.domain.users import Principal
from datamill.errors import DatamillError, E
from datamill.runtime.process import ServiceProcess, die_with_parent, stop_process
from datamill.runtime.streaming.engine import Engine, EngineConfig, JobLog
from datamill.runtime.streaming.plan import connection_names
from datamill.services import streaming as service
from datamill.services.access import service_access
from datamill.services.datasources import stream_connection
from datamill.services.runtime import Runtime

log = structlog.get_logger("datamill.streaming")
FAILURE_FILE = "failure.txt"
STABLE_SECONDS = 30.0
"""An engine that ran this long before it failed restarts at once; one that failed sooner
waits 0.5 s, 1 s, 2 s … (at most :data:`MAX_BACKOFF_SECONDS`) before the next try."""
MAX_BACKOFF_SECONDS = 10.0
STOP_SECONDS = 15.0
"""How long the supervisor's engines have to checkpoint and exit when it is stopped."""


def engine_main(config: EngineConfig, parent_pid: int, ready: EventType) -> None:
    """Entry point of one job's engine process."""
    die_with_parent(parent_pid)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job_log = JobLog(config.job_dir / "engine.log")
    (config.job_dir / FAILURE_FILE).unlink(missing_ok=True)
    try:
        engine = Engine(config, log=job_log)
        engine.run(stop, on_ready=ready.set)
    except BaseException as exc:  # the reason goes to the job's state message
        reason = (
            f"{type(exc).__name__}: {exc}" if not isinstance(exc, DatamillError) else exc.message
        )
        job_log(f"engine failed: {reason}")
        job_log(traceback.format_exc().replace("\n", " | "))
        (config.job_dir / FAILURE_FILE).write_text(reason[:1000], encoding="utf-8")
        os._exit(1)
    job_log("engine stopped")


@dataclass
class Child:
    """One job's engine process as the supervisor sees it."""

    row_id: int
    job_id: str
    project: str
    process: BaseProcess
    ready: EventType
    config: EngineConfig
    stopping: bool = False
    running: bool = False
    failures: int = 0
    """Failures in a row of engines that ran less than :data:`STABLE_SECONDS`."""
    started: float = field(default_factory=time.monotonic)


@dataclass
class Waiting:
    """A job to restart once its back-off has passed."""

    row_id: int
    job_id: str
    project: str
    config: EngineConfig
    failures: int
    due: float


class Supervisor(ServiceProcess):
    """The loop of the supervisor process (see the module docstring)."""

    role: ClassVar[str] = "streaming"
    daemon: ClassVar[bool] = False  # it starts a process per job, which a daemon cannot

    def __init__(
        self, runtime: Runtime, name: str, shutdown: threading.Event | None = None
    ) -> None:
        super().__init__(runtime, name, shutdown)
        self.settings = runtime.settings
        self.children: dict[int, Child] = {}
        self.waiting: dict[int, Waiting] = {}
        self._context = multiprocessing.get_context("spawn")

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        try:
            yield
        finally:
            self.stop_all()

    def cycle(self) -> None:
        try:
            self.tick()
        except Exception:
            log.exception("streaming supervisor tick failed")
        self.shutdown.wait(self.settings.streaming_poll_seconds)

    # ------------------------------------------------------------------ one tick

    def tick(self) -> None:
        with self.runtime.sessions() as session:
            held = service.renew_jobs(session, self.name, [*self.children, *self.waiting])
            for row_id in list(self.waiting):
                self._wait(session, self.waiting[row_id], held.get(row_id))
            for row_id in list(self.children):
                child = self.children[row_id]
                if row_id not in held:
                    self._job_log(child.config, "the job was taken over or deleted; engine ends")
                    self._kill(child)
                    del self.children[row_id]
                    continue
                self._watch(session, child, held[row_id])
            for claimed in service.claim_jobs(
                session, self.name, self.settings.streaming_lease_seconds
            ):
                self._adopt(session, claimed)

    def _wait(self, session: Session, waiting: Waiting, state: JobState | None) -> None:
        if state is None:  # taken over or deleted meanwhile
            del self.waiting[waiting.row_id]
        elif state == JobState.STOPPING:
            del self.waiting[waiting.row_id]
            service.engine_transition(session, waiting.row_id, JobState.STOPPED, message="stopped")
            self._job_log(waiting.config, "stopped")
        elif time.monotonic() >= waiting.due:
            del self.waiting[waiting.row_id]
            self._spawn(waiting.row_id, waiting.job_id, waiting.project, waiting.config)
            self.children[waiting.row_id].failures = waiting.failures

    def _watch(self, session: Session, child: Child, state: JobState) -> None:
        if state == JobState.STOPPING and not child.stopping:
            child.stopping = True
            self._job_log(child.config, "stop requested; checkpointing and stopping")
            if child.process.is_alive():
                child.process.terminate()
        if child.process.is_alive():
            if child.ready.is_set() and state in (JobState.STARTING, JobState.RESTARTING):
                service.engine_transition(
                    session,
                    child.row_id,
                    JobState.RUNNING,
                    runner=self.name,
                    message=f"running on {self.name}",
                )
                self._job_log(child.config, f"running on {self.name}")
            return
        child.process.join(0)
        del self.children[child.row_id]
        if child.stopping or state == JobState.STOPPING:
            service.engine_transition(session, child.row_id, JobState.STOPPED, message="stopped")
            self._job_log(child.config, "stopped")
            return
        self._failed(session, child, state, self._reason(child))

    def _reason(self, child: Child) -> str:
        path = child.config.job_dir / FAILURE_FILE
        try:
            return path.read_text(encoding="utf-8").strip() or "the engine failed"
        except OSError:
            pass
        code = child.process.exitcode
        if code is not None and code < 0:
            return f"the engine process was ended by signal {-code}"
        if code == 0:
            return "the engine process ended unexpectedly"
        return f"the engine process exited with status {code}"

    def _failed(self, session: Session, child: Child, state: JobState, reason: str) -> None:
        self._job_log(child.config, f"engine ended: {reason}")
        if state in (JobState.RUNNING, JobState.RESTARTING) and service.allow_restart(
            session, child.row_id, f"restarting after: {reason}"
        ):
            if state == JobState.RUNNING:
                service.engine_transition(
                    session,
                    child.row_id,
                    JobState.RESTARTING,
                    runner=self.name,
                    message=f"restarting after: {reason}",
                )
            lived = time.monotonic() - child.started
            failures = 0 if lived >= STABLE_SECONDS else child.failures + 1
            delay = min(MAX_BACKOFF_SECONDS, 0.25 * 2**failures) if failures else 0.0
            self._job_log(child.config, f"restarting from the last checkpoint (in {delay:.1f} s)")
            self.waiting[child.row_id] = Waiting(
                child.row_id,
                child.job_id,
                child.project,
                child.config,
                failures,
                time.monotonic() + delay,
            )
            return
        if state in (JobState.STARTING, JobState.RUNNING, JobState.RESTARTING):
            service.engine_transition(session, child.row_id, JobState.FAILED, message=reason)
            self._job_log(child.config, f"failed: {reason}")

    def _adopt(self, session: Session, claimed: service.Claimed) -> None:
        """Start an engine for a job just claimed."""
        folder = job_dir(self.settings.projects_dir, claimed.project, claimed.job_id)
        job_log = JobLog(folder / "engine.log")
        if claimed.state == JobState.STOPPING:
            service.engine_transition(session, claimed.row_id, JobState.STOPPED, message="stopped")
            job_log("stopped (its engine was gone)")
            return
        try:
            config = self._config(session, claimed)
        except DatamillError as exc:
            session.rollback()
            self._fail_claim(session, claimed, exc.message)
            return
        except Exception as exc:  # a bug or a broken connection spec: fail the job, say why
            session.rollback()
            log.exception("cannot prepare a streaming job", job=claimed.job_id)
            self._fail_claim(session, claimed, f"cannot start: {type(exc).__name__}: {exc}")
            return
        if claimed.state == JobState.RUNNING:
            message = f"its engine was lost; resuming from the last checkpoint on {self.name}"
            service.engine_transition(
                session, claimed.row_id, JobState.RESTARTING, runner=self.name, message=message
            )
            job_log(message)
        else:
            job_log(f"claimed by {self.name}; starting")
        self._spawn(claimed.row_id, claimed.job_id, claimed.project, config)

    def _fail_claim(self, session: Session, claimed: service.Claimed, reason: str) -> None:
        JobLog(job_dir(self.settings.projects_dir, claimed.project, claimed.job_id) / "engine.log")(
            f"cannot start: {reason}"
        )
        service.engine_transition(session, claimed.row_id, JobState.FAILED, message=reason)

    def _config(self, session: Session, claimed: service.Claimed) -> EngineConfig:
        body = StreamingJobBody.model_validate(claimed.body)
        connections: dict[str, StreamConnection] = {}
        names = connection_names(body)
        if names:
            connections = _resolve_connections(self.runtime, session, claimed, names)
        settings = self.settings
        return EngineConfig(
            project=claimed.project,
            job_id=claimed.job_id,
            job_dir=job_dir(settings.projects_dir, claimed.project, claimed.job_id),
            project_root=service.project_root(settings, claimed.project),
            body=claimed.body,
            connections=connections,
            outbound_allow=list(settings.outbound_allow),
            batch_records=settings.streaming_batch_records,
            epoch_records=settings.streaming_epoch_records,
            memory_limit=settings.streaming_memory_limit,
            threads=settings.streaming_threads,
        )

    def _spawn(self, row_id: int, job_id: str, project: str, config: EngineConfig) -> None:
        ready = self._context.Event()
        process = self._context.Process(
            target=engine_main,
            args=(config, os.getpid(), ready),
            name=f"datamill-stream-{job_id}",
            daemon=True,
        )
        process.start()
        self.children[row_id] = Child(row_id, job_id, project, process, ready, config)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _job_log(config: EngineConfig, line: str) -> None:
        JobLog(config.job_dir / "engine.log")(line)

    @staticmethod
    def _kill(child: Child) -> None:
        if child.process.is_alive():
            child.process.kill()
        child.process.join(5)

    def stop_all(self, timeout: float = 10.0) -> None:
        """On shutdown: every engine checkpoints and exits; the jobs stay RUNNING, so the
        next supervisor (after this one's lease runs out) resumes them."""
        for child in self.children.values():
            if child.process.is_alive():
                child.process.terminate()
        for child in self.children.values():
            child.process.join(timeout)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
        self.children.clear()
        self.waiting.clear()


def _resolve_connections(
    runtime: Runtime, session: Session, claimed: service.Claimed, names: list[str]
) -> dict[str, StreamConnection]:
    engine_principal = Principal(id=0, name="streaming-engine", isAdmin=True)
    access = service_access(session, claimed.project, engine_principal)
    if access is None:
        raise DatamillError(E.STREAMING_JOB_NOT_FOUND, "the job's project is gone")
    return {name: stream_connection(runtime, session, access, name) for name in names}


class SupervisorHolder:
    """The server's streaming supervisor process, started again should it die (its engines
    die with it; the jobs are resumed from their checkpoints once their lease runs out)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = Supervisor.spawn(settings)
        self._done = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="streaming-watch").start()

    def _watch(self) -> None:
        while not self._done.wait(2.0):
            with self._lock:
                if not self._done.is_set() and not self.process.is_alive():
                    self.process.join(0)
                    log.warning("streaming supervisor died; starting a new one")
                    self.process = Supervisor.spawn(self.settings)

    def stop(self) -> None:
        with self._lock:
            self._done.set()
            stop_process(self.process, timeout=STOP_SECONDS)
