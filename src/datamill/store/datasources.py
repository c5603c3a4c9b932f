"""Data sources of the batch catalog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from datamill.store.base import Base, Timestamps


class DataSourceRow(Base, Timestamps):
    __tablename__ = "datasources"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    no_verify_schema: Mapped[bool] = mapped_column(Boolean, default=False)
    secret_name: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
