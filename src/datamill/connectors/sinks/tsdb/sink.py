"""The ``tsdb`` sink (see the package's docs)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from datamill.connectors.outbound.http import OutboundHttp, basic_auth, statuses_text
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    register,
)
from datamill.connectors.sinks.common import check_mapping, row_chunks
from datamill.connectors.sinks.tsdb.spec import TsdbSpec
from datamill.domain.datasources import SchemaField
from datamill.domain.urls import url_target
from datamill.errors import DatamillError, E
from datamill.security.outbound import OutboundTarget

_PER_SECOND = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000, "s": 1}
_DROPPED = re.compile(r"dropped=(\d+)")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys: backslash, comma, equals sign and space."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def field_value(value: Any) -> str | None:
    """A field value in line protocol, ``None`` for null; ValueError if unwritable."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float | decimal.Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{number} cannot be stored")
        return repr(number)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tag_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dt.datetime | dt.date):
        text = value.isoformat()
    else:
        text = str(value)
    if not text:
        return None
    if "\n" in text or "\r" in text:
        raise ValueError("a tag value may not contain line breaks")
    return escape_key(text)


def timestamp_value(value: Any, precision: str) -> int:
    """The point's time in ``precision`` units since the epoch; ValueError if unreadable."""
    per_second = _PER_SECOND[precision]
    if value is None:
        raise ValueError("the timestamp is null")
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"timestamp '{value[:40]}' is not ISO 8601") from None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        micros = (moment - _EPOCH) // dt.timedelta(microseconds=1)
        return micros * per_second // 1_000_000
    if isinstance(value, dt.date):
        days = (value - _EPOCH.date()).days
        return days * 86_400 * per_second
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, int):
        return value * per_second // 1_000
    if isinstance(value, float | decimal.Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"timestamp {number} is not a number")
        return math.floor(number * per_second / 1_000)
    raise ValueError(f"a {type(value).__name__} is not a timestamp")


def point_line(spec: TsdbSpec, measurement: str, row: dict[str, Any]) -> str:
    """One row as a line of line protocol; ValueError if the row is invalid."""
    tags = []
    for key in sorted(spec.tags):
        try:
            text = tag_value(row.get(spec.tags[key]))
        except ValueError as exc:
            raise ValueError(f"tag '{key}': {exc}") from None
        if text is not None:
            tags.append(f"{escape_key(key)}={text}")
    fields = []
    for key, source in spec.fields.items():
        try:
            text = field_value(row.get(source))
        except ValueError as exc:
            raise ValueError(f"field '{key}': {exc}") from None
        if text is not None:
            fields.append(f"{escape_key(key)}={text}")
    if not fields:
        raise ValueError("every field is null (a point needs at least one field)")
    stamp = timestamp_value(row.get(spec.timestamp), spec.precision)
    head = ",".join([measurement, *tags])
    return f"{head} {','.join(fields)} {stamp}"


class TsdbSink:
    """Points through ``/write`` (module docstring)."""

    type_name: ClassVar[str] = "tsdb"
    spec_model: ClassVar[type[BaseModel]] = TsdbSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, TsdbSpec)
        check_mapping(spec.tags, schema, "spec.tags")
        check_mapping(spec.fields, schema, "spec.fields")
        by_key = {f.key: f for f in schema}
        found = by_key.get(spec.timestamp)
        if found is None:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"spec.timestamp: job field '{spec.timestamp}' does not exist in the job's output",
                field="spec.timestamp",
            )
        if found.valtype == "boolean":
            raise DatamillError(
                E.INVALID_PARAMETER,
                f"spec.timestamp: job field '{spec.timestamp}' is a boolean; use a date, "
                "an epoch in milliseconds or an ISO 8601 string",
                field="spec.timestamp",
            )

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, TsdbSpec)
        return spec.secret

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        assert isinstance(spec, TsdbSpec)
        return [url_target(spec.endpoint, "spec.endpoint")]

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, TsdbSpec)
        auth = basic_auth(ctx, spec.secret)
        measurement = escape_measurement(spec.series)
        table = batch.read()
        skipped = 0
        first_problem = ""
        bodies: list[tuple[int, bytes]] = []
        row_number = 0
        for rows in row_chunks(table, spec.batchSize):
            lines = []
            for row in rows:
                row_number += 1
                try:
                    lines.append(point_line(spec, measurement, row))
                except ValueError as exc:
                    problem = f"row {row_number}: {exc}"
                    if not spec.omitInvalid:
                        raise SinkError(f"{problem} (set omitInvalid to skip such rows)") from exc
                    skipped += 1
                    first_problem = first_problem or problem
            if lines:
                bodies.append((len(lines), ("\n".join(lines) + "\n").encode()))

        written = sent_bytes = 0
        params = {"db": spec.destRepoName, "precision": spec.precision}
        with OutboundHttp(
            spec.endpoint, ctx, "spec.endpoint", spec.timeoutSeconds, auth=auth
        ) as client:
            for count, body in bodies:
                response = client.request(
                    "POST",
                    "/write",
                    content=body,
                    params=params,
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                    ok=(400,),
                )
                sent_bytes += len(body)
                if response.status_code == 400:
                    text = response.text.strip()[:500]
                    found = _DROPPED.search(text)
                    if not spec.omitInvalid or "partial write" not in text:
                        raise SinkError(
                            f"POST {client.shown}/write answered 400: {text}"
                            + (" (set omitInvalid to skip such rows)" if found else "")
                        )
                    dropped = int(found.group(1)) if found else 0
                    written += count - dropped
                    skipped += dropped
                    first_problem = first_problem or text
                else:
                    written += count
            detail = (
                f"wrote {written} points of '{spec.series}' into database "
                f"'{spec.destRepoName}' at {client.shown}"
                + (f"; skipped {skipped} invalid rows (first: {first_problem})" if skipped else "")
                + f"; responses: {statuses_text(client.statuses)}"
            )
        ctx.log(detail)
        return ExportOutcome(rows=written, bytes=sent_bytes, detail=detail)


register(TsdbSink())
