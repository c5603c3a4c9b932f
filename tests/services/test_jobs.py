"""Batch SQL jobs end to end: validation, runs in worker processes, history, stop, rerun."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from datamill.runtime.worker import WorkerPool
from tests.builders import TERMINAL, job_body, make_source, start, wait_for
from tests.conftest import Api, assert_error


def stop_running(api: Api, project: str, job: str, run_id: int) -> None:
    """Stop run ``run_id`` once it is Running (the stop is accepted then)."""
    wait_for(api, project, job, run_id, {"Running"})
    body = {"jobName": job, "runId": run_id}
    response = api.post(f"/projects/{project}/batch/actions/stop", json=body)
    assert response.status_code == 200, response.text


def test_job_schema_is_derived_without_running(api: Api, project: str, datasource: str) -> None:
    created = api.post(
        f"/projects/{project}/jobs/totals",
        json=job_body("SELECT device, sum(value) AS total, count(*) AS n FROM ev GROUP BY device"),
    )
    assert created.status_code == 201, created.text
    assert created.json()["schema"] == [
        {"key": "device", "valtype": "string", "required": False},
        {"key": "total", "valtype": "float", "required": False},
        {"key": "n", "valtype": "long", "required": False},
    ]
    assert api.get(f"/projects/{project}/jobs/totals/history").json()["total"] == 0
    assert_error(
        api.post(f"/projects/{project}/jobs/totals", json=job_body("SELECT 1 AS a")), 409, "E18201"
    )


def test_run_end_to_end(api: Api, project: str, job: str, job_run: dict[str, Any]) -> None:
    assert job == "totals"
    entry, run_id = job_run, job_run["runId"]
    assert entry["rowsWritten"] == 3
    assert entry["rowsRead"] == 3
    assert entry["bytesWritten"] > 0
    assert entry["duration"] >= 0
    result = api.get(f"/projects/{project}/jobs/totals/runs/{run_id}/result").json()
    assert result["rows"] == [
        {"device": "d0", "total": 0.5},
        {"device": "d1", "total": 1.5},
        {"device": "d2", "total": 2.5},
    ]
    logs = api.get(f"/projects/{project}/jobs/totals/runs/{run_id}/logs").json()["lines"]
    assert any("Successful" in line for line in logs)
    assert any("ev: data source 'events', 1 files" in line for line in logs)
    latest = api.get(f"/projects/{project}/jobs/totals/history", params={"runId": -1}).json()
    assert latest["history"][0]["runId"] == run_id


def test_params_and_magic_variables(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    body = job_body(
        "SELECT '$(label)' AS label, '$(date)' AS day, count(*) AS n FROM ev "
        "WHERE value > $(threshold)",
        params=[{"name": "threshold", "default": "0"}, {"name": "label", "default": "none"}],
    )
    assert api.post(f"/projects/{project}/jobs/p", json=body).status_code == 201
    run_id = start(
        api, project, "p", [{"name": "threshold", "value": "1"}, {"name": "label", "value": "hi"}]
    )
    assert wait_for(api, project, "p", run_id, TERMINAL)["status"] == "Successful"
    row = api.get(f"/projects/{project}/jobs/p/runs/{run_id}/result").json()["rows"][0]
    assert row["label"] == "hi"
    assert row["n"] == 2
    assert len(row["day"]) == 10
    assert_error(
        api.post(
            f"/projects/{project}/jobs/p/actions/start",
            json={"params": [{"name": "nope", "value": "1"}]},
        ),
        400,
        "E18011",
        "nope",
    )


@pytest.mark.slow
def test_downstream_jobs_and_depend_inheritance(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    api.post(
        f"/projects/{project}/jobs/up",
        json=job_body(
            "SELECT device, value FROM ev WHERE value > $(minimum)",
            params=[{"name": "minimum", "default": "1"}],
        ),
    )
    down = {
        "srcs": [{"name": "up", "type": "Job", "tableName": "up_rows"}],
        "computation": {"type": "SQL", "code": "SELECT count(*) AS n FROM up_rows"},
        "scheduler": {"type": "depend"},
    }
    created = api.post(f"/projects/{project}/jobs/down", json=down)
    assert created.status_code == 201, created.text
    listed = api.get(f"/projects/{project}/jobs", params={"srcJob": "up"}).json()
    assert [j["name"] for j in listed["jobs"]] == ["down"]
    by_source = api.get(f"/projects/{project}/jobs", params={"srcDatasource": "events"}).json()
    assert [j["name"] for j in by_source["jobs"]] == ["up"]
    assert_error(
        api.get(f"/projects/{project}/jobs", params={"srcJob": "up", "srcDatasource": "events"}),
        400,
        "E18011",
    )
    for bad in ("", "no such", "1up", "x" * 129):  # the name rule of the document
        assert_error(api.get(f"/projects/{project}/jobs", params={"srcJob": bad}), 400, "E18103")
        for action in ("stop", "rerun"):
            body = {"jobName": bad, "runId": -1}
            url = f"/projects/{project}/batch/actions/{action}"
            assert_error(api.post(url, json=body), 400, "E18103")
    up_run = start(api, project, "up")
    assert wait_for(api, project, "up", up_run, TERMINAL)["status"] == "Successful"
    down_run = start(api, project, "down", [{"name": "minimum", "value": "0"}])
    assert wait_for(api, project, "down", down_run, TERMINAL)["status"] == "Successful"
    rows = api.get(f"/projects/{project}/jobs/down/runs/{down_run}/result").json()["rows"]
    assert rows == [{"n": 2}]
    assert_error(api.delete(f"/projects/{project}/jobs/up"), 400, "E18112", "down")
    assert_error(api.delete(f"/projects/{project}/datasources/events"), 400, "E18112", "up")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "code", "needles"),
    [
        (
            {"computation": {"type": "SQL", "code": "SELECT device\nFROM ev WHERE"}},
            "E18209",
            ["line 2"],
        ),
        (
            {"computation": {"type": "SQL", "code": "SELECT\n  nosuch FROM ev"}},
            "E18209",
            ["nosuch", "line 2, column 3"],
        ),
        (
            {"computation": {"type": "SQL", "code": "SELECT * FROM other"}},
            "E18233",
            ["other", "ev"],
        ),
        ({"computation": {"type": "SQL", "code": "SELECT count(*) FROM ev"}}, "E18209", ["alias"]),
        (
            {"computation": {"type": "SQL", "code": "SELECT '$(ghost)' AS g FROM ev"}},
            "E18604",
            ["ghost"],
        ),
        ({"container": {"type": "3U3G", "count": 1}}, "E18213", ["container"]),
        ({"container": {"type": "16U64G", "count": 7}}, "E18214", ["100U"]),
        ({"scheduler": {"type": "crontab"}}, "E18208", ["crontab"]),
        ({"scheduler": {"type": "loop", "spec": {"loop": "5 minutes"}}}, "E18208", ["loop"]),
        (
            {"srcs": [{"name": "ghost", "type": "DataSource", "tableName": "g"}]},
            "E18102",
            ["srcs[0].name"],
        ),
        (
            {
                "srcs": [
                    {"name": "events", "type": "DataSource", "tableName": "ev"},
                    {"name": "events", "type": "DataSource", "tableName": "ev"},
                ]
            },
            "E18207",
            ["twice"],
        ),
        (
            {"srcs": [{"name": "events", "type": "DataSource", "tableName": "1bad"}]},
            "E18011",
            ["tableName"],
        ),
        ({"scheduler": {"type": "depend"}}, "E18207", ["depend"]),
        ({"computation": {"type": "PYTHON", "code": "x"}}, "E18011", ["computation.type"]),
    ],
)
def test_jobs_that_would_not_run_are_not_saved(
    api: Api, project: str, datasource: str, change: dict[str, Any], code: str, needles: list[str]
) -> None:
    body = {**job_body("SELECT device FROM ev"), **change}
    response = api.post(f"/projects/{project}/jobs/bad", json=body)
    status = 404 if code == "E18102" else 400
    assert_error(response, status, code, *needles)
    assert_error(api.get(f"/projects/{project}/jobs/bad"), 404, "E18202")


def test_table_names_are_unique_along_the_chain(api: Api, project: str, datasource: str) -> None:
    api.post(f"/projects/{project}/jobs/up", json=job_body("SELECT device FROM ev"))
    clash = api.post(
        f"/projects/{project}/jobs/down",
        json=job_body("SELECT * FROM ev", srcs=[{"name": "up", "type": "Job", "tableName": "ev"}]),
    )
    assert_error(clash, 400, "E18207", "'ev'", "'up'")


def heavy_job(api: Api, project: str, name: str, **extra: Any) -> None:
    make_source(api, project, "big", rows=3000)
    body = job_body(
        "SELECT sum(a.value * b.value + c.value) AS s FROM t a, t b, t c",
        srcs=[{"name": "big", "type": "DataSource", "tableName": "t"}],
        **extra,
    )
    assert api.post(f"/projects/{project}/jobs/{name}", json=body).status_code == 201


@pytest.mark.slow
def test_stop_and_rerun_follow_the_state_machine(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    heavy_job(api, project, "heavy")
    run_id = start(api, project, "heavy")
    wait_for(api, project, "heavy", run_id, {"Running"})
    assert_error(
        api.post(
            f"/projects/{project}/batch/actions/rerun", json={"jobName": "heavy", "runId": run_id}
        ),
        409,
        "E18231",
        "stop it first",
    )
    asked = time.monotonic()
    stopped = api.post(
        f"/projects/{project}/batch/actions/stop", json={"jobName": "heavy", "runId": str(run_id)}
    )
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"preStatus": "Running", "postStatus": "Cancelling"}
    entry = wait_for(api, project, "heavy", run_id, TERMINAL)
    assert time.monotonic() - asked < 2.0
    assert entry["status"] == "Canceled"
    assert_error(
        api.post(
            f"/projects/{project}/batch/actions/stop", json={"jobName": "heavy", "runId": run_id}
        ),
        409,
        "E18231",
        "only a Running run",
    )
    api.put(
        f"/projects/{project}/jobs/heavy",
        json=job_body(
            "SELECT count(*) AS n FROM t",
            srcs=[{"name": "big", "type": "DataSource", "tableName": "t"}],
        ),
    )
    rerun = api.post(
        f"/projects/{project}/batch/actions/rerun", json={"jobName": "heavy", "runId": run_id}
    )
    assert rerun.json() == {"preStatus": "Canceled", "postStatus": "Restarting", "rerunCount": 1}
    again = wait_for(api, project, "heavy", run_id, TERMINAL)
    assert again["status"] == "Successful"
    assert again["rerunCount"] == 1
    assert again["batchTime"] == entry["batchTime"]
    assert_error(
        api.post(
            f"/projects/{project}/batch/actions/rerun", json={"jobName": "heavy", "runId": 999}
        ),
        404,
        "E18230",
    )


@pytest.mark.slow
def test_watchdog_enforces_max_run_time(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    heavy_job(api, project, "slow", maxRunSeconds=1)
    run_id = start(api, project, "slow")
    entry = wait_for(api, project, "slow", run_id, TERMINAL)
    assert entry["status"] == "Failed"
    assert "maximum run time of 1 s" in entry["message"]


@pytest.mark.slow
def test_job_stop_cancels_queued_and_running(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    heavy_job(api, project, "heavy")
    first = start(api, project, "heavy")
    wait_for(api, project, "heavy", first, {"Running"})
    stopped = api.post(f"/projects/{project}/jobs/heavy/actions/stop")
    assert stopped.status_code == 200
    assert stopped.json()["runsAffected"] >= 1
    assert wait_for(api, project, "heavy", first, TERMINAL)["status"] == "Canceled"
    assert api.get(f"/projects/{project}/jobs/heavy").json()["scheduleState"] == "stopped"


@pytest.mark.slow
def test_killed_worker_leaves_no_run_stuck(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    heavy_job(api, project, "victim")
    run_id = start(api, project, "victim")
    wait_for(api, project, "victim", run_id, {"Running"})
    from sqlalchemy import select

    from datamill.store.runs import RunRow

    with api.runtime.sessions() as session:
        holder = session.scalars(
            select(RunRow.worker).where(RunRow.status == "Running", RunRow.run_id == run_id)
        ).all()
    pid = int(str(holder[-1]).split(":")[1].split("/")[0])
    os.kill(pid, signal.SIGKILL)
    entry = wait_for(api, project, "victim", run_id, TERMINAL, timeout=30)
    assert entry["status"] == "Failed"
    assert "no heartbeat" in entry["message"]
    workers.replace_dead()
    assert all(p.is_alive() for p in workers.processes)


@pytest.mark.slow
def test_results_are_one_partition_per_batch(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    api.post(f"/projects/{project}/jobs/part", json=job_body("SELECT device FROM ev"))
    first, second = start(api, project, "part"), start(api, project, "part")
    for run_id in (first, second):
        assert wait_for(api, project, "part", run_id, TERMINAL)["status"] == "Successful"
    folder = api.runtime.settings.projects_dir / project / "warehouse" / "part"
    batches = sorted(p.name for p in folder.iterdir())
    assert len(batches) == 2
    assert all(b.startswith("batch=") for b in batches)
    assert all(list(Path(folder, b).glob("*.parquet")) for b in batches)
    history = api.get(f"/projects/{project}/jobs/part/history", params={"sortBy": "runId"}).json()
    assert [h["runId"] for h in history["history"]] == [first, second]
    assert history["total"] == 2


@pytest.mark.slow
def test_killed_worker_run_is_retried_when_the_job_asks(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    make_source(api, project, "big", rows=1000)
    body = job_body(
        "SELECT count(*) AS n FROM t a, t b, t c WHERE a.value + b.value + c.value > "
        "CASE WHEN '$(attempt_marker)' = 'x' THEN 0 ELSE 0 END",
        srcs=[{"name": "big", "type": "DataSource", "tableName": "t"}],
        retries=1,
        params=[{"name": "attempt_marker", "default": "x"}],
    )
    assert api.post(f"/projects/{project}/jobs/retry", json=body).status_code == 201
    run_id = start(api, project, "retry")
    wait_for(api, project, "retry", run_id, {"Running"})
    from sqlalchemy import select

    from datamill.store.runs import RunRow

    with api.runtime.sessions() as session:
        holder = session.scalars(
            select(RunRow.worker).where(RunRow.status == "Running", RunRow.run_id == run_id)
        ).all()
    os.kill(int(str(holder[-1]).split(":")[1].split("/")[0]), signal.SIGKILL)
    entry = wait_for(api, project, "retry", run_id, TERMINAL, timeout=90)
    workers.replace_dead()
    assert entry["status"] == "Successful", entry
    assert entry["attempt"] == 2
    logs = api.get(f"/projects/{project}/jobs/retry/runs/{run_id}/logs").json()["lines"]
    assert any("no heartbeat" in line for line in logs)
    assert sum("started on" in line for line in logs) == 2


@pytest.mark.slow
def test_get_run_waits_for_the_end(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    api.post(f"/projects/{project}/jobs/quick", json=job_body("SELECT count(*) AS n FROM ev"))
    run_id = start(api, project, "quick")
    began = time.monotonic()
    waited = api.get(f"/projects/{project}/jobs/quick/runs/{run_id}", params={"waitSeconds": 30})
    assert waited.status_code == 200, waited.text
    entry = waited.json()
    assert entry["status"] == "Successful", entry
    assert entry["runId"] == run_id
    assert entry["rowsWritten"] == 1
    assert time.monotonic() - began < 10
    history = api.get(f"/projects/{project}/jobs/quick/history", params={"runId": run_id})
    assert history.json()["history"][0] == entry  # the same entry as the history's
    latest = api.get(f"/projects/{project}/jobs/quick/runs/-1").json()
    assert latest["runId"] == run_id

    # a run that does not end in time: answered with its state once the wait is over
    heavy_job(api, project, "heavy")
    heavy = start(api, project, "heavy")
    began = time.monotonic()
    held = api.get(f"/projects/{project}/jobs/heavy/runs/{heavy}", params={"waitSeconds": 0.5})
    assert held.status_code == 200, held.text
    assert held.json()["status"] in {"Ready", "Running"}
    assert 0.5 <= time.monotonic() - began < 5
    # a stop ends the wait as soon as the run is Canceled
    stop_running(api, project, "heavy", heavy)
    began = time.monotonic()
    canceled = api.get(f"/projects/{project}/jobs/heavy/runs/{heavy}", params={"waitSeconds": 30})
    assert canceled.json()["status"] == "Canceled"
    assert time.monotonic() - began < 5

    assert_error(api.get(f"/projects/{project}/jobs/quick/runs/999"), 404, "E18230")
    assert_error(
        api.get(f"/projects/{project}/jobs/quick/runs/{run_id}", params={"waitSeconds": 61}),
        400,
        "E18011",
        "waitSeconds",
    )
