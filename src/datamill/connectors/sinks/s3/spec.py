"""The ``s3`` export's spec: objects under a key prefix in an S3-compatible store."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from datamill.connectors.sinks.outputs.formats import FileExportOptions
from datamill.domain.datasources import S3Store, check_key_prefix


def _check_key_prefix(value: str) -> str:
    return check_key_prefix(value, forbidden=":\\<>")


ExportKeyPrefix = Annotated[str, AfterValidator(_check_key_prefix)]


class S3ExportSpec(FileExportOptions, S3Store):
    """``s3``: objects in an S3-compatible store; credentials come from a stored secret
    (the store's fields and their rules are the ``s3`` data source's: one S3 spec)."""

    keyPrefix: ExportKeyPrefix = Field("", description="magic variables allowed")
