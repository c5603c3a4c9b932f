"""Triggers: when a job's schedule fires. One small class per scheduler type, in a registry."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar, Protocol
from zoneinfo import ZoneInfo

from datamill.domain.jobs import JobBody, Scheduler, SchedulerType, loop_seconds
from datamill.scheduler.cron import CronExpression, parse_zone


class Trigger(Protocol):
    """Computes fire times for one scheduler type. Implementations are stateless."""

    type_name: ClassVar[SchedulerType]

    def validate(self, scheduler: Scheduler) -> None:
        """Raise DatamillError when the scheduler spec cannot produce fire times."""
        ...

    def next_fire(self, scheduler: Scheduler, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (UTC), or None for never."""
        ...


class CronTrigger:
    type_name: ClassVar[SchedulerType] = SchedulerType.crontab

    def _parts(self, scheduler: Scheduler) -> tuple[CronExpression, ZoneInfo]:
        spec = scheduler.effective_spec
        return CronExpression.parse(spec.crontab or ""), parse_zone(spec.timezone)

    def validate(self, scheduler: Scheduler) -> None:
        self._parts(scheduler)

    def next_fire(self, scheduler: Scheduler, after: datetime) -> datetime | None:
        expression, zone = self._parts(scheduler)
        return expression.next_after(after, zone)


class LoopTrigger:
    """Fixed-rate loops (``5m``: every five minutes from the first fire). ``0`` or no loop
    means continuous: the next run is queued when the previous one ends."""

    type_name: ClassVar[SchedulerType] = SchedulerType.loop

    def validate(self, scheduler: Scheduler) -> None:
        loop_seconds(scheduler.effective_spec.loop)
        parse_zone(scheduler.effective_spec.timezone)

    def next_fire(self, scheduler: Scheduler, after: datetime) -> datetime | None:
        seconds = loop_seconds(scheduler.effective_spec.loop)
        return after + timedelta(seconds=seconds) if seconds else None


class NoFireTrigger:
    """Manual jobs run only through the start action; depend jobs after their upstream."""

    type_name: ClassVar[SchedulerType] = SchedulerType.manual

    def validate(self, scheduler: Scheduler) -> None:
        return None

    def next_fire(self, scheduler: Scheduler, after: datetime) -> datetime | None:
        return None


TRIGGERS: dict[SchedulerType, Trigger] = {
    SchedulerType.crontab: CronTrigger(),
    SchedulerType.loop: LoopTrigger(),
    SchedulerType.manual: NoFireTrigger(),
    SchedulerType.depend: NoFireTrigger(),
}


def first_fire(scheduler: Scheduler, now: datetime) -> datetime | None:
    """When a newly created, changed or restarted schedule first fires."""
    if scheduler.type == SchedulerType.loop:
        return now if loop_seconds(scheduler.effective_spec.loop) else None
    return TRIGGERS[scheduler.type].next_fire(scheduler, now)


def preview(scheduler: Scheduler, now: datetime, count: int) -> list[datetime]:
    if scheduler.type in (SchedulerType.manual, SchedulerType.depend):
        return []
    if scheduler.type == SchedulerType.loop and loop_seconds(scheduler.effective_spec.loop) == 0:
        return [now]
    times: list[datetime] = []
    moment = first_fire(scheduler, now)
    while moment is not None and len(times) < count:
        times.append(moment)
        moment = TRIGGERS[scheduler.type].next_fire(scheduler, moment)
    return times


def validate_scheduler(scheduler: Scheduler | None) -> None:
    if scheduler is not None:
        TRIGGERS[scheduler.type].validate(scheduler)


class Schedulable(Protocol):
    """What :func:`reset_schedule` reads and writes of a job (its stored row)."""

    schedule_state: str
    next_fire_at: datetime | None


def reset_schedule(job: Schedulable, body: JobBody, now: datetime) -> None:
    """Recompute a job's next fire time from ``now`` (create, update, restart)."""
    scheduler = body.scheduler
    job.next_fire_at = (
        first_fire(scheduler, now) if scheduler and job.schedule_state != "stopped" else None
    )
