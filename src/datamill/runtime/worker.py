"""Workers: processes that claim runs, execute them with a heartbeat, and reap lost runs.

A worker process loops: reap runs whose worker vanished, claim the oldest claimable run,
execute it. An idle worker sleeps until a run queued on this host wakes it
(:mod:`datamill.services.wakeups`) or its poll interval passes. While a run executes, a
heartbeat thread writes the run's heartbeat every ``heartbeat_seconds`` and learns of stop
requests, which interrupt the query at once.
A worker that is asked to shut down returns its run to Ready for another worker.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.process import BaseProcess
from typing import ClassVar

import structlog
from sqlalchemy.orm import Session

from datamill.config import Settings
from datamill.connectors.sinks.base import SinkError, TransientSinkError
from datamill.domain.runs import RunStatus
from datamill.errors import DatamillError
from datamill.runtime import batch
from datamill.runtime.process import ServiceProcess
from datamill.scheduler import tick as scheduling
from datamill.services import exports, runs
from datamill.services.runtime import Runtime
from datamill.services.wakeups import Listener

log = structlog.get_logger("datamill.worker")

WOKEN_POLL_SECONDS = 0.25
"""How often an idle worker that wake-ups reach looks for runs anyway."""
REUSE_CONNECTION_SECONDS = 5.0
"""A run that took longer finishes on a freshly checked-out (pinged) store connection."""


class Worker(ServiceProcess):
    """One worker loop. ``run_forever`` returns once ``shutdown`` is set."""

    role: ClassVar[str] = "worker"

    def __init__(
        self, runtime: Runtime, name: str, shutdown: threading.Event | None = None
    ) -> None:
        super().__init__(runtime, name, shutdown)
        settings = runtime.settings
        self.poll = settings.worker_poll_seconds
        self.lost_after = timedelta(seconds=settings.run_lost_after_seconds)
        self._last_reap = 0.0
        self.listener: Listener | None = None
        self._idle = self.poll
        self._janitor = Janitor()

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        self.listener = self.runtime.wakeups.listen("worker")
        # woken when runs are queued here; the poll still finds runs queued elsewhere,
        # retries whose back-off ended, and runs whose worker was lost
        self._idle = max(self.poll, WOKEN_POLL_SECONDS) if self.listener else self.poll
        try:
            yield
        finally:
            if self.listener is not None:
                self.listener.close()
                self.listener = None

    def cycle(self) -> None:
        if not self.step():
            self._sleep(self._idle)

    def _sleep(self, seconds: float) -> None:
        if self.listener is None:
            self.shutdown.wait(seconds)
        else:
            self.listener.wait(seconds)

    def stop(self) -> None:
        super().stop()
        if self.listener is not None:
            self.listener.poke()

    def step(self) -> bool:
        """Reap (now and then) and execute one run; False when there was nothing to do.

        One session on one pooled connection serves the run (claim, prepare and, for runs
        shorter than ``REUSE_CONNECTION_SECONDS``, finish), each step its own short
        transaction; no transaction stays open while DuckDB works.
        """
        now = time.monotonic()
        # one pooled connection for the run: checked out (and pinged) once, not per commit
        with (
            self.runtime.engine.connect() as connection,
            self.runtime.sessions(bind=connection) as session,
        ):
            if now - self._last_reap > 1.0:
                self._last_reap = now
                runs.reap_lost(session, self.lost_after)
            run = runs.claim_next(session, self.name)
            if run is None:
                return False
            self.execute(session, run)
        return True

    def execute(self, session: Session, run: runs.Run) -> None:
        if run.export_id is not None:
            self._execute_export(run.id)
        else:
            self._execute_sql(session, run)

    def _execute_sql(self, session: Session, run: runs.Run) -> None:
        stop = threading.Event()
        run_pk = run.id
        job = runs.job_of(session, run)  # held for the run: read once
        if job is None:
            return
        max_seconds = job.definition.get("maxRunSeconds") or self.runtime.settings.max_run_seconds
        try:
            prepared = batch.prepare(self.runtime, session, run)
        except DatamillError as exc:
            runs.finish(session, run_pk, self.name, RunStatus.Failed, exc.message)
            return
        for note in prepared.notes:
            runs.log_line(session, run_pk, note, commit=False)
        session.commit()
        beat = threading.Thread(target=self._heartbeat, args=(run_pk, stop), daemon=True)
        beat.start()
        began = time.monotonic()
        status, message, stats = RunStatus.Failed, "", None
        try:
            stats = batch.execute(prepared, stop, time.monotonic() + max_seconds)
            for line in stats.log:
                with self.runtime.sessions() as log_session:
                    runs.log_line(log_session, run_pk, line)
            status = RunStatus.Successful
            message = f"wrote {stats.rows_written} row{'' if stats.rows_written == 1 else 's'}"
        except batch.RunCanceled:
            status, message = RunStatus.Canceled, "query interrupted"
        except batch.RunTimedOut:
            message = f"exceeded the maximum run time of {max_seconds} s and was interrupted"
        except DatamillError as exc:
            message = exc.message
        except Exception as exc:  # a bug, not bad input: keep the worker alive, keep a trace
            message = f"internal error: {type(exc).__name__}: {exc}"
            log.error("run crashed", run=run_pk, trace=traceback.format_exc())
        finally:
            stop.set()
            beat.join()
        try:
            if time.monotonic() - began < REUSE_CONNECTION_SECONDS:
                self._conclude(session, run_pk, prepared, status, message, stats)
            else:  # the run's connection may have gone stale meanwhile: a fresh one
                with self.runtime.sessions() as fresh:
                    self._conclude(fresh, run_pk, prepared, status, message, stats)
        finally:
            self._janitor.discard(prepared)

    def _conclude(
        self,
        session: Session,
        run_pk: int,
        prepared: batch.PreparedRun,
        status: RunStatus,
        message: str,
        stats: batch.RunStats | None,
    ) -> None:
        """Finish the run and, if Successful, publish its result in the same transaction.

        The finish is a guarded UPDATE (this worker must still hold the run); only once it
        succeeded is the staged result moved into place, before the commit, so a run taken
        over by another worker never publishes, and a failed publish finishes nothing.
        """
        if self.shutdown.is_set() and status == RunStatus.Canceled:
            self._hand_back(run_pk)
            return

        def publish_then_trigger(session: Session, run: runs.Run) -> None:
            # the replaced result goes to the run's folder, which the janitor removes later
            retired = prepared.staging.parent / "replaced"
            batch.publish(prepared.staging, prepared.target, retire_into=retired)
            after_job_success(session, run)

        try:
            finished = runs.finish(
                session,
                run_pk,
                self.name,
                status,
                message,
                stats.as_dict() if stats else None,
                str(prepared.target) if stats else None,
                on_success=publish_then_trigger,
            )
        except OSError as exc:  # the result could not be moved into place
            log.error("publishing failed", run=run_pk, error=str(exc))
            finished = runs.finish(
                session, run_pk, self.name, RunStatus.Failed, f"could not publish the result: {exc}"
            )
        if not finished:
            log.warning("run was taken over; result discarded", run=run_pk)

    def _execute_export(self, run_pk: int) -> None:
        """Write one batch with the export's sink; transient failures are retried."""
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(run_pk, stop), daemon=True)
        beat.start()
        status, message, retryable = RunStatus.Failed, "", True
        stats: dict[str, int | None] | None = None
        temp = self.runtime.settings.resolved_data_dir / "tmp" / f"export-{run_pk}"
        with self.runtime.sessions() as session:
            run = runs.find(session, run_pk)
            if run is None:
                return

            def log_to_run(line: str) -> None:
                with self.runtime.sessions() as log_session:
                    runs.log_line(log_session, run_pk, line)

            try:
                outcome = exports.execute_export(self.runtime, session, run, temp, log_to_run)
                status = RunStatus.Successful
                message = outcome.detail
                stats = {"rows_written": outcome.rows, "bytes_written": outcome.bytes}
            except TransientSinkError as exc:
                message = f"destination unavailable: {exc}"
            except SinkError as exc:
                message, retryable = f"destination refused: {exc}", False
            except DatamillError as exc:
                message, retryable = exc.message, False
            except Exception as exc:  # a bug: keep the worker alive, keep a trace
                message = f"internal error: {type(exc).__name__}: {exc}"
                log.error("export crashed", run=run_pk, trace=traceback.format_exc())
            finally:
                stop.set()
                beat.join()
            if self.shutdown.is_set() and status != RunStatus.Successful:
                self._hand_back(run_pk)
                return
            runs.finish(
                session, run_pk, self.name, status, message[:4000], stats, retryable=retryable
            )

    def _heartbeat(self, run_pk: int, stop: threading.Event) -> None:
        interval = self.runtime.settings.heartbeat_seconds
        with self.runtime.sessions() as session:
            while not stop.wait(interval):
                try:
                    if runs.heartbeat(session, run_pk, self.name) or self.shutdown.is_set():
                        stop.set()
                except Exception:  # the store hiccuped; the next beat tries again
                    session.rollback()

    def _hand_back(self, run_pk: int) -> None:
        with self.runtime.sessions() as session:
            runs.release(
                session, run_pk, self.name, "worker shut down during the run; queued again"
            )


