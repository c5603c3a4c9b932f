"""Data roots and their grants to projects (``/data-roots``; administrators only)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator

from datamill.client.base import Resource, api_path, walk_pages
from datamill.client.models import DataRoot, DataRootGrant, Page

__all__ = ["DataRootsAPI"]


class DataRootsAPI(Resource):
    """The server's data roots. A project sees only its own folder of a root unless the
    root is granted to it; then it sees the whole root but the other projects' folders."""

    def list(self, *, page: int = 1, size: int = 50) -> Page[DataRoot]:
        """One page of the data roots, by name, with the projects each is granted to."""
        return self._page(DataRoot, "/data-roots", "dataRoots", page, size)

    def iter_all(self) -> Iterator[DataRoot]:
        """Every data root, walking the pages."""
        return walk_pages(lambda p, s: self.list(page=p, size=s))

    def list_all(self) -> builtins.list[DataRoot]:
        """Every data root, as one list."""
        return list(self.iter_all())

    def grant(self, root: str, project: str) -> DataRootGrant:
        """Let ``project`` see the whole root ``root`` (its paths there become relative to
        the root); granting again changes nothing."""
        return self._send(
            "PUT", DataRootGrant, api_path("data-roots", root, "grants", project), None
        )

    def revoke(self, root: str, project: str) -> None:
        """The project sees only its own folder of ``root`` again."""
        self._delete(api_path("data-roots", root, "grants", project))
