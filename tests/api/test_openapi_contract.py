"""Static checks on the OpenAPI document the app publishes.

The document comes from ``create_app().openapi()``: building the app needs no database, so
these tests run once (not per metadata-store backend). Every check is parametrized by
operation, so a failure names the operation that breaks the contract.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
HEALTH = ("GET", "/api/v1/health")
ERROR_REF = "#/components/schemas/ErrorResponse"
ERROR_KEYS = {"error_code", "error_msg", "request_id"}

SPEC: dict[str, Any] = create_app().openapi()
OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    (method.upper(), path, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method in HTTP_METHODS
]
IDS = [f"{method} {path}" for method, path, _ in OPERATIONS]
PROTECTED = [op for op in OPERATIONS if (op[0], op[1]) != HEALTH]
PROTECTED_IDS = [f"{method} {path}" for method, path, _ in PROTECTED]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (one level at a time) to the object it names."""
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def json_schema_of(response: dict[str, Any]) -> dict[str, Any] | None:
    content = resolve(response).get("content", {})
    media = content.get("application/json")
    return None if media is None else media.get("schema")


def is_typed(schema: dict[str, Any]) -> bool:
    """A schema that says what the body is: a named model, or a typed/composed schema."""
    if "$ref" in schema:
        return True
    if schema.get("type") == "array":
        return is_typed(schema.get("items", {}))
    return bool(schema.get("type") or schema.get("anyOf") or schema.get("oneOf"))


def test_the_document_lists_operations() -> None:
    assert SPEC["openapi"].startswith("3.")
    assert HEALTH in {(m, p) for m, p, _ in OPERATIONS}
    assert len(OPERATIONS) > 10


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_operation_has_a_summary(method: str, path: str, operation: dict[str, Any]) -> None:
    summary = operation.get("summary", "")
    assert isinstance(summary, str)
    assert summary.strip(), f"{method} {path} has no summary"


