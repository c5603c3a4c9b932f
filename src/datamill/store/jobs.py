"""Batch jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    false,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from datamill.store.base import Base, Timestamps, UTCDateTime


class JobRow(Base, Timestamps):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    upstream: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    schedule_state: Mapped[str] = mapped_column(String(16), default="active")
    next_run_id: Mapped[int] = mapped_column(Integer, default=1)
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_outcome: Mapped[str | None] = mapped_column(String(256), nullable=True)
    serial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """True when runs must not overlap (overlap policy ``queue``): workers wait."""


class JobSourceRow(Base):
    """One row per (job, src): lets lists filter by source and deletes find dependants."""

    __tablename__ = "job_sources"
    __table_args__ = (UniqueConstraint("job_id", "table_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    src_type: Mapped[str] = mapped_column(String(16))
    src_name: Mapped[str] = mapped_column(String(128), index=True)
    table_name: Mapped[str] = mapped_column(String(128))


class LeaseRow(Base):
    """A named lease: the one process holding it (until it expires) does the named work."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- schedules: what the scheduler reads and advances --------------------------------------


def due_jobs(session: Session, now: datetime) -> Sequence[JobRow]:
    """Active jobs whose next fire time has come, the earliest first."""
    return session.scalars(
        select(JobRow)
        .where(
            JobRow.schedule_state == "active",
            JobRow.next_fire_at.is_not(None),
            JobRow.next_fire_at <= now,
        )
        .order_by(JobRow.next_fire_at)
    ).all()


def next_fire_time(session: Session) -> datetime | None:
    """The earliest next fire time of the active jobs."""
    return session.scalar(
        select(JobRow.next_fire_at)
        .where(JobRow.schedule_state == "active", JobRow.next_fire_at.is_not(None))
        .order_by(JobRow.next_fire_at)
        .limit(1)
    )


def advance_schedule(
    session: Session,
    job_id: int,
    seen: datetime,
    following: datetime | None,
    last_fire_at: datetime | None,
    outcome: str | None,
) -> bool:
    """Move an active job's next fire time from ``seen`` to ``following``; False when the
    job was stopped or rescheduled meanwhile (its next fire time is no longer ``seen``)."""
    advanced = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.schedule_state == "active", JobRow.next_fire_at == seen)
        .values(next_fire_at=following, last_fire_at=last_fire_at, last_outcome=outcome)
        .execution_options(synchronize_session=False)
    )
    return bool(advanced.rowcount == 1)  # type: ignore[attr-defined]


def unscheduled_active_jobs(session: Session) -> Sequence[JobRow]:
    """Active jobs without a next fire time (continuous loops among them)."""
    return session.scalars(
        select(JobRow).where(JobRow.schedule_state == "active", JobRow.next_fire_at.is_(None))
    ).all()


def active_dependants(session: Session, project_id: int, upstream: str) -> Sequence[JobRow]:
    """The project's active depend jobs on the job named ``upstream``."""
    return session.scalars(
        select(JobRow).where(
            JobRow.project_id == project_id,
            JobRow.upstream == upstream,
            JobRow.schedule_state == "active",
        )
    ).all()
