"""Schemathesis over every operation of the OpenAPI document, as the administrator.

How it works
------------
* The schema is loaded with ``schemathesis.openapi.from_asgi`` from :data:`BACKEND_APP`, a
  small ASGI app that forwards every request to the app of the backend under test (the
  ``client`` fixture's app, which shares the backend's runtime and metadata store).
  ``@SCHEMA.parametrize()`` makes one test per operation
  (``test_fuzz[POST /api/v1/projects][sqlite]``), run on every backend; ``call_and_validate``
  sends the cases in-process through schemathesis's ASGI transport.
* Every case carries the bootstrap administrator's token, set by an auth provider
  registered on the schema (``SCHEMA.auth()``), so schemathesis knows the credentials are
  explicit: its ``ignored_auth`` check re-sends successful requests without them and with a
  bad token and expects 401. A case the server answers with 401 although it carried the
  token fails the test (the token must never be lost, e.g. revoked by a case).
* Path parameters are steered before the call (:meth:`Fuzzer.steer`) so that most cases
  reach deep code paths and every side effect stays inside the fuzzer's own resources. The
  value a parameter is judged by is the one the server will see (percent-decoded; for
  ``token_id`` parsed as FastAPI parses it, so ``"01"`` and ``"1.0"`` count as token 1):

  - ``{project}`` becomes the fuzzer's project, except that an unknown name is kept for one
    case in four (chosen by a hash of the generated value and of a draw counter: a value
    generated again and again, such as a pattern's shortest match, still goes both ways),
    which exercises the 404 path.
    The name of *another* existing project is always replaced.
  - ``{name}`` under a project names the fuzzer's pre-created resource (secret, variable,
    data source ``fz_thing``, recreated first if a previous case deleted it), and ``{user}``
    the fuzzer's member, half of the time.
  - ``/users/{name}`` and ``/tokens/{token_id}``: a user or token the fuzzer does not own
    (``admin`` excepted for users, which the server refuses to delete) is replaced by a
    throwaway one created for the case; half of the other cases get a throwaway one too,
    so deletion and token issuing succeed as well as fail.
  - Projects, users and tokens a case creates (201) are deleted or revoked right away; a
    deleted fuzzer project is recreated, with its resources, before the next case.

  ``test_most_cases_hit_an_existing_project`` checks that at least half of the cases with a
  ``{project}`` were sent to an existing project.
* Undeclared methods (``TRACE /api/v1/health``...) are sent by ``test_undeclared_methods``,
  with a second schema whose only phase is the coverage phase and which keeps only its
  undeclared-method cases; the fuzz schema generates none (``unexpected-methods = []``). So
  a defect in the answer to undeclared methods, which every operation shares, fails one
  test per operation of its own and does not stop every operation's fuzzing at its first
  coverage case.

Checks
------
Cases are generated in both modes: positive (valid by the schema) and negative (invalid by
it). Conformance is checked both ways:

* a request valid by the schema is not refused for its form:
  :func:`schema_valid_data_is_not_refused` fails a positive case answered 422, or 400/415
  with a request-validation code (:data:`SCHEMA_LEVEL_CODES`), unless a rule the schema
  cannot express explains it (:data:`DOCUMENTED_RULES`, kept as data). Refusals for what
  a request means (404, 409, 403, 413, and 400 with a semantic code such as E18109 or
  E18118) are legitimate;
* a request invalid by the schema is refused with 4xx, never accepted (schemathesis's
  ``negative_data_rejection``) and never answered 500 (``not_a_server_error``).

Every other built-in check of schemathesis runs as well (``status_code_conformance``,
``content_type_conformance``, ``response_schema_conformance``,
``response_headers_conformance``, ``ignored_auth``, ``unsupported_method``, ...): answers
have documented status codes and bodies. Schemathesis's own ``positive_data_acceptance``
is replaced by the first check above (see :data:`CHECKS`), and :func:`error_body_shape`
checks that every error response body is exactly ``{"error_code", "error_msg",
"request_id"}``, with the request id of the ``X-Request-ID`` header.

Budget: ``MAX_EXAMPLES`` generated cases per operation after schemathesis's explicit
coverage cases, no deadline, no shrinking (``DATAMILL_FUZZ_SHRINK=1`` turns it on), a fixed
seed (``DATAMILL_FUZZ_SEED`` overrides it) so a run can be repeated, and no example database
(nothing is written to ``.hypothesis/``).

Nothing is skipped or excluded: a failing case is an app bug to report, not to hide.
"""

