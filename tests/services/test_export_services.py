"""Exports to network services, end to end: the API, real worker processes and real servers.

Every destination is a real server on loopback, started once per session: a small
threading HTTP receiver in this module (it records requests and can be told to answer
500, 404 or 302), ``osmem-server`` (OpenSearch-compatible) for ``logdb``, InfluxDB 1.x for
``tsdb``, and PostgreSQL and SQLite for ``report``. Each test compares what arrived with
``GET …/runs/{runId}/result``, reruns the export of the batch to show it does not
duplicate (``http`` is the exception: HTTP is not idempotent, a rerun sends the rows again
with the same ``Idempotency-Key`` headers), and checks the refusals: unknown fields,
credentials in the spec, missing secrets, targets that are down and private addresses.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.runtime.worker import WorkerPool
from tests.builders import TERMINAL, job_body, outbound_allowed, start, wait_for
from tests.conftest import Api, assert_error
from tests.servers import (
    RunningServer,
    create_database,
    free_port,
    start_influxdb,
    start_opensearch,
    start_victoria_metrics,
)

UTC = dt.UTC
BASE_TIME = dt.datetime(2024, 5, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- HTTP receiver


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server recording every request; answers can be planned per path."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    plans: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def plan(self, path: str, *answers: tuple[int, dict[str, str], bytes]) -> None:
        with self.lock:
            self.plans.setdefault(path, []).extend(answers)

    def received(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def answer(self, request: Received) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append(request)
            queue = self.plans.get(request.path)
            if queue:
                return queue.pop(0)
        if request.path.endswith("/write"):
            return 204, {}, b""
        if request.path.endswith("/_bulk"):
            return 200, {"Content-Type": "application/json"}, b'{"errors":false,"items":[]}'
        return 200, {"Content-Type": "text/plain"}, b"ok"


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            status, headers, content = holder[0].answer(
                Received(
                    self.command,
                    parts.path,
                    parts.query,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_POST = do_PUT = do_GET = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def opensearch(workdir: Path) -> Iterator[RunningServer]:
    server = start_opensearch(workdir / "opensearch")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxdb(workdir: Path) -> Iterator[RunningServer]:
    server = start_influxdb(workdir / "influxdb")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoria_metrics(workdir: Path) -> Iterator[RunningServer]:
    server = start_victoria_metrics(workdir / "victoria-metrics")
    yield server
    server.stop()


# ------------------------------------------------------------------------------- helpers

ROWS: list[dict[str, Any]] = [
    {
        "device": "dev 1,a=b",
        "value": 1.5,
        "n": 1,
        "flag": True,
        "ts": BASE_TIME + dt.timedelta(seconds=1),
        "note": 'say "hi"\tthen \\ go',
    },
    {
        "device": "d2",
        "value": -2.25,
        "n": 2,
        "flag": False,
        "ts": BASE_TIME + dt.timedelta(seconds=2, milliseconds=500),
        "note": "line1\nline2",
    },
    {
        "device": "d3 é",
        "value": 3.0,
        "n": 3,
        "flag": None,
        "ts": BASE_TIME + dt.timedelta(seconds=3),
        "note": None,
    },
    {
        "device": "d2",
        "value": 4.0,
        "n": 4,
        "flag": True,
        "ts": BASE_TIME + dt.timedelta(seconds=4),
        "note": "a=b",
    },
    {
        "device": "d1",
        "value": 5.0,
        "n": 5,
        "flag": False,
        "ts": BASE_TIME + dt.timedelta(seconds=5),
        "note": "plain",
    },
]
SQL = "SELECT device, value, n, flag, ts, note, '$(tag)' AS tag FROM ev ORDER BY n"


def make_events(api: Api, project: str) -> None:
    """A parquet data source ``events`` holding :data:`ROWS` (awkward characters included)."""
    table = pa.table(
        {
            "device": pa.array([r["device"] for r in ROWS], pa.string()),
            "value": pa.array([r["value"] for r in ROWS], pa.float64()),
            "n": pa.array([r["n"] for r in ROWS], pa.int64()),
            "flag": pa.array([r["flag"] for r in ROWS], pa.bool_()),
            "ts": pa.array([r["ts"] for r in ROWS], pa.timestamp("us", tz="UTC")),
            "note": pa.array([r["note"] for r in ROWS], pa.string()),
        }
    )
    folder = api.data_root / project
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "events.parquet")
    response = api.post(
        f"/projects/{project}/datasources/events",
        json={
            "type": "file",
            "spec": {
                "root": "default",
                "paths": ["events.parquet"],
                "fileType": "parquet",
            },
        },
    )
    assert response.status_code == 201, response.text


def make_job(api: Api, project: str, job: str = "out", sql: str = SQL) -> None:
    make_events(api, project)
    body = job_body(sql, params=[{"name": "tag", "default": "a"}])
    response = api.post(f"/projects/{project}/jobs/{job}", json=body)
    assert response.status_code == 201, response.text


def run_job(api: Api, project: str, job: str = "out", tag: str = "a") -> int:
    run_id = start(api, project, job, [{"name": "tag", "value": tag}])
    entry = wait_for(api, project, job, run_id, TERMINAL, timeout=60)
    assert entry["status"] == "Successful", entry
    return run_id


def result_rows(api: Api, project: str, job: str, run_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/projects/{project}/jobs/{job}/runs/{run_id}/result")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def add_export(api: Api, project: str, name: str, type_: str, spec: dict[str, Any]) -> None:
    response = api.post(
        f"/projects/{project}/jobs/out/exports/{name}", json={"type": type_, "spec": spec}
    )
    assert response.status_code == 201, response.text


def add_secret(api: Api, project: str, name: str, values: dict[str, str]) -> None:
    response = api.post(f"/projects/{project}/secrets/{name}", json={"values": values})
    assert response.status_code == 201, response.text


def wait_export(
    api: Api, project: str, name: str, run_id: int, reruns: int = 0, timeout: float = 60
) -> dict[str, Any]:
    """The export run of job run ``run_id`` once it is terminal (after ``reruns`` reruns)."""
    deadline = time.monotonic() + timeout
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = api.get(f"/projects/{project}/jobs/out/exports/{name}/history")
        assert response.status_code == 200, response.text
        found = [e for e in response.json()["history"] if e["runId"] == run_id]
        if found:
            entry = found[0]
            if entry["status"] in TERMINAL and entry["rerunCount"] >= reruns:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"export {name} of run {run_id} did not finish: {entry}")


def rerun_export(api: Api, project: str, name: str, run_id: int) -> None:
    response = api.post(
        f"/projects/{project}/jobs/out/exports/{name}/actions/rerun", json={"runId": run_id}
    )
    assert response.status_code == 200, response.text


def job_status(api: Api, project: str, run_id: int) -> str:
    body = api.get(f"/projects/{project}/jobs/out/history", params={"runId": run_id}).json()
    return str(body["history"][0]["status"])


def unescape_text(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[value[i + 1]])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ----------------------------------------------------------------------------------- http


@pytest.mark.slow
def test_http_export_text_and_json(
    api: Api, project: str, workers: WorkerPool, receiver: Receiver
) -> None:
    make_job(api, project)
    add_secret(api, project, "hook", {"token": "s3cr3t-token"})
    path = f"/hook/{uuid.uuid4().hex}"
    add_export(
        api,
        project,
        "as_text",
        "http",
        {
            "host": receiver.hostport,  # no scheme: http
            "uri": path + "/text",
            "batchSize": 2,
            "headers": {"X-Team": "reports"},
            "secret": "hook",
        },
    )
    add_export(
        api,
        project,
        "as_json",
        "http",
        {
            "host": f"http://localhost:{receiver.hostport.split(':')[1]}",
            "uri": path + "/json",
            "format": "json",
        },
    )
    run_id = run_job(api, project)
    rows = result_rows(api, project, "out", run_id)
    assert len(rows) == 5

    text_run = wait_export(api, project, "as_text", run_id)
    assert text_run["status"] == "Successful", text_run
    assert text_run["rowsWritten"] == 5
    assert "3 requests" in text_run["message"]
    assert "200 x3" in text_run["message"]
    texts = receiver.received(path + "/text")
    assert len(texts) == 3
    parsed = []
    for request in texts:
        assert request.method == "POST"
        assert request.headers["content-type"] == "text/plain; charset=utf-8"
        assert request.headers["authorization"] == "Bearer s3cr3t-token"
        assert request.headers["x-team"] == "reports"
        assert request.headers["host"] == receiver.hostport
        lines = request.body.decode().splitlines()
        assert 1 <= len(lines) <= 2
        for line in lines:
            pairs = [item.partition("=") for item in line.split("\t")]
            parsed.append({k: unescape_text(v) for k, _, v in pairs})
    assert parsed == [{k: as_text(v) for k, v in row.items()} for row in rows]
    assert [r.headers["x-datamill-part"] for r in texts] == ["1/3", "2/3", "3/3"]

    json_run = wait_export(api, project, "as_json", run_id)
    assert json_run["status"] == "Successful", json_run
    (posted,) = receiver.received(path + "/json")
    assert posted.headers["content-type"] == "application/json"
    assert posted.headers["host"].startswith("localhost:")  # the name, though the IP is used
    assert "authorization" not in posted.headers
    assert json.loads(posted.body) == rows

    # HTTP is not idempotent: a rerun sends the rows again, with the same idempotency keys.
    keys = [r.headers["idempotency-key"] for r in texts]
    rerun_export(api, project, "as_text", run_id)
    again = wait_export(api, project, "as_text", run_id, reruns=1)
    assert again["status"] == "Successful", again
    resent = receiver.received(path + "/text")
    assert len(resent) == 6
    assert [r.headers["idempotency-key"] for r in resent[3:]] == keys
    assert [r.body for r in resent[3:]] == [r.body for r in texts]


@pytest.mark.slow
def test_http_retries_refusals_and_down_target(
    api: Api, project: str, workers: WorkerPool, receiver: Receiver
) -> None:
    make_job(api, project)
    base = f"/hook/{uuid.uuid4().hex}"
    flaky, missing, moved = base + "/flaky", base + "/missing", base + "/moved"
    receiver.plan(flaky, (500, {}, b"busy"), (503, {}, b"busy"))
    receiver.plan(missing, (404, {}, b"no such hook here"))
    receiver.plan(moved, (302, {"Location": base + "/elsewhere"}, b""))
    spec = {"host": receiver.url, "format": "json"}
    add_export(api, project, "flaky", "http", {**spec, "uri": flaky})
    add_export(api, project, "missing", "http", {**spec, "uri": missing})
    add_export(api, project, "moved", "http", {**spec, "uri": moved})
    down = f"127.0.0.1:{free_port()}"
    add_export(api, project, "down", "http", {**spec, "host": down, "uri": "/", "retries": 1})
    private_spec = {**spec, "host": "10.255.255.1:8080", "uri": "/"}
    assert_error(
        api.post(
            f"/projects/{project}/jobs/out/exports/private",
            json={"type": "http", "spec": private_spec},
        ),
        400,
        "E18118",
        "spec.host",
        "10.255.255.1",
    )
    with outbound_allowed(api, "10.255.255.1"):  # the workers' list does not have it
        add_export(api, project, "private", "http", private_spec)
    add_secret(api, project, "wrong_keys", {"other": "x"})
    add_export(
        api, project, "nokey", "http", {**spec, "uri": base + "/nokey", "secret": "wrong_keys"}
    )
    run_id = run_job(api, project)

    # 500 and 503 are retried inside the run; the third try succeeds.
    ok = wait_export(api, project, "flaky", run_id)
    assert ok["status"] == "Successful", ok
    assert ok["attempt"] == 1
    assert "200 x1" in ok["message"]
    assert "500 x1" in ok["message"]
    assert "503 x1" in ok["message"]
    assert len(receiver.received(flaky)) == 3

    # 404 is refused at once: no retry of the request or of the run.
    refused = wait_export(api, project, "missing", run_id)
    assert refused["status"] == "Failed", refused
    assert refused["attempt"] == 1
    assert "404" in refused["message"]
    assert "no such hook here" in refused["message"]
    assert len(receiver.received(missing)) == 1

    # A redirect is an error and is not followed.
    redirected = wait_export(api, project, "moved", run_id)
    assert redirected["status"] == "Failed", redirected
    assert "302" in redirected["message"]
    assert "not followed" in redirected["message"]
    assert receiver.received(base + "/elsewhere") == []

    # Nothing listens: transient, retried by the run machinery, then Failed.
    failed = wait_export(api, project, "down", run_id)
    assert failed["status"] == "Failed", failed
    assert failed["attempt"] == 2
    assert "destination unavailable" in failed["message"]
    assert down in failed["message"]
    assert "after 3 tries" in failed["message"]

    # A private address that is not allow-listed is refused before connecting.
    private = wait_export(api, project, "private", run_id)
    assert private["status"] == "Failed", private
    assert private["attempt"] == 1
    assert "10.255.255.1" in private["message"]
    assert "private" in private["message"]

    nokey = wait_export(api, project, "nokey", run_id)
    assert nokey["status"] == "Failed", nokey
    assert "has no value 'token'" in nokey["message"]
    assert receiver.received(base + "/nokey") == []

    assert job_status(api, project, run_id) == "Successful"


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for DNS name ``name``: (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_connects_to_the_checked_address_and_verifies_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink itself (no API): the URL holds the resolved IP, TLS still checks the name.

    The server's certificate is for ``localhost``; the client trusts it through a CA file
    passed to httpx (patched in: the sink uses the system's CAs). A certificate for
    another name is refused at once (SinkError, not a transient failure).
    """
    import functools
    import ssl

    from datamill.connectors.sinks import SINKS
    from datamill.connectors.sinks.base import ExportBatch, ExportContext, SinkError
    from datamill.domain.datasources import SchemaField
    from datamill.domain.variables import Resolver

    seen: list[tuple[str | None, str]] = []

    def serve(cert_name: str) -> ThreadingHTTPServer:
        cert, key = self_signed(tmp_path, cert_name)
        names: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((names[-1] if names else None, self.headers["Host"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _sock, name, _ctx: names.append(name)
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    good, wrong = serve("localhost"), serve("example.test")
    trust = ssl.create_default_context(cafile=str(tmp_path / "localhost.crt"))
    trust.load_verify_locations(cafile=str(tmp_path / "example.test.crt"))
    monkeypatch.setattr(httpx, "Client", functools.partial(httpx.Client, verify=trust))
    pq.write_table(pa.table({"n": [1, 2]}), tmp_path / "part-0.parquet")
    batch = ExportBatch(
        project="p",
        job="j",
        export="e",
        run_id=1,
        batch_time=BASE_TIME,
        schema=[SchemaField(key="n", valtype="long")],
        parquet_files=[tmp_path / "part-0.parquet"],
        resolver=Resolver({}, BASE_TIME, {}),
    )
    ctx = ExportContext(
        data_roots={}, outbound_allow=["localhost"], secret_values={}, temp_dir=tmp_path
    )
    sink = SINKS["http"]
    try:
        port = good.server_address[1]
        spec = sink.spec_model.model_validate({"host": f"https://localhost:{port}", "uri": "/in"})
        outcome = sink.write(spec, batch, ctx)
        assert outcome.rows == 2
        assert seen == [("localhost", f"localhost:{port}")]

        port = wrong.server_address[1]
        spec = sink.spec_model.model_validate({"host": f"https://localhost:{port}", "uri": "/in"})
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED") as refused:
            sink.write(spec, batch, ctx)
        assert type(refused.value) is SinkError
        assert len(seen) == 1
    finally:
        for server in (good, wrong):
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------------------------- logdb


def search(server: RunningServer, index: str) -> list[dict[str, Any]]:
    httpx.post(f"{server.url}/{index}/_refresh")
    response = httpx.get(f"{server.url}/{index}/_search", params={"size": 1000})
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [hit for hit in response.json()["hits"]["hits"]]


def doc_count(server: RunningServer, index: str) -> int:
    httpx.post(f"{server.url}/{index}/_refresh")
    response = httpx.get(f"{server.url}/{index}/_count")
    if response.status_code == 404:
        return 0
    return int(response.json()["count"])


@pytest.mark.slow
def test_logdb_export_and_rerun(
    api: Api, project: str, workers: WorkerPool, opensearch: RunningServer
) -> None:
    make_job(api, project)
    index = f"logs-{uuid.uuid4().hex[:10]}"
    doc = {
        "device": "device",
        "val": "value",
        "count": "n",
        "on": "flag",
        "at": "ts",
        "note": "note",
    }
    add_export(
        api,
        project,
        "to_logs",
        "logdb",
        {"endpoint": opensearch.url, "destRepoName": index, "doc": doc, "batchSize": 2},
    )
    by_device = f"bydev-{uuid.uuid4().hex[:10]}"
    add_export(
        api,
        project,
        "by_device",
        "logdb",
        {
            "endpoint": opensearch.url + "/",
            "destRepoName": by_device,
            "doc": {"device": "device", "count": "n"},
            "idFields": ["device"],
        },
    )
    run_id = run_job(api, project)
    rows = result_rows(api, project, "out", run_id)

    entry = wait_export(api, project, "to_logs", run_id)
    assert entry["status"] == "Successful", entry
    assert entry["rowsWritten"] == 5
    hits = search(opensearch, index)
    expected = [{k: row[v] for k, v in doc.items()} for row in rows]
    assert sorted((h["_source"] for h in hits), key=lambda d: d["count"]) == expected
    ids = sorted(h["_id"] for h in hits)

    # Rerunning the batch overwrites the same documents.
    rerun_export(api, project, "to_logs", run_id)
    assert wait_export(api, project, "to_logs", run_id, reruns=1)["status"] == "Successful"
    assert doc_count(opensearch, index) == 5
    assert sorted(h["_id"] for h in search(opensearch, index)) == ids

    # idFields: rows with equal id values stay distinct documents (occurrence number), and
    # the set of ids is the same on every rerun.
    assert wait_export(api, project, "by_device", run_id)["status"] == "Successful"
    first = sorted(h["_id"] for h in search(opensearch, by_device))
    assert len(first) == 5
    rerun_export(api, project, "by_device", run_id)
    assert wait_export(api, project, "by_device", run_id, reruns=1)["status"] == "Successful"
    assert sorted(h["_id"] for h in search(opensearch, by_device)) == first

    # A new batch of the same job adds documents; it does not overwrite the first batch.
    second = run_job(api, project, tag="b")
    assert wait_export(api, project, "to_logs", second)["status"] == "Successful"
    assert wait_export(api, project, "by_device", second)["status"] == "Successful"
    assert doc_count(opensearch, index) == 10


@pytest.mark.slow
def test_logdb_omit_invalid(
    api: Api, project: str, workers: WorkerPool, opensearch: RunningServer
) -> None:
    sql = (
        "SELECT n, CASE WHEN n % 2 = 0 THEN 'x' || n ELSE CAST(n AS VARCHAR) END AS code, "
        "CASE WHEN n = 5 THEN CAST('NaN' AS DOUBLE) ELSE value END AS v FROM ev ORDER BY n"
    )
    make_job(api, project, sql=sql)
    strict, lenient, local = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("strict", "lenient", "local"))
    for index in (strict, lenient):
        created = httpx.put(
            f"{opensearch.url}/{index}",
            json={"mappings": {"properties": {"code": {"type": "long"}}}},
        )
        assert created.status_code == 200, created.text
    base = {"endpoint": opensearch.url}
    add_export(
        api,
        project,
        "strict",
        "logdb",
        {**base, "destRepoName": strict, "doc": {"n": "n", "code": "code"}},
    )
    add_export(
        api,
        project,
        "lenient",
        "logdb",
        {
            **base,
            "destRepoName": lenient,
            "doc": {"n": "n", "code": "code", "v": "v"},
            "omitInvalid": True,
        },
    )
    add_export(
        api, project, "local", "logdb", {**base, "destRepoName": local, "doc": {"n": "n", "v": "v"}}
    )
    run_id = run_job(api, project)

    # The server refuses 'x2' and 'x4' for a long field: the export fails, without retries.
    refused = wait_export(api, project, "strict", run_id)
    assert refused["status"] == "Failed", refused
    assert refused["attempt"] == 1
    assert "2 documents rejected" in refused["message"]
    assert "mapper_parsing_exception" in refused["message"]

    # omitInvalid: the rejected rows and the NaN row are skipped and counted.
    skipped = wait_export(api, project, "lenient", run_id)
    assert skipped["status"] == "Successful", skipped
    assert skipped["rowsWritten"] == 2
    assert "skipped 3 invalid rows" in skipped["message"]
    assert sorted(h["_source"]["n"] for h in search(opensearch, lenient)) == [1, 3]

    # A value JSON cannot carry fails the export before anything is sent.
    local_run = wait_export(api, project, "local", run_id)
    assert local_run["status"] == "Failed", local_run
    assert "row 5" in local_run["message"]
    assert "omitInvalid" in local_run["message"]
    assert doc_count(opensearch, local) == 0
    assert job_status(api, project, run_id) == "Successful"


@pytest.mark.slow
def test_logdb_basic_auth_from_secret(
    api: Api, project: str, workers: WorkerPool, receiver: Receiver
) -> None:
    """osmem does not check credentials, so the header is checked on the HTTP receiver."""
    make_job(api, project)
    add_secret(api, project, "search_login", {"username": "writer", "password": "pa55word"})
    prefix = f"/es-{uuid.uuid4().hex[:8]}"
    add_export(
        api,
        project,
        "auth",
        "logdb",
        {
            "endpoint": receiver.url + prefix,
            "destRepoName": "idx",
            "doc": {"n": "n"},
            "secret": "search_login",
        },
    )
    run_id = run_job(api, project)
    assert wait_export(api, project, "auth", run_id)["status"] == "Successful"
    (bulk,) = receiver.received(prefix + "/_bulk")
    assert bulk.headers["authorization"] == "Basic d3JpdGVyOnBhNTV3b3Jk"  # writer:pa55word
    assert bulk.headers["content-type"] == "application/x-ndjson"
    lines = bulk.body.decode().splitlines()
    assert len(lines) == 10
    assert json.loads(lines[0])["index"]["_index"] == "idx"


# ----------------------------------------------------------------------------------- tsdb


def influx_query(server: RunningServer, db: str, query: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/query", params={"db": db, "q": query, "epoch": "ms"}, timeout=10
    )
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    out: list[dict[str, Any]] = []
    for series in result.get("series", []):
        out.extend(dict(zip(series["columns"], values, strict=True)) for values in series["values"])
    return out


def create_influx_db(server: RunningServer) -> str:
    name = f"db_{uuid.uuid4().hex[:10]}"
    response = httpx.post(f"{server.url}/query", params={"q": f'CREATE DATABASE "{name}"'})
    assert response.status_code == 200, response.text
    return name


def export_points(api: Api, project: str, spec: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Run the job with a tsdb export ``points`` of ``spec``; (run id, the result's rows)
    once the export has written all 5 rows."""
    add_export(api, project, "points", "tsdb", spec)
    run_id = run_job(api, project)
    entry = wait_export(api, project, "points", run_id)
    assert entry["status"] == "Successful", entry
    assert entry["rowsWritten"] == 5
    return run_id, result_rows(api, project, "out", run_id)


@pytest.mark.slow
def test_tsdb_export_and_rerun(
    api: Api, project: str, workers: WorkerPool, influxdb: RunningServer
) -> None:
    make_job(api, project)
    db = create_influx_db(influxdb)
    series = "dev metrics,v1"  # a space and a comma: escaped in line protocol
    spec = {
        "endpoint": influxdb.url,
        "destRepoName": db,
        "series": series,
        "tags": {"device id": "device", "batch": "tag"},
        "fields": {"value": "value", "n": "n", "flag": "flag", "note": "note", "at=": "ts"},
        "timestamp": "ts",
        "batchSize": 2,
    }
    run_id, rows = export_points(api, project, spec)
    measurement = series.replace('"', '\\"')
    points = influx_query(influxdb, db, f'SELECT * FROM "{measurement}" ORDER BY time')
    expected = [
        {
            "time": int(dt.datetime.fromisoformat(row["ts"]).timestamp() * 1000),
            "device id": row["device"],
            "batch": row["tag"],
            "value": row["value"],
            "n": row["n"],
            "flag": row["flag"],
            "note": row["note"],
            "at=": row["ts"],
        }
        for row in rows
    ]
    assert points == expected

    rerun_export(api, project, "points", run_id)
    assert wait_export(api, project, "points", run_id, reruns=1)["status"] == "Successful"
    counted = influx_query(influxdb, db, f'SELECT count("n") FROM "{measurement}"')
    assert counted[0]["count"] == 5


def victoria_series(server: RunningServer, db: str) -> dict[tuple[str, str, str], Any]:
    """(metric, device, batch) -> (timestamps in ms, values) of every series of ``db``."""
    flushed = httpx.get(f"{server.url}/internal/force_flush", timeout=10)
    assert flushed.status_code == 200, flushed.text
    response = httpx.post(
        f"{server.url}/api/v1/export", data={"match[]": f'{{db="{db}"}}'}, timeout=10
    )
    assert response.status_code == 200, response.text
    found: dict[tuple[str, str, str], Any] = {}
    for line in response.text.splitlines():
        series = json.loads(line)
        labels = series["metric"]
        key = (labels["__name__"], labels["device"], labels["batch"])
        found[key] = sorted(zip(series["timestamps"], series["values"], strict=True))
    return found


@pytest.mark.slow
def test_tsdb_export_to_victoria_metrics_and_rerun(
    api: Api, project: str, workers: WorkerPool, victoria_metrics: RunningServer
) -> None:
    """VictoriaMetrics takes the same ``/write``: a measurement's numeric fields become
    metrics ``<series>_<field>``, the tags and ``db`` labels. A rerun writes the same
    samples again, which its deduplication (one sample per series and timestamp) keeps
    once."""
    make_job(api, project)
    db = f"db_{uuid.uuid4().hex[:10]}"
    spec = {
        "endpoint": victoria_metrics.url,
        "destRepoName": db,
        "series": "dev",
        "tags": {"device": "device", "batch": "tag"},
        "fields": {"value": "value", "n": "n"},
        "timestamp": "ts",
        "batchSize": 2,
    }
    run_id, rows = export_points(api, project, spec)

    expected: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for row in rows:
        at = int(dt.datetime.fromisoformat(row["ts"]).timestamp() * 1000)
        for field_name in ("value", "n"):
            key = (f"dev_{field_name}", row["device"], row["tag"])
            expected.setdefault(key, []).append((at, row[field_name]))
    assert victoria_series(victoria_metrics, db) == {k: sorted(v) for k, v in expected.items()}

    rerun_export(api, project, "points", run_id)
    assert wait_export(api, project, "points", run_id, reruns=1)["status"] == "Successful"
    assert victoria_series(victoria_metrics, db) == {k: sorted(v) for k, v in expected.items()}


@pytest.mark.slow
def test_tsdb_omit_invalid_precision_and_auth(
    api: Api, project: str, workers: WorkerPool, influxdb: RunningServer, receiver: Receiver
) -> None:
    sql = (
        "SELECT device, value, CASE WHEN n % 2 = 0 THEN NULL ELSE ts END AS ts, "
        "epoch_ms(ts) AS ms FROM ev ORDER BY n"
    )
    make_job(api, project, sql=sql)
    db = create_influx_db(influxdb)
    base = {"endpoint": influxdb.url, "destRepoName": db, "fields": {"value": "value"}}
    add_export(api, project, "strict", "tsdb", {**base, "series": "strict", "timestamp": "ts"})
    add_export(
        api,
        project,
        "lenient",
        "tsdb",
        {**base, "series": "lenient", "timestamp": "ts", "omitInvalid": True},
    )
    add_export(
        api,
        project,
        "seconds",
        "tsdb",
        {**base, "series": "seconds", "timestamp": "ms", "precision": "s", "tags": {"d": "device"}},
    )
    add_secret(api, project, "influx_login", {"username": "w", "password": "influx-pw"})
    prefix = f"/influx-{uuid.uuid4().hex[:8]}"
    add_export(
        api,
        project,
        "auth",
        "tsdb",
        {
            **base,
            "endpoint": receiver.url + prefix,
            "series": "m",
            "timestamp": "ms",
            "secret": "influx_login",
            "precision": "ns",
        },
    )
    run_id = run_job(api, project)

    strict = wait_export(api, project, "strict", run_id)
    assert strict["status"] == "Failed", strict
    assert "row 2: the timestamp is null" in strict["message"]
    assert influx_query(influxdb, db, "SELECT * FROM strict") == []  # nothing was sent

    lenient = wait_export(api, project, "lenient", run_id)
    assert lenient["status"] == "Successful", lenient
    assert lenient["rowsWritten"] == 3
    assert "skipped 2 invalid rows" in lenient["message"]
    assert [p["value"] for p in influx_query(influxdb, db, "SELECT * FROM lenient")] == [
        1.5,
        3.0,
        5.0,
    ]

    # Epoch milliseconds sent with precision s: 2.5 s is truncated to 2 s.
    assert wait_export(api, project, "seconds", run_id)["status"] == "Successful"
    times = [p["time"] for p in influx_query(influxdb, db, "SELECT * FROM seconds")]
    start_ms = int(BASE_TIME.timestamp() * 1000)
    assert times == [start_ms + s * 1000 for s in (1, 2, 3, 4, 5)]

    assert wait_export(api, project, "auth", run_id)["status"] == "Successful"
    (write,) = receiver.received(prefix + "/write")
    assert write.headers["authorization"].startswith("Basic ")
    assert "influx-pw" not in write.query
    assert f"db={db}" in write.query
    assert "precision=ns" in write.query
    first_line = write.body.decode().splitlines()[0]
    assert first_line == f"m value=1.5 {(int(BASE_TIME.timestamp()) + 1) * 10**9}"


# --------------------------------------------------------------------------------- report


@pytest.fixture(params=["postgresql", "sqlite"])
def report_db(request: pytest.FixtureRequest, api: Api, project: str) -> tuple[str, Any]:
    """(the database URL for the secret, a function running a query there)."""
    if request.param == "postgresql":
        server: RunningServer = request.getfixturevalue("postgres_server")
        url = create_database(server, f"rep_{uuid.uuid4().hex[:8]}")

        def pg_query(sql: str) -> list[tuple[Any, ...]]:
            import psycopg

            with psycopg.connect(url) as conn:
                return list(conn.execute(sql).fetchall())

        return url, pg_query
    path = api.data_root / project / "reports" / "report.db"

    def sqlite_query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return list(conn.execute(sql).fetchall())

    return f"sqlite:///{path}", sqlite_query


@pytest.mark.slow
def test_report_overwrite_append_and_rerun(
    api: Api, project: str, workers: WorkerPool, report_db: tuple[str, Any]
) -> None:
    url, query = report_db
    make_job(api, project)
    add_secret(api, project, "report_db", {"url": url})
    columns = {"device": "device", "value": "value", "n": "n", "flag": "flag", "tag": "tag"}
    add_export(
        api,
        project,
        "latest",
        "report",
        {"secret": "report_db", "tableName": "latest", "columns": columns},
    )
    add_export(
        api,
        project,
        "history",
        "report",
        {
            "secret": "report_db",
            "dbName": "reports",
            "tableName": "history",
            "columns": {**columns, "at": "ts"},
            "saveMode": "append",
            "batchSize": 2,
        },
    )
    first = run_job(api, project, tag="a")
    rows = result_rows(api, project, "out", first)
    for name in ("latest", "history"):
        entry = wait_export(api, project, name, first)
        assert entry["status"] == "Successful", entry
        assert entry["rowsWritten"] == 5
    select = "SELECT device, value, n, flag, tag FROM {} ORDER BY tag, n"
    expected = [(r["device"], r["value"], r["n"], r["flag"], r["tag"]) for r in rows]

    def table(name: str) -> list[tuple[Any, ...]]:
        return [
            (d, v, n, None if f is None else bool(f), t)
            for d, v, n, f, t in query(select.format(name))
        ]

    assert table("latest") == expected
    assert table("history") == expected
    stamps = query("SELECT at FROM history ORDER BY n")
    got = [s if isinstance(s, dt.datetime) else dt.datetime.fromisoformat(s) for (s,) in stamps]
    assert [g.replace(tzinfo=UTC) if g.tzinfo is None else g for g in got] == [
        dt.datetime.fromisoformat(r["ts"]) for r in rows
    ]

    second = run_job(api, project, tag="b")
    for name in ("latest", "history"):
        assert wait_export(api, project, name, second)["status"] == "Successful"
    rows_b = [(d, v, n, f, "b") for d, v, n, f, _ in expected]
    assert table("latest") == rows_b  # overwrite: the table holds the last batch
    assert table("history") == expected + rows_b  # append: both batches
    assert query("SELECT count(DISTINCT _datamill_batch) FROM history") == [(2,)]

    # Re-exporting the first batch replaces its rows instead of adding them again.
    rerun_export(api, project, "history", first)
    entry = wait_export(api, project, "history", first, reruns=1)
    assert entry["status"] == "Successful", entry
    assert "replaced 5 rows of the same batch" in entry["message"]
    assert table("history") == expected + rows_b
    rerun_export(api, project, "latest", first)
    assert wait_export(api, project, "latest", first, reruns=1)["status"] == "Successful"
    assert table("latest") == expected


@pytest.mark.slow
def test_report_refusals(
    api: Api, project: str, workers: WorkerPool, postgres_server: RunningServer, tmp_path: Path
) -> None:
    make_job(api, project)
    columns = {"n": "n"}
    targets = {
        "outside": f"sqlite:///{tmp_path / 'elsewhere.db'}",
        "private": "postgresql://postgres:pw@10.1.2.3:5432/reports",
        "sockets": f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?host=/tmp",
        "down": f"postgresql://postgres:hunter22@127.0.0.1:{free_port()}/reports",
        "mysql": "mysql://u:p@127.0.0.1/reports",
    }
    for name, url in targets.items():
        add_secret(api, project, f"db_{name}", {"url": url})
        spec: dict[str, Any] = {"secret": f"db_{name}", "tableName": "t", "columns": columns}
        if name == "down":
            spec["retries"] = 1
        if name == "private":
            refused = api.post(
                f"/projects/{project}/jobs/out/exports/{name}",
                json={"type": "report", "spec": spec},
            )
            assert_error(refused, 400, "E18118", "spec.secret", "10.1.2.3")
            with outbound_allowed(api, "10.1.2.3"):  # the workers' list does not have it
                add_export(api, project, name, "report", spec)
            continue
        add_export(api, project, name, "report", spec)
    run_id = run_job(api, project)
    outcomes = {name: wait_export(api, project, name, run_id) for name in targets}
    assert all(e["status"] == "Failed" for e in outcomes.values()), outcomes
    assert "outside the project's data roots" in outcomes["outside"]["message"]
    assert not (tmp_path / "elsewhere.db").exists()
    assert "10.1.2.3" in outcomes["private"]["message"]
    assert "private" in outcomes["private"]["message"]
    assert "'host' is not allowed" in outcomes["sockets"]["message"]
    assert "not supported" in outcomes["mysql"]["message"]
    down = outcomes["down"]
    assert down["attempt"] == 2
    assert "destination unavailable" in down["message"]
    assert "hunter22" not in down["message"]
    assert job_status(api, project, run_id) == "Successful"


# ------------------------------------------------------------------ targets that are down


@pytest.mark.slow
def test_down_targets_fail_after_retries(api: Api, project: str, workers: WorkerPool) -> None:
    make_job(api, project)
    port = free_port()  # nothing listens here
    add_export(
        api,
        project,
        "logs_down",
        "logdb",
        {
            "endpoint": f"http://127.0.0.1:{port}",
            "destRepoName": "x",
            "doc": {"n": "n"},
            "retries": 1,
        },
    )
    add_export(
        api,
        project,
        "tsdb_down",
        "tsdb",
        {
            "endpoint": f"http://localhost:{port}",
            "destRepoName": "x",
            "series": "s",
            "fields": {"v": "value"},
            "timestamp": "ts",
            "retries": 1,
        },
    )
    private = {"endpoint": "http://192.168.77.1:9200", "destRepoName": "x", "doc": {"n": "n"}}
    metadata = {
        "endpoint": "http://169.254.169.254",
        "destRepoName": "x",
        "series": "s",
        "fields": {"v": "value"},
        "timestamp": "ts",
    }
    refused = api.post(
        f"/projects/{project}/jobs/out/exports/logs_private",
        json={"type": "logdb", "spec": private},
    )
    assert_error(refused, 400, "E18118", "spec.endpoint", "192.168.77.1")
    # saved while allowed; the workers' allow list no longer has them when they run
    with outbound_allowed(api, "192.168.77.1", "169.254.169.254"):
        add_export(api, project, "logs_private", "logdb", private)
        add_export(api, project, "tsdb_metadata", "tsdb", metadata)
    run_id = run_job(api, project)
    for name in ("logs_down", "tsdb_down"):
        entry = wait_export(api, project, name, run_id)
        assert entry["status"] == "Failed", entry
        assert entry["attempt"] == 2
        assert "destination unavailable" in entry["message"]
        assert str(port) in entry["message"]
        assert "after 3 tries" in entry["message"]
    for name, address in (("logs_private", "192.168.77.1"), ("tsdb_metadata", "169.254.169.254")):
        entry = wait_export(api, project, name, run_id)
        assert entry["status"] == "Failed", entry
        assert entry["attempt"] == 1
        assert address in entry["message"]
        assert "DATAMILL_OUTBOUND_ALLOW" in entry["message"]
    assert job_status(api, project, run_id) == "Successful"


# --------------------------------------------------------------------- create-time checks

CREATE_ERRORS = [
    ("http", {"host": "127.0.0.1:1", "password": "x"}, 400, "E18011", ["spec.password", "secret"]),
    (
        "http",
        {"host": "127.0.0.1:1", "headers": {"Authorization": "Bearer x"}},
        400,
        "E18011",
        ["Authorization"],
    ),
    ("http", {"host": "127.0.0.1:1", "secret": "nosuch"}, 404, "E18502", ["nosuch"]),
    ("http", {"host": "127.0.0.1:1", "format": "xml"}, 400, "E18011", ["spec.format"]),
    ("http", {"host": "127.0.0.1:1/path"}, 400, "E18011", ["spec.host"]),
    (
        "logdb",
        {"endpoint": "http://h:9200", "destRepoName": "i", "doc": {"a": "nope"}},
        404,
        "E18111",
        ["spec.doc.a", "nope"],
    ),
    (
        "logdb",
        {"endpoint": "http://u:p@h:9200", "destRepoName": "i", "doc": {"a": "n"}},
        400,
        "E18011",
        ["spec.endpoint", "credentials"],
    ),
    (
        "logdb",
        {"endpoint": "http://h:9200", "destRepoName": "i", "doc": {"a": "n"}, "idFields": ["nope"]},
        404,
        "E18111",
        ["spec.idFields[0]"],
    ),
    (
        "logdb",
        {"endpoint": "http://h:9200", "destRepoName": "i", "doc": {"a": "n"}, "username": "u"},
        400,
        "E18011",
        ["spec.username"],
    ),
    (
        "logdb",
        {"endpoint": "http://h:9200", "destRepoName": "Bad Index", "doc": {"a": "n"}},
        400,
        "E18103",
        ["spec.destRepoName"],
    ),
    (
        "tsdb",
        {
            "endpoint": "http://h",
            "destRepoName": "d",
            "series": "s",
            "fields": {"f": "nope"},
            "timestamp": "ts",
        },
        404,
        "E18111",
        ["spec.fields.f"],
    ),
    (
        "tsdb",
        {
            "endpoint": "http://h",
            "destRepoName": "d",
            "series": "s",
            "fields": {"f": "n"},
            "tags": {"t": "nope"},
            "timestamp": "ts",
        },
        404,
        "E18111",
        ["spec.tags.t"],
    ),
    (
        "tsdb",
        {
            "endpoint": "http://h",
            "destRepoName": "d",
            "series": "s",
            "fields": {"f": "n"},
            "timestamp": "nope",
        },
        404,
        "E18111",
        ["spec.timestamp"],
    ),
    (
        "tsdb",
        {
            "endpoint": "http://h",
            "destRepoName": "d",
            "series": "s",
            "fields": {"f": "n"},
            "timestamp": "flag",
        },
        400,
        "E18011",
        ["spec.timestamp", "boolean"],
    ),
    (
        "tsdb",
        {
            "endpoint": "http://h",
            "destRepoName": "d",
            "series": "s",
            "fields": {"f": "n"},
            "timestamp": "ts",
            "precision": "m",
        },
        400,
        "E18011",
        ["spec.precision"],
    ),
    (
        "tsdb",
        {
            "endpoint": "http://h",
            "destRepoName": "d",
            "series": "s",
            "fields": {"f": "n"},
            "timestamp": "ts",
            "secret": "nosuch",
        },
        404,
        "E18502",
        ["nosuch"],
    ),
    ("report", {"tableName": "t", "columns": {"c": "n"}}, 400, "E18011", ["spec.secret"]),
    (
        "report",
        {"secret": "nosuch", "tableName": "t", "columns": {"c": "n"}},
        404,
        "E18502",
        ["nosuch"],
    ),
    (
        "report",
        {"secret": "s", "tableName": "t", "columns": {"c": "nope"}},
        404,
        "E18111",
        ["spec.columns.c"],
    ),
    (
        "report",
        {"secret": "s", "tableName": "t;drop", "columns": {"c": "n"}},
        400,
        "E18103",
        ["spec.tableName"],
    ),
    (
        "report",
        {"secret": "s", "tableName": "t", "columns": {"c": "n"}, "password": "pw"},
        400,
        "E18011",
        ["spec.password"],
    ),
    (
        "report",
        {"secret": "s", "tableName": "t", "columns": {"c": "n"}, "saveMode": "merge"},
        400,
        "E18011",
        ["spec.saveMode"],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("type_", "spec", "status", "code", "needles"),
    CREATE_ERRORS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CREATE_ERRORS)],
)
def test_create_time_errors(
    api: Api,
    project: str,
    type_: str,
    spec: dict[str, Any],
    status: int,
    code: str,
    needles: list[str],
) -> None:
    make_job(api, project)
    add_secret(api, project, "s", {"url": "sqlite:///nowhere.db"})
    response = api.post(
        f"/projects/{project}/jobs/out/exports/e", json={"type": type_, "spec": spec}
    )
    assert_error(response, status, code, *needles)
    assert_error(api.get(f"/projects/{project}/jobs/out/exports/e"), 404, "E18302")