class Janitor:
    """Removes finished runs' folders in a background thread, off the run's path.

    Removing a folder can block for milliseconds (a file system that discards freed
    blocks); the next run need not wait for it. Folders left by a crash are removed when
    the same run attempt is prepared again, or stay as harmless litter.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[batch.PreparedRun] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def discard(self, prepared: batch.PreparedRun) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, daemon=True, name="janitor")
            self._thread.start()
        self._queue.put(prepared)

    def _work(self) -> None:
        while True:
            batch.cleanup(self._queue.get())


def after_job_success(session: Session, run: runs.Run) -> None:
    """In the transaction that marks a job run Successful: queue depend jobs and exports."""
    scheduling.trigger_dependants(session, run)
    exports.queue_exports(session, run)


@dataclass
class WorkerPool:
    """Worker processes started with the server (or by tests), stopped with it."""

    settings: Settings
    size: int
    processes: list[BaseProcess] = field(default_factory=list)

    def start(self) -> None:
        self.processes = [self._spawn(index) for index in range(self.size)]

    def replace_dead(self) -> int:
        """Start a new process for every worker that died; returns how many."""
        replaced = 0
        for index, process in enumerate(self.processes):
            if not process.is_alive():
                process.join(0)
                self.processes[index] = self._spawn(index)
                replaced += 1
        return replaced

    def supervise(self, interval: float) -> threading.Event:
        """Restart dead workers every ``interval`` seconds until the returned event is set."""
        done = threading.Event()

        def loop() -> None:
            while not done.wait(interval):
                replaced = self.replace_dead()
                if replaced:
                    log.warning("restarted dead workers", count=replaced)

        threading.Thread(target=loop, daemon=True, name="worker-supervisor").start()
        return done

    def _spawn(self, index: int) -> BaseProcess:
        return Worker.spawn(self.settings, index)

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.processes.clear()