from __future__ import annotations

import os
import re
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from datamill.api.app import create_app
from datamill.services.runtime import Runtime
from datamill.store.projects import get_project
from datamill.store.users import TokenRow, UserRow
from tests.conftest import Api

pytestmark = pytest.mark.slow  # every operation of the API, several cases each

MAX_EXAMPLES = 25
SEED = int(os.environ.get("DATAMILL_FUZZ_SEED", "20240611"))
THING = "fz_thing"
ADMIN = "admin"
ERROR_KEYS = {"error_code", "error_msg", "request_id"}
PLACEHOLDER = "token-of-the-backend-under-test"

GENERATION: dict[str, Any] = {
    "max-examples": MAX_EXAMPLES,
    # The auth provider sends the real token; generated Authorization / X-Auth-Token values
    # would replace it and turn most cases into 401s.
    "with-security-parameters": False,
    "database": "none",
    # The API ignores query parameters it does not declare, as most do; a "negative" case
    # made only of an extra one (`?=null`) is not an invalid request here.
    "allow-extra-parameters": False,
    # Shrinking a failure can take Hypothesis five minutes per operation; the failing case
    # is reported as found. DATAMILL_FUZZ_SHRINK=1 shrinks it to a minimal one.
    "no-shrink": os.environ.get("DATAMILL_FUZZ_SHRINK", "") != "1",
}
CHECKS: dict[str, Any] = {
    # Replaced by `schema_valid_data_is_not_refused`: schemathesis's own check expects every
    # schema-valid request to succeed, but a request can be well formed and still refused
    # for what it means (no such job, a name in use, a spec that does not fit its type, an
    # address the outbound guard refuses...). The replacement fails only a refusal of the
    # request's form.
    "positive_data_acceptance": {"enabled": False},
    # 413 is a rejection too: the server refuses a body over its size limit (64 KiB in the
    # tests) before reading it, and such bodies are generated to break a maxLength of 65536.
    "negative_data_rejection": {
        "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422]
    },
}
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": GENERATION,
        "checks": CHECKS,
        # undeclared methods are sent by `test_undeclared_methods` (see the docstring)
        "phases": {"coverage": {"unexpected-methods": []}},
    }
)
METHODS_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": GENERATION,
        "checks": CHECKS,
        "phases": {"examples": {"enabled": False}, "fuzzing": {"enabled": False}},
    }
)


class BackendApp:
    """The ASGI app schemathesis talks to: it forwards every request to ``target``.

    ``target`` starts as an app without a runtime (enough to serve ``/openapi.json``) and is
    the ``client`` fixture's app (bound to the backend under test) while the tests run.
    Lifespan events are answered here and not forwarded: each backend's app was started by
    its ``client`` fixture, and starting the runtime-less app would open a default store.
    An unhandled error that the app already answered with 500 is not raised again.
    """

    def __init__(self) -> None:
        self.target: Any = create_app()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.target(scope, receive, tracking_send)
        except Exception:
            # Starlette answers an unhandled error with 500 and then re-raises it for the
            # server to log. Like `TestClient(raise_server_exceptions=False)`, keep the
            # answer, so that `not_a_server_error` reports the request and the 500.
            if not started:
                raise


BACKEND_APP = BackendApp()
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", BACKEND_APP, config=CONFIG)
METHODS_SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", BACKEND_APP, config=METHODS_CONFIG)
DECLARED = {
    path: {method.upper() for method in item}
    for path, item in BACKEND_APP.target.openapi()["paths"].items()
}
_TOKEN: dict[str, str] = {}


class AdminToken:
    """The bootstrap administrator's token of the backend under test, as a bearer token.

    Schemathesis builds its coverage cases at collection time, before any backend exists:
    those carry :data:`PLACEHOLDER`; :func:`run` sends every case with the token of the
    backend under test.
    """

    def get(self, case: Any, ctx: Any) -> str:
        return _TOKEN.get("value", PLACEHOLDER)

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


