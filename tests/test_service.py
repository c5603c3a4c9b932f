"""The service as a user starts it: the CLI server with the demo, the store's migrations, docs."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from datamill.config import Settings
from datamill.errors import CATALOG, render_markdown
from datamill.services.runtime import Runtime
from datamill.store.models import Base
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_errors_doc_is_generated_from_the_catalog() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == render_markdown()
    codes = [e.code for e in CATALOG]
    assert len(codes) == len(set(codes)), "every error code is used once"


def test_migrations_match_the_models(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def raw_request(port: int, request_line: str) -> str:
    """Send a request with no Content-Length and no body, as some clients do."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(65536).decode("latin-1")


def start_server(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, str]:
    """``datamill server`` in a subprocess on a free port; (process, port, API base URL)."""
    port = free_port()
    env = {**os.environ, "DATAMILL_DATA_DIR": str(data_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "datamill.cli.main", "server", *extra, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return process, port, f"http://127.0.0.1:{port}/api/v1"


def wait_healthy(base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{base} did not become healthy in {seconds} s")


def assert_stopped_cleanly(process: subprocess.Popen[bytes], output: str) -> None:
    assert process.returncode == 0, output[-2000:]
    assert output.rstrip().endswith("datamill stopped"), output[-2000:]
    assert "Traceback" not in output


@pytest.mark.slow
def test_server_command_starts_with_demo(tmp_path: Path) -> None:
    process, port, base = start_server(tmp_path / "data", "--demo")
    try:
        deadline = time.monotonic() + 60
        wait_healthy(base)
        token_file = tmp_path / "data" / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        sources = httpx.get(base + "/projects/demo/datasources", headers=headers).json()
        assert {d["name"] for d in sources["datasources"]} == {"events", "devices"}
        preview = httpx.get(
            base + "/projects/demo/datasources/events/preview", params={"limit": 5}, headers=headers
        )
        assert preview.status_code == 200
        assert len(preview.json()["rows"]) == 5
        listed = httpx.get(base + "/projects/demo/streaming/jobs", headers=headers).json()
        [pipeline] = listed["jobs"]
        assert pipeline["jobName"] == "device_alerts"
        job_url = f"{base}/projects/demo/streaming/jobs/{pipeline['job_id']}"
        figures: dict[str, Any] = {}
        while time.monotonic() < deadline + 30:
            figures = httpx.get(job_url + "/metrics", headers=headers).json()
            operators = figures.get("operators") or {}
            if figures["job_state"] == "RUNNING" and operators.get("alerts", {}).get("recordsIn"):
                break
            time.sleep(0.2)
        assert figures["job_state"] == "RUNNING", figures
        assert figures["operators"]["events"]["recordsOut"] == 200, figures
        alerts = tmp_path / "data" / "files" / "demo" / "stream" / "alerts"
        while time.monotonic() < deadline + 40 and not list(alerts.glob("*.json")):
            time.sleep(0.2)  # published at the next checkpoint (every 5 s)
        assert list(alerts.glob("*.json"))
        assert raw_request(port, "POST /api/v1/projects HTTP/1.1").startswith("HTTP/1.1 411")
        docs = httpx.get(f"http://127.0.0.1:{port}/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        children = server_children(process.pid)
        assert len(children) >= 4, children  # workers, scheduler, streaming supervisor
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "admin token file" in output
    assert str(tmp_path / "data" / "admin.token") in output
    # SIGTERM is a graceful stop: the children are stopped and the exit status is 0
    assert_stopped_cleanly(process, output)
    # (multiprocessing's resource tracker, also a child, ends just after its parent)
    deadline = time.monotonic() + 5
    while (left := [c for c in children if Path(f"/proc/{c}").exists()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert left == []


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(tmp_path: Path) -> None:
    process, _, base = start_server(tmp_path / "data")
    try:
        wait_healthy(base)
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0].decode()
    assert_stopped_cleanly(process, output)
    assert "KeyboardInterrupt" not in output


def server_children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_the_data_folder_and_the_sqlite_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    stale = data_dir / "datamill.db"
    runtime = Runtime.open(Settings(data_dir=data_dir))
    try:
        with runtime.sessions() as session:
            session.execute(text("SELECT 1"))
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        files = [stale, *data_dir.glob("datamill.db-*"), data_dir / "secret.key"]
        assert {f.name for f in files} >= {"datamill.db", "datamill.db-wal", "secret.key"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        runtime.close()
    stale.chmod(0o644)
    Runtime.open(Settings(data_dir=data_dir)).close()
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
