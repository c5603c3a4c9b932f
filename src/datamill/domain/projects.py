"""Projects, members, roles."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from datamill.domain.common import Description, Model, Name


class Role(StrEnum):
    """A member's role in a project. Each role includes the rights of the ones below it."""

    owner = "owner"
    editor = "editor"
    visitor = "visitor"

    @property
    def rank(self) -> int:
        return {"visitor": 1, "editor": 2, "owner": 3}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class ProjectCreate(Model):
    name: Name
    description: Description = ""


class ProjectUpdate(Model):
    description: Description


class Project(Model):
    name: str
    description: str
    role: Role
    createdAt: datetime
    updatedAt: datetime


class MemberPut(Model):
    role: Role


class Member(Model):
    user: str
    role: Role
    createdAt: datetime