SCHEMA.auth(refresh_interval=None, retry_on=[])(AdminToken)
METHODS_SCHEMA.auth(refresh_interval=None, retry_on=[])(AdminToken)


SCHEMA_LEVEL_CODES = {
    "E18004": "invalid content length",
    "E18006": "request body is empty",
    "E18007": "request body is not valid JSON",
    "E18008": "a field is longer than its limit",
    "E18011": "a field or parameter breaks its rule",
    "E18012": "request body must be application/json",
    "E18103": "invalid name",
    "E18106": "invalid field name",
}
"""The codes of refusals of a request's form (api/errors.py turns request validation into
them): a request valid by the schema must not get one, except for a documented rule below."""

DOCUMENTED_RULES: tuple[tuple[str, str, str], ...] = (
    (
        "E18011",
        r"NUL character",
        "NUL is refused in every text; the rule is stated in the description of every "
        "body and text parameter, since a JSON schema pattern on every string would hide "
        "the real pattern of the field",
    ),
    (
        ".*",
        r"^spec[.\[:]",
        "a data source's or an export's `spec` is an object validated by its `type`; the "
        "schema documents it as a free-form object",
    ),
    (
        "E18011",
        r"^srcDatasource and srcJob cannot be given together",
        "the exclusion is stated in both parameters' descriptions",
    ),
    (
        "E18011",
        r"^format: format is only allowed for variables of type time",
        "a rule across two fields of a variable, stated in the description of `format`",
    ),
    (
        "E18011",
        r": must be an integer, not a number \(-?\d+\.0\)( \(and \d+ more problems\))?$",
        "JSON Schema counts 8.0 as an integer; integer fields take only JSON integers (8), "
        "as the API description says. Only an integral float matches: a fraction or a "
        "string is refused by the schema too",
    ),
    (
        "E18011",
        r"^url: the host in brackets is not an IPv6 address",
        "an engine connection's url: the pattern admits hex digits and colons in brackets; "
        "that they form an IPv6 address is checked by the server",
    ),
    (
        "E18106",
        r"^schema: field '.*' appears twice in the schema",
        "keys unique within the array of fields, stated in the description of `schema`",
    ),
)
"""Refusals of schema-valid requests for a rule the JSON schema cannot express: (code
pattern, message pattern, why). Kept as data so that each exception is visible and
justified; anything else is a disagreement between the schema and the server."""


def _documented(code: str, message: str) -> bool:
    return any(
        re.fullmatch(codes, code) and re.search(text, message)
        for codes, text, _ in DOCUMENTED_RULES
    )


@schemathesis.check
def schema_valid_data_is_not_refused(
    ctx: schemathesis.CheckContext, response: Any, case: Any
) -> bool | None:
    """A request valid by the schema is not refused for its form (400/415/422 with a code of
    :data:`SCHEMA_LEVEL_CODES`), unless by one of the :data:`DOCUMENTED_RULES`.

    Refusals for what a request means are legitimate and pass: 404 (no such resource), 409
    (a name in use), 403, 413 (the server's body limit), and 400 codes of semantic rules
    (E18109 invalid spec, E18118 outbound address refused, E18209 invalid SQL ...).
    """
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 415, 422):
        return None
    body = response.json()
    code, message = str(body.get("error_code")), str(body.get("error_msg"))
    if response.status_code == 422 or (
        code in SCHEMA_LEVEL_CODES and not _documented(code, message)
    ):
        raise AssertionError(
            f"a request valid by the schema was refused: {response.status_code} {code} "
            f"{message!r} ({SCHEMA_LEVEL_CODES.get(code, 'unexpected status')})"
        )
    return True


