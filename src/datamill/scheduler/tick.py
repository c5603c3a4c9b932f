"""The scheduler's tick: triggers decide fire times; one lease holder turns them into runs.

A job's next fire time is stored on the job (``next_fire_at``). A scheduler tick queues the
runs of every due job and advances ``next_fire_at`` in the same transaction, so a crash
loses no fire time and repeats none; the database's unique (job, batchTime) key refuses a
second run for a fire time even if two schedulers ever overlap. Only the holder of the
``scheduler`` lease ticks; another server takes over when the lease expires, and a server
of the same machine at once when the holder's process has ended (a restart after a crash).

A tick runs every fire time due since the last one that is at most
:data:`MISFIRE_THRESHOLD` late, each as its own batch; of the older ones, the misfire
policy keeps all, the latest or none. The overlap policy weighs the runs of earlier ticks
only: fire times due together do not overlap each other.

Depend jobs have no fire times: :func:`trigger_dependants` queues them after each
successful run of their upstream job, for the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.domain.jobs import (
    MAX_CATCH_UP,
    MisfirePolicy,
    OverlapPolicy,
    Scheduler,
    SchedulerType,
    loop_seconds,
)
from datamill.domain.runs import TERMINAL, RunStatus
from datamill.scheduler import lease
from datamill.scheduler.triggers import TRIGGERS
from datamill.services import processes, runs
from datamill.services.jobrefs import body_of, effective
from datamill.store import jobs as job_store
from datamill.store import runs as run_store
from datamill.store.base import utcnow
from datamill.store.jobs import JobRow
from datamill.store.runs import RunRow

# --- lease ---------------------------------------------------------------------------------


def acquire_lease(
    session: Session, holder: str, ttl: timedelta, name: str = lease.SCHEDULER
) -> bool:
    """Take or renew the lease; True while ``holder`` has it.

    The lease is taken over once it expires, or at once when its holder is a process of
    this machine that has ended (a server killed and started again): see
    :mod:`datamill.services.processes` for how holders are named and judged.
    """
    now = utcnow()
    if lease.take(session, name, holder, now, ttl):
        session.commit()
        return True
    session.rollback()
    current = lease.holder_of(session, name)
    session.rollback()  # hold no snapshot until the next check
    if current is not None:
        if processes.is_gone(current) and lease.take(session, name, holder, now, ttl, current):
            session.commit()
            return True
        session.rollback()
        return False
    lease.add(session, name, holder, now + ttl)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def release_lease(session: Session, holder: str, name: str = lease.SCHEDULER) -> None:
    lease.expire(session, name, holder)
    session.commit()


# --- ticking -------------------------------------------------------------------------------


@dataclass
class TickResult:
    queued: int = 0
    skipped: int = 0
    next_wake: datetime | None = None


MISFIRE_THRESHOLD = timedelta(seconds=5)
"""A fire time this late is missed; the misfire policy decides what happens to it."""
MAX_SCAN = 100_000


def _due_times(
    scheduler: Scheduler, first: datetime, now: datetime
) -> tuple[list[datetime], datetime | None]:
    """The fire times to run now and the next one after ``now``.

    Every fire time at most :data:`MISFIRE_THRESHOLD` late runs. Those later than that
    were missed: the misfire policy keeps all of them (at most ``MAX_CATCH_UP``), the
    latest of them, or none. The times come oldest first.
    """
    trigger = TRIGGERS[scheduler.type]
    due: list[datetime] = []
    moment: datetime | None = first
    scanned = 0
    while moment is not None and moment <= now and scanned < MAX_SCAN:
        due.append(moment)
        if len(due) > 2 * MAX_CATCH_UP:
            del due[:MAX_CATCH_UP]
        moment = trigger.next_fire(scheduler, moment)
        scanned += 1
    on_time = [t for t in due if now - t <= MISFIRE_THRESHOLD]
    missed = [t for t in due if now - t > MISFIRE_THRESHOLD]
    policy = scheduler.effective_spec.misfire
    if policy == MisfirePolicy.all:
        kept = missed[-MAX_CATCH_UP:]
    elif policy == MisfirePolicy.latest:
        kept = missed[-1:]
    else:
        kept = []
    return kept + on_time, moment


def tick(session: Session, now: datetime | None = None) -> TickResult:
    """Queue the runs of every due job; returns how many and when to wake next.

    All due jobs are fired in one transaction (one commit, the runs inserted together).
    Should that fail (a batch queued meanwhile by another scheduler, a job stopped or
    rescheduled during the tick), it is rolled back and each job is fired again in its own
    transaction, so one job's conflict neither blocks nor undoes the others.
    """
    now = now or utcnow()
    result = TickResult()
    due_jobs = job_store.due_jobs(session, now)
    if due_jobs and not _fire_together(session, due_jobs, now, result):
        for job in due_jobs:
            try:
                with _Batch(session, [job]) as batch:
                    _fire(session, job, now, result, batch)
                session.commit()
            except (IntegrityError, _Superseded):
                session.rollback()
    try:
        _continuous(session, result)
        session.commit()
    except IntegrityError:
        session.rollback()
    result.next_wake = job_store.next_fire_time(session)
    session.commit()
    return result


def _fire_together(
    session: Session, jobs: Sequence[JobRow], now: datetime, result: TickResult
) -> bool:
    """Fire ``jobs`` in one transaction; False (rolled back, ``result`` unchanged) on a
    conflict."""
    together = TickResult()
    try:
        with _Batch(session, jobs) as batch:
            for job in jobs:
                _fire(session, job, now, together, batch)
        session.commit()
    except (IntegrityError, _Superseded):
        session.rollback()
        return False
    result.queued += together.queued
    result.skipped += together.skipped
    return True


class _Batch:
    """What one transaction of a tick shares: the due jobs' existing batches, the
    projects' variables, and the runs it queues, inserted together (then their log lines)
    when the block ends."""

    def __init__(self, session: Session, jobs: Sequence[JobRow]) -> None:
        self.session = session
        self.jobs = jobs
        self.existing: set[tuple[int, datetime]] = set()
        self.variables: dict[int, dict[str, Any]] = {}
        self.queued: list[tuple[RunRow, str]] = []
        self._no_autoflush = session.no_autoflush

    def __enter__(self) -> _Batch:
        earliest = min((j.next_fire_at for j in self.jobs if j.next_fire_at), default=None)
        if earliest is not None:
            self.existing = run_store.batches_since(
                self.session, [j.id for j in self.jobs], earliest
            )
        self._no_autoflush.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        self._no_autoflush.__exit__(kind, *rest)
        if kind is None and self.queued:
            self.session.flush()  # the runs in one INSERT, so they have their ids
            for run, line in self.queued:
                runs.log_line(self.session, run.id, line, commit=False)

    def exists(self, job: JobRow, batch_time: datetime) -> bool:
        return (job.id, batch_time) in self.existing

    def project_variables(self, project_id: int) -> dict[str, Any]:
        if project_id not in self.variables:
            self.variables[project_id] = runs.run_variables(self.session, project_id)
        return self.variables[project_id]

    def add(self, job: JobRow, batch_time: datetime, params: dict[str, str]) -> None:
        variables = self.project_variables(job.project_id)
        run = runs.new_run(
            self.session, job, batch_time, params, "schedule", variables=variables, flush=False
        )
        self.existing.add((job.id, batch_time))
        self.queued.append((run, f"queued by schedule for batch {batch_time.isoformat()}"))


def _fire(session: Session, job: JobRow, now: datetime, result: TickResult, batch: _Batch) -> None:
    """Queue a run for each of the job's fire times due now (see :func:`_due_times`).

    The overlap policy ``skip`` weighs the runs queued before this tick: while one of them
    is queued or running, every fire time due now is skipped. Fire times due together in
    one tick (after a restart, or a tick that came late) do not overlap each other: each
    gets its run, and ``queue`` has the workers run them one after the other.
    """
    body = body_of(job)
    scheduler = body.scheduler
    seen = job.next_fire_at
    if scheduler is None or seen is None:
        return
    times, following = _due_times(scheduler, seen, now)
    busy = (
        bool(times)
        and scheduler.effective_spec.overlap == OverlapPolicy.skip
        and run_store.has_active_run(session, job.id)
    )
    params = {p.name: p.default for p in effective(session, job).params}
    outcome = job.last_outcome
    for batch_time in times:
        if busy:
            result.skipped += 1
            outcome = f"skipped {batch_time.isoformat()}: the previous run is still active"
        elif not batch.exists(job, batch_time):
            batch.add(job, batch_time, params)
            result.queued += 1
            outcome = f"queued run for {batch_time.isoformat()}"
    last_fire_at = times[-1] if times else job.last_fire_at
    if not job_store.advance_schedule(session, job.id, seen, following, last_fire_at, outcome):
        raise _Superseded(job.name)


class _Superseded(Exception):
    """The job was stopped or rescheduled while a tick fired it: the tick's work is undone."""


