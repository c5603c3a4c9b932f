"""The ``s3`` export's spec: objects under a key prefix in an S3-compatible store."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from datamill.connectors.sinks.outputs.formats import PATH_FORBIDDEN, FileExportOptions
from datamill.domain.datasources import S3Store


def _check_key_prefix(value: str) -> str:
    if len(value) > 128 or (PATH_FORBIDDEN | {":"}) & set(value):
        raise PydanticCustomError(
            "E18011",
            "invalid key prefix '{value}': 0-128 characters without : \\ < >",
            {"value": value[:140]},
        )
    if value.startswith("/") or ".." in value.split("/"):
        raise PydanticCustomError(
            "E18116", "invalid key prefix '{value}': no leading '/' and no '..'", {"value": value}
        )
    return value


ExportKeyPrefix = Annotated[str, AfterValidator(_check_key_prefix)]


class S3ExportSpec(FileExportOptions, S3Store):
    """``s3``: objects in an S3-compatible store; credentials come from a stored secret
    (the store's fields and their rules are the ``s3`` data source's: one S3 spec)."""

    keyPrefix: ExportKeyPrefix = Field("", description="magic variables allowed")