@schemathesis.check
def error_body_shape(ctx: schemathesis.CheckContext, response: Any, case: Any) -> bool | None:
    """An error response is exactly the error model, with the request id of the header."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    assert set(body) == ERROR_KEYS, f"error body keys {sorted(body)}, expected {sorted(ERROR_KEYS)}"
    assert str(body["error_code"]).startswith("E18"), body
    request_ids = response.headers.get("x-request-id") or []
    assert body["request_id"] in request_ids, (body, request_ids)
    return True


def _sent(value: Any) -> str:
    """The path parameter as the server sees it (schemathesis sends it percent-encoded)."""
    return unquote(str(value))


_INT = TypeAdapter(int)


def _as_token_id(value: Any) -> int | None:
    """The token id the server would read from the path value (FastAPI parses it laxly)."""
    try:
        return _INT.validate_python(_sent(value))
    except ValidationError:
        return None


@dataclass
class Fuzzer:
    """The fuzzer's own resources on one backend, and the steering of path parameters."""

    api: Api
    runtime: Runtime
    project: str = field(default_factory=lambda: f"fz_{uuid.uuid4().hex[:10]}")
    member: str = ""
    users: set[str] = field(default_factory=set)
    tokens: set[int] = field(default_factory=set)
    stats: Counter[str] = field(default_factory=Counter)

    # -- own resources

    def create_project(self) -> None:
        api, project = self.api, self.project
        created = api.post("/projects", json={"name": project, "description": "fuzz"})
        assert created.status_code == 201, created.text
        folder = api.data_root / project
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data.csv").write_text("a,b,c\n1,x,2024-01-01\n2,y,2024-01-02\n")
        if not self.member or not self.user_exists(self.member):
            self.member = self.throwaway_user()
        added = api.put(f"/projects/{project}/members/{self.member}", json={"role": "visitor"})
        assert added.status_code == 200, added.text
        for kind in ("secrets", "variables", "datasources"):
            self.ensure(kind)

    def ensure_project(self) -> None:
        if not self.project_exists(self.project):
            self.create_project()

    def ensure(self, kind: str) -> None:
        """The pre-created resource of ``kind`` exists in the fuzzer's project."""
        bodies: dict[str, Any] = {
            "secrets": {"values": {"accessKeyId": "a", "secretAccessKey": "b"}},
            "variables": {"type": "time", "value": "$(now)-1d"},
            "datasources": {
                "type": "file",
                "spec": {
                    "fileType": "csv",
                    "delimiter": ",",
                    "containsHeader": True,
                    "paths": ["data.csv"],
                },
            },
        }
        url = f"/projects/{self.project}/{kind}/{THING}"
        if kind in bodies and self.api.get(url).status_code == 404:
            created = self.api.post(url, json=bodies[kind])
            assert created.status_code == 201, created.text

    def throwaway_user(self) -> str:
        name = f"fz_user_{uuid.uuid4().hex[:8]}"
        created = self.api.post("/users", json={"name": name})
        assert created.status_code == 201, created.text
        self.users.add(name)
        return name

    def throwaway_token(self) -> int:
        issued = self.api.post("/tokens", json={"name": "fuzz"})
        assert issued.status_code == 201, issued.text
        token_id = int(issued.json()["id"])
        self.tokens.add(token_id)
        return token_id

    def project_exists(self, name: str) -> bool:
        with self.runtime.sessions() as session:
            return get_project(session, name) is not None

    def user_exists(self, name: str) -> bool:
        with self.runtime.sessions() as session:
            return session.scalars(select(UserRow).where(UserRow.name == name)).first() is not None

    def token_exists(self, token_id: int) -> bool:
        try:
            with self.runtime.sessions() as session:
                return session.get(TokenRow, token_id) is not None
        except (DBAPIError, OverflowError):  # out of the id column's range: no such token
            return False

    # -- steering

    def bucket(self, value: Any, buckets: int) -> int:
        """A repeatable pseudo-random bucket for a generated value (Hypothesis stays in
        charge): the same run of cases gives the same buckets."""
        self.stats["draws"] += 1
        return zlib.crc32(f"{value!r}/{self.stats['draws']}".encode()) % buckets

    def steer(self, case: Any) -> None:
        """Point the case's path parameters at the fuzzer's resources (see the docstring)."""
        params = case.path_parameters
        if "project" in params:
            self.steer_project(case)
        if case.path.startswith("/api/v1/users/{name}"):
            value = params["name"]
            name = _sent(value)
            foreign = name not in self.users and name != ADMIN and self.user_exists(name)
            if foreign or name == self.member:
                params["name"] = self.throwaway_user()
            elif self.bucket(value, 2) == 0:
                params["name"] = self.throwaway_user() if case.method == "DELETE" else ADMIN
        if "token_id" in params:
            value = params["token_id"]
            token_id = _as_token_id(value)
            foreign = token_id is not None and token_id not in self.tokens
            if (foreign and self.token_exists(token_id or 0)) or self.bucket(value, 2) == 0:
                params["token_id"] = self.throwaway_token()

    def steer_project(self, case: Any) -> None:
        params = case.path_parameters
        self.ensure_project()
        value = params["project"]
        name = _sent(value)
        if name != self.project and (self.project_exists(name) or self.bucket(value, 4) != 0):
            params["project"] = self.project
        # a name kept is the fuzzer's (just ensured to exist) or one that does not exist
        self.stats["project_cases"] += 1
        if params["project"] == self.project:
            self.stats["existing_project"] += 1
        segments = case.path.split("/")
        for key in ("name", "user"):
            placeholder = "{" + key + "}"
            if placeholder in segments and self.bucket(params[key], 2) == 0:
                if key == "user":
                    params[key] = self.member
                else:
                    params[key] = THING
                    self.ensure(segments[segments.index(placeholder) - 1])

    def clean_up(self, case: Any, response: Any) -> None:
        """Delete or revoke what a successful case created outside the fuzzer's project."""
        if case.method != "POST" or response.status_code != 201:
            return
        body = response.json()
        if case.path == "/api/v1/projects":
            self.api.delete(f"/projects/{body['name']}")
        elif case.path == "/api/v1/users":
            self.api.delete(f"/users/{body['name']}")
        elif case.path.endswith("/tokens"):
            self.api.delete(f"/tokens/{body['id']}")


