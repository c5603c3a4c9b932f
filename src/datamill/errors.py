"""The error catalog: every error datamill can answer with, its code and its HTTP status.

Codes reuse the batch-compute specification's table (E18xxx) where a condition fits and add
new codes in the same style where none does. ``docs/errors.md`` is generated from
:data:`CATALOG` (``python -m datamill.errors > docs/errors.md``) and a test keeps the two equal.

Every layer raises :class:`DatamillError`; the API turns it into
``{"error_code", "error_msg", "request_id"}`` with the code's HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class ErrorSpec:
    code: str
    status: int
    title: str


class E(Enum):
    """Every error code. The member name says the condition; the value is its spec."""

    # --- request and platform ---
    INTERNAL = ErrorSpec("E18000", 500, "internal server error")
    UNAUTHORIZED = ErrorSpec("E18001", 401, "bad token: missing, unknown, revoked or expired")
    FORBIDDEN = ErrorSpec("E18002", 403, "the caller's role does not allow this operation")
    MISSING_CONTENT_LENGTH = ErrorSpec("E18003", 411, "missing content length")
    INVALID_CONTENT_LENGTH = ErrorSpec("E18004", 400, "invalid content length")
    BODY_TOO_LARGE = ErrorSpec("E18005", 413, "request body too large")
    BODY_EMPTY = ErrorSpec("E18006", 400, "request body is empty")
    BODY_MALFORMED = ErrorSpec("E18007", 400, "request body is not valid JSON")
    FIELD_TOO_LONG = ErrorSpec("E18008", 400, "a field is longer than its limit")
    ROUTE_NOT_FOUND = ErrorSpec("E18009", 404, "no such route")
    METHOD_NOT_ALLOWED = ErrorSpec("E18010", 405, "method not allowed on this route")
    INVALID_PARAMETER = ErrorSpec("E18011", 400, "a field or parameter breaks its rule")
    UNSUPPORTED_MEDIA_TYPE = ErrorSpec("E18012", 415, "request body must be application/json")
    # --- data sources (the specification's "repository" codes) ---
    DATASOURCE_EXISTS = ErrorSpec("E18101", 409, "data source already exists")
    DATASOURCE_NOT_FOUND = ErrorSpec("E18102", 404, "data source does not exist")
    INVALID_NAME = ErrorSpec("E18103", 400, "invalid name")
    INVALID_DATE = ErrorSpec("E18104", 400, "invalid date or time format")
    SCHEMA_EMPTY = ErrorSpec("E18105", 400, "schema is empty")
    INVALID_FIELD_NAME = ErrorSpec("E18106", 400, "invalid field name")
    UNSUPPORTED_FIELD_TYPE = ErrorSpec("E18107", 400, "unsupported field type")
    INVALID_SPEC = ErrorSpec("E18109", 400, "invalid data source spec")
    INVALID_FIELD_FORMAT = ErrorSpec("E18110", 400, "invalid field format")
    FIELD_NOT_FOUND = ErrorSpec("E18111", 404, "field does not exist")
    HAS_DEPENDANTS = ErrorSpec("E18112", 400, "other resources still depend on this one")
    SCHEMA_CHANGE_REFUSED = ErrorSpec(
        "E18114", 400, "an update may add schema fields, never remove or retype one"
    )
    SCHEMA_INFERENCE_FAILED = ErrorSpec("E18115", 400, "the schema could not be inferred")
    PATH_REFUSED = ErrorSpec("E18116", 400, "path is outside the allowed data roots")
    DATA_UNREADABLE = ErrorSpec("E18117", 400, "the data could not be read")
    OUTBOUND_REFUSED = ErrorSpec("E18118", 400, "outbound address is not allowed")
    NOT_A_FILE_SOURCE = ErrorSpec(
        "E18120", 400, "a stream connection has no files, file format or schema"
    )
    NOT_A_STREAM_CONNECTION = ErrorSpec(
        "E18121", 400, "the data source is not a stream connection (mqtt, kafka, …)"
    )
    # --- batch jobs and runs ---
    JOB_EXISTS = ErrorSpec("E18201", 409, "job already exists")
    JOB_NOT_FOUND = ErrorSpec("E18202", 404, "job does not exist")
    INVALID_JOB = ErrorSpec("E18207", 400, "invalid job description")
    INVALID_SCHEDULE = ErrorSpec("E18208", 400, "invalid schedule")
    INVALID_SQL = ErrorSpec("E18209", 400, "invalid SQL in the job")
    INVALID_CONTAINER_TYPE = ErrorSpec("E18213", 400, "invalid container type")
    INVALID_CONTAINER_COUNT = ErrorSpec("E18214", 400, "invalid container count")
    UNKNOWN_ENGINE = ErrorSpec("E18215", 400, "the engine is not one this server runs")
    ENGINE_EXISTS = ErrorSpec("E18250", 409, "engine connection already exists")
    ENGINE_NOT_FOUND = ErrorSpec("E18251", 404, "engine connection does not exist")
    ENGINE_UNAVAILABLE = ErrorSpec(
        "E18252", 502, "the engine connection's server could not be reached"
    )
    RUN_NOT_FOUND = ErrorSpec("E18230", 404, "run does not exist")
    RUN_STATE_CONFLICT = ErrorSpec("E18231", 409, "the run's state does not allow this action")
    RESULT_NOT_AVAILABLE = ErrorSpec("E18232", 404, "the run has no result")
    SQL_REFUSED = ErrorSpec("E18233", 400, "the SQL does something jobs may not do")
    JOB_STOPPED = ErrorSpec("E18234", 409, "the job's schedule is stopped")
    # --- exports ---
    EXPORT_EXISTS = ErrorSpec("E18301", 409, "export already exists")
    EXPORT_NOT_FOUND = ErrorSpec("E18302", 404, "export does not exist")
    EXPORT_FAILED = ErrorSpec("E18305", 400, "the export failed")
    # --- projects, users, members, tokens ---
    PROJECT_EXISTS = ErrorSpec("E18401", 409, "project already exists")
    PROJECT_NOT_FOUND = ErrorSpec("E18402", 404, "project does not exist")
    USER_EXISTS = ErrorSpec("E18411", 409, "user already exists")
    USER_NOT_FOUND = ErrorSpec("E18412", 404, "user does not exist")
    MEMBER_NOT_FOUND = ErrorSpec("E18421", 404, "user is not a member of the project")
    LAST_OWNER = ErrorSpec("E18422", 409, "a project keeps at least one owner")
    TOKEN_NOT_FOUND = ErrorSpec("E18431", 404, "token does not exist")
    GRANT_NOT_FOUND = ErrorSpec("E18441", 404, "the data root is not granted to the project")
    # --- secrets ---
    SECRET_EXISTS = ErrorSpec("E18501", 409, "secret already exists")
    SECRET_NOT_FOUND = ErrorSpec("E18502", 404, "secret does not exist")
    SECRET_KEY_MISSING = ErrorSpec("E18503", 400, "secret lacks a value the resource needs")
    # --- magic variables ---
    VARIABLE_EXISTS = ErrorSpec("E18601", 409, "variable already exists")
    VARIABLE_NOT_FOUND = ErrorSpec("E18602", 404, "variable does not exist")
    VARIABLE_READ_ONLY = ErrorSpec("E18603", 400, "system variables are read-only")
    VARIABLE_UNKNOWN = ErrorSpec("E18604", 400, "text refers to an unknown variable")
    VARIABLE_CYCLE = ErrorSpec("E18605", 400, "variables refer to each other in a cycle")
    INVALID_VARIABLE_VALUE = ErrorSpec("E18606", 400, "invalid variable value")
    # --- streaming jobs ---
    STREAMING_JOB_NOT_FOUND = ErrorSpec("E18701", 404, "streaming job does not exist")
    STREAMING_STATE_CONFLICT = ErrorSpec(
        "E18702", 409, "the streaming job's state does not allow this action"
    )
    INVALID_STREAMING_JOB = ErrorSpec("E18703", 400, "invalid streaming job")
    STREAMING_NOT_ACCEPTING = ErrorSpec(
        "E18720", 409, "the streaming job does not accept records in its state"
    )
    STREAMING_NO_INGEST = ErrorSpec(
        "E18721", 409, "the streaming job has no source fed by its ingest endpoint"
    )
    INVALID_RECORDS = ErrorSpec("E18722", 400, "the posted records are not JSON objects")
    STREAM_SETTINGS_INVALID = ErrorSpec(
        "E18760", 400, "an operator's settings do not fit the connection it names"
    )
    STREAM_CONNECT_FAILED = ErrorSpec("E18761", 502, "a stream connection could not be opened")

    @property
    def code(self) -> str:
        return self.value.code

    @property
    def status(self) -> int:
        return self.value.status


CATALOG: tuple[E, ...] = tuple(E)
E_BY_CODE: dict[str, E] = {e.code: e for e in CATALOG}


class DatamillError(Exception):
    """An error meant for the caller: a catalog entry plus a message naming what went wrong.

    ``field`` names the offending field (dotted path) where there is one.
    """

    def __init__(self, error: E, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.field = field

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def status(self) -> int:
        return self.error.status


def field_error(error: E, message: str, context: dict[str, Any] | None = None) -> Exception:
    """A validation error inside a pydantic model that answers with ``error``'s code.

    ``message`` may name ``{keys}`` of ``context``; the API reports the field's path."""
    return PydanticCustomError(error.code, message, context)


def render_markdown() -> str:
    """The error table as Markdown, the source of ``docs/errors.md``."""
    lines = [
        "# Error codes",
        "",
        "Every error response has the body",
        '`{"error_code": "E18102", "error_msg": "data source \'web\' does not exist", '
        '"request_id": "…"}`',
        "and the HTTP status below. `error_msg` names the field and the rule that was broken;",
        "`request_id` is also sent as the `X-Request-ID` header and appears in the server log.",
        "",
        "This file is generated from `src/datamill/errors.py` "
        "(`python -m datamill.errors > docs/errors.md`).",
        "",
        "| code | HTTP status | meaning |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {e.code} | {e.status} | {e.value.title} |" for e in CATALOG]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - exercised through docs generation
    print(render_markdown(), end="")
