"""The ``hdfs`` export's spec: a folder in HDFS, written over WebHDFS."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from datamill.connectors.sinks.outputs.formats import PATH_FORBIDDEN, FileExportOptions, path_error
from datamill.errors import E

_HDFS_PATH_RULE = re.compile(
    r"^(hdfs|webhdfs)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(/[^?#]*)?$"
)


def _check_hdfs_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise path_error(E.INVALID_PARAMETER, "required: hdfs://namenode:port/path")
    if len(value) > 128 or PATH_FORBIDDEN & set(value) or not _HDFS_PATH_RULE.fullmatch(value):
        raise path_error(
            E.INVALID_PARAMETER,
            f"invalid HDFS path '{value[:200]}': use hdfs://namenode:port/path (the WebHDFS "
            "HTTP port), at most 128 characters, without \\ < >",
        )
    if ".." in value.split("/"):
        raise path_error(E.PATH_REFUSED, f"'..' is not allowed in HDFS paths ('{value}')")
    return value


ExportHdfsPath = Annotated[str, BeforeValidator(_check_hdfs_path)]


class HdfsExportSpec(FileExportOptions):
    """``hdfs``: a folder in HDFS written over WebHDFS (the port is the HTTP port)."""

    path: ExportHdfsPath = Field(
        "", validate_default=True, description="hdfs://namenode:port/folder; magic variables"
    )
    user: str | None = Field(None, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$")
    useHttps: bool = False
