"""Projects and their members (``/projects``, ``/projects/{project}/members``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import TYPE_CHECKING

from datamill.client.base import Resource, api_path, walk_pages
from datamill.client.models import Member, Page, Project, Role

if TYPE_CHECKING:
    from datamill.client.client import DatamillClient

__all__ = ["MembersAPI", "ProjectsAPI"]


class MembersAPI(Resource):
    """The members of a project and their roles (``/projects/{project}/members``)."""

    def list(self, project: str, *, page: int = 1, size: int = 50) -> Page[Member]:
        """One page of the project's members."""
        return self._page(Member, api_path("projects", project, "members"), "members", page, size)

    def iter_all(self, project: str) -> Iterator[Member]:
        """Every member, walking the pages."""
        return walk_pages(lambda p, s: self.list(project, page=p, size=s))

    def put(self, project: str, user: str, role: Role | str = Role.editor) -> Member:
        """Add ``user`` to the project, or change their role (owners only)."""
        path = api_path("projects", project, "members", user)
        return self._send("PUT", Member, path, {"role": str(role)})

    def remove(self, project: str, user: str) -> None:
        """Remove a member (owners only); the last owner cannot be removed."""
        self._delete(api_path("projects", project, "members", user))


class ProjectsAPI(Resource):
    """Projects the caller is a member of; :attr:`members` manages who else is."""

    def __init__(self, client: DatamillClient) -> None:
        super().__init__(client)
        self.members = MembersAPI(client)

    def create(self, name: str, description: str = "") -> Project:
        """Create a project; the caller becomes its owner."""
        return self._send("POST", Project, "/projects", {"name": name, "description": description})

    def get(self, name: str) -> Project:
        """A project, with the caller's role in it."""
        return self._get(Project, api_path("projects", name))

    def update(self, name: str, description: str) -> Project:
        """Change a project's description (editors and owners)."""
        return self._send(
            "PATCH", Project, api_path("projects", name), {"description": description}
        )

    def list(self, *, page: int = 1, size: int = 50) -> Page[Project]:
        """One page of the caller's projects."""
        return self._page(Project, "/projects", "projects", page, size)

    def iter_all(self) -> Iterator[Project]:
        """Every project of the caller, walking the pages."""
        return walk_pages(lambda p, s: self.list(page=p, size=s))

    def list_all(self) -> builtins.list[Project]:
        """Every project of the caller, as one list."""
        return list(self.iter_all())

    def delete(self, name: str) -> None:
        """Delete a project with all its resources and data (owners only)."""
        self._delete(api_path("projects", name))
