"""Projects and their members."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from datamill.store.base import Base, Timestamps


class ProjectRow(Base, Timestamps):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class MembershipRow(Base, Timestamps):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))


def get_project(session: Session, name: str) -> ProjectRow | None:
    return session.scalars(select(ProjectRow).where(ProjectRow.name == name)).first()


def get_membership(session: Session, project_id: int, user_id: int) -> MembershipRow | None:
    return session.scalars(
        select(MembershipRow).where(
            MembershipRow.project_id == project_id, MembershipRow.user_id == user_id
        )
    ).first()


def count_owners(session: Session, project_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(MembershipRow)
            .where(MembershipRow.project_id == project_id, MembershipRow.role == "owner")
        )
        or 0
    )
