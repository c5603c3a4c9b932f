"""What the network sinks (http, logdb, tsdb, report) share: their spec base, which
refuses credentials in clear, schema checks of field mappings and batching of rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import pyarrow as pa
from pydantic import AfterValidator, Field, model_validator

from datamill.connectors.sinks.base import ExportBatch
from datamill.domain.common import Model
from datamill.domain.datasources import SchemaField
from datamill.domain.urls import check_http_url
from datamill.errors import DatamillError, E

CREDENTIAL_KEYS = frozenset(
    k.lower()
    for k in (
        "password",
        "passwd",
        "pwd",
        "token",
        "apiKey",
        "api_key",
        "accessKey",
        "accessKeyId",
        "secretKey",
        "secretAccessKey",
        "credentials",
        "username",
        "user",
        "auth",
        "authorization",
    )
)
"""Spec keys that would carry credentials in clear: refused with a pointer to ``secret``."""


class SinkSpec(Model):
    """Base of the network sinks' specs: refuses credentials given in clear.

    ``retries`` is read by the run machinery (export runs retried with backoff after a
    transient failure); it is declared here so the spec accepts it.
    """

    retries: int | None = Field(
        None, ge=0, le=10, description="automatic retries of a failed export run (default 3)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_in_clear(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in CREDENTIAL_KEYS:
                    # Raised as a DatamillError (not a pydantic error) so it names the key.
                    raise DatamillError(
                        E.INVALID_PARAMETER,
                        f"spec.{str(key)[:64]}: credentials are not accepted in the spec; "
                        "store them in a secret and name it in spec.secret",
                        field=f"spec.{str(key)[:64]}",
                    )
        return data


def check_mapping(mapping: Mapping[str, str], schema: list[SchemaField], where: str) -> None:
    """Every job field a mapping names must be in the job's output schema (E18111)."""
    known = {f.key for f in schema}
    for target, source in mapping.items():
        if source not in known:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"{where}.{target}: job field '{source[:128]}' does not exist in the job's "
                f"output ({', '.join(sorted(known)) or 'no fields'})",
                field=f"{where}.{target}",
            )


def check_fields(names: list[str], schema: list[SchemaField], where: str) -> None:
    known = {f.key for f in schema}
    for i, name in enumerate(names):
        if name not in known:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"{where}[{i}]: job field '{name[:128]}' does not exist in the job's output",
                field=f"{where}[{i}]",
            )


def row_chunks(table: pa.Table, size: int) -> Iterator[list[dict[str, Any]]]:
    """The table's rows as dicts, ``size`` at a time (never an empty chunk)."""
    pending: list[dict[str, Any]] = []
    for record_batch in table.to_batches(max_chunksize=size):
        pending.extend(record_batch.to_pylist())
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def batch_key(batch: ExportBatch) -> str:
    """The batch time as a stable text (UTC, ISO 8601) for ids and headers."""
    moment = batch.batch_time
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def _endpoint_url(value: str) -> str:
    return check_http_url(value, query=False).rstrip("/")


EndpointUrl = Annotated[str, Field(max_length=1024), AfterValidator(_endpoint_url)]
"""A server's base URL in a spec: http(s), no credentials, query or fragment; no final /."""
