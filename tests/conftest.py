"""Fixtures: real servers started once per session, and the app on each metadata store.

Every test that uses ``api`` runs twice: against SQLite and against a real PostgreSQL
server (``DATAMILL_TEST_BACKENDS=sqlite`` restricts a local run to one). Tests isolate
themselves by creating their own project, not by restarting anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from datamill.api.app import create_app
from datamill.cli.main import app
from datamill.client import DatamillClient
from datamill.config import Settings
from datamill.runtime.process import stop_process
from datamill.runtime.streaming.supervisor import STOP_SECONDS, Supervisor
from datamill.runtime.worker import WorkerPool
from datamill.services.runtime import Runtime
from tests.builders import (
    TERMINAL,
    TOTALS_SQL,
    create_ready,
    job_body,
    make_source,
    op,
    start,
    wait_for,
)
from tests.cli_runner import Run, cli_env
from tests.servers import (
    RunningServer,
    create_database,
    start_kafka,
    start_mosquitto,
    start_postgres,
    start_s3,
    start_spark_connect,
)

BACKENDS = [
    b for b in os.environ.get("DATAMILL_TEST_BACKENDS", "sqlite,postgresql").split(",") if b
]


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="datamill-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(workdir: Path) -> Iterator[RunningServer]:
    server = start_postgres(workdir / "postgres")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(workdir: Path) -> Iterator[RunningServer]:
    server = start_s3(workdir / "s3")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mqtt_server(workdir: Path) -> Iterator[RunningServer]:
    server = start_mosquitto(workdir / "mosquitto")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_server(workdir: Path) -> Iterator[RunningServer]:
    server = start_kafka(workdir / "kafka")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_server(workdir: Path) -> Iterator[RunningServer]:
    """A Spark Connect server (local[2], a JVM of about 0.5 GB; 10-20 s to start): tests
    using it are marked ``slow``."""
    server = start_spark_connect(workdir / "spark")
    yield server
    server.stop()


@dataclass
class Api:
    """A test client bound to one token; every call returns the httpx response."""

    client: TestClient
    token: str
    runtime: Runtime

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        url = path if path.startswith("/api/") else "/api/v1" + path
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def as_user(self, token: str) -> Api:
        return Api(self.client, token, self.runtime)

    def new_user(self, name: str | None = None) -> tuple[str, str]:
        """Create a user; returns (name, token)."""
        name = name or f"u_{uuid.uuid4().hex[:10]}"
        assert self.post("/users", json={"name": name}).status_code == 201
        issued = self.post(f"/users/{name}/tokens", json={"name": "test"})
        assert issued.status_code == 201, issued.text
        return name, issued.json()["token"]

    @property
    def data_root(self) -> Path:
        return self.runtime.settings.resolved_data_roots["default"]

    def project_files(self, project: str, root: str = "default") -> Path:
        """The project's own folder of a data root: where its relative paths start (unless
        the root is granted to it), and so where a test puts the files it reads."""
        folder = self.runtime.settings.resolved_data_roots[root] / project
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def settings(backend: str, workdir: Path, request: pytest.FixtureRequest) -> Settings:
    base = workdir / backend
    url = None
    if backend == "postgresql":
        server: RunningServer = request.getfixturevalue("postgres_server")
        url = create_database(server, f"datamill_{uuid.uuid4().hex[:8]}")
    (base / "files").mkdir(parents=True, exist_ok=True)
    (base / "other-root").mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=base / "data",
        database_url=url,
        data_roots={"default": base / "files", "other": base / "other-root"},
        outbound_allow=["127.0.0.1", "localhost"],
        max_body_bytes=65536,
        log_json=True,
        heartbeat_seconds=0.2,
        streaming_poll_seconds=0.2,
        streaming_lease_seconds=3,
        run_lost_after_seconds=3,
    )


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def workers(settings: Settings, runtime: Runtime) -> Iterator[WorkerPool]:
    """Real worker processes on the session's store (started only by tests that run jobs)."""
    pool = WorkerPool(settings, 2)
    pool.start()
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def streaming_engine(settings: Settings, runtime: Runtime) -> Iterator[BaseProcess]:
    """The streaming supervisor process on the session's store, for the tests of one module
    (it runs each started job in an engine process of its own). Module-scoped: tests
    elsewhere play the engine's part themselves and must not meet a real one."""
    process = Supervisor.spawn(settings)
    yield process
    stop_process(process, timeout=STOP_SECONDS)


@pytest.fixture(scope="session")
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def admin_token(client: TestClient, runtime: Runtime) -> str:
    return runtime.settings.admin_token_file.read_text().strip()


