"""Secrets (``/projects/{p}/secrets``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping

from datamill.client.base import Resource, api_path, walk_pages
from datamill.client.models import Page, Secret

__all__ = ["SecretsAPI"]


class SecretsAPI(Resource):
    """Secrets: write-only credentials; reading one gives its description and value names."""

    def create(
        self, project: str, name: str, values: Mapping[str, str], *, description: str = ""
    ) -> Secret:
        """Store a secret (encrypted at rest); the values are never returned."""
        path = api_path("projects", project, "secrets", name)
        body = {"description": description, "values": dict(values)}
        return self._send("POST", Secret, path, body)

    def update(
        self, project: str, name: str, values: Mapping[str, str], *, description: str = ""
    ) -> Secret:
        """Replace a secret's values and description."""
        path = api_path("projects", project, "secrets", name)
        body = {"description": description, "values": dict(values)}
        return self._send("PUT", Secret, path, body)

    def get(self, project: str, name: str) -> Secret:
        """A secret's description and the names of its values."""
        return self._get(Secret, api_path("projects", project, "secrets", name))

    def list(self, project: str, *, page: int = 1, size: int = 50) -> Page[Secret]:
        """One page of the project's secrets."""
        path = api_path("projects", project, "secrets")
        return self._page(Secret, path, "secrets", page, size)

    def iter_all(self, project: str) -> Iterator[Secret]:
        """Every secret of the project, walking the pages."""
        return walk_pages(lambda p, s: self.list(project, page=p, size=s))

    def list_all(self, project: str) -> builtins.list[Secret]:
        """Every secret of the project, as one list."""
        return list(self.iter_all(project))

    def delete(self, project: str, name: str) -> None:
        """Delete a secret that no resource uses."""
        self._delete(api_path("projects", project, "secrets", name))
