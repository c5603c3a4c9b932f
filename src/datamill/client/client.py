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

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from datamill import __version__
from datamill.client.base import M, read_page
from datamill.client.errors import (
    DatamillConnectionError,
    DatamillProtocolError,
    error_from_response,
)
from datamill.client.models import Health, Page, Version
from datamill.client.resources import (
    BatchAPI,
    DataRootsAPI,
    DataSourcesAPI,
    EnginesAPI,
    ExportsAPI,
    JobsAPI,
    MembersAPI,
    ProjectsAPI,
    SchemasAPI,
    SecretsAPI,
    StreamingAPI,
    TokensAPI,
    UsersAPI,
    VariablesAPI,
)

__all__ = [
    "DEFAULT_URL",
    "BatchAPI",
    "DataRootsAPI",
    "DataSourcesAPI",
    "DatamillClient",
    "EnginesAPI",
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
    :attr:`users`, :attr:`tokens`, :attr:`data_roots` (administrators: who sees which data
    root whole), :attr:`datasources`, :attr:`schemas`, :attr:`variables`, :attr:`secrets`,
    :attr:`engines` (engine connections), :attr:`jobs` (batch SQL jobs and their runs),
    :attr:`exports` (where a job's results go after each run), :attr:`batch` (stop or rerun
    one run) and :attr:`streaming` (streaming pipelines: check, start, stop, records in,
    metrics). Use the client as a context manager, or call :meth:`close`.
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
        self.data_roots = DataRootsAPI(self)
        self.datasources = DataSourcesAPI(self)
        self.schemas = SchemasAPI(self)
        self.variables = VariablesAPI(self)
        self.secrets = SecretsAPI(self)
        self.engines = EnginesAPI(self)
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
        return read_page(data, key, lambda item: self.parse(model, item))
