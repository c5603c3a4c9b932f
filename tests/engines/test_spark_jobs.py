"""Batch jobs on Spark through the whole service: a project's engine connection names the
session's Spark Connect server, the job is saved with Spark's output schema (or refused
with the error's position), runs on the workers, and its result is where exports and
downstream jobs read results. W1 on Spark equals W1 on DuckDB key by key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from benchmarks.bench_batch import W1_SQL, compare_results
from benchmarks.w1_data import generate

from datamill.errors import E
from datamill.runtime.worker import WorkerPool
from tests.builders import TERMINAL, job_body, start, wait_for
from tests.conftest import Api, assert_error
from tests.engines.test_spark import HEAVY, running_tasks
from tests.servers import RunningServer, free_port, start_spark_connect

pytestmark = pytest.mark.slow  # a Spark Connect server (a JVM) starts once per session

W1_EVENTS = 100_000


def connect(api: Api, project: str, name: str, url: str) -> None:
    created = api.post(f"/projects/{project}/engines/{name}", json={"type": "spark", "url": url})
    assert created.status_code == 201, created.text


def w1_source(api: Api, project: str) -> None:
    folder = api.project_files(project) / "w1"
    generate(folder, W1_EVENTS, files=2, threads=2)
    spec = {"root": "default", "paths": ["w1/*.parquet"], "fileType": "parquet"}
    created = api.post(f"/projects/{project}/datasources/w1", json={"type": "file", "spec": spec})
    assert created.status_code == 201, created.text


def w1_job(engine: str) -> dict[str, Any]:
    return job_body(W1_SQL.format(table="events"), source="w1", table="events", engine=engine)


def result_files(api: Api, project: str, job: str) -> list[Path]:
    folder = api.runtime.settings.projects_dir / project / "warehouse" / job
    return sorted(folder.glob("batch=*/*.parquet"))


def run_to_end(api: Api, project: str, job: str, timeout: float = 240) -> dict[str, Any]:
    return wait_for(api, project, job, start(api, project, job), TERMINAL, timeout=timeout)


def logs(api: Api, project: str, job: str, run_id: int) -> str:
    return "\n".join(api.get(f"/projects/{project}/jobs/{job}/runs/{run_id}/logs").json()["lines"])


def test_w1_on_spark_equals_w1_on_duckdb_key_by_key(
    api: Api, project: str, spark_server: RunningServer, workers: WorkerPool
) -> None:
    w1_source(api, project)
    connect(api, project, "local_spark", spark_server.url)
    for name, engine in (("w1_duckdb", "duckdb"), ("w1_spark", "local_spark")):
        saved = api.post(f"/projects/{project}/jobs/{name}", json=w1_job(engine))
        assert saved.status_code == 201, saved.text
        assert saved.json()["engine"] == engine
        assert [(f["key"], f["valtype"]) for f in saved.json()["schema"]] == [
            ("device_id", "string"),
            ("window_start", "date"),
            ("events", "long"),
            ("sum_temp_f", "float"),
            ("avg_temp_f", "float"),
            ("max_temp_f", "float"),
        ]
    on_duckdb = run_to_end(api, project, "w1_duckdb")
    on_spark = run_to_end(api, project, "w1_spark")
    assert on_duckdb["status"] == on_spark["status"] == "Successful", (on_duckdb, on_spark)
    (duckdb_result,) = result_files(api, project, "w1_duckdb")
    result = compare_results(duckdb_result, result_files(api, project, "w1_spark"))
    assert result["rows_baseline"] > 10_000
    assert result == {**result, "equal": True}, result
    log = logs(api, project, "w1_spark", on_spark["runId"])
    assert f"engine: spark at {spark_server.url}" in log
    assert "TIMESTAMP_MILLIS" in log  # the Spark SQL that was sent

    # a downstream job reads the Spark result like any other job's
    downstream = job_body(
        "SELECT count(*) AS windows, sum(events) AS events FROM w",
        srcs=[{"name": "w1_spark", "type": "Job", "tableName": "w"}],
        engine="local_spark",
    )
    assert api.post(f"/projects/{project}/jobs/totals", json=downstream).status_code == 201
    assert run_to_end(api, project, "totals")["status"] == "Successful"
    rows = api.get(
        f"/projects/{project}/jobs/totals/runs/{_last_run(api, project, 'totals')}/result"
    ).json()["rows"]
    assert rows == [{"windows": result["rows_baseline"], "events": _kept_events(duckdb_result)}]


def _last_run(api: Api, project: str, job: str) -> int:
    return int(api.get(f"/projects/{project}/jobs/{job}/history").json()["history"][0]["runId"])


def _kept_events(result: Path) -> int:
    import pyarrow.parquet as pq

    return int(sum(pq.read_table(result, columns=["events"]).column("events").to_pylist()))


def test_a_sql_error_is_refused_at_save_with_its_position(
    api: Api, project: str, spark_server: RunningServer
) -> None:
    w1_source(api, project)
    connect(api, project, "local_spark", spark_server.url)
    code = "SELECT device_id,\n       avg(temperature) AS t\nFROM events GROUP BY device_id"
    body = job_body(code, source="w1", table="events", engine="local_spark")
    refused = api.post(f"/projects/{project}/jobs/bad", json=body)
    assert_error(refused, 400, E.INVALID_SQL.code, "temperature", "(line 2, column 12)")
    # the hostile-SQL gate runs before Spark sees anything, as for DuckDB
    hostile = job_body(
        "SELECT * FROM read_parquet('/etc/passwd')", source="w1", table="events",
        engine="local_spark",
    )  # fmt: skip
    assert_error(api.post(f"/projects/{project}/jobs/bad", json=hostile), 400, E.SQL_REFUSED.code)


def test_stop_interrupts_the_spark_operation(
    api: Api, project: str, spark_server: RunningServer, workers: WorkerPool
) -> None:
    w1_source(api, project)
    connect(api, project, "local_spark", spark_server.url)
    body = job_body(HEAVY, source="w1", table="events", engine="local_spark")
    assert api.post(f"/projects/{project}/jobs/heavy", json=body).status_code == 201
    offset = spark_server.log_file.stat().st_size
    run_id = start(api, project, "heavy")
    wait_for(api, project, "heavy", run_id, {"Running"})
    running_tasks(spark_server, offset)
    asked = time.monotonic()
    stopped = api.post(
        f"/projects/{project}/batch/actions/stop", json={"jobName": "heavy", "runId": run_id}
    )
    assert stopped.status_code == 200, stopped.text
    entry = wait_for(api, project, "heavy", run_id, TERMINAL, timeout=60)
    assert entry["status"] == "Canceled", entry
    assert time.monotonic() - asked < 20
    # the cluster is free: a small job right after is not stuck behind the stopped one
    small = job_body("SELECT count(*) AS n FROM events", source="w1", table="events",
                     engine="local_spark")  # fmt: skip
    assert api.post(f"/projects/{project}/jobs/small", json=small).status_code == 201
    began = time.monotonic()
    assert run_to_end(api, project, "small", timeout=120)["status"] == "Successful"
    assert time.monotonic() - began < 60


def test_a_run_fails_clearly_when_the_spark_server_is_down(
    api: Api, project: str, spark_server: RunningServer, workers: WorkerPool
) -> None:
    w1_source(api, project)
    connect(api, project, "local_spark", spark_server.url)
    body = job_body("SELECT count(*) AS n FROM events", source="w1", table="events",
                    engine="local_spark")  # fmt: skip
    assert api.post(f"/projects/{project}/jobs/count", json=body).status_code == 201
    # the connection now points where no server answers (a closed port of loopback)
    gone = f"sc://127.0.0.1:{free_port()}"
    moved = api.put(f"/projects/{project}/engines/local_spark", json={"type": "spark", "url": gone})
    assert moved.status_code == 200, moved.text
    entry = run_to_end(api, project, "count", timeout=120)
    assert entry["status"] == "Failed", entry
    message = entry["message"]
    assert "could not be reached" in message, entry
    assert gone in message
    # saving a job needs the server too (Spark's analyzer gives the schema)
    assert_error(
        api.post(f"/projects/{project}/jobs/other", json=body),
        502,
        E.ENGINE_UNAVAILABLE.code,
        "could not be reached",
    )
    # back on a live server, the same job runs again
    back = api.put(
        f"/projects/{project}/engines/local_spark",
        json={"type": "spark", "url": spark_server.url},
    )
    assert back.status_code == 200
    assert run_to_end(api, project, "count")["status"] == "Successful"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_server_stopped_during_a_run_fails_it_and_a_rerun_succeeds_once_it_is_back(
    api: Api, project: str, workers: WorkerPool, tmp_path: Path
) -> None:
    """A second, short-lived server of its own: the session's shared one stays up. On one
    metadata store only (the engine does not depend on it): two more JVM starts would
    prove nothing more."""
    server = start_spark_connect(tmp_path / "spark")
    try:
        w1_source(api, project)
        connect(api, project, "short_lived", server.url)
        body = job_body(HEAVY, source="w1", table="events", engine="short_lived")
        assert api.post(f"/projects/{project}/jobs/heavy", json=body).status_code == 201
        offset = server.log_file.stat().st_size
        run_id = start(api, project, "heavy")
        running_tasks(server, offset)
        server.stop()
        entry = wait_for(api, project, "heavy", run_id, TERMINAL, timeout=120)
        assert entry["status"] == "Failed", entry
        assert "could not be reached" in entry["message"], entry
        assert server.url in entry["message"]
        server = start_spark_connect(tmp_path / "spark", port=server.port)
        small = job_body(
            "SELECT count(*) AS n FROM events", source="w1", table="events", engine="short_lived"
        )
        assert api.put(f"/projects/{project}/jobs/heavy", json=small).status_code == 200
        rerun = api.post(
            f"/projects/{project}/batch/actions/rerun", json={"jobName": "heavy", "runId": run_id}
        )
        assert rerun.status_code == 200, rerun.text
        assert wait_for(api, project, "heavy", run_id, TERMINAL, timeout=120)["status"] == (
            "Successful"
        )
    finally:
        server.stop()


def test_a_job_naming_spark_runs_on_the_projects_default_connection(
    api: Api, project: str, spark_server: RunningServer, workers: WorkerPool
) -> None:
    w1_source(api, project)
    body = job_body("SELECT count(*) AS n FROM events", source="w1", table="events",
                    engine="spark")  # fmt: skip
    assert_error(api.post(f"/projects/{project}/jobs/count", json=body), 400,
                 E.UNKNOWN_ENGINE.code, "default")  # fmt: skip
    default = {"type": "spark", "url": spark_server.url, "default": True}
    assert api.post(f"/projects/{project}/engines/main", json=default).status_code == 201
    saved = api.post(f"/projects/{project}/jobs/count", json=body)
    assert saved.status_code == 201, saved.text
    entry = run_to_end(api, project, "count")
    assert entry["status"] == "Successful", entry
    assert "engine: spark at" in logs(api, project, "count", entry["runId"])
    # the default stays while jobs rely on it
    assert_error(api.delete(f"/projects/{project}/engines/main"), 400, E.HAS_DEPENDANTS.code,
                 "count")  # fmt: skip
    assert_error(
        api.put(f"/projects/{project}/engines/main", json={**default, "default": False}),
        400,
        E.HAS_DEPENDANTS.code,
        "default",
    )