@pytest.mark.parametrize(("method", "path", "operation"), PROTECTED, ids=PROTECTED_IDS)
def test_protected_operations_document_401_with_the_error_model(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    responses = operation.get("responses", {})
    assert "401" in responses, f"{method} {path} does not document 401 (it needs a token)"
    schema = json_schema_of(responses["401"])
    assert schema is not None, f"{method} {path}: 401 has no application/json body"
    assert schema.get("$ref") == ERROR_REF, f"{method} {path}: 401 body is {schema}"


@pytest.mark.parametrize(("method", "path", "operation"), PROTECTED, ids=PROTECTED_IDS)
def test_protected_operations_declare_both_security_schemes(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    security = operation.get("security")
    assert security, f"{method} {path} declares no security requirement"
    named = {name for requirement in security for name in requirement}
    schemes = SPEC["components"]["securitySchemes"]
    kinds = {(schemes[name]["type"], schemes[name].get("scheme", "")) for name in named}
    assert ("http", "bearer") in kinds, security
    assert any(schemes[n]["type"] == "apiKey" for n in named), security
    # either scheme alone is enough: they are alternatives, not a combined requirement
    assert all(len(requirement) == 1 for requirement in security), security


def test_health_needs_no_token_in_the_document() -> None:
    operation = SPEC["paths"]["/api/v1/health"]["get"]
    assert not operation.get("security")


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_operation_has_a_typed_success_response(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    responses = operation.get("responses", {})
    success = sorted(code for code in responses if code.startswith("2"))
    assert len(success) == 1, f"{method} {path}: success responses {success}"
    code = success[0]
    schema = json_schema_of(responses[code])
    if code == "204":
        assert schema is None, f"{method} {path}: a 204 must not document a body"
        return
    assert schema is not None, f"{method} {path}: {code} documents no application/json body"
    assert is_typed(schema), f"{method} {path}: {code} body is untyped: {schema}"


def test_both_security_schemes_are_declared() -> None:
    schemes = SPEC["components"]["securitySchemes"]
    bearer = [s for s in schemes.values() if s["type"] == "http"]
    assert len(bearer) == 1
    assert bearer[0]["scheme"].lower() == "bearer"
    api_key = [s for s in schemes.values() if s["type"] == "apiKey"]
    assert len(api_key) == 1
    assert api_key[0]["in"] == "header"
    assert api_key[0]["name"] == "X-Auth-Token"


def test_the_error_model_is_the_documented_error_body() -> None:
    model = resolve({"$ref": ERROR_REF})
    assert set(model["properties"]) == ERROR_KEYS
    assert set(model["required"]) == ERROR_KEYS
    assert all(model["properties"][key]["type"] == "string" for key in ERROR_KEYS)


def test_documented_error_responses_use_the_error_model() -> None:
    """Every 4xx/5xx an operation documents has the body the app really sends.

    The app answers every error, validation errors included (400 E18011 and friends), with
    ``{"error_code", "error_msg", "request_id"}``; a documented error response with another
    body (such as FastAPI's default ``422 HTTPValidationError``) describes answers the app
    never gives.
    """
    foreign = []
    for method, path, operation in OPERATIONS:
        for code, response in operation.get("responses", {}).items():
            if code[0] in "45":
                schema = json_schema_of(response) or {}
                if schema.get("$ref") != ERROR_REF:
                    foreign.append(f"{method} {path} {code}: {schema}")
    assert not foreign, "\n".join(foreign)


@pytest.mark.slow
def test_docs_page_is_html_and_points_at_the_served_document() -> None:
    # No `with`: the lifespan (which opens the metadata store) is not needed for these pages.
    client = TestClient(create_app())
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "<html" in docs.text.lower()
    assert "/openapi.json" in docs.text
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == SPEC


NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$"
NAME_PARAMETERS = {"project", "name", "job", "user", "srcDatasource", "srcJob"}
"""Parameters that are names under the name rule, wherever they appear."""
NAME_FIELDS = (
    ("ProjectCreate", "name", NAME_PATTERN, 128),
    ("UserCreate", "name", NAME_PATTERN, 128),
    ("TokenCreate", "name", NAME_PATTERN, 128),
    ("Src", "name", NAME_PATTERN, 128),
    ("RunAction", "jobName", NAME_PATTERN, 128),
    ("Src", "tableName", r"^[a-zA-Z][a-zA-Z0-9_]{0,127}$", 128),
    ("Param", "name", r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$", 64),
    ("ParamValue", "name", r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$", 64),
)
"""Request fields whose rule the server checks: (model, field, pattern, maxLength)."""
SORT_PARAMETERS = {
    ("/api/v1/projects/{project}/datasources", "get"): {"name", "createdAt", "updatedAt"},
    ("/api/v1/projects/{project}/jobs/{name}/history", "get"): {
        "endTime",
        "startTime",
        "batchTime",
        "runId",
    },
    ("/api/v1/projects/{project}/streaming/jobs", "get"): {"createdAt", "updatedAt", "jobName"},
}
AT_PARAMETERS = (
    ("/api/v1/projects/{project}/datasources/{name}/preview", "get"),
    ("/api/v1/projects/{project}/variables/{name}", "get"),
)
PARAMETERS = [
    (method.upper(), path, parameter)
    for method, path, operation in ((m.lower(), p, o) for m, p, o in OPERATIONS)
    for parameter in operation.get("parameters", [])
]


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its ``null`` alternative (an optional parameter)."""
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return resolve(options[0]) if len(options) == 1 else resolve(schema)


def test_name_parameters_carry_the_name_rule() -> None:
    names = [p for p in PARAMETERS if p[2]["name"] in NAME_PARAMETERS]
    assert len(names) > 60
    wrong = [
        f"{method} {path} {parameter['name']}: {schema}"
        for method, path, parameter in names
        if (schema := _non_null(parameter["schema"])).get("pattern") != NAME_PATTERN
        or schema.get("maxLength") != 128
        or schema.get("minLength") != 1
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("model", "field", "pattern", "max_length"), NAME_FIELDS)
def test_name_fields_carry_their_rule(
    model: str, field: str, pattern: str, max_length: int
) -> None:
    schema = _non_null(SPEC["components"]["schemas"][model]["properties"][field])
    assert schema.get("pattern") == pattern, schema
    assert schema.get("maxLength") == max_length, schema


def _request_strings(node: Any, where: str, seen: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every string schema reachable from a request body or parameter schema."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                found += _request_strings(resolve(node), name, seen)
            return found
        if node.get("type") == "string":
            found.append((where, node))
        for key, value in node.items():
            found += _request_strings(value, f"{where}.{key}", seen)
    elif isinstance(node, list):
        for item in node:
            found += _request_strings(item, where, seen)
    return found


def test_request_text_has_its_real_length_limit() -> None:
    """No request text is capped only by the generic 65536 every string got by default.

    The SQL of a job (``Computation.code``) is the one field whose real limit is 65536.
    """
    seen: set[str] = set()
    strings: list[tuple[str, dict[str, Any]]] = []
    for method, path, operation in OPERATIONS:
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        strings += _request_strings(body.get("schema", {}), f"{method} {path}", seen)
        for parameter in operation.get("parameters", []):
            strings += _request_strings(parameter["schema"], f"{method} {path}", seen)
    generic = [
        where
        for where, schema in strings
        if schema.get("maxLength") == 65536 and not where.startswith("Computation.properties.code")
    ]
    assert not generic, generic


@pytest.mark.parametrize(("path", "method"), list(SORT_PARAMETERS))
def test_sort_parameters_are_enums(path: str, method: str) -> None:
    (parameter,) = [p for p in SPEC["paths"][path][method]["parameters"] if p["name"] == "sortBy"]
    values = set(_non_null(parameter["schema"]).get("enum", []))
    fields = SORT_PARAMETERS[(path, method)]
    assert values == fields | {f"-{field}" for field in fields}, parameter


@pytest.mark.parametrize(("path", "method"), AT_PARAMETERS)
def test_at_is_typed_as_what_the_server_accepts(path: str, method: str) -> None:
    (parameter,) = [p for p in SPEC["paths"][path][method]["parameters"] if p["name"] == "at"]
    options = [s for s in parameter["schema"]["anyOf"] if s.get("type") != "null"]
    kinds = {(s["type"], s.get("format")) for s in options}
    assert kinds == {("string", "date-time"), ("string", "date"), ("number", None)}, options


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_nul_refusal_is_documented(method: str, path: str, operation: dict[str, Any]) -> None:
    """A body, and every free-text parameter, say that NUL is refused."""
    if "requestBody" in operation:
        assert "NUL" in operation["requestBody"].get("description", ""), operation["requestBody"]
    for parameter in operation.get("parameters", []):
        schema = _non_null(parameter["schema"])
        if schema.get("type") == "string" and "enum" not in schema:
            assert "NUL" in parameter.get("description", ""), (method, path, parameter)


def test_the_src_filters_document_their_exclusion() -> None:
    parameters = {
        p["name"]: p for p in SPEC["paths"]["/api/v1/projects/{project}/jobs"]["get"]["parameters"]
    }
    assert "srcJob" in parameters["srcDatasource"]["description"]
    assert "srcDatasource" in parameters["srcJob"]["description"]
