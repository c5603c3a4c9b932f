"""Magic variables (``/projects/{p}/variables``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Literal

from datamill.client.base import Moment, Resource, api_path, moment_text, walk_pages
from datamill.client.models import Page, ResolvedVariable, Variable, VariableType

__all__ = ["VariablesAPI"]


class VariablesAPI(Resource):
    """Magic variables: read-only system variables and the project's user variables."""

    def create(
        self,
        project: str,
        name: str,
        *,
        type: VariableType | str,
        value: str,
        format: str | None = None,
    ) -> Variable:
        """Create a user variable: ``time`` (an expression like ``$(now)-1d``) or ``string``."""
        body = {"type": str(type), "value": value, "format": format}
        path = api_path("projects", project, "variables", name)
        return self._send("POST", Variable, path, body)

    def update(
        self,
        project: str,
        name: str,
        *,
        type: VariableType | str,
        value: str,
        format: str | None = None,
    ) -> Variable:
        """Replace a user variable's definition."""
        body = {"type": str(type), "value": value, "format": format}
        path = api_path("projects", project, "variables", name)
        return self._send("PUT", Variable, path, body)

    def get(self, project: str, name: str, *, at: Moment | None = None) -> ResolvedVariable:
        """A variable and its value resolved at batch time ``at`` (default: now)."""
        path = api_path("projects", project, "variables", name)
        return self._get(ResolvedVariable, path, {"at": moment_text(at)})

    def list(
        self,
        project: str,
        *,
        type: Literal["system", "user"] | None = None,
        page: int = 1,
        size: int = 50,
    ) -> Page[Variable]:
        """One page of variables: system ones first, then user ones; ``type`` picks one kind."""
        path = api_path("projects", project, "variables")
        return self._page(Variable, path, "variables", page, size, {"type": type})

    def iter_all(
        self, project: str, *, type: Literal["system", "user"] | None = None
    ) -> Iterator[Variable]:
        """Every variable (of ``type``), walking the pages."""
        return walk_pages(lambda p, s: self.list(project, type=type, page=p, size=s))

    def list_all(
        self, project: str, *, type: Literal["system", "user"] | None = None
    ) -> builtins.list[Variable]:
        """Every variable (of ``type``), as one list."""
        return list(self.iter_all(project, type=type))

    def delete(self, project: str, name: str) -> None:
        """Delete a user variable that no other variable uses."""
        self._delete(api_path("projects", project, "variables", name))
