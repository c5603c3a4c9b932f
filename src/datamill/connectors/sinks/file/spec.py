"""The ``file`` export's spec: a folder under a data root."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from datamill.connectors.sinks.outputs.formats import PATH_FORBIDDEN, FileExportOptions, path_error
from datamill.errors import E


def _check_file_path(value: Any) -> str:
    if not isinstance(value, str):
        raise path_error(E.INVALID_PARAMETER, "must be a string")
    if len(value) > 128 or PATH_FORBIDDEN & set(value):
        raise path_error(
            E.INVALID_PARAMETER, f"invalid path '{value[:140]}': 0-128 characters without \\ < >"
        )
    if value.startswith(("/", "~")):
        raise path_error(
            E.PATH_REFUSED,
            f"invalid path '{value}': must be relative to the data root (no absolute paths)",
        )
    if ".." in PurePosixPath(value).parts:
        raise path_error(E.PATH_REFUSED, f"'..' is not allowed in paths ('{value}')")
    return value


ExportPath = Annotated[str, BeforeValidator(_check_file_path)]


class FileExportSpec(FileExportOptions):
    """``file``: a folder under a data root the administrator allows."""

    root: str = Field("default", pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
    path: ExportPath = Field(
        "", description="relative to the data root; magic variables allowed; '' = top level"
    )
