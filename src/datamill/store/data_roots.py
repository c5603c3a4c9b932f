"""Grants of whole data roots to projects (a root not granted to a project shows it only
its own folder)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from datamill.store.base import Base, UTCDateTime, utcnow
from datamill.store.projects import ProjectRow


class DataRootGrantRow(Base):
    __tablename__ = "data_root_grants"
    __table_args__ = (UniqueConstraint("root", "project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def granted_roots(session: Session, project_id: int) -> set[str]:
    """The names of the roots granted whole to the project."""
    return set(
        session.scalars(
            select(DataRootGrantRow.root).where(DataRootGrantRow.project_id == project_id)
        )
    )


def get_grant(session: Session, root: str, project_id: int) -> DataRootGrantRow | None:
    return session.scalars(
        select(DataRootGrantRow).where(
            DataRootGrantRow.root == root, DataRootGrantRow.project_id == project_id
        )
    ).first()


def all_grants(session: Session) -> list[tuple[DataRootGrantRow, str]]:
    """Every grant with its project's name, by root and project."""
    rows = session.execute(
        select(DataRootGrantRow, ProjectRow.name)
        .join(ProjectRow, ProjectRow.id == DataRootGrantRow.project_id)
        .order_by(DataRootGrantRow.root, ProjectRow.name)
    ).all()
    return [(grant, name) for grant, name in rows]


def project_names(session: Session) -> list[str]:
    return list(session.scalars(select(ProjectRow.name)))
