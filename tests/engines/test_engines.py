"""The Engine interface: the registry, declared capabilities, the DuckDB batch session, and
the jobs' ``engine`` field through the API and the client."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from datamill import engines
from datamill.client import BadRequest, DatamillClient, Job
from datamill.domain.datasources import FileSpec, SchemaField
from datamill.engines import base
from datamill.engines.base import (
    Capabilities,
    Endpoint,
    Interrupted,
    QueryFailed,
    Sandbox,
    TableInput,
    Watchdog,
)
from datamill.engines.duckdb import DuckDBEngine
from datamill.engines.streaming import MicroBatchExecutor, StateStore
from datamill.errors import DatamillError, E
from datamill.store.jobs import JobRow
from datamill.store.projects import ProjectRow
from tests.builders import job_body, make_source
from tests.conftest import Api

SQL = "SELECT device, sum(value) AS total FROM ev GROUP BY device ORDER BY device"


# --------------------------------------------------------------------------- registry


def test_duckdb_is_registered_with_its_capabilities() -> None:
    assert "duckdb" in engines.types()
    engine = engines.get("duckdb")
    assert isinstance(engine, DuckDBEngine)
    caps = engine.capabilities
    assert (caps.dialect, caps.batch, caps.streaming, caps.sandboxed) == (
        "duckdb",
        True,
        True,
        True,
    )
    assert {"parquet", "csv", "json", "text"} <= caps.reads
    assert "parquet" in caps.writes
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.batch = False  # type: ignore[misc]


def test_an_unknown_engine_is_refused_naming_the_field() -> None:
    with pytest.raises(DatamillError) as refused:
        engines.get("flink")
    assert refused.value.error == E.UNKNOWN_ENGINE
    assert refused.value.field == "engine"
    assert "'flink'" in refused.value.message
    assert "duckdb" in refused.value.message


class StreamingOnly:
    type = "streamonly"
    capabilities = Capabilities(
        dialect="duckdb",
        batch=False,
        streaming=True,
        sandboxed=True,
        reads=frozenset(),
        writes=frozenset(),
    )

    def session(
        self, sandbox: Sandbox, *, profiling: bool = False, endpoint: Endpoint | None = None
    ) -> base.BatchSession:
        raise AssertionError("a streaming-only engine opens no batch session")

    def check_query(self, code: str, tables: Collection[str], field: str) -> str:
        raise AssertionError("a streaming-only engine checks no batch SQL")

    def open_stream(
        self, job_dir: Path, *, memory_limit: str, threads: int, steps: Any
    ) -> tuple[MicroBatchExecutor, StateStore]:
        raise AssertionError("not opened in these tests")


def test_registering_an_engine_and_its_batch_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_ENGINES", dict(base._ENGINES))
    engine = engines.register(StreamingOnly())
    assert engines.get("streamonly") is engine
    assert engines.types() == sorted(["duckdb", "spark", "streamonly"])
    with pytest.raises(DatamillError) as refused:
        engines.batch_engine("streamonly")
    assert refused.value.error == E.UNKNOWN_ENGINE
    assert "does not run batch jobs" in refused.value.message
    assert engines.batch_engine("duckdb") is engines.get("duckdb")


# --------------------------------------------------------------------------- DuckDB session


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "events.csv"
    path.parent.mkdir()
    path.write_text("device,value\nd0,1.5\nd1,2.5\nd0,3\n")
    return path


def sandbox(tmp_path: Path, *files: Path) -> Sandbox:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return Sandbox(
        temp_dir=tmp_path / "tmp", allowed_paths=[str(f) for f in files], allowed_dirs=[out]
    )


CSV = FileSpec(fileType="csv", paths=["*"], delimiter=",", containsHeader=True)
SCHEMA = [SchemaField(key="device", valtype="string"), SchemaField(key="value", valtype="float")]


def test_a_session_infers_previews_describes_and_writes(tmp_path: Path, csv_file: Path) -> None:
    engine = engines.get("duckdb")
    with engine.session(sandbox(tmp_path, csv_file), profiling=True) as session:
        assert session.infer(CSV, [str(csv_file)]) == SCHEMA
        source = TableInput("ev", SCHEMA, files=[str(csv_file)], fmt=CSV)
        assert session.preview(source, 2) == [
            {"device": "d0", "value": 1.5},
            {"device": "d1", "value": 2.5},
        ]
        session.add_table(source)
        session.add_table(TableInput("nothing", SCHEMA))
        assert [(c.name, c.valtype) for c in session.describe(SQL)] == [
            ("device", "string"),
            ("total", "float"),
        ]
        result = session.write(SQL, tmp_path / "out")
    assert result.rows_written == 2
    assert result.rows_read == 3
    assert (tmp_path / "out" / "part-0.parquet").is_file()


def test_a_session_reads_results_as_they_are(tmp_path: Path, csv_file: Path) -> None:
    engine = engines.get("duckdb")
    with engine.session(sandbox(tmp_path, csv_file)) as session:
        session.add_table(TableInput("ev", SCHEMA, files=[str(csv_file)], fmt=CSV))
        session.write(SQL, tmp_path / "out")
    result = tmp_path / "out" / "part-0.parquet"
    with engine.session(sandbox(tmp_path, result)) as session:
        session.add_table(TableInput("up", [], files=[str(result)]))
        assert session.preview(TableInput("up", [], files=[str(result)]), 5) == [
            {"device": "d0", "total": 4.5},
            {"device": "d1", "total": 2.5},
        ]
        assert [c.name for c in session.describe("SELECT * FROM up")] == ["device", "total"]


def test_session_errors_are_the_interface_s(tmp_path: Path, csv_file: Path) -> None:
    engine = engines.get("duckdb")
    with engine.session(sandbox(tmp_path, csv_file)) as session:
        with pytest.raises(QueryFailed) as unknown:
            session.describe("SELECT nope FROM missing")
        assert "missing" in unknown.value.message
        with pytest.raises(QueryFailed):  # a file outside the sandbox
            session.infer(CSV, [str(tmp_path / "elsewhere.csv")])


def test_the_watchdog_interrupts_a_running_write(tmp_path: Path) -> None:
    engine = engines.get("duckdb")
    heavy = "SELECT sum(a.range * b.range) AS s FROM range(100000000) a, range(1000) b"
    stop = threading.Event()
    with (
        engine.session(sandbox(tmp_path)) as session,
        Watchdog(session.interrupt, stop, time.monotonic() + 0.3) as watchdog,
        pytest.raises(Interrupted),
    ):
        session.write(heavy, tmp_path / "out")
    assert watchdog.reason == "timeout"


# --------------------------------------------------------------------------- jobs' engine field


def test_jobs_carry_their_engine_through_the_api(api: Api, project: str) -> None:
    make_source(api, project)
    created = api.post(f"/projects/{project}/jobs/plain", json=job_body(SQL))
    assert created.status_code == 201, created.text
    assert created.json()["engine"] == "duckdb"
    named = api.post(f"/projects/{project}/jobs/named", json=job_body(SQL, engine="duckdb"))
    assert named.status_code == 201, named.text
    assert api.get(f"/projects/{project}/jobs/named").json()["engine"] == "duckdb"
    listed = api.get(f"/projects/{project}/jobs").json()["jobs"]
    assert {job["engine"] for job in listed} == {"duckdb"}


@pytest.mark.parametrize("engine", ["spark", "DuckDB", ""])
def test_an_unknown_engine_is_refused_at_save(api: Api, project: str, engine: str) -> None:
    make_source(api, project)
    refused = api.post(f"/projects/{project}/jobs/j", json=job_body(SQL, engine=engine))
    assert refused.status_code == 400, refused.text
    assert "engine" in refused.json()["error_msg"]
    if engine:
        assert refused.json()["error_code"] == E.UNKNOWN_ENGINE.code
    assert api.get(f"/projects/{project}/jobs/j").status_code == 404
    created = api.post(f"/projects/{project}/jobs/j", json=job_body(SQL))
    assert created.status_code == 201
    updated = api.put(f"/projects/{project}/jobs/j", json=job_body(SQL, engine="flink"))
    assert updated.status_code == 400
    assert updated.json()["error_code"] == E.UNKNOWN_ENGINE.code


def test_a_job_saved_without_an_engine_loads_as_duckdb(api: Api, project: str) -> None:
    make_source(api, project)
    assert api.post(f"/projects/{project}/jobs/old", json=job_body(SQL)).status_code == 201
    with api.runtime.sessions() as session:
        row = session.scalars(
            select(JobRow)
            .join(ProjectRow, ProjectRow.id == JobRow.project_id)
            .where(ProjectRow.name == project, JobRow.name == "old")
        ).one()
        row.definition = {k: v for k, v in row.definition.items() if k != "engine"}
        session.commit()
        assert "engine" not in row.definition
    loaded = api.get(f"/projects/{project}/jobs/old")
    assert loaded.status_code == 200
    assert loaded.json()["engine"] == "duckdb"


def test_the_engine_is_in_the_openapi_document(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("JobBody", "Job"):
        engine = schemas[name]["properties"]["engine"]
        assert engine["default"] == "duckdb"
        assert engine["type"] == "string"


@pytest.fixture
def dm(client: TestClient, admin_token: str) -> Iterator[DatamillClient]:
    with DatamillClient(token=admin_token, http=client) as datamill:
        yield datamill


def test_the_client_round_trips_the_engine(dm: DatamillClient, api: Api, project: str) -> None:
    make_source(api, project)
    created = dm.jobs.create(project, "totals", body=job_body(SQL, engine="duckdb"))
    assert isinstance(created, Job)
    assert created.engine == "duckdb"
    assert dm.jobs.get(project, "totals").engine == "duckdb"
    with pytest.raises(BadRequest) as refused:
        dm.jobs.create(project, "other", body=job_body(SQL, engine="spark"))
    assert refused.value.error_code == E.UNKNOWN_ENGINE.code
    with pytest.raises(BadRequest) as keyword:
        dm.jobs.create(project, "other", body=job_body(SQL), engine="spark")
    assert keyword.value.error_code == E.UNKNOWN_ENGINE.code
    assert dm.jobs.update(project, "totals", body=job_body(SQL), engine="duckdb").engine == "duckdb"