@pytest.fixture
def run(client: TestClient, admin_token: str, tmp_path: Path) -> Iterator[Run]:
    """``run("projects", "list")``: the CLI on the test app as the admin (token from env);
    keywords set or unset more environment variables.

    The in-process server's access log is captured away: it would otherwise be printed into
    the stdout CliRunner records for the command.
    """
    runner = CliRunner()
    # an empty data dir: the token file fallback finds nothing unless a test puts it there
    empty = tmp_path / "no-token-here"
    empty.mkdir()

    def factory(url: str, token: str | None) -> DatamillClient:
        return DatamillClient(url, token, http=client)

    def invoke(*args: str, input: str | None = None, **env: str | None) -> Result:
        full_env = cli_env(DATAMILL_TOKEN=admin_token, DATAMILL_DATA_DIR=str(empty))
        full_env.update(env)
        return runner.invoke(app, list(args), obj=factory, env=full_env, input=input)

    with structlog.testing.capture_logs():
        yield invoke


@pytest.fixture
def dm(client: TestClient, admin_token: str) -> Iterator[DatamillClient]:
    """The Python client on the test app, as the admin."""
    with DatamillClient(token=admin_token, http=client) as datamill:
        yield datamill


@pytest.fixture
def api(client: TestClient, admin_token: str, runtime: Runtime) -> Api:
    return Api(client, admin_token, runtime)


@pytest.fixture
def project(api: Api) -> str:
    """A fresh project owned by the admin, with its own folder in the default data root."""
    name = f"p_{uuid.uuid4().hex[:10]}"
    response = api.post("/projects", json={"name": name, "description": "test"})
    assert response.status_code == 201, response.text
    api.project_files(name)
    return name


@pytest.fixture
def datasource(api: Api, project: str) -> str:
    """The CSV data source ``events`` of ``project`` (3 rows; see ``builders.make_source``)."""
    return make_source(api, project)


@pytest.fixture
def job(api: Api, project: str, datasource: str) -> str:
    """The manual SQL job ``totals`` of ``project``: ``TOTALS_SQL`` over ``datasource``."""
    response = api.post(f"/projects/{project}/jobs/totals", json=job_body(TOTALS_SQL))
    assert response.status_code == 201, response.text
    return "totals"


@pytest.fixture
def job_run(api: Api, project: str, job: str, workers: WorkerPool) -> dict[str, Any]:
    """A Successful run of ``job`` by the session's workers: its history entry."""
    entry = wait_for(api, project, job, start(api, project, job), TERMINAL)
    assert entry["status"] == "Successful", entry
    return entry


@pytest.fixture
def streaming_job(api: Api, project: str) -> str:
    """A READY streaming job of ``project``, fed by its ingest endpoint (``device`` and
    ``value``) into the folder ``stream_out``: its id."""
    fields = [{"field": "device", "type": "STRING"}, {"field": "value", "type": "DOUBLE"}]
    body = {
        "definition": {"jobName": "ingest_to_files"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": fields}),
            op("out", "DISSink", ["src"], {"target": "stream_out"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }
    return create_ready(api, project, body)


@dataclass
class Recorder:
    """A threaded HTTP server on loopback; ``answer`` decides each response."""

    answer: Callable[[str, dict[str, Any] | list[Any] | None], tuple[int, Any, dict[str, str]]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    most_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timed-out function call) is expected here."""


@pytest.fixture
def http_server() -> Iterator[Callable[..., Recorder]]:
    """Starts threaded HTTP servers on loopback (webhooks, functions); ``answer(path, body)``
    returns (status, JSON value or bytes, headers). Stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[..., tuple[int, Any, dict[str, str]]]) -> Recorder:
        recorder = Recorder(answer)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with recorder.lock:
                    recorder.active += 1
                    recorder.most_active = max(recorder.most_active, recorder.active)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"null")
                    recorder.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    status, payload, headers = recorder.answer(self.path, body)
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with recorder.lock:
                        recorder.active -= 1

            do_PUT = do_POST

            def log_message(self, *_args: Any) -> None:
                pass

        server = QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        recorder.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return recorder

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def assert_error(response: httpx.Response, status: int, code: str, *needles: str) -> None:
    """The response is the catalog error ``code`` with ``status``, mentioning each needle."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "error_msg", "request_id"}, body
    assert body["error_code"] == code, body
    assert body["request_id"] == response.headers["x-request-id"]
    for needle in needles:
        assert needle in body["error_msg"], (needle, body)
