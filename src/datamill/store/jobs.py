"""Batch jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

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
