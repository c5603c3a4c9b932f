"""An authorization walk over every operation of the API, read from its OpenAPI document.

The operations are not listed here: they are collected from ``create_app().openapi()`` at
collection time (building the app needs no database), so a route added later is walked
automatically, and every operation is its own test id (``test_...[POST /api/v1/...]``).
Each test then runs against the ``client`` fixture on every metadata-store backend.

How a request is built (:func:`request_for`):

* ``{project}`` is a project the module set up (admin-owned, with a visitor, an editor and a
  non-admin owner as members, and a secret, a variable and a CSV data source named
  ``thing1``); ``{user}`` is an existing user who is not a member; any other path
  parameter gets a valid value built from its schema: ``thing1`` for a name (an existing
  resource where one was created), the smallest allowed integer >= 1 for an id
  (``{token_id}`` is ``1``);
* required query parameters get a value built from their schema (default, enum or type);
* an operation with a JSON body gets ``{}``.

A visitor's reads of what the module created must succeed (200); the editor's changes use
``thing2`` (which does not exist) so that they leave the module's resources in place.

Why ``{}`` is enough: FastAPI solves an endpoint's dependencies (here the token check and
``open_project``, which raise 401/404/403) before it validates the endpoint's own path,
query and body parameters, and the request body is only *parsed* (as JSON) before that. An
empty JSON object parses, so the answer is the authorization result, not a 400 for a body
the operation would refuse. The tests prove this themselves: with that body, no token still
gives 401 and a non-member still gets 404 on every write. Body validation (400) is only
reached by callers that are allowed in, which is what the "not 403" checks accept.

The exception is the administrator check of the user operations: the service makes it
after FastAPI validated the body, so ``{}`` would give 400 first. Those requests carry the
smallest valid body built from the operation's request schema (:func:`sample`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.services.runtime import Runtime
from tests.conftest import Api, assert_error

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
HEALTH = ("GET", "/api/v1/health")
PROJECT_PREFIX = "/api/v1/projects/{project}"
THING = "thing1"
CREATED = {"secrets", "variables", "datasources"}  # kinds the module creates a `thing1` of

# The specification's owner-only changes. The document says so in their summaries, and
# ``test_owner_only_operations_are_the_documented_ones`` keeps this set and them equal.
OWNER_ONLY = {
    ("DELETE", "/api/v1/projects/{project}"),
    ("PUT", "/api/v1/projects/{project}/members/{user}"),
    ("DELETE", "/api/v1/projects/{project}/members/{user}"),
}
# Non-GET operations under a project that change nothing and so are open to visitors.
# Inferring a schema reads a spec's files and returns their schema "without saving
# anything" (its summary); it depends on ProjectReader. A visitor must not get 403 there.
READ_ONLY_NON_GET = {
    ("POST", "/api/v1/projects/{project}/schemas"),
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def in_project(self) -> bool:
        return self.path == PROJECT_PREFIX or self.path.startswith(PROJECT_PREFIX + "/")

    @property
    def is_change(self) -> bool:
        return self.method != "GET" and self.key not in READ_ONLY_NON_GET

    @property
    def summary(self) -> str:
        return str(self.spec.get("summary", ""))


def _collect() -> tuple[dict[str, Any], list[Operation]]:
    document = create_app().openapi()
    operations = [
        Operation(method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    return document, operations


DOCUMENT, OPERATIONS = _collect()


def _params(operations: list[Operation]) -> list[Any]:
    return [pytest.param(op, id=f"{op.method} {op.path}") for op in operations]


PROTECTED = [op for op in OPERATIONS if op.key != HEALTH]
IN_PROJECT = [op for op in OPERATIONS if op.in_project]
PROJECT_READS = [op for op in IN_PROJECT if not op.is_change]
PROJECT_CHANGES = [op for op in IN_PROJECT if op.is_change]
ADMIN_ONLY = [op for op in PROTECTED if "administrators only" in op.summary]


# --------------------------------------------------------------------------- requests


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = DOCUMENT
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def sample(schema: dict[str, Any]) -> Any:
    """A valid value for a schema: its default, first enum value, or one built by type.

    Objects get their required properties only, so a body built from a request model is the
    smallest one its schema accepts.
    """
    schema = _resolve(schema)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(key, []) if _resolve(s).get("type") != "null"]
        if options:
            return sample(options[0])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: sample(properties.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [sample(schema.get("items", {}))] * max(1, int(schema.get("minItems", 1)))
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "string" and schema.get("format") == "date-time":
        return "2024-01-02T03:04:05Z"
    return THING


@dataclass
class World:
    """One project and the callers the walk uses, on one backend."""

    api: Api
    project: str
    visitor: str
    editor: str
    owner: str
    outsider: str
    outsider_name: str

    def request_for(
        self, op: Operation, token: str | None, *, project: str | None = None, name: str = THING
    ) -> httpx.Response:
        return request_for(
            self.api.client, op, token, project or self.project, self.outsider_name, name=name
        )


def request_for(
    client: TestClient,
    op: Operation,
    token: str | None,
    project: str,
    user: str,
    header: str = "Authorization",
    *,
    name: str = "",
    valid_body: bool = False,
) -> httpx.Response:
    """Send ``op`` with the path filled in, required query parameters and a ``{}`` body
    (or, with ``valid_body``, the smallest body its schema accepts). ``name`` replaces the
    value of ``{name}``."""
    values = {"project": project, "user": user}
    if name:
        values["name"] = name
    path = op.path
    query: dict[str, Any] = {}
    for parameter in op.spec.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        if where == "path":
            value = values.get(name, sample(parameter.get("schema", {})))
            path = path.replace("{" + name + "}", str(value))
        elif where == "query" and parameter.get("required"):
            query[name] = sample(parameter.get("schema", {}))
    headers = {}
    if token is not None:
        headers[header] = f"Bearer {token}" if header == "Authorization" else token
    kwargs: dict[str, Any] = {"headers": headers, "params": query}
    media = op.spec.get("requestBody", {}).get("content", {}).get("application/json")
    if media is not None:
        kwargs["json"] = sample(media.get("schema", {})) if valid_body else {}
    return client.request(op.method, path, **kwargs)


def _ok(response: httpx.Response, expected: int = 200) -> None:
    assert response.status_code == expected, response.text


@pytest.fixture(scope="module")
def world(client: TestClient, admin_token: str, runtime: Runtime) -> Iterator[World]:
    api = Api(client, admin_token, runtime)
    project = f"authz_{uuid.uuid4().hex[:10]}"
    _ok(api.post("/projects", json={"name": project, "description": "walk"}), 201)
    tokens = {}
    names = {}
    for role in ("visitor", "editor", "owner", "outsider"):
        names[role], tokens[role] = api.new_user()
        if role != "outsider":
            member = api.put(f"/projects/{project}/members/{names[role]}", json={"role": role})
            _ok(member)
    # resources named like the generic path value, so reads of them succeed
    folder = api.data_root / project
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text("a,b\n1,x\n2,y\n")
    base = f"/projects/{project}"
    _ok(api.post(f"{base}/secrets/{THING}", json={"values": {"password": "pw"}}), 201)
    _ok(api.post(f"{base}/variables/{THING}", json={"type": "string", "value": "hi"}), 201)
    datasource = {
        "type": "file",
        "spec": {
            "fileType": "csv",
            "delimiter": ",",
            "containsHeader": True,
            "paths": ["data.csv"],
        },
    }
    _ok(api.post(f"{base}/datasources/{THING}", json=datasource), 201)
    yield World(
        api=api,
        project=project,
        visitor=tokens["visitor"],
        editor=tokens["editor"],
        owner=tokens["owner"],
        outsider=tokens["outsider"],
        outsider_name=names["outsider"],
    )
    api.delete(base)


def _passed_access(response: httpx.Response) -> bool:
    """The caller got past authentication and project access (whatever came next)."""
    if response.status_code in (401, 403):
        return False
    if response.status_code == 404:
        return bool(response.json().get("error_code") != "E18402")
    return True


# --------------------------------------------------------------------------- the walk


def test_the_walk_covers_the_api() -> None:
    keys = {op.key for op in OPERATIONS}
    assert HEALTH in keys
    assert PROJECT_READS
    assert PROJECT_CHANGES
    assert keys >= OWNER_ONLY, "an owner-only operation is gone from the document"
    assert keys >= READ_ONLY_NON_GET, "a read-only non-GET operation is gone from the document"


def test_owner_only_operations_are_the_documented_ones() -> None:
    documented = {op.key for op in IN_PROJECT if "owner only" in op.summary.lower()}
    assert documented == OWNER_ONLY


def test_health_answers_without_a_token(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
    garbage = client.get("/api/v1/health", headers={"Authorization": "Bearer dm_garbage"})
    assert garbage.status_code == 200, garbage.text


@pytest.mark.parametrize("op", _params(PROTECTED))
def test_no_token_or_a_bad_token_is_401(world: World, op: Operation) -> None:
    client = world.api.client
    missing = request_for(client, op, None, world.project, world.outsider_name)
    assert_error(missing, 401, "E18001", "missing token")
    for header in ("Authorization", "X-Auth-Token"):
        garbage = request_for(
            client, op, "dm_garbage_" + "x" * 20, world.project, world.outsider_name, header
        )
        assert_error(garbage, 401, "E18001", "unknown token")


@pytest.mark.parametrize("op", _params(IN_PROJECT))
def test_a_non_member_cannot_tell_the_project_exists(world: World, op: Operation) -> None:
    response = world.request_for(op, world.outsider)
    assert_error(response, 404, "E18402", world.project)
    unknown = world.request_for(op, world.outsider, project="no_such_project_x")
    assert_error(unknown, 404, "E18402", "no_such_project_x")


@pytest.mark.parametrize("op", _params(PROJECT_CHANGES))
def test_a_visitor_cannot_change_anything(world: World, op: Operation) -> None:
    assert_error(world.request_for(op, world.visitor), 403, "E18002", "visitor")


def _names_existing_resources(op: Operation) -> bool:
    """Every path parameter of ``op`` names something the module created."""
    segments = op.path.split("/")
    return all(
        segment == "{name}" and segments[i - 1] in CREATED
        for i, segment in enumerate(segments)
        if segment.startswith("{") and segment != "{project}"
    )


@pytest.mark.parametrize("op", _params(PROJECT_READS))
def test_a_visitor_can_read(world: World, op: Operation) -> None:
    response = world.request_for(op, world.visitor)
    assert _passed_access(response), response.text
    if op.method == "GET" and _names_existing_resources(op):
        assert response.status_code == 200, response.text
    elif op.method == "GET":
        # a resource the module did not create (e.g. a job): only "not found" may come back
        assert response.status_code in (200, 404), response.text


@pytest.mark.parametrize("op", _params([op for op in PROJECT_CHANGES if op.key in OWNER_ONLY]))
def test_an_editor_cannot_do_owner_only_changes(world: World, op: Operation) -> None:
    assert_error(world.request_for(op, world.editor), 403, "E18002", "editor")


@pytest.mark.parametrize("op", _params([op for op in PROJECT_CHANGES if op.key not in OWNER_ONLY]))
def test_an_editor_can_do_other_changes(world: World, op: Operation) -> None:
    # `thing2` does not exist: the module's resources stay for the other tests
    response = world.request_for(op, world.editor, name="thing2")
    assert _passed_access(response), response.text


@pytest.mark.parametrize("op", _params(IN_PROJECT))
def test_an_owner_member_can_do_everything(world: World, op: Operation) -> None:
    # its own project: the walk may delete it (DELETE /projects/{project})
    api = world.api
    project = f"authz_own_{uuid.uuid4().hex[:10]}"
    _ok(api.post("/projects", json={"name": project}), 201)
    owner = api.get("/users/me", token=world.owner).json()["name"]
    _ok(api.put(f"/projects/{project}/members/{owner}", json={"role": "owner"}))
    try:
        response = world.request_for(op, world.owner, project=project)
        assert _passed_access(response), response.text
    finally:
        api.delete(f"/projects/{project}")


@pytest.mark.parametrize("op", _params(ADMIN_ONLY))
def test_a_plain_user_cannot_do_administrator_operations(world: World, op: Operation) -> None:
    # The administrator check is made by the service, after FastAPI validated the body, so
    # this test sends a valid body: with `{}` a plain user would get 400 for the body first.
    response = request_for(
        world.api.client, op, world.editor, world.project, world.outsider_name, valid_body=True
    )
    assert_error(response, 403, "E18002", "administrator")
