"""Streaming jobs: the pipeline as saved, its state and the result of its last check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from datamill.store.base import Base, Timestamps, UTCDateTime, utcnow


class StreamingJobRow(Base, Timestamps):
    __tablename__ = "streaming_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(100), unique=True)
    """The job's public id (random), unique across projects."""
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    """``definition.jobName``, kept apart for listing and sorting."""
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The job as last saved: ``definition``, ``operatorInstances`` and ``runtime``."""
    state: Mapped[str] = mapped_column(String(16), index=True)
    check_info: Mapped[dict[str, Any]] = mapped_column(JSON)
    state_message: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    runner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The engine instance running the job; None until an engine picks it up."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """Renewed by the runner while it holds the job; a stale one lets another take over."""
    restarts: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """When the engine restarted the job after a failure (ISO times, the last hour's)."""
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
