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
