"""Runs, their claims and heartbeats, and their log lines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from datamill.store.base import Base, UTCDateTime, utcnow

JOB_TARGET = 0
"""``RunRow.target`` of a job's own SQL run; an export run's target is its export's id."""


class RunRow(Base):
    """One execution unit: a job's SQL for a batch, or one export of that batch.

    Both kinds share the state machine, claims, heartbeats, history and logs. ``target`` is
    0 for the job's SQL and the export's id for an export run, which carries the ``run_id``
    and ``batch_time`` of the job run whose result it exports.
    """

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("job_id", "target", "run_id"),
        UniqueConstraint("job_id", "target", "batch_time"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(Integer)
    target: Mapped[int] = mapped_column(Integer, default=JOB_TARGET)
    export_id: Mapped[int | None] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), nullable=True, index=True
    )
    batch_time: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    rerun_count: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rows_read: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rows_written: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_read: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_written: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_path: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunLogRow(Base):
    __tablename__ = "run_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    line: Mapped[str] = mapped_column(Text)
