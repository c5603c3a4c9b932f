"""Engine connections (``/projects/{p}/engines``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator

from datamill.client.base import Resource, api_path, walk_pages
from datamill.client.models import EngineConnection, Page

__all__ = ["EnginesAPI"]


class EnginesAPI(Resource):
    """Engine connections: a Spark Connect server that the project's jobs name as engine."""

    @staticmethod
    def _body(
        type: str, url: str, secret: str | None, description: str, default: bool
    ) -> dict[str, str | bool | None]:
        return {
            "type": type,
            "url": url,
            "secret": secret,
            "description": description,
            "default": default,
        }

    def create(
        self,
        project: str,
        name: str,
        url: str,
        *,
        type: str = "spark",
        secret: str | None = None,
        description: str = "",
        default: bool = False,
    ) -> EngineConnection:
        """Create an engine connection; ``secret`` names a secret whose value ``token``
        authenticates; ``default``: jobs whose engine is the type run here."""
        path = api_path("projects", project, "engines", name)
        return self._send(
            "POST", EngineConnection, path, self._body(type, url, secret, description, default)
        )

    def update(
        self,
        project: str,
        name: str,
        url: str,
        *,
        type: str = "spark",
        secret: str | None = None,
        description: str = "",
        default: bool = False,
    ) -> EngineConnection:
        """Replace an engine connection."""
        path = api_path("projects", project, "engines", name)
        return self._send(
            "PUT", EngineConnection, path, self._body(type, url, secret, description, default)
        )

    def get(self, project: str, name: str) -> EngineConnection:
        """One engine connection."""
        return self._get(EngineConnection, api_path("projects", project, "engines", name))

    def list(self, project: str, *, page: int = 1, size: int = 50) -> Page[EngineConnection]:
        """One page of the project's engine connections."""
        path = api_path("projects", project, "engines")
        return self._page(EngineConnection, path, "engines", page, size)

    def iter_all(self, project: str) -> Iterator[EngineConnection]:
        """Every engine connection of the project, walking the pages."""
        return walk_pages(lambda p, s: self.list(project, page=p, size=s))

    def list_all(self, project: str) -> builtins.list[EngineConnection]:
        """Every engine connection of the project, as one list."""
        return list(self.iter_all(project))

    def delete(self, project: str, name: str) -> None:
        """Delete an engine connection that no job uses."""
        self._delete(api_path("projects", project, "engines", name))