STATS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module")
def fuzzer(
    client: TestClient, admin_token: str, runtime: Runtime, backend: str
) -> Iterator[Fuzzer]:
    api = Api(client, admin_token, runtime)
    fuzzer = Fuzzer(api=api, runtime=runtime)
    fuzzer.create_project()
    STATS[backend] = fuzzer.stats
    _TOKEN["value"] = admin_token
    BACKEND_APP.target = client.app
    yield fuzzer
    api.delete(f"/projects/{fuzzer.project}")
    for name in fuzzer.users:
        api.delete(f"/users/{name}")


def run(case: Any, fuzzer: Fuzzer) -> None:
    """Steer, send and validate one case, then clean up after it.

    Schemathesis builds its coverage cases once, at collection time, and hands the same
    objects to every backend's test: the token and path parameters set here are put back
    afterwards, so each backend starts from the generated values.
    """
    saved_params = dict(case.path_parameters)
    saved_auth = case.headers.get("Authorization")
    try:
        case.headers["Authorization"] = f"Bearer {fuzzer.api.token}"
        fuzzer.steer(case)
        fuzzer.stats["cases"] += 1
        response = case.call_and_validate(
            additional_checks=[error_body_shape, schema_valid_data_is_not_refused]
        )
        assert response.status_code != 401, (
            "the administrator's token was refused; did a case revoke it?",
            case.method,
            case.formatted_path,
            response.text,
        )
        fuzzer.clean_up(case, response)
    finally:
        case.path_parameters.clear()
        case.path_parameters.update(saved_params)
        if saved_auth is None:
            case.headers.pop("Authorization", None)
        else:
            case.headers["Authorization"] = saved_auth


HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@SCHEMA.parametrize()
@HYPOTHESIS
def test_fuzz(case: Any, fuzzer: Fuzzer) -> None:
    run(case, fuzzer)


@METHODS_SCHEMA.parametrize()
@HYPOTHESIS
def test_undeclared_methods(case: Any, fuzzer: Fuzzer) -> None:
    """The coverage phase's cases that send a method the path does not declare."""
    if case.method.upper() in DECLARED[case.path]:
        return  # the other coverage cases are test_fuzz's
    fuzzer.stats["undeclared_method_cases"] += 1
    run(case, fuzzer)


def test_most_cases_hit_an_existing_project(backend: str) -> None:
    stats = STATS.get(backend)
    if not stats or not stats["project_cases"]:
        pytest.skip("test_fuzz was deselected in this run (e.g. -k); this checks its statistics")
    assert stats["existing_project"] * 2 >= stats["project_cases"], dict(stats)
