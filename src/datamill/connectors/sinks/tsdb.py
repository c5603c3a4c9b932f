"""The ``tsdb`` sink: write a batch's rows as points through the InfluxDB 1.x line protocol.

Each row becomes one point of measurement ``series`` in database ``destRepoName``, posted
to ``<endpoint>/write?db=…&precision=…`` (InfluxDB 1.x; VictoriaMetrics accepts the same
``/write``). ``tags`` and ``fields`` map tag / field keys to job fields; ``timestamp``
names the job field holding the point's time: a date field, an epoch in milliseconds
(long or float) or an ISO 8601 string. ``precision`` (ns, us, ms, s; default ms) is the
unit the timestamps are sent in.

Writing is idempotent on InfluxDB: a point is identified by measurement, tag set and
timestamp, so re-exporting a batch overwrites its points. VictoriaMetrics (numeric fields
become metrics ``<series>_<field>``, tags and ``db`` labels; string fields are dropped)
keeps a repeated sample once when started with ``-dedup.minScrapeInterval``.

Values: null tags and empty tag values are left out (InfluxDB has no empty tags); null
fields are left out. Booleans are written as booleans, integers with the ``i`` suffix,
floats as floats, dates as ISO 8601 strings, everything else as strings. Measurement, tag
keys, tag values and field keys are escaped (commas, spaces, equals signs, backslashes);
string field values escape double quotes and backslashes.

A row is *invalid* when its timestamp is null or unreadable, when it has no non-null
field, when a float is NaN or infinite or when a tag holds a line break; the server also
drops points it cannot store (a field whose type conflicts with earlier points). With
``omitInvalid`` such rows are skipped and counted; without it the export fails, before
anything is sent for rows checked locally.

Credentials come only from the secret (``username`` and ``password``, basic auth).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    register,
)
from datamill.connectors.sinks.http import (
    OutboundHttp,
    SinkSpec,
    basic_auth,
    check_http_url,
    check_mapping,
    row_chunks,
    statuses_text,
)
from datamill.domain.common import FieldName, Name
from datamill.domain.datasources import SchemaField
from datamill.errors import DatamillError, E

Precision = Literal["ns", "us", "ms", "s"]
_PER_SECOND = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000, "s": 1}
_DB_RULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")
_DROPPED = re.compile(r"dropped=(\d+)")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _check_key(value: str) -> str:
    from pydantic_core import PydanticCustomError

    if not value or len(value) > 255 or any(c in value for c in "\r\n") or value == "time":
        raise PydanticCustomError(
            "E18106",
            "invalid key '{value}': 1-255 characters without line breaks, not 'time'",
            {"value": value[:140]},
        )
    return value


class TsdbSpec(SinkSpec):
    endpoint: str = Field(max_length=1024, description="e.g. http://influxdb:8086")
    destRepoName: str = Field(description="the database")
    series: str = Field(min_length=1, max_length=255, description="the measurement")
    tags: dict[str, FieldName] = Field(
        default_factory=dict, max_length=256, description="tag key -> job field"
    )
    fields: dict[str, FieldName] = Field(
        min_length=1, max_length=1000, description="field key -> job field"
    )
    timestamp: FieldName = Field(
        description="job field with the point's time: a date, epoch milliseconds or ISO 8601"
    )
    omitInvalid: bool = Field(False, description="skip invalid rows instead of failing")
    precision: Precision = "ms"
    batchSize: int = Field(5000, ge=1, le=100_000, description="points per request")
    timeoutSeconds: float = Field(30, gt=0, le=600)
    secret: Name | None = Field(
        None, description="a secret with 'username' and 'password' for basic authentication"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("destRepoName")
    @classmethod
    def _database(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        if not _DB_RULE.fullmatch(value):
            raise PydanticCustomError(
                "E18103",
                "invalid database name '{value}': 1-255 letters, digits, _ . -",
                {"value": value[:140]},
            )
        return value

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        if any(c in value for c in "\r\n") or value.startswith("_"):
            raise PydanticCustomError(
                "E18011", "the measurement may not contain line breaks or start with _"
            )
        return value

    @field_validator("tags", "fields")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _check_key(key)
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> TsdbSpec:
        from pydantic_core import PydanticCustomError

        both = sorted(set(self.tags) & set(self.fields))
        if both:
            raise PydanticCustomError(
                "E18011", "'{key}' is both a tag and a field", {"key": both[0][:64]}
            )
        return self


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