def _queue(
    session: Session, job: JobRow, batch_time: datetime, params: dict[str, str], trigger: str
) -> bool:
    """Add a run in the caller's transaction; False if that batch already has one.

    Should another scheduler insert the same batch meanwhile, the store's unique key fails
    the caller's commit, which then rolls back and tries again on the next tick.
    """
    if run_store.batch_taken(session, job.id, batch_time):
        return False
    run = runs.new_run(session, job, batch_time, params, trigger)
    runs.log_line(
        session, run.id, f"queued by {trigger} for batch {batch_time.isoformat()}", commit=False
    )
    return True


def _continuous(session: Session, result: TickResult) -> None:
    """Loop jobs with no interval: queue the next run as soon as none is active."""
    for job in job_store.unscheduled_active_jobs(session):
        body = body_of(job)
        scheduler = body.scheduler
        if (
            scheduler is None
            or scheduler.type != SchedulerType.loop
            or loop_seconds(scheduler.effective_spec.loop) != 0
            or run_store.has_active_run(session, job.id)
        ):
            continue
        params = {p.name: p.default for p in effective(session, job).params}
        if _queue(session, job, utcnow(), params, "loop"):
            result.queued += 1
            job.last_fire_at = utcnow()
            job.last_outcome = "queued continuous run"


def trigger_dependants(session: Session, upstream_run: RunRow) -> int:
    """After a successful run: queue (or rerun) each active depend job for the same batch.

    Runs in the caller's transaction (see :func:`datamill.services.runs.finish`).
    """
    upstream = session.get(JobRow, upstream_run.job_id)
    if upstream is None:
        return 0
    count = 0
    for job in job_store.active_dependants(session, upstream.project_id, upstream.name):
        existing = run_store.run_of_batch(session, job.id, upstream_run.batch_time)
        if existing is None:
            count += int(
                _queue(session, job, upstream_run.batch_time, dict(upstream_run.params), "depend")
            )
        elif RunStatus(existing.status) in TERMINAL:
            count += int(
                runs.restart(session, existing, "upstream batch succeeded again", commit=False)
            )
    return count
