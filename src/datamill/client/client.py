"""The Python client of datamill's REST API (``/api/v1``).

>>> from datamill.client import DatamillClient
>>> with DatamillClient("http://127.0.0.1:8270", token="dm_...") as dm:
...     dm.projects.create("sales", "monthly sales figures")
...     for source in dm.datasources.iter_all("sales"):
...         print(source.name, [f.key for f in source.schema_])

Every call returns the API's own pydantic models (:mod:`datamill.domain`), a :class:`Page`
of them, or ``None`` for a delete. Failures raise :class:`DatamillAPIError` (a subclass per
kind: :class:`NotFound`, :class:`Conflict` ...) or :class:`DatamillConnectionError`.
"""

from __future__ import annotations

import builtins
import json as jsonlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from datamill import __version__
from datamill.client.errors import (
    DatamillConnectionError,
    DatamillProtocolError,
    InvalidName,
    NotFound,
    RunWaitTimeout,
    StateWaitTimeout,
    error_from_response,
)
from datamill.client.models import (
    TERMINAL,
    Computation,
    Container,
    DataSource,
    Export,
    ExportHistory,
    ExportRunEntry,
    Health,
    History,
    HistoryEntry,
    IssuedToken,
    Job,
    JobBody,
    JobStopResult,
    Member,
    Page,
    Param,
    Preview,
    Principal,
    Project,
    RerunResult,
    ResolvedVariable,
    Role,
    RunLog,
    RunResult,
    RunStatus,
    Scheduler,
    SchemaField,
    Secret,
    Src,
    StopResult,
    StreamingActionResult,
    StreamingIngestResult,
    StreamingJob,
    StreamingJobBody,
    StreamingJobState,
    StreamingJobSummary,
    StreamingMetrics,
    StreamingSaveResult,
    Token,
    User,
    Variable,
    VariableType,
    Version,
)
from datamill.errors import E

__all__ = [
    "DEFAULT_URL",
    "BatchAPI",
    "DataSourcesAPI",
    "DatamillClient",
    "ExportsAPI",
    "JobsAPI",
    "MembersAPI",
    "ProjectsAPI",
    "SchemasAPI",
    "SecretsAPI",
    "StreamingAPI",
    "TokensAPI",
    "UsersAPI",
    "VariablesAPI",
]

DEFAULT_URL = "http://127.0.0.1:8270"
API_PREFIX = "/api/v1"
ITER_PAGE_SIZE = 500
"""Items per request when :meth:`iter_all` walks a list."""

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

SchemaInput = Sequence[SchemaField | Mapping[str, Any]]
Moment = datetime | str


def _segment(value: str | int) -> str:
    """One path segment, escaped so a name can never change the route it is sent to.

    A ``/`` is refused outright: servers decode ``%2F`` before routing, so escaping it
    would not keep ``x/preview`` from reaching another route.
    """
    if "/" in str(value):
        raise InvalidName(f"invalid name {str(value)[:140]!r}: names cannot contain '/'")
    text = quote(str(value), safe="")
    if text in {".", ".."}:
        text = text.replace(".", "%2E")
    return text


