"""JSON types are not converted: ``true`` is not an integer, ``"5"`` is not a number, ``1``
and ``"true"`` are not booleans. A request breaking this is refused with 400 E18011 naming
the field and the type it must have, and nothing is stored. Enums given as their string
values, datetimes given as text or epoch numbers in query parameters, numbers given as
integers and query parameters (which are text by nature) keep working.

The probes are data: add a ``(resource, field, value)`` row to check another field."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Api, assert_error
from tests.services.test_streaming_jobs import check_info, find, valid_pipeline

Body = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """Where a resource is created (``{project}``, ``{job}`` and ``{name}`` are filled in),
    a valid body, and how to list the names stored."""

    create: str
    body: Body
    listing: str
    key: str
    name_of: Callable[[dict[str, Any]], str] = lambda item: str(item["name"])
    fixtures: tuple[str, ...] = ()
    """Fixtures the body names (``datasource``, ``job``), by their fixture name."""


def _file_source() -> Body:
    return {
        "type": "file",
        "spec": {
            "root": "default",
            "paths": ["events.csv"],
            "fileType": "csv",
            "delimiter": ",",
            "containsHeader": True,
        },
    }


RESOURCES: dict[str, Resource] = {
    "token": Resource("/tokens", {"name": "{name}"}, "/tokens", "tokens"),
    "user": Resource("/users", {"name": "{name}"}, "/users", "users"),
    "job": Resource(
        "/projects/{project}/jobs/{name}",
        {
            "srcs": [{"name": "events", "type": "DataSource", "tableName": "ev"}],
            "computation": {"type": "SQL", "code": "SELECT * FROM ev"},
            "container": {"type": "1U2G", "count": 1},
            "scheduler": {"type": "manual"},
        },
        "/projects/{project}/jobs",
        "jobs",
        fixtures=("datasource",),
    ),
    "file_source": Resource(
        "/projects/{project}/datasources/{name}",
        _file_source(),
        "/projects/{project}/datasources",
        "datasources",
        fixtures=("datasource",),
    ),
    "mqtt_source": Resource(
        "/projects/{project}/datasources/{name}",
        {"type": "mqtt", "spec": {"host": "127.0.0.1", "port": 1883, "topic": "plant/+/t"}},
        "/projects/{project}/datasources",
        "datasources",
    ),
    "function_source": Resource(
        "/projects/{project}/datasources/{name}",
        {"type": "function", "spec": {"url": "http://127.0.0.1:8080/fn"}},
        "/projects/{project}/datasources",
        "datasources",
    ),
    "email_source": Resource(
        "/projects/{project}/datasources/{name}",
        {
            "type": "notification",
            "spec": {
                "channel": "email",
                "smtpHost": "127.0.0.1",
                "smtpSecurity": "none",
                "from": "alerts@example.com",
                "to": ["ops@example.com"],
            },
        },
        "/projects/{project}/datasources",
        "datasources",
    ),
    "file_export": Resource(
        "/projects/{project}/jobs/{job}/exports/{name}",
        {
            "type": "file",
            "spec": {"root": "default", "path": "{project}/out", "format": "csv", "delimiter": ","},
        },
        "/projects/{project}/jobs/{job}/exports",
        "exports",
        fixtures=("job",),
    ),
    "http_export": Resource(
        "/projects/{project}/jobs/{job}/exports/{name}",
        {"type": "http", "spec": {"host": "127.0.0.1:8080", "uri": "/hook"}},
        "/projects/{project}/jobs/{job}/exports",
        "exports",
        fixtures=("job",),
    ),
    "streaming_job": Resource(
        "/projects/{project}/streaming/jobs?check=true",
        {**valid_pipeline(), "definition": {"jobName": "{name}"}, "runtime": {}},
        "/projects/{project}/streaming/jobs",
        "jobs",
        name_of=lambda item: str(item["jobName"]),
    ),
    "secret": Resource(
        "/projects/{project}/secrets/{name}",
        {"values": {"token": "s3cr3t"}},
        "/projects/{project}/secrets",
        "secrets",
    ),
    "variable": Resource(
        "/projects/{project}/variables/{name}",
        {"type": "time", "value": "$(now)-1d"},
        "/projects/{project}/variables?type=user",
        "variables",
    ),
}

INTEGER, NUMBER, BOOLEAN, STRING = "an integer", "a number", "a boolean", "a string"

BAD_VALUES: list[tuple[str, str, Any, str]] = [
    ("token", "expiresInDays", True, INTEGER),
    ("token", "expiresInDays", "5", INTEGER),
    ("token", "expiresInDays", 5.5, INTEGER),
    ("user", "isAdmin", 1, BOOLEAN),
    ("user", "isAdmin", "true", BOOLEAN),
    ("job", "retries", True, INTEGER),
    ("job", "retries", "2", INTEGER),
    ("job", "maxRunSeconds", "60", INTEGER),
    ("job", "container.count", True, INTEGER),
    ("job", "container.count", "2", INTEGER),
    ("job", "params", [{"name": "tag", "default": 5}], STRING),
    ("file_source", "noVerifySchema", 1, BOOLEAN),
    ("file_source", "noVerifySchema", "true", BOOLEAN),
    ("file_source", "spec.containsHeader", 1, BOOLEAN),
    ("file_source", "spec.containsHeader", "true", BOOLEAN),
    ("mqtt_source", "spec.port", "1883", INTEGER),
    ("mqtt_source", "spec.port", True, INTEGER),
    ("mqtt_source", "spec.qos", True, INTEGER),
    ("mqtt_source", "spec.tls", "false", BOOLEAN),
    ("mqtt_source", "spec.tls", 0, BOOLEAN),
    ("function_source", "spec.timeoutSeconds", "5", NUMBER),
    ("function_source", "spec.timeoutSeconds", True, NUMBER),
    ("function_source", "spec.batchSize", "10", INTEGER),
    ("function_source", "spec.concurrency", True, INTEGER),
    ("email_source", "spec.smtpPort", "25", INTEGER),
    ("email_source", "spec.rateLimitPerMinute", True, INTEGER),
    ("file_export", "spec.fileCount", "2", INTEGER),
    ("file_export", "spec.fileCount", True, INTEGER),
    ("file_export", "spec.retention", "7", INTEGER),
    ("file_export", "spec.retries", True, INTEGER),
    ("file_export", "spec.containsHeader", 1, BOOLEAN),
    ("file_export", "spec.containsHeader", "true", BOOLEAN),
    ("http_export", "spec.timeoutSeconds", "5", NUMBER),
    ("http_export", "spec.timeoutSeconds", False, NUMBER),
    ("http_export", "spec.batchSize", True, INTEGER),
    ("http_export", "spec.retries", "1", INTEGER),
    ("streaming_job", "runtime.parallelism", "2", INTEGER),
    ("streaming_job", "runtime.parallelism", True, INTEGER),
    ("streaming_job", "runtime.resumeMaxNum", "3", INTEGER),
    ("streaming_job", "runtime.checkpointIntervalSeconds", "10", NUMBER),
    ("streaming_job", "runtime.checkpointIntervalSeconds", True, NUMBER),
    ("streaming_job", "runtime.outOfOrdernessSeconds", True, INTEGER),
    ("streaming_job", "runtime.restartWhenException", 1, BOOLEAN),
    ("streaming_job", "runtime.restartWhenException", "true", BOOLEAN),
    ("secret", "values.token", 5, STRING),
    ("variable", "value", 5, STRING),
]
"""(resource, field as the error names it, bad value, the type the error asks for)."""

GOOD_VALUES: list[tuple[str, str, Any, Any]] = [
    ("token", "expiresInDays", 5, None),
    ("user", "isAdmin", False, False),
    ("job", "retries", 2, 2),
    ("job", "maxRunSeconds", 60, 60),
    (
        "job",
        "scheduler",
        {"type": "crontab", "spec": {"crontab": "0 3 * * *", "misfire": "all", "overlap": "queue"}},
        {"type": "crontab", "spec": {"crontab": "0 3 * * *", "misfire": "all", "overlap": "queue"}},
    ),
    ("file_source", "spec.fileType", "csv", "csv"),
    ("file_source", "spec.containsHeader", True, True),
    ("mqtt_source", "spec.qos", 2, 2),
    ("function_source", "spec.timeoutSeconds", 5, 5.0),
    ("function_source", "spec.timeoutSeconds", 2.5, 2.5),
    ("http_export", "spec.timeoutSeconds", 7, 7.0),
    ("http_export", "spec.format", "json", "json"),
    ("variable", "format", "yyyy-MM-dd", "yyyy-MM-dd"),
    ("streaming_job", "runtime.checkpointIntervalSeconds", 2, None),
    ("streaming_job", "runtime.checkpointIntervalSeconds", 0.5, None),
]
"""(resource, field, value, the value read back; None: not read back). Enum values given as
strings, integers given to number fields."""


def _cases(rows: list[tuple[str, str, Any, Any]]) -> list[Any]:
    """The rows as test cases named ``where.field=value``."""
    return [pytest.param(*row, id=f"{row[0]}.{row[1]}={row[2]!r}") for row in rows]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names) if "{" in value and "}" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _set(body: Body, field: str, value: Any) -> None:
    *parents, last = field.split(".")
    target = body
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _get(body: Any, field: str) -> Any:
    for part in field.split("."):
        body = body[part]
    return body


def _contains(actual: Any, expected: Any) -> bool:
    """``actual`` is ``expected``, or a dict holding at least its keys and values."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected and type(actual) is type(expected))


