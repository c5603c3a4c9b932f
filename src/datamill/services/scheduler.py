"""The scheduler: triggers decide fire times; one lease holder turns them into runs.

A job's next fire time is stored on the job (``next_fire_at``). A scheduler tick queues the
runs of every due job and advances ``next_fire_at`` in the same transaction, so a crash
loses no fire time and repeats none; the database's unique (job, batchTime) key refuses a
second run for a fire time even if two schedulers ever overlap. Only the holder of the
``scheduler`` lease ticks; another server takes over when the lease expires.

Depend jobs have no fire times: :func:`trigger_dependants` queues them after each
successful run of their upstream job, for the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
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
from datamill.domain.runs import ACTIVE, CLAIMABLE, TERMINAL, RunStatus
from datamill.services import runs
from datamill.services.jobrefs import body_of, effective
from datamill.services.triggers import TRIGGERS
from datamill.store.base import utcnow
from datamill.store.jobs import JobRow, LeaseRow
from datamill.store.runs import RunRow

LEASE_NAME = "scheduler"


# --- lease ---------------------------------------------------------------------------------


def acquire_lease(session: Session, holder: str, ttl: timedelta, name: str = LEASE_NAME) -> bool:
    """Take or renew the lease; True while ``holder`` has it."""
    now = utcnow()
    renewed = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, (LeaseRow.holder == holder) | (LeaseRow.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if renewed.rowcount == 1:  # type: ignore[attr-defined]
        session.commit()
        return True
    session.rollback()
    if session.get(LeaseRow, name) is not None:
        session.rollback()  # hold no snapshot until the next check
        return False
    session.add(LeaseRow(name=name, holder=holder, expires_at=now + ttl))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def release_lease(session: Session, holder: str, name: str = LEASE_NAME) -> None:
    session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, LeaseRow.holder == holder)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    session.commit()


# --- ticking -------------------------------------------------------------------------------


@dataclass
class TickResult:
    queued: int = 0
    skipped: int = 0
    next_wake: datetime | None = None


def _has_active_run(session: Session, job: JobRow) -> bool:
    states = [s.value for s in (*CLAIMABLE, *ACTIVE)]
    return (
        session.scalar(
            select(RunRow.id).where(RunRow.job_id == job.id, RunRow.status.in_(states)).limit(1)
        )
        is not None
    )


MISFIRE_THRESHOLD = timedelta(seconds=5)
"""A fire time this late is missed; the misfire policy decides what happens to it."""
MAX_SCAN = 100_000


def _due_times(
    scheduler: Scheduler, first: datetime, now: datetime
) -> tuple[list[datetime], datetime | None]:
    """The fire times to run now (misfire policy applied) and the next one after ``now``."""
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
        kept = missed[-1:] if not on_time else []
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
    due_jobs = session.scalars(
        select(JobRow)
        .where(
            JobRow.schedule_state == "active",
            JobRow.next_fire_at.is_not(None),
            JobRow.next_fire_at <= now,
        )
        .order_by(JobRow.next_fire_at)
    ).all()
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
    upcoming = session.scalar(
        select(JobRow.next_fire_at)
        .where(JobRow.schedule_state == "active", JobRow.next_fire_at.is_not(None))
        .order_by(JobRow.next_fire_at)
        .limit(1)
    )
    result.next_wake = upcoming
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
        self.queued_jobs: set[int] = set()
        self._no_autoflush = session.no_autoflush

    def __enter__(self) -> _Batch:
        earliest = min((j.next_fire_at for j in self.jobs if j.next_fire_at), default=None)
        if earliest is not None:
            self.existing = {
                (job_id, batch_time)
                for job_id, batch_time in self.session.execute(
                    select(RunRow.job_id, RunRow.batch_time).where(
                        RunRow.job_id.in_([j.id for j in self.jobs]),
                        RunRow.batch_time >= earliest,
                    )
                )
            }
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
        self.queued_jobs.add(job.id)
        self.queued.append((run, f"queued by schedule for batch {batch_time.isoformat()}"))


def _fire(session: Session, job: JobRow, now: datetime, result: TickResult, batch: _Batch) -> None:
    body = body_of(job)
    scheduler = body.scheduler
    seen = job.next_fire_at
    if scheduler is None or seen is None:
        return
    times, following = _due_times(scheduler, seen, now)
    overlap = scheduler.effective_spec.overlap
    params = {p.name: p.default for p in effective(session, job).params}
    outcome = job.last_outcome
    for batch_time in times:
        if overlap == OverlapPolicy.skip and (
            job.id in batch.queued_jobs or _has_active_run(session, job)
        ):
            result.skipped += 1
            outcome = f"skipped {batch_time.isoformat()}: the previous run is still active"
            continue
        if not batch.exists(job, batch_time):
            batch.add(job, batch_time, params)
            result.queued += 1
            outcome = f"queued run for {batch_time.isoformat()}"
    advanced = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.schedule_state == "active", JobRow.next_fire_at == seen)
        .values(
            next_fire_at=following,
            last_fire_at=times[-1] if times else job.last_fire_at,
            last_outcome=outcome,
        )
        .execution_options(synchronize_session=False)
    )
    if advanced.rowcount != 1:  # type: ignore[attr-defined]
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
    exists = session.scalar(
        select(RunRow.id).where(RunRow.job_id == job.id, RunRow.batch_time == batch_time)
    )
    if exists is not None:
        return False
    run = runs.new_run(session, job, batch_time, params, trigger)
    runs.log_line(
        session, run.id, f"queued by {trigger} for batch {batch_time.isoformat()}", commit=False
    )
    return True


def _continuous(session: Session, result: TickResult) -> None:
    """Loop jobs with no interval: queue the next run as soon as none is active."""
    for job in session.scalars(
        select(JobRow).where(JobRow.schedule_state == "active", JobRow.next_fire_at.is_(None))
    ).all():
        body = body_of(job)
        scheduler = body.scheduler
        if (
            scheduler is None
            or scheduler.type != SchedulerType.loop
            or loop_seconds(scheduler.effective_spec.loop) != 0
            or _has_active_run(session, job)
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
    for job in session.scalars(
        select(JobRow).where(
            JobRow.project_id == upstream.project_id,
            JobRow.upstream == upstream.name,
            JobRow.schedule_state == "active",
        )
    ).all():
        existing = session.scalars(
            select(RunRow).where(
                RunRow.job_id == job.id, RunRow.batch_time == upstream_run.batch_time
            )
        ).first()
        if existing is None:
            count += int(
                _queue(session, job, upstream_run.batch_time, dict(upstream_run.params), "depend")
            )
        elif RunStatus(existing.status) in TERMINAL:
            count += int(
                runs.restart(session, existing, "upstream batch succeeded again", commit=False)
            )
    return count