def _moment(value: Moment | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else value


def _schema_json(schema: SchemaInput | None) -> list[dict[str, Any]] | None:
    if schema is None:
        return None
    return [
        item.model_dump(mode="json") if isinstance(item, SchemaField) else dict(item)
        for item in schema
    ]


RunEntry = TypeVar("RunEntry", HistoryEntry, ExportRunEntry)

DEFAULT_WAIT_SECONDS = 600.0
"""How long :meth:`JobsAPI.wait` waits for a run by default."""
LONG_POLL_SECONDS = 30.0
"""The longest one wait request asks the server to hold its answer (it allows 60)."""
LONG_POLL_MARGIN = 5.0
"""Seconds of the HTTP timeout left for the answer to arrive after the hold."""


def _walk(fetch: Callable[[int, int], Page[T]], size: int) -> Iterator[T]:
    page = 1
    while True:
        result = fetch(page, size)
        yield from result.items
        if not result.items or not result.has_next:
            return
        page += 1


class DatamillClient:
    """A connection to one datamill server, acting with one token.

    ``base_url`` is the server's root (``http://host:8270``; a trailing ``/api/v1`` is
    accepted too). ``token`` is sent as ``Authorization: Bearer <token>``; only
    :meth:`health` works without one. ``http`` replaces the client's own ``httpx.Client``
    (a ``fastapi.testclient.TestClient``, or one with custom TLS or proxy settings): when
    that client has a base URL of its own, requests go there and ``base_url`` only names the
    server in messages; the given client is never closed by :meth:`close`. ``timeout``
    (seconds) applies to the client's own ``httpx.Client`` only.

    Resources hang off the client: :attr:`projects` (with :attr:`ProjectsAPI.members`),
    :attr:`users`, :attr:`tokens`, :attr:`datasources`, :attr:`schemas`, :attr:`variables`,
    :attr:`secrets`, :attr:`jobs` (batch SQL jobs and their runs), :attr:`exports` (where a
    job's results go after each run), :attr:`batch` (stop or rerun one run) and
    :attr:`streaming` (streaming pipelines: check, start, stop, records in, metrics). Use the
    client as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        root = base_url.strip().rstrip("/")
        root = root.removesuffix(API_PREFIX).rstrip("/")
        if not root.startswith(("http://", "https://")):
            raise ValueError(f"invalid server URL '{base_url}': use http(s)://host[:port]")
        self.token = token
        self.timeout = timeout
        self._owns_http = http is None
        if http is None:
            self.base_url = root
            self._prefix = API_PREFIX
            self._http = httpx.Client(
                base_url=root,
                timeout=timeout,
                headers={"User-Agent": f"datamill-client/{__version__}"},
            )
        elif str(http.base_url):
            self.base_url = str(http.base_url).rstrip("/")
            self._prefix = API_PREFIX
            self._http = http
        else:
            self.base_url = root
            self._prefix = root + API_PREFIX
            self._http = http
        self.projects = ProjectsAPI(self)
        self.users = UsersAPI(self)
        self.tokens = TokensAPI(self)
        self.datasources = DataSourcesAPI(self)
        self.schemas = SchemasAPI(self)
        self.variables = VariablesAPI(self)
        self.secrets = SecretsAPI(self)
        self.jobs = JobsAPI(self)
        self.exports = ExportsAPI(self)
        self.batch = BatchAPI(self)
        self.streaming = StreamingAPI(self)

    # -- lifecycle

    def close(self) -> None:
        """Close the client's own HTTP connections (a client passed as ``http`` stays open)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> DatamillClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DatamillClient({self.base_url!r}, token={'***' if self.token else None})"

    # -- service

    def health(self) -> Health:
        """Liveness and metadata-store health; needs no token."""
        return self.parse(Health, self.request("GET", "/health", auth=False))

    def version(self) -> Version:
        """The server's version and its metadata-store dialect."""
        return self.parse(Version, self.request("GET", "/version"))

    # -- plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request to ``/api/v1{path}`` and return its decoded JSON (``None`` if empty).

        The escape hatch for endpoints without a method here. ``params`` whose value is
        ``None`` are left out. ``content`` sends raw bytes instead of ``json``, with
        ``content_type`` as their Content-Type. Raises :class:`DatamillAPIError` for an
        error answer and :class:`DatamillConnectionError` when the server cannot be reached.
        """
        headers = {"Accept": "application/json"}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self._prefix + path
        try:
            response = self._http.request(
                method,
                url,
                params=query or None,
                json=json,
                content=content,
                headers=headers,
            )
        except httpx.TimeoutException as exc:
            raise DatamillConnectionError(
                f"the datamill server at {self.base_url} did not answer in time "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise DatamillConnectionError(
                f"invalid datamill server URL {self.base_url}: {exc}"
            ) from exc
        except httpx.ConnectError as exc:
            raise DatamillConnectionError(
                f"cannot reach the datamill server at {self.base_url}: {exc or 'connect failed'}"
            ) from exc
        except httpx.TransportError as exc:
            raise DatamillConnectionError(
                f"the connection to the datamill server at {self.base_url} failed: "
                f"{exc or type(exc).__name__}"
            ) from exc
        if not response.is_success:
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise DatamillProtocolError(
                f"{self.base_url} answered {method} {API_PREFIX}{path} with something that is "
                "not JSON: is it a datamill server?"
            ) from None

    @property
    def read_timeout(self) -> float | None:
        """Seconds the HTTP client waits for an answer (None: for ever)."""
        timeout = getattr(self._http, "timeout", None)
        read = getattr(timeout, "read", None)
        return float(read) if isinstance(read, int | float) else None

    def parse(self, model: type[M], data: Any) -> M:
        """Validate ``data`` as ``model``, ignoring top-level fields the model does not know.

        Fields a newer server adds therefore do not break an older client.
        """
        if not isinstance(data, Mapping):
            raise DatamillProtocolError(
                f"expected a JSON object for {model.__name__}, got {type(data).__name__}"
            )
        known = set(model.model_fields)
        known |= {f.alias for f in model.model_fields.values() if f.alias}
        try:
            return model.model_validate({k: v for k, v in data.items() if k in known})
        except ValidationError as exc:
            raise DatamillProtocolError(
                f"the server's answer is not a valid {model.__name__}: {exc}"
            ) from None

    def parse_page(self, model: type[M], data: Any, key: str) -> Page[M]:
        """Read a list answer ``{"total", "page", "size", key: [...]}`` into a :class:`Page`."""
        if not isinstance(data, Mapping) or not isinstance(data.get(key), list):
            raise DatamillProtocolError(f"expected a page of '{key}' from the server")
        try:
            return Page(
                total=int(data["total"]),
                page=int(data["page"]),
                size=int(data["size"]),
                items=[self.parse(model, item) for item in data[key]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatamillProtocolError(f"malformed page of '{key}': {exc}") from None


def _path(*segments: str | int) -> str:
    return "".join("/" + _segment(s) for s in segments)


class _Resource:
    def __init__(self, client: DatamillClient) -> None:
        self._client = client

    def _get(self, model: type[M], path: str, params: Mapping[str, Any] | None = None) -> M:
        return self._client.parse(model, self._client.request("GET", path, params=params))

    def _send(self, method: str, model: type[M], path: str, body: Any) -> M:
        return self._client.parse(model, self._client.request(method, path, json=body))

    def _page(
        self,
        model: type[M],
        path: str,
        key: str,
        page: int,
        size: int,
        params: Mapping[str, Any] | None = None,
    ) -> Page[M]:
        query = {"page": page, "size": size, **(params or {})}
        return self._client.parse_page(model, self._client.request("GET", path, params=query), key)

    def _delete(self, path: str) -> None:
        self._client.request("DELETE", path)

    def _wait_for_end(
        self,
        model: type[RunEntry],
        path_of: Callable[[int], str],
        run_id: int,
        late: Callable[[RunEntry], RunWaitTimeout],
        deadline: float | None,
        poll: float,
        max_poll: float | None,
    ) -> RunEntry:
        """Long-poll ``path_of(run_id)`` (``?waitSeconds=N``) until the run it shows is
        Successful, Failed or Canceled; raise ``late(last entry)`` past ``deadline``.

        Should an answer come back early with the run unfinished, the next request follows
        after ``poll`` seconds, a pause that grows by half up to ``max_poll``.
        """
        while True:
            hold = self._long_poll_seconds(deadline)
            asked = time.monotonic()
            entry = self._get(model, path_of(run_id), {"waitSeconds": round(hold, 3)})
            if entry.status in TERMINAL:
                return entry
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise late(entry)
            run_id = entry.runId  # -1 resolved: keep waiting for the same run
            if now - asked < hold / 2:  # answered early: do not flood the server
                pause = poll if deadline is None else min(poll, max(0.0, deadline - now))
                time.sleep(pause)
                if max_poll is not None and poll < max_poll:
                    poll = min(poll * 1.5, max_poll)

    def _long_poll_seconds(self, deadline: float | None) -> float:
        """How long one wait request may hold: what is left, within the HTTP timeout."""
        read = self._client.read_timeout
        hold = LONG_POLL_SECONDS
        if read is not None:  # the answer must come before the HTTP client gives up
            hold = min(hold, max(0.0, read - min(LONG_POLL_MARGIN, read / 2)))
        if deadline is not None:
            hold = min(hold, max(0.0, deadline - time.monotonic()))
        return hold


class MembersAPI(_Resource):
    """The members of a project and their roles (``/projects/{project}/members``)."""

    def list(self, project: str, *, page: int = 1, size: int = 50) -> Page[Member]:
        """One page of the project's members."""
        return self._page(Member, _path("projects", project, "members"), "members", page, size)

    def iter_all(self, project: str) -> Iterator[Member]:
        """Every member, walking the pages."""
        return _walk(lambda p, s: self.list(project, page=p, size=s), ITER_PAGE_SIZE)

    def put(self, project: str, user: str, role: Role | str = Role.editor) -> Member:
        """Add ``user`` to the project, or change their role (owners only)."""
        path = _path("projects", project, "members", user)
        return self._send("PUT", Member, path, {"role": str(role)})

    def remove(self, project: str, user: str) -> None:
        """Remove a member (owners only); the last owner cannot be removed."""
        self._delete(_path("projects", project, "members", user))


class ProjectsAPI(_Resource):
    """Projects the caller is a member of; :attr:`members` manages who else is."""

    def __init__(self, client: DatamillClient) -> None:
        super().__init__(client)
        self.members = MembersAPI(client)

    def create(self, name: str, description: str = "") -> Project:
        """Create a project; the caller becomes its owner."""
        return self._send("POST", Project, "/projects", {"name": name, "description": description})

    def get(self, name: str) -> Project:
        """A project, with the caller's role in it."""
        return self._get(Project, _path("projects", name))

    def update(self, name: str, description: str) -> Project:
        """Change a project's description (editors and owners)."""
        return self._send("PATCH", Project, _path("projects", name), {"description": description})

    def list(self, *, page: int = 1, size: int = 50) -> Page[Project]:
        """One page of the caller's projects."""
        return self._page(Project, "/projects", "projects", page, size)

    def iter_all(self) -> Iterator[Project]:
        """Every project of the caller, walking the pages."""
        return _walk(lambda p, s: self.list(page=p, size=s), ITER_PAGE_SIZE)

    def list_all(self) -> builtins.list[Project]:
        """Every project of the caller, as one list."""
        return list(self.iter_all())

    def delete(self, name: str) -> None:
        """Delete a project with all its resources and data (owners only)."""
        self._delete(_path("projects", name))


class UsersAPI(_Resource):
    """Users; all but :meth:`me` and issuing one's own token need an administrator."""

    def me(self) -> Principal:
        """Who the token belongs to."""
        return self._get(Principal, "/users/me")

    def create(self, name: str, *, is_admin: bool = False) -> User:
        """Create a user (they need a token from :meth:`issue_token` to log in)."""
        return self._send("POST", User, "/users", {"name": name, "isAdmin": is_admin})

    def list(self, *, page: int = 1, size: int = 50) -> Page[User]:
        """One page of the users, by name."""
        return self._page(User, "/users", "users", page, size)

    def iter_all(self) -> Iterator[User]:
        """Every user, walking the pages."""
        return _walk(lambda p, s: self.list(page=p, size=s), ITER_PAGE_SIZE)

    def list_all(self) -> builtins.list[User]:
        """Every user, as one list."""
        return list(self.iter_all())

    def delete(self, name: str) -> None:
        """Delete a user and their tokens."""
        self._delete(_path("users", name))

    def issue_token(
        self, user: str, name: str = "default", *, expires_in_days: int | None = None
    ) -> IssuedToken:
        """A new token for ``user``; :attr:`IssuedToken.token` is shown this once only."""
        body = {"name": name, "expiresInDays": expires_in_days}
        return self._send("POST", IssuedToken, _path("users", user, "tokens"), body)


class TokensAPI(_Resource):
    """The caller's own API tokens."""

    def create(self, name: str = "default", *, expires_in_days: int | None = None) -> IssuedToken:
        """A new token for the caller; :attr:`IssuedToken.token` is shown this once only."""
        body = {"name": name, "expiresInDays": expires_in_days}
        return self._send("POST", IssuedToken, "/tokens", body)

    def list(self, *, page: int = 1, size: int = 50) -> Page[Token]:
        """One page of the caller's tokens (their prefixes, never the tokens)."""
        return self._page(Token, "/tokens", "tokens", page, size)

    def iter_all(self) -> Iterator[Token]:
        """Every token of the caller, walking the pages."""
        return _walk(lambda p, s: self.list(page=p, size=s), ITER_PAGE_SIZE)

    def list_all(self) -> builtins.list[Token]:
        """Every token of the caller, as one list."""
        return list(self.iter_all())

    def revoke(self, token_id: int) -> Token:
        """Revoke a token by id; it stops working at once."""
        return self._send("DELETE", Token, _path("tokens", token_id), None)


class DataSourcesAPI(_Resource):
    """Data sources of a project's catalog: files (``file``, ``s3``, ``hdfs``) and stream
    connections (``mqtt``, ``kafka``, ``notification``, ``function``; no schema)."""

    def create(
        self,
        project: str,
        name: str,
        *,
        type: Literal["file", "s3", "hdfs", "mqtt", "kafka", "notification", "function"] | str,
        spec: Mapping[str, Any],
        schema: SchemaInput | None = None,
        no_verify_schema: bool = False,
        region: str | None = None,
        workflow: str | None = None,
    ) -> DataSource:
        """Create a data source.

        With ``no_verify_schema`` false the schema is inferred from the data (a given
        ``schema`` is checked against it and may mark fields ``required``); with it true the
        given, non-empty ``schema`` is kept as is.
        """
        body: dict[str, Any] = {
            "type": type,
            "spec": dict(spec),
            "noVerifySchema": no_verify_schema,
        }
        if schema is not None:
            body["schema"] = _schema_json(schema)
        if region is not None:
            body["region"] = region
        if workflow is not None:
            body["workflow"] = workflow
        path = _path("projects", project, "datasources", name)
        return self._send("POST", DataSource, path, body)

    def update(
        self,
        project: str,
        name: str,
        *,
        spec: Mapping[str, Any],
        schema: SchemaInput | None = None,
    ) -> DataSource:
        """Replace a data source's spec; its schema may gain fields, never lose or retype one."""
        body: dict[str, Any] = {"spec": dict(spec)}
        if schema is not None:
            body["schema"] = _schema_json(schema)
        path = _path("projects", project, "datasources", name)
        return self._send("PUT", DataSource, path, body)

    def get(self, project: str, name: str) -> DataSource:
        """A data source."""
        return self._get(DataSource, _path("projects", project, "datasources", name))

    def list(
        self, project: str, *, page: int = 1, size: int = 50, sort_by: str = "name"
    ) -> Page[DataSource]:
        """One page of the project's data sources.

        ``sort_by`` is ``name``, ``createdAt`` or ``updatedAt``; prefix ``-`` for descending.
        """
        path = _path("projects", project, "datasources")
        return self._page(DataSource, path, "datasources", page, size, {"sortBy": sort_by})

    def iter_all(self, project: str, *, sort_by: str = "name") -> Iterator[DataSource]:
        """Every data source of the project, walking the pages."""
        return _walk(
            lambda p, s: self.list(project, page=p, size=s, sort_by=sort_by), ITER_PAGE_SIZE
        )

    def list_all(self, project: str, *, sort_by: str = "name") -> builtins.list[DataSource]:
        """Every data source of the project, as one list."""
        return list(self.iter_all(project, sort_by=sort_by))

    def delete(self, project: str, name: str) -> None:
        """Delete a data source that no job reads."""
        self._delete(_path("projects", project, "datasources", name))

    def preview(
        self, project: str, name: str, *, limit: int = 20, at: Moment | None = None
    ) -> Preview:
        """The first ``limit`` rows; ``at`` is the batch time for ``fileFilter`` variables."""
        path = _path("projects", project, "datasources", name, "preview")
        return self._get(Preview, path, {"limit": limit, "at": _moment(at)})


class SchemasAPI(_Resource):
    """Schema inference, without saving anything."""

    def infer(self, project: str, type: str, spec: Mapping[str, Any]) -> list[SchemaField]:
        """The schema the data a spec points at would get."""
        path = _path("projects", project, "schemas")
        data = self._client.request("POST", path, json={"type": type, "spec": dict(spec)})
        if not isinstance(data, Mapping) or not isinstance(data.get("schema"), list):
            raise DatamillProtocolError("expected {'schema': [...]} from the server")
        return [self._client.parse(SchemaField, item) for item in data["schema"]]


class VariablesAPI(_Resource):
    """Magic variables: read-only system variables and the project's user variables."""

    def create(
        self,
        project: str,
        name: str,
        *,
        type: VariableType | str,
        value: str,
        format: str | None = None,
    ) -> Variable:
        """Create a user variable: ``time`` (an expression like ``$(now)-1d``) or ``string``."""
        body = {"type": str(type), "value": value, "format": format}
        path = _path("projects", project, "variables", name)
        return self._send("POST", Variable, path, body)

    def update(
        self,
        project: str,
        name: str,
        *,
        type: VariableType | str,
        value: str,
        format: str | None = None,
    ) -> Variable:
        """Replace a user variable's definition."""
        body = {"type": str(type), "value": value, "format": format}
        path = _path("projects", project, "variables", name)
        return self._send("PUT", Variable, path, body)

    def get(self, project: str, name: str, *, at: Moment | None = None) -> ResolvedVariable:
        """A variable and its value resolved at batch time ``at`` (default: now)."""
        path = _path("projects", project, "variables", name)
        return self._get(ResolvedVariable, path, {"at": _moment(at)})

    def list(
        self,
        project: str,
        *,
        type: Literal["system", "user"] | None = None,
        page: int = 1,
        size: int = 50,
    ) -> Page[Variable]:
        """One page of variables: system ones first, then user ones; ``type`` picks one kind."""
        path = _path("projects", project, "variables")
        return self._page(Variable, path, "variables", page, size, {"type": type})

    def iter_all(
        self, project: str, *, type: Literal["system", "user"] | None = None
    ) -> Iterator[Variable]:
        """Every variable (of ``type``), walking the pages."""
        return _walk(lambda p, s: self.list(project, type=type, page=p, size=s), ITER_PAGE_SIZE)

    def list_all(
        self, project: str, *, type: Literal["system", "user"] | None = None
    ) -> builtins.list[Variable]:
        """Every variable (of ``type``), as one list."""
        return list(self.iter_all(project, type=type))

    def delete(self, project: str, name: str) -> None:
        """Delete a user variable that no other variable uses."""
        self._delete(_path("projects", project, "variables", name))


class SecretsAPI(_Resource):
    """Secrets: write-only credentials; reading one gives its description and value names."""

    def create(
        self, project: str, name: str, values: Mapping[str, str], *, description: str = ""
    ) -> Secret:
        """Store a secret (encrypted at rest); the values are never returned."""
        path = _path("projects", project, "secrets", name)
        body = {"description": description, "values": dict(values)}
        return self._send("POST", Secret, path, body)

    def update(
        self, project: str, name: str, values: Mapping[str, str], *, description: str = ""
    ) -> Secret:
        """Replace a secret's values and description."""
        path = _path("projects", project, "secrets", name)
        body = {"description": description, "values": dict(values)}
        return self._send("PUT", Secret, path, body)

    def get(self, project: str, name: str) -> Secret:
        """A secret's description and the names of its values."""
        return self._get(Secret, _path("projects", project, "secrets", name))

    def list(self, project: str, *, page: int = 1, size: int = 50) -> Page[Secret]:
        """One page of the project's secrets."""
        path = _path("projects", project, "secrets")
        return self._page(Secret, path, "secrets", page, size)

    def iter_all(self, project: str) -> Iterator[Secret]:
        """Every secret of the project, walking the pages."""
        return _walk(lambda p, s: self.list(project, page=p, size=s), ITER_PAGE_SIZE)

    def list_all(self, project: str) -> builtins.list[Secret]:
        """Every secret of the project, as one list."""
        return list(self.iter_all(project))

    def delete(self, project: str, name: str) -> None:
        """Delete a secret that no resource uses."""
        self._delete(_path("projects", project, "secrets", name))


SrcInput = Src | Mapping[str, Any]
ComputationInput = Computation | Mapping[str, Any] | str
ContainerInput = Container | Mapping[str, Any] | str
SchedulerInput = Scheduler | Mapping[str, Any] | str
ParamsInput = Sequence[Param | Mapping[str, Any]] | Mapping[str, str]


def _json_of(value: Any) -> Any:
    """A model as its JSON (by alias, without unset ``None`` fields), a mapping as a dict."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _job_body(
    body: JobBody | Mapping[str, Any] | None,
    *,
    srcs: Sequence[SrcInput] | None,
    computation: ComputationInput | None,
    container: ContainerInput | None,
    scheduler: SchedulerInput | None,
    params: ParamsInput | None,
    retries: int | None,
    max_run_seconds: int | None,
) -> dict[str, Any]:
    """The JSON body of a job create or update: ``body`` with the keyword fields over it."""
    data: dict[str, Any] = dict(_json_of(body)) if body is not None else {}
    if srcs is not None:
        data["srcs"] = [_json_of(s) for s in srcs]
    if computation is not None:
        data["computation"] = (
            {"type": "SQL", "code": computation}
            if isinstance(computation, str)
            else _json_of(computation)
        )
    if container is not None:
        data["container"] = (
            {"type": container, "count": 1} if isinstance(container, str) else _json_of(container)
        )
    if scheduler is not None:
        data["scheduler"] = (
            {"type": scheduler} if isinstance(scheduler, str) else _json_of(scheduler)
        )
    if params is not None:
        if isinstance(params, Mapping):
            data["params"] = [{"name": k, "default": v} for k, v in params.items()]
        else:
            data["params"] = [_json_of(p) for p in params]
    if retries is not None:
        data["retries"] = retries
    if max_run_seconds is not None:
        data["maxRunSeconds"] = max_run_seconds
    return data


class JobsAPI(_Resource):
    """Batch SQL jobs of a project, their runs (start, stop, history, logs, results).

    A job's body is given either whole, as ``body`` (a :class:`JobBody` or the API's JSON
    object), or as keyword arguments, which override the fields of ``body`` when both are
    given. The keywords take the domain models or their JSON, plus shorthands: ``computation``
    as a SQL string, ``container`` as a type (``"1U2G"``, count 1), ``scheduler`` as a type
    (``"manual"``) and ``params`` as a ``{name: default}`` mapping.
    """

    def create(
        self,
        project: str,
        name: str,
        body: JobBody | Mapping[str, Any] | None = None,
        *,
        srcs: Sequence[SrcInput] | None = None,
        computation: ComputationInput | None = None,
        container: ContainerInput | None = None,
        scheduler: SchedulerInput | None = None,
        params: ParamsInput | None = None,
        retries: int | None = None,
        max_run_seconds: int | None = None,
    ) -> Job:
        """Create a job; the server validates its sources, SQL and output schema first."""
        data = _job_body(
            body,
            srcs=srcs,
            computation=computation,
            container=container,
            scheduler=scheduler,
            params=params,
            retries=retries,
            max_run_seconds=max_run_seconds,
        )
        return self._send("POST", Job, _path("projects", project, "jobs", name), data)

    def update(
        self,
        project: str,
        name: str,
        body: JobBody | Mapping[str, Any] | None = None,
        *,
        srcs: Sequence[SrcInput] | None = None,
        computation: ComputationInput | None = None,
        container: ContainerInput | None = None,
        scheduler: SchedulerInput | None = None,
        params: ParamsInput | None = None,
        retries: int | None = None,
        max_run_seconds: int | None = None,
    ) -> Job:
        """Replace the whole job (fields left out take their defaults), validated as on create."""
        data = _job_body(
            body,
            srcs=srcs,
            computation=computation,
            container=container,
            scheduler=scheduler,
            params=params,
            retries=retries,
            max_run_seconds=max_run_seconds,
        )
        return self._send("PUT", Job, _path("projects", project, "jobs", name), data)

    def get(self, project: str, name: str) -> Job:
        """A job, with its output schema and schedule state."""
        return self._get(Job, _path("projects", project, "jobs", name))

    def list(
        self,
        project: str,
        *,
        src_datasource: str | None = None,
        src_job: str | None = None,
        page: int = 1,
        size: int = 50,
    ) -> Page[Job]:
        """One page of the project's jobs by name; optionally only those reading a data source
        (``src_datasource``) or a job (``src_job``), not both."""
        path = _path("projects", project, "jobs")
        query = {"srcDatasource": src_datasource, "srcJob": src_job}
        return self._page(Job, path, "jobs", page, size, query)

    def iter_all(
        self, project: str, *, src_datasource: str | None = None, src_job: str | None = None
    ) -> Iterator[Job]:
        """Every job (reading ``src_datasource`` or ``src_job``), walking the pages."""
        return _walk(
            lambda p, s: self.list(
                project, src_datasource=src_datasource, src_job=src_job, page=p, size=s
            ),
            ITER_PAGE_SIZE,
        )

    def list_all(
        self, project: str, *, src_datasource: str | None = None, src_job: str | None = None
    ) -> builtins.list[Job]:
        """Every job (reading ``src_datasource`` or ``src_job``), as one list."""
        return list(self.iter_all(project, src_datasource=src_datasource, src_job=src_job))

    def delete(self, project: str, name: str) -> None:
        """Delete a job that no other job reads, with its history and results."""
        self._delete(_path("projects", project, "jobs", name))

    def start(
        self, project: str, name: str, params: Mapping[str, str] | None = None
    ) -> HistoryEntry:
        """Queue a run now; ``params`` values override the job's defaults. Returns the run
        (``Ready``); :meth:`wait` waits for it to finish."""
        body = {"params": [{"name": k, "value": v} for k, v in (params or {}).items()]}
        path = _path("projects", project, "jobs", name, "actions", "start")
        return self._send("POST", HistoryEntry, path, body)

    def stop(self, project: str, name: str) -> JobStopResult:
        """Stop the job's schedule, cancel its queued runs and stop its running ones."""
        path = _path("projects", project, "jobs", name, "actions", "stop")
        return self._send("POST", JobStopResult, path, None)

    def history(
        self,
        project: str,
        name: str,
        *,
        page: int = 1,
        size: int = 20,
        sort_by: str = "-endTime",
        status: RunStatus | str | None = None,
        run_id: int | None = None,
    ) -> History:
        """One page of the job's runs.

        ``sort_by`` is ``endTime``, ``startTime``, ``batchTime`` or ``runId`` (prefix ``-``
        for descending; unfinished runs come first then); ``status`` keeps one status;
        ``run_id`` gives just that run (``-1``: the latest).
        """
        path = _path("projects", project, "jobs", name, "history")
        query = {
            "page": page,
            "size": size,
            "sortBy": sort_by,
            "status": str(status) if status is not None else None,
            "runId": run_id,
        }
        return self._get(History, path, query)

    def run(self, project: str, name: str, run_id: int) -> HistoryEntry:
        """One run's history entry (``run_id`` ``-1``: the latest)."""
        history = self.history(project, name, run_id=run_id, size=1)
        if not history.history:
            raise DatamillProtocolError(f"the server sent no history entry for run {run_id}")
        return history.history[0]

    def logs(self, project: str, name: str, run_id: int) -> RunLog:
        """A run's log lines (``run_id`` ``-1``: the latest run)."""
        return self._get(RunLog, _path("projects", project, "jobs", name, "runs", run_id, "logs"))

    def result(self, project: str, name: str, run_id: int, *, limit: int = 100) -> RunResult:
        """The first ``limit`` rows of a Successful run's result."""
        path = _path("projects", project, "jobs", name, "runs", run_id, "result")
        return self._get(RunResult, path, {"limit": limit})

    def wait(
        self,
        project: str,
        name: str,
        run_id: int,
        *,
        timeout: float | None = DEFAULT_WAIT_SECONDS,
        poll: float = 0.1,
        max_poll: float | None = None,
    ) -> HistoryEntry:
        """Wait until the run is Successful, Failed or Canceled; return it.

        A failed or canceled run is returned, not raised: check ``entry.status``. Raises
        :class:`RunWaitTimeout` (a :class:`TimeoutError`) when the run is still unfinished
        after ``timeout`` seconds (``None``: wait for ever); the run itself goes on.

        Each request is a long poll (``GET .../runs/{runId}?waitSeconds=N``): the server
        answers as soon as the run ended, so waiting costs it almost nothing and the answer
        comes at once. Should an answer come back early with the run unfinished, the next
        request follows after ``poll`` seconds; with ``max_poll`` that pause grows by half
        after each such answer up to ``max_poll``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def late(entry: HistoryEntry) -> RunWaitTimeout:
            return RunWaitTimeout(
                f"run {entry.runId} of job '{name}' in project '{project}' is still "
                f"{entry.status.value} after {timeout:g} s",
                entry,
            )

        return self._wait_for_end(
            HistoryEntry,
            lambda number: _path("projects", project, "jobs", name, "runs", number),
            run_id,
            late,
            deadline,
            poll,
            max_poll,
        )


class BatchAPI(_Resource):
    """Actions on one run of a batch job: stop a running run, rerun a finished one."""

    def _action(self, model: type[M], project: str, action: str, job: str, run_id: int) -> M:
        path = _path("projects", project, "batch", "actions", action)
        return self._send("POST", model, path, {"jobName": job, "runId": run_id})

    def stop(self, project: str, job_name: str, run_id: int) -> StopResult:
        """Stop a Running run: it goes Cancelling, then Canceled (``run_id`` -1: the latest)."""
        return self._action(StopResult, project, "stop", job_name, run_id)

    def rerun(self, project: str, job_name: str, run_id: int) -> RerunResult:
        """Rerun a Successful, Failed or Canceled run for the same batch time: it goes
        Restarting, then runs again with the same params (``run_id`` -1: the latest)."""
        return self._action(RerunResult, project, "rerun", job_name, run_id)


ExportType = Literal["file", "s3", "kodo", "hdfs", "http", "logdb", "tsdb", "report"]
SpecInput = Mapping[str, Any] | BaseModel


class ExportsAPI(_Resource):
    """Exports of a job's results (``/projects/{p}/jobs/{job}/exports/{name}``).

    An export writes the result of every successful run of its job to a destination chosen
    by ``type`` (``file``, ``s3``, ``hdfs``, ``http``, ``logdb``, ``tsdb``, ``report``; the
    specification's ``kodo`` is accepted for ``s3`` and comes back as ``s3``). ``spec`` is
    the type's JSON object, or a pydantic model of it; the server validates it against the
    job's output schema on create and update. Each export of one batch is an *export run*,
    named by the id of the job run whose result it writes.
    """

    def create(
        self, project: str, job: str, name: str, *, type: ExportType | str, spec: SpecInput
    ) -> Export:
        """Create an export; it runs after every successful run of the job from now on."""
        body = {"type": str(type), "spec": _json_of(spec)}
        return self._send(
            "POST", Export, _path("projects", project, "jobs", job, "exports", name), body
        )

    def update(self, project: str, job: str, name: str, *, spec: SpecInput) -> Export:
        """Replace the export's whole spec (its type stays); fields left out take defaults."""
        path = _path("projects", project, "jobs", job, "exports", name)
        return self._send("PUT", Export, path, {"spec": _json_of(spec)})

    def get(self, project: str, job: str, name: str) -> Export:
        """An export, with its spec as stored (defaults filled in)."""
        return self._get(Export, _path("projects", project, "jobs", job, "exports", name))

    def list(self, project: str, job: str, *, page: int = 1, size: int = 50) -> Page[Export]:
        """One page of the job's exports, by name."""
        path = _path("projects", project, "jobs", job, "exports")
        return self._page(Export, path, "exports", page, size)

    def iter_all(self, project: str, job: str) -> Iterator[Export]:
        """Every export of the job, walking the pages."""
        return _walk(lambda p, s: self.list(project, job, page=p, size=s), ITER_PAGE_SIZE)

    def list_all(self, project: str, job: str) -> builtins.list[Export]:
        """Every export of the job, as one list."""
        return list(self.iter_all(project, job))

    def delete(self, project: str, job: str, name: str) -> None:
        """Delete an export and its history (not while one of its runs is running)."""
        self._delete(_path("projects", project, "jobs", job, "exports", name))

    def history(
        self, project: str, job: str, name: str, *, page: int = 1, size: int = 20
    ) -> ExportHistory:
        """One page of the export's runs, newest batch (highest job run id) first."""
        path = _path("projects", project, "jobs", job, "exports", name, "history")
        return self._get(ExportHistory, path, {"page": page, "size": size})

    def find(self, project: str, job: str, name: str, run_id: int) -> ExportRunEntry | None:
        """The export run of job run ``run_id`` (``-1``: the job's latest run), or ``None``
        while there is none (no such job run, it has not succeeded yet, or the export is
        newer); an unknown job or export still raises :class:`NotFound`."""
        try:
            return self.run(project, job, name, run_id)
        except NotFound as exc:
            if exc.error_code == E.RUN_NOT_FOUND.value.code:
                return None
            raise

    def rerun(self, project: str, job: str, name: str, run_id: int) -> RerunResult:
        """Export the batch of job run ``run_id`` again (``-1``: the job's latest run).

        The job run must be Successful. Its export run, if any, must be finished (it goes
        Restarting, then runs again); without one a new export run is queued.
        """
        path = _path("projects", project, "jobs", job, "exports", name, "actions", "rerun")
        return self._send("POST", RerunResult, path, {"runId": run_id})

    def run(self, project: str, job: str, name: str, run_id: int) -> ExportRunEntry:
        """The export run of job run ``run_id`` (``-1``: the job's latest run).

        Raises :class:`NotFound` while there is none: the job run has not succeeded (yet),
        or the export was created after it (:meth:`rerun` exports that batch).
        """
        return self._get(ExportRunEntry, self._run_path(project, job, name, run_id))

    def logs(self, project: str, job: str, name: str, run_id: int) -> RunLog:
        """The log of the export run of job run ``run_id`` (``-1``: the job's latest run)."""
        return self._get(RunLog, self._run_path(project, job, name, run_id) + "/logs")

    @staticmethod
    def _run_path(project: str, job: str, name: str, run_id: int) -> str:
        return _path("projects", project, "jobs", job, "exports", name, "runs", run_id)

    def wait(
        self,
        project: str,
        job: str,
        name: str,
        run_id: int,
        *,
        timeout: float | None = DEFAULT_WAIT_SECONDS,
        poll: float = 0.1,
        max_poll: float | None = None,
    ) -> ExportRunEntry:
        """Wait until the export run of job run ``run_id`` is Successful, Failed or
        Canceled; return it (a failed one is returned, not raised).

        A job run still going is waited for first (its export run is queued when it
        succeeds). Raises :class:`NotFound` when the batch gets no export run (the job run
        ended otherwise, or the export is newer than it) and :class:`RunWaitTimeout` when
        the export run has not ended within ``timeout`` seconds. Each request is a long
        poll (``GET .../exports/{name}/runs/{runId}?waitSeconds=N``), as in
        :meth:`JobsAPI.wait`; ``poll`` and ``max_poll`` work as there.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job_run = self._client.jobs.run(project, job, run_id)
        run_id = job_run.runId  # -1 resolved: this batch, even if another run starts

        def late(entry: ExportRunEntry | None) -> RunWaitTimeout:
            state = entry.status.value if entry is not None else "not queued"
            return RunWaitTimeout(
                f"the export '{name}' of run {run_id} of job '{job}' in project "
                f"'{project}' is still {state} after {timeout:g} s",
                entry,
            )

        if job_run.status not in TERMINAL:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._client.jobs.wait(
                    project, job, run_id, timeout=left, poll=poll, max_poll=max_poll
                )
            except RunWaitTimeout:
                raise late(None) from None
        return self._wait_for_end(
            ExportRunEntry,
            lambda number: self._run_path(project, job, name, number),
            run_id,
            late,
            deadline,
            poll,
            max_poll,
        )


StreamingBodyInput = StreamingJobBody | Mapping[str, Any]
Record = Mapping[str, Any] | str | bytes
StateInput = StreamingJobState | str

INGEST_CHUNK_RECORDS = 1000
"""Records per request when :meth:`StreamingAPI.ingest` sends an iterable as NDJSON."""
INGEST_CHUNK_BYTES = 512 * 1024
"""Bytes per NDJSON request at most (the server's default body limit is 1 MiB); a single
larger record is still sent, alone, and the server judges it."""
NDJSON = "application/x-ndjson"


def _ndjson_line(record: Record) -> bytes:
    """One record as one NDJSON line: a mapping is encoded, a str or bytes is taken as an
    already encoded JSON object (its line breaks removed at the ends)."""
    if isinstance(record, bytes):
        line = record.strip(b"\r\n")
    elif isinstance(record, str):
        line = record.strip("\r\n").encode("utf-8")
    else:
        line = jsonlib.dumps(dict(record), ensure_ascii=False, default=str).encode("utf-8")
    return line + b"\n"


def _chunks(records: Iterable[Record], max_records: int, max_bytes: int) -> Iterator[bytes]:
    """NDJSON bodies of at most ``max_records`` records and (but for one huge record)
    ``max_bytes`` bytes; blank lines are skipped."""
    lines: list[bytes] = []
    size = 0
    for record in records:
        line = _ndjson_line(record)
        if not line.strip():
            continue
        if lines and (len(lines) >= max_records or size + len(line) > max_bytes):
            yield b"".join(lines)
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        yield b"".join(lines)


class StreamingAPI(_Resource):
    """Streaming pipelines of a project (``/projects/{p}/streaming/jobs/{job_id}``).

    A job is a graph of operators (seed 000): ``body`` is a :class:`StreamingJobBody` or its
    JSON (``definition``, ``operatorInstances``, ``runtime``). Jobs are addressed by the id
    the server gives them on :meth:`create`. Saving with ``check=True`` validates the job
    (graph, configurations, schemas and the connections named in ``dataSourceId``): it is
    READY when it passes, else it stays a DRAFT and ``check_info`` names each operator's
    problems. :meth:`start` hands a READY or STOPPED job to the streaming engine;
    :meth:`ingest` posts records to a running job's PipelineSource.
    """

    def _job(self, project: str, job_id: str, *rest: str) -> str:
        return _path("projects", project, "streaming", "jobs", job_id, *rest)

    def create(
        self, project: str, body: StreamingBodyInput, *, check: bool = False
    ) -> StreamingSaveResult:
        """Create a job: a draft, or with ``check`` READY when the check finds nothing."""
        path = _path("projects", project, "streaming", "jobs")
        data = self._client.request(
            "POST", path, params={"check": str(check).lower()}, json=_json_of(body)
        )
        return self._client.parse(StreamingSaveResult, data)

    def update(
        self, project: str, job_id: str, body: StreamingBodyInput, *, check: bool = False
    ) -> StreamingSaveResult:
        """Replace the whole job (409 while it runs); saved as for :meth:`create`."""
        data = self._client.request(
            "PUT",
            self._job(project, job_id),
            params={"check": str(check).lower()},
            json=_json_of(body),
        )
        return self._client.parse(StreamingSaveResult, data)

    def get(self, project: str, job_id: str) -> StreamingJob:
        """A job with its state, why it is in it, and the problems of its last check."""
        return self._get(StreamingJob, self._job(project, job_id))

    def list(
        self,
        project: str,
        *,
        state: StateInput | None = None,
        sort_by: str = "-createdAt",
        page: int = 1,
        size: int = 50,
    ) -> Page[StreamingJobSummary]:
        """One page of the project's jobs (only those in ``state`` if given); ``sort_by`` is
        ``createdAt``, ``updatedAt`` or ``jobName``, ``-`` first for descending."""
        path = _path("projects", project, "streaming", "jobs")
        query = {"state": str(state) if state is not None else None, "sortBy": sort_by}
        return self._page(StreamingJobSummary, path, "jobs", page, size, query)

    def iter_all(
        self, project: str, *, state: StateInput | None = None, sort_by: str = "-createdAt"
    ) -> Iterator[StreamingJobSummary]:
        """Every job (in ``state``), walking the pages."""
        return _walk(
            lambda p, s: self.list(project, state=state, sort_by=sort_by, page=p, size=s),
            ITER_PAGE_SIZE,
        )

    def list_all(
        self, project: str, *, state: StateInput | None = None, sort_by: str = "-createdAt"
    ) -> builtins.list[StreamingJobSummary]:
        """Every job (in ``state``), as one list."""
        return list(self.iter_all(project, state=state, sort_by=sort_by))

    def delete(self, project: str, job_id: str) -> None:
        """Delete a job that is not running, with its state and ingest log."""
        self._delete(self._job(project, job_id))

    def start(self, project: str, job_id: str) -> StreamingActionResult:
        """Start a READY or STOPPED job: it is STARTING until the engine runs it
        (:meth:`wait` for RUNNING)."""
        return self._send(
            "POST", StreamingActionResult, self._job(project, job_id, "actions", "start"), None
        )

    def stop(self, project: str, job_id: str) -> StreamingActionResult:
        """Stop a STARTING, RUNNING or RESTARTING job: STOPPING, then STOPPED."""
        return self._send(
            "POST", StreamingActionResult, self._job(project, job_id, "actions", "stop"), None
        )

    def wait(
        self,
        project: str,
        job_id: str,
        state: StateInput | Iterable[StateInput],
        *,
        timeout: float | None = 60.0,
        poll: float = 0.2,
        max_poll: float | None = 2.0,
    ) -> StreamingJob:
        """Poll the job until it is in ``state`` (one state or several) and return it.

        A job that ends FAILED meanwhile is returned as well (when FAILED is not waited
        for): check ``job.job_state`` and ``job.stateMessage``. Raises
        :class:`StateWaitTimeout` (a :class:`TimeoutError`) when ``timeout`` seconds go by
        first (``None``: wait for ever). ``poll`` and ``max_poll`` work as in
        :meth:`JobsAPI.wait`.
        """
        wanted = (
            {StreamingJobState(state)}
            if isinstance(state, str)
            else {StreamingJobState(s) for s in state}
        )
        ends = wanted | {StreamingJobState.FAILED}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(project, job_id)
            if job.job_state in ends:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                names = " or ".join(sorted(s.value for s in wanted))
                raise StateWaitTimeout(
                    f"streaming job '{job_id}' in project '{project}' is still "
                    f"{job.job_state.value}, not {names}, after {timeout:g} s",
                    job,
                )
            pause = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            if max_poll is not None and poll < max_poll:
                poll = min(poll * 1.5, max_poll)

    def ingest(
        self,
        project: str,
        job_id: str,
        records: Iterable[Record],
        *,
        chunk_records: int = INGEST_CHUNK_RECORDS,
        chunk_bytes: int = INGEST_CHUNK_BYTES,
    ) -> StreamingIngestResult:
        """Post records to a running job's PipelineSource (the job must be STARTING,
        RUNNING or RESTARTING).

        A list or tuple of mappings goes in one request as a JSON array. Any other iterable
        (a generator, a file's lines) is sent as NDJSON in chunks of ``chunk_records``
        records and at most ``chunk_bytes`` bytes, read lazily; its items are mappings, or
        str / bytes lines that already hold one JSON object each. Returns the records
        accepted in all. When a chunk is refused its error is raised; the chunks sent
        before it stay accepted.
        """
        if isinstance(records, Mapping | str | bytes):
            raise TypeError("records must be an iterable of records, not a single record")
        path = self._job(project, job_id, "records")
        if isinstance(records, builtins.list | tuple) and all(
            isinstance(r, Mapping) for r in records
        ):
            data = self._client.request("POST", path, json=[dict(r) for r in records])
            return self._client.parse(StreamingIngestResult, data)
        if chunk_records < 1 or chunk_bytes < 1:
            raise ValueError("chunk_records and chunk_bytes must be at least 1")
        accepted = 0
        for body in _chunks(records, chunk_records, chunk_bytes):
            data = self._client.request("POST", path, content=body, content_type=NDJSON)
            accepted += self._client.parse(StreamingIngestResult, data).accepted
        return StreamingIngestResult(job_id=job_id, accepted=accepted)

    def metrics(self, project: str, job_id: str) -> StreamingMetrics:
        """What the engine last reported: records in and out per operator, watermark,
        state size, last checkpoint, source lag (empty figures before the first start)."""
        return self._get(StreamingMetrics, self._job(project, job_id, "metrics"))

    def logs(self, project: str, job_id: str, *, page: int = 1, size: int = 50) -> Page[str]:
        """One page of the engine's log lines for the job, oldest first."""
        data = self._client.request(
            "GET", self._job(project, job_id, "logs"), params={"page": page, "size": size}
        )
        if not isinstance(data, Mapping) or not isinstance(data.get("lines"), builtins.list):
            raise DatamillProtocolError("expected a page of 'lines' from the server")
        try:
            return Page(
                total=int(data["total"]),
                page=int(data["page"]),
                size=int(data["size"]),
                items=[str(line) for line in data["lines"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatamillProtocolError(f"malformed page of 'lines': {exc}") from None

    def iter_logs(self, project: str, job_id: str) -> Iterator[str]:
        """Every log line, walking the pages."""
        return _walk(lambda p, s: self.logs(project, job_id, page=p, size=s), ITER_PAGE_SIZE)