@dataclass(frozen=True)
class Created:
    """The answer to a create, and the names stored afterwards."""

    response: httpx.Response
    body: Any
    stored: bool


Create = Callable[[str, str, Any], Created]


@pytest.fixture
def create(api: Api, project: str, request: pytest.FixtureRequest) -> Create:
    """Creates a fresh resource of a kind with one field set to a value."""

    def create(kind: str, field: str, value: Any) -> Created:
        resource = RESOURCES[kind]
        names = {"project": project, "name": f"t_{uuid.uuid4().hex[:10]}"}
        for fixture in resource.fixtures:
            names[fixture] = request.getfixturevalue(fixture)
        body = _fill(copy.deepcopy(resource.body), names)
        _set(body, field, value)
        response = api.post(resource.create.format(**names), json=body)
        listed = api.get(resource.listing.format(**names), params={"size": 1000})
        assert listed.status_code == 200, listed.text
        stored = [resource.name_of(item) for item in listed.json()[resource.key]]
        return Created(response, response.json(), names["name"] in stored)

    return create


@pytest.mark.parametrize(("kind", "field", "value", "expected"), _cases(BAD_VALUES))
def test_a_wrong_json_type_is_refused_and_nothing_is_stored(
    create: Create, kind: str, field: str, value: Any, expected: str
) -> None:
    created = create(kind, field, value)
    shown = field if kind != "job" or field != "params" else "params[0].default"
    assert_error(created.response, 400, "E18011", f"{shown}: must be {expected}")
    assert not created.stored


