"""Test data made through the API, as a user would: CSV data sources, batch jobs and their
runs, streaming operators and jobs. The fixtures in conftest build on these."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import Api

TERMINAL = {"Successful", "Failed", "Canceled"}
TOTALS_SQL = "SELECT device, sum(value) AS total FROM ev GROUP BY device ORDER BY device"


def make_source(api: Api, project: str, name: str = "events", rows: int = 3) -> str:
    """A CSV data source: ``device`` d0..d2, ``value`` i + 0.5, ``kind`` y/x alternating."""
    lines = ["device,value,kind"] + [f"d{i % 3},{i}.5,{'x' if i % 2 else 'y'}" for i in range(rows)]
    (api.project_files(project) / f"{name}.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "root": "default",
        "paths": [f"{name}.csv"],
        "fileType": "csv",
        "delimiter": ",",
        "containsHeader": True,
    }
    response = api.post(
        f"/projects/{project}/datasources/{name}", json={"type": "file", "spec": spec}
    )
    assert response.status_code == 201, response.text
    return name


def job_body(
    code: str,
    srcs: list[dict[str, Any]] | None = None,
    *,
    source: str = "events",
    table: str = "ev",
    **extra: Any,
) -> dict[str, Any]:
    """A manual SQL job; without ``srcs`` it reads the data source ``source`` as ``table``."""
    return {
        "srcs": srcs or [{"name": source, "type": "DataSource", "tableName": table}],
        "computation": {"type": "SQL", "code": code},
        "container": {"type": "1U2G", "count": 1},
        "scheduler": {"type": "manual"},
        **extra,
    }


def start(api: Api, project: str, job: str, params: list[dict[str, str]] | None = None) -> int:
    """Start a run of ``job``; its run id."""
    response = api.post(
        f"/projects/{project}/jobs/{job}/actions/start", json={"params": params or []}
    )
    assert response.status_code == 202, response.text
    return int(response.json()["runId"])


def wait_for(
    api: Api, project: str, job: str, run_id: int, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    """The history entry of run ``run_id`` once its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(f"/projects/{project}/jobs/{job}/history", params={"runId": run_id}).json()
        entry = body["history"][0]
        if entry["status"] in statuses:
            return entry
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} of {job} stayed {entry.get('status')}: {entry}")


def op(
    op_id: str,
    class_name: str,
    inputs: list[str],
    basic: dict[str, Any],
    advance: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One operator of a streaming job's body (``extra``: more keys, e.g. its ``point``)."""
    return {
        "id": op_id,
        "className": class_name,
        **extra,
        "fromOperators": [{"id": i} for i in inputs],
        "configs": {"basicConfigs": basic, "advanceConfigs": advance or {}},
    }


def create_ready(api: Api, project: str, body: dict[str, Any]) -> str:
    """Create a streaming job from ``body`` and check it; it must be READY. Its id."""
    response = api.post(f"/projects/{project}/streaming/jobs?check=true", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["job_state"] == "READY", response.json()
    return str(response.json()["job_id"])


@contextmanager
def outbound_allowed(api: Api, *entries: str) -> Iterator[None]:
    """Inside the block the API also allows ``entries`` (as ``DATAMILL_OUTBOUND_ALLOW``
    would), so saves may name those addresses. Worker processes keep the session's allow
    list: what is saved here meets the guard again when it runs, as after an administrator
    took an entry off the list."""
    settings = api.runtime.settings
    before = settings.outbound_allow
    settings.outbound_allow = [*before, *entries]
    try:
        yield
    finally:
        settings.outbound_allow = before
