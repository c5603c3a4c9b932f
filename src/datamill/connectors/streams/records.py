"""What the stream connectors share: payloads ↔ records, sink options, opening a spec.

Records travel as JSON objects. A payload that is a JSON object is one record, a JSON
array of objects is one record per element, and anything else (other JSON values, text
that is not JSON) becomes ``{"payload": <the text>}`` so nothing is silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from datamill.connectors.streams.base import StreamContext, StreamError
from datamill.domain.common import validation_failure
from datamill.domain.values import json_value
from datamill.errors import DatamillError, E

SpecT = TypeVar("SpecT", bound=BaseModel)


def open_spec(model: type[SpecT], spec: dict[str, Any], what: str) -> SpecT:
    """The connection spec, validated again (it may predate a rule); errors name the field."""
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        error = validation_failure(exc, prefix="spec")
        raise DatamillError(
            E.STREAM_SETTINGS_INVALID, f"{what} connection: {error.message}", field=error.field
        ) from None


def flat(configs: dict[str, Any]) -> dict[str, Any]:
    """An operator's settings as one dict: ``basicConfigs`` and ``advanceConfigs`` merged,
    whether the caller merged them already or passed the operator's ``configs`` as is."""
    if not any(key in configs for key in ("basicConfigs", "advanceConfigs")):
        return configs
    merged = {k: v for k, v in configs.items() if k not in ("basicConfigs", "advanceConfigs")}
    for key in ("basicConfigs", "advanceConfigs"):
        part = configs.get(key)
        if isinstance(part, dict):
            merged.update(part)
    return merged


def decode_payload(payload: bytes | bytearray) -> list[dict[str, Any]]:
    """The records in one message (module docstring)."""
    text = payload.decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except ValueError:
        return [{"payload": text}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return value
    return [{"payload": text}]


@dataclass(frozen=True)
class SinkOptions:
    """A DISSink's ``advanceConfigs`` as the connectors use them."""

    format: str = "JSON"
    separator: str = ","
    partitioner: str | None = None

    @classmethod
    def of(cls, configs: dict[str, Any]) -> SinkOptions:
        configs = flat(configs)
        fmt = str(configs.get("format") or "JSON").upper()
        if fmt not in ("JSON", "CSV"):
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                f"advanceConfigs.format: '{fmt[:20]}' is not JSON or CSV",
                field="advanceConfigs.format",
            )
        separator = configs.get("csvSeparator") or ","
        if not isinstance(separator, str) or len(separator) != 1 or separator in '\r\n"':
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                "advanceConfigs.csvSeparator: one character, not a quote or line break",
                field="advanceConfigs.csvSeparator",
            )
        partitioner = configs.get("partitioner") or None
        return cls(fmt, separator, str(partitioner) if partitioner else None)


def encode_rows(table: pa.Table, options: SinkOptions) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each row of ``table`` with its payload: a JSON object, or one CSV line without header
    (fields in column order; null is empty; nested values as JSON)."""
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            try:
                values = {key: json_value(value, strict=True) for key, value in row.items()}
            except ValueError as exc:
                raise StreamError(f"a record cannot be written: {exc}") from None
            if options.format == "JSON":
                data = json.dumps(values, ensure_ascii=False, allow_nan=False)
            else:
                data = csv_line(values, options.separator)
            yield row, data.encode()


def csv_line(values: dict[str, Any], separator: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, lineterminator="")
    writer.writerow([_csv_value(v) for v in values.values()])
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def client_id(ctx: StreamContext, suffix: str) -> str:
    """A stable client name for one operator of one job (the same after a restart)."""
    digest = hashlib.sha256(f"{ctx.project}/{ctx.job_id}/{ctx.operator_id}".encode())
    return f"datamill-{digest.hexdigest()[:16]}-{suffix}"