@pytest.mark.parametrize(("kind", "field", "value", "read_back"), _cases(GOOD_VALUES))
def test_values_of_the_right_json_type_are_accepted(
    create: Create, kind: str, field: str, value: Any, read_back: Any
) -> None:
    created = create(kind, field, value)
    assert created.response.status_code == 201, created.body
    assert created.stored
    if read_back is not None:
        assert _contains(_get(created.body, field), read_back), created.body


OPERATOR_BAD_VALUES: list[tuple[str, str, Any, str]] = [
    ("aggregate", "advanceConfigs.parallelism", "2", INTEGER),
    ("aggregate", "advanceConfigs.ttlTime", True, INTEGER),
    ("aggregate", "basicConfigs.windowAssigner.size", "10", INTEGER),
    ("aggregate", "basicConfigs.windowAssigner.offset", False, INTEGER),
    ("sink", "advanceConfigs.parallelism", True, INTEGER),
]
"""A streaming job's operator settings: (operator id, config field, bad value, type). A
check reports them as problems of the operator, as it does every config problem."""


@pytest.mark.parametrize(("op_id", "field", "value", "expected"), _cases(OPERATOR_BAD_VALUES))
def test_operator_settings_of_a_wrong_json_type_fail_the_check(
    api: Api, project: str, op_id: str, field: str, value: Any, expected: str
) -> None:
    body = valid_pipeline()
    _set(find(body, op_id)["configs"], field, value)
    info = check_info(api, project, body)
    problem = f"configs.{field}: must be {expected}"
    assert any(p.startswith(problem) for p in info.get(op_id, [])), info


def test_query_parameters_are_still_read_from_text(api: Api, project: str) -> None:
    """Query parameters arrive as text: numbers, booleans and datetimes are parsed there."""
    assert (
        api.get(f"/projects/{project}/jobs", params={"page": "1", "size": "5"}).status_code == 200
    )
    for at in ("2024-05-01T10:00:00Z", "1714557600"):
        response = api.get(f"/projects/{project}/variables/now", params={"at": at})
        assert response.status_code == 200, response.text
        assert response.json()["at"].startswith("2024-05-01T10:00:00"), response.json()
    assert_error(
        api.get(f"/projects/{project}/jobs", params={"size": "five"}),
        400,
        "E18011",
        "size (query parameter)",
    )
