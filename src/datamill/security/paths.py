"""Resolve user-given relative paths inside a root folder, refusing every way out.

A project sees a data root through a :class:`RootView`: by default only its own folder
of the root (``<root>/<project>/``, where its relative paths start), or, when an
administrator granted the root to the project, the whole root minus the folders of the
other projects.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from datamill.errors import DatamillError, E

GLOB_CHARS = set("*?[")


def _refuse(field_name: str, message: str) -> DatamillError:
    return DatamillError(E.PATH_REFUSED, f"{field_name}: {message}", field=field_name)


@dataclass(frozen=True)
class RootView:
    """What one project may use of one data root.

    ``base`` is where the project's relative paths start: its own folder of the root, or
    the root itself when the root is shared with it (``shared``). In a shared root the
    top-level folders named in ``fenced`` belong to other projects: a path naming one is
    refused, and a glob never matches into one.
    """

    name: str
    root: Path
    base: Path
    shared: bool = False
    fenced: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls, name: str, root: Path, project: str, shared: bool, projects: Collection[str] = ()
    ) -> RootView:
        """The view of ``project`` on the root ``name`` at ``root``; ``projects`` are the
        names of all projects (only a shared root needs them)."""
        real = root.resolve()
        if not shared:
            return cls(name, real, project_folder(real, project))
        others = frozenset(p.casefold() for p in projects if p.casefold() != project.casefold())
        return cls(name, real, real, True, others)

    def _where(self) -> str:
        if not self.name:
            return "its data root"
        return (
            f"data root '{self.name}'" if self.shared else f"its folder of data root '{self.name}'"
        )

    def fenced_part(self, resolved: Path) -> str | None:
        """The other project's folder that ``resolved`` (a resolved path) lies in, if any."""
        if not self.fenced or resolved == self.root or self.root not in resolved.parents:
            return None
        top = resolved.relative_to(self.root).parts[0]
        return top if top.casefold() in self.fenced else None

    def ensure(self, candidate: Path, shown: str, field_name: str) -> Path:
        """``candidate`` with symlinks resolved; refused when it leaves the view."""
        base = self.base.resolve()
        resolved = candidate.resolve()
        if resolved != base and base not in resolved.parents:
            raise _refuse(field_name, f"'{shown}' leads outside {self._where()}")
        other = self.fenced_part(resolved)
        if other is not None:
            raise _refuse(
                field_name, f"'{shown}' is in another project's folder '{other}' of {self._where()}"
            )
        return resolved

    def contains(self, path: Path) -> bool:
        """Whether the absolute ``path`` (symlinks resolved) is one the project may use."""
        try:
            self.ensure(path, str(path), "path")
        except DatamillError:
            return False
        return True

    def resolve(self, relative: str, field_name: str) -> Path:
        """``base / relative`` with symlinks resolved; refused when it leaves the view."""
        check_relative_path(relative, field_name)
        return self.ensure(self.base.resolve() / relative, relative, field_name)

    def make_base(self) -> None:
        """Create the project's folder (first use); a read-only root is left as it is."""
        if not self.shared and self.root.is_dir():
            with contextlib.suppress(OSError):
                self.base.mkdir(exist_ok=True)

    def expand(self, pattern: str, field_name: str) -> list[Path]:
        """Files that ``pattern`` names under the view (a file, a folder's files, or a glob).

        Every match is checked again after its symlinks are resolved, so a link that points
        out of the view is refused rather than followed. A glob or a folder never matches
        into another project's folder of a shared root: those matches are left out.
        """
        base = self.base.resolve()
        target = self.resolve(pattern, field_name)
        if GLOB_CHARS & set(pattern):
            candidates = [Path(m) for m in glob.glob(str(base / pattern), recursive=True)]
        elif target.is_dir():
            candidates = list(target.rglob("*"))
        else:
            candidates = [target]
        if self.fenced:
            candidates = [c for c in candidates if self.fenced_part(_lexical(c)) is None]
        files = {self.ensure(c, str(c), field_name) for c in candidates}
        return sorted(f for f in files if f.is_file())


def _lexical(path: Path) -> Path:
    """``path`` made absolute without following symlinks."""
    return Path(os.path.normpath(path.absolute()))


def project_folder(root: Path, project: str) -> Path:
    """A project's own folder of a data root. Project names never change, so neither does
    the folder."""
    return root / project


def data_root(roots: Mapping[str, RootView], name: str, field: str = "spec.root") -> RootView:
    """The data root called ``name`` among those the administrator configured."""
    root = roots.get(name)
    if root is None:
        known = ", ".join(sorted(roots)) or "none"
        raise _refuse(field, f"unknown data root '{name}' (configured: {known})")
    return root


def check_relative_path(path: str, field: str) -> str:
    """Refuse NUL bytes, absolute paths, backslashes and ``..`` segments; return the path."""
    if "\x00" in path:
        raise _refuse(field, "NUL byte in path")
    if not path or path.strip() != path:
        raise _refuse(field, "empty or padded path")
    if path.startswith(("/", "~")) or "\\" in path or ":" in path.split("/", 1)[0]:
        raise _refuse(field, f"'{path}' must be relative to the data root (no absolute paths)")
    if any(part == ".." for part in PurePosixPath(path).parts):
        raise _refuse(field, "'..' is not allowed in paths")
    return path


def resolve_inside(root: Path, relative: str, field: str) -> Path:
    """``root / relative`` with symlinks resolved; refused when it leaves ``root``."""
    real = root.resolve()
    return RootView("", real, real, shared=True).resolve(relative, field)
