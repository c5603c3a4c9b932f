"""Resolve user-given relative paths inside a root folder, refusing every way out."""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from datamill.errors import DatamillError, E

GLOB_CHARS = set("*?[")


def data_root(roots: Mapping[str, Path], name: str, field: str = "spec.root") -> Path:
    """The data root called ``name`` among those the administrator configured."""
    root = roots.get(name)
    if root is None:
        known = ", ".join(sorted(roots)) or "none"
        raise DatamillError(
            E.PATH_REFUSED,
            f"{field}: unknown data root '{name}' (configured: {known})",
            field=field,
        )
    return root


def check_relative_path(path: str, field: str) -> str:
    """Refuse NUL bytes, absolute paths, backslashes and ``..`` segments; return the path."""
    if "\x00" in path:
        raise DatamillError(E.PATH_REFUSED, f"{field}: NUL byte in path", field=field)
    if not path or path.strip() != path:
        raise DatamillError(E.PATH_REFUSED, f"{field}: empty or padded path", field=field)
    if path.startswith(("/", "~")) or "\\" in path or ":" in path.split("/", 1)[0]:
        raise DatamillError(
            E.PATH_REFUSED,
            f"{field}: '{path}' must be relative to the data root (no absolute paths)",
            field=field,
        )
    if any(part == ".." for part in PurePosixPath(path).parts):
        raise DatamillError(E.PATH_REFUSED, f"{field}: '..' is not allowed in paths", field=field)
    return path


def _ensure_inside(real_root: Path, candidate: Path, shown: str, field: str) -> Path:
    resolved = candidate.resolve()
    if resolved != real_root and real_root not in resolved.parents:
        raise DatamillError(
            E.PATH_REFUSED, f"{field}: '{shown}' leads outside its data root", field=field
        )
    return resolved


def resolve_inside(root: Path, relative: str, field: str) -> Path:
    """``root / relative`` with symlinks resolved; refused when it leaves ``root``."""
    check_relative_path(relative, field)
    real_root = root.resolve()
    return _ensure_inside(real_root, real_root / relative, relative, field)


def expand_glob(root: Path, pattern: str, field: str) -> list[Path]:
    """Files that ``pattern`` names under ``root`` (a file, a folder's files, or a glob).

    Every match is checked again after its symlinks are resolved, so a link inside the root
    that points out of it is refused rather than followed.
    """
    real_root = root.resolve()
    target = resolve_inside(real_root, pattern, field)
    if GLOB_CHARS & set(pattern):
        candidates = [Path(m) for m in glob.glob(str(real_root / pattern), recursive=True)]
    elif target.is_dir():
        candidates = list(target.rglob("*"))
    else:
        candidates = [target]
    files = {_ensure_inside(real_root, c, str(c), field) for c in candidates}
    return sorted(f for f in files if f.is_file())
