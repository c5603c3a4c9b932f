"""The ``datamill jobs`` and ``datamill runs`` commands against the real app and real workers."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from datamill.runtime.worker import WorkerPool
from tests.builders import make_source
from tests.cli_runner import (
    Run,
    as_json,
    ok,
    usage_error,
)
from tests.conftest import Api

TERMINAL = {"Successful", "Failed", "Canceled"}
HEAVY_SQL = "SELECT sum(a.value * b.value + c.value) AS s FROM t a, t b, t c"
WAIT = ("--timeout", "60")  # a broken run fails the test in a minute, not in ten


@pytest.fixture
def big(api: Api, project: str) -> Iterator[str]:
    """A 3000-row source for the job ``heavy``, which is stopped after the test whatever
    happened, so a failed test does not leave a long run on a shared worker."""
    yield make_source(api, project, "big", rows=3000)
    api.post(f"/projects/{project}/jobs/heavy/actions/stop")


def wait_for(api: Api, project: str, job: str, run_id: int, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body = api.get(f"/projects/{project}/jobs/{job}/history", params={"runId": run_id}).json()
        entry: dict[str, Any] = body["history"][0]
        if entry["status"] in statuses or time.monotonic() > deadline:
            assert entry["status"] in statuses, entry
            return entry
        time.sleep(0.05)


def create_totals(run: Run, project: str, *extra: str) -> Result:
    return run(
        "jobs",
        "create",
        project,
        "totals",
        "--sql",
        "SELECT device, sum(value) AS total FROM ev WHERE value > $(minimum) "
        "GROUP BY device ORDER BY device",
        "--src",
        "events:DataSource:ev",
        "--param",
        "minimum=100",
        *extra,
    )


# --------------------------------------------------------------------------- definitions


@pytest.mark.slow
def test_create_get_list_update_delete(
    run: Run, api: Api, project: str, datasource: str, tmp_path: Path
) -> None:
    created = ok(
        create_totals(
            run,
            project,
            "--container",
            "2U4G:3",
            "--scheduler",
            "crontab:0 3 * * *",
            "--timezone",
            "Europe/Berlin",
            "--misfire",
            "all",
            "--overlap",
            "queue",
            "--retries",
            "2",
            "--max-run-seconds",
            "90",
        )
    ).stdout
    needles = ("totals", "2U4G x3", "crontab 0 3 * * * (Europe/Berlin)", "minimum=100", "output")
    for needle in needles:
        assert needle in created, (needle, created)
    stored = api.get(f"/projects/{project}/jobs/totals").json()
    assert stored["srcs"] == [
        {"name": "events", "type": "DataSource", "tableName": "ev", "fileFilter": None}
    ]
    assert stored["container"] == {"type": "2U4G", "count": 3}
    assert stored["scheduler"]["type"] == "crontab"
    assert stored["scheduler"]["spec"]["crontab"] == "0 3 * * *"
    assert stored["scheduler"]["spec"]["timezone"] == "Europe/Berlin"
    assert (stored["scheduler"]["spec"]["misfire"], stored["scheduler"]["spec"]["overlap"]) == (
        "all",
        "queue",
    )
    assert stored["params"] == [{"name": "minimum", "default": "100"}]
    assert (stored["retries"], stored["maxRunSeconds"]) == (2, 90)
    assert [f["key"] for f in stored["schema"]] == ["device", "total"]

    # --output json prints exactly what the API answers
    got = run("-o", "json", "jobs", "get", project, "totals")
    assert json.loads(ok(got).stdout) == stored
    assert got.stdout == json.dumps(stored, indent=2, sort_keys=True) + "\n"
    table = ok(run("jobs", "get", project, "totals")).stdout
    assert "sources" in table
    assert "DataSource" in table
    assert "float" in table

    listed = as_json(run("-o", "json", "jobs", "list", project))
    assert set(listed) == {"total", "page", "size", "jobs"}
    assert [j["name"] for j in listed["jobs"]] == ["totals"]
    assert "1-1 of 1 jobs" in ok(run("jobs", "list", project)).stdout

    # update replaces the whole job, here from a body file with an option over it
    body = tmp_path / "job.json"
    body.write_text(
        json.dumps(
            {
                "srcs": [{"name": "events", "type": "DataSource", "tableName": "ev"}],
                "computation": {"type": "SQL", "code": "SELECT device FROM ev"},
                "retries": 1,
            }
        )
    )
    updated = as_json(
        run(
            "-o", "json", "jobs", "update", project, "totals", "--file", str(body), "--retries", "4"
        )
    )
    assert updated["computation"]["code"] == "SELECT device FROM ev"
    assert updated["retries"] == 4
    assert (updated["params"], updated["container"], updated["maxRunSeconds"]) == (None, None, None)
    assert updated["scheduler"] is None
    assert api.get(f"/projects/{project}/jobs/totals").json()["retries"] == 4

    sql_file = tmp_path / "q.sql"
    sql_file.write_text("SELECT kind FROM ev\n")
    from_file = as_json(
        run(
            "-o",
            "json",
            "jobs",
            "update",
            project,
            "totals",
            "--sql",
            f"@{sql_file}",
            "--src",
            "events:datasource:ev",
        )
    )
    assert [f["key"] for f in from_file["schema"]] == ["kind"]

    deleted = ok(run("jobs", "delete", project, "totals"))
    assert "deleted job 'totals'" in deleted.stdout
    assert api.get(f"/projects/{project}/jobs/totals").status_code == 404
    missing = run("jobs", "get", project, "totals")
    assert missing.exit_code == 1
    assert re.fullmatch(
        r"error E18202: job 'totals' does not exist \(request [0-9a-f]{32}\)\n", missing.stderr
    ), missing.stderr


@pytest.mark.slow
def test_list_filters_by_source(run: Run, api: Api, project: str, datasource: str) -> None:
    ok(
        run(
            "jobs",
            "create",
            project,
            "up",
            "--sql",
            "SELECT device FROM ev",
            "--src",
            "events:DataSource:ev",
        )
    )
    ok(
        run(
            "jobs",
            "create",
            project,
            "down",
            "--sql",
            "SELECT count(*) AS n FROM u",
            "--src",
            "up:Job:u",
            "--scheduler",
            "depend",
        )
    )
    by_job = as_json(run("-o", "json", "jobs", "list", project, "--src-job", "up"))
    assert [j["name"] for j in by_job["jobs"]] == ["down"]
    by_source = as_json(run("-o", "json", "jobs", "list", project, "--src-datasource", "events"))
    assert [j["name"] for j in by_source["jobs"]] == ["up"]
    table = ok(run("jobs", "list", project)).stdout
    assert "depend" in table
    assert "manual" in table
    assert "2 jobs" in table
    paged = as_json(run("-o", "json", "jobs", "list", project, "--size", "1", "--page", "2"))
    assert (paged["total"], [j["name"] for j in paged["jobs"]]) == (2, ["up"])
    looping = run(
        "jobs",
        "update",
        project,
        "up",
        "--sql",
        "SELECT device FROM ev",
        "--src",
        "events:DataSource:ev",
        "--scheduler",
        "loop:1h",
    )
    assert "loop every 1h" in ok(looping).stdout
    assert api.get(f"/projects/{project}/jobs/up").json()["scheduler"]["spec"]["loop"] == "1h"
    both = run("jobs", "list", project, "--src-job", "up", "--src-datasource", "events")
    assert both.exit_code == 1
    assert both.stderr.startswith("error E18011:")
    blocked = run("jobs", "delete", project, "up")
    assert blocked.exit_code == 1
    assert blocked.stderr.startswith("error E18112:")
    assert "down" in blocked.stderr


@pytest.mark.slow
def test_bad_job_options_are_usage_errors(
    run: Run, api: Api, project: str, datasource: str
) -> None:
    sql = ("--sql", "SELECT device FROM ev")
    src = ("--src", "events:DataSource:ev")
    usage_error(run("jobs", "create", project, "j", *sql), "--src")
    usage_error(run("jobs", "create", project, "j", *src), "--sql")
    usage_error(run("jobs", "create", project, "j", *sql, "--src", "events:ev"), "NAME:TYPE:TABLE")
    usage_error(
        run("jobs", "create", project, "j", *sql, "--src", "events:Table:ev"), "DataSource, Job"
    )
    usage_error(run("jobs", "create", project, "j", *sql, *src, "--scheduler", "hourly"), "hourly")
    usage_error(run("jobs", "create", project, "j", *sql, *src, "--container", "1U2G:two"), "two")
    usage_error(
        run("jobs", "create", project, "j", *sql, *src, "--param", "nodefault"), "NAME=DEFAULT"
    )
    usage_error(run("jobs", "create", project, "j", *sql, *src, "--timezone", "UTC"), "--scheduler")
    usage_error(run("jobs", "create", project, "j", *sql, *src, "--overlap", "queue"), "--overlap")
    usage_error(
        run("jobs", "create", project, "j", *sql, *src, "--scheduler", "loop", "--misfire", "x")
    )
    usage_error(run("jobs", "history", project, "j", "--status", "Sleeping"))
    usage_error(run("jobs", "logs", project, "j", "first"), "'first' is not a run id")
    assert api.get(f"/projects/{project}/jobs/j").status_code == 404

    # what only the server can judge is an API error
    bad_sql = run("jobs", "create", project, "j", "--sql", "SELECT nosuch FROM ev", *src)
    assert bad_sql.exit_code == 1
    assert bad_sql.stderr.startswith("error E18209:")
    assert "nosuch" in bad_sql.stderr
    assert bad_sql.stdout == ""
    crontab = run("jobs", "create", project, "j", *sql, *src, "--scheduler", "crontab:")
    assert crontab.exit_code == 1
    assert crontab.stderr.startswith("error E18208:")
    assert api.get(f"/projects/{project}/jobs/j").status_code == 404


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_start_wait_history_logs_result(
    run: Run, api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    ok(create_totals(run, project))
    started = run("jobs", "start", project, "totals", "--param", "minimum=0", "--wait", *WAIT)
    out = ok(started).stdout
    assert "Successful" in out
    assert "waiting for run" in started.stderr
    entry = api.get(f"/projects/{project}/jobs/totals/history", params={"runId": -1}).json()
    first = entry["history"][0]
    assert first["status"] == "Successful"
    assert str(first["runId"]) in out

    # JSON: the finished run's history entry, exactly
    finished = as_json(run("-o", "json", "jobs", "start", project, "totals", "--wait", *WAIT))
    assert finished["status"] == "Successful"
    assert finished["runId"] == first["runId"] + 1
    assert finished["rowsWritten"] == 0  # the default minimum of 100 keeps no row
    assert (
        finished
        == api.get(
            f"/projects/{project}/jobs/totals/history", params={"runId": finished["runId"]}
        ).json()["history"][0]
    )

    history = as_json(run("-o", "json", "jobs", "history", project, "totals"))
    assert history == api.get(f"/projects/{project}/jobs/totals/history").json()
    assert [h["runId"] for h in history["history"]] == [finished["runId"], first["runId"]]
    table = ok(run("jobs", "history", project, "totals")).stdout
    for header in ("runId", "batchTime", "status", "duration", "rows read", "rows written"):
        assert header in table
    assert "1-2 of 2 runs" in table
    row = next(line for line in table.splitlines() if line.strip().startswith(str(first["runId"])))
    assert "Successful" in row
    assert re.search(r"\b3\s+3\b", row), row  # rows read, rows written
    one = as_json(run("-o", "json", "jobs", "history", project, "totals", "--run-id", "latest"))
    assert [h["runId"] for h in one["history"]] == [finished["runId"]]
    by_id = as_json(
        run("-o", "json", "jobs", "history", project, "totals", "--run-id", str(first["runId"]))
    )
    assert [h["runId"] for h in by_id["history"]] == [first["runId"]]
    failed = as_json(run("-o", "json", "jobs", "history", project, "totals", "--status", "Failed"))
    assert failed["total"] == 0
    assert "no runs" in ok(run("jobs", "history", project, "totals", "--status", "Failed")).stdout
    paged = as_json(
        run("-o", "json", "jobs", "history", project, "totals", "--size", "1", "--sort-by", "runId")
    )
    assert (paged["total"], [h["runId"] for h in paged["history"]]) == (2, [first["runId"]])

    logs = ok(run("jobs", "logs", project, "totals", str(first["runId"]))).stdout.splitlines()
    assert any("queued by manual" in line for line in logs)
    assert any("Successful" in line for line in logs)
    log_json = as_json(run("-o", "json", "jobs", "logs", project, "totals", "latest"))
    assert log_json == api.get(f"/projects/{project}/jobs/totals/runs/-1/logs").json()

    result = ok(run("jobs", "result", project, "totals", str(first["runId"]))).stdout
    for needle in ("device", "total", "d0", "2.5", "3 rows of run", "(3 written)"):
        assert needle in result, (needle, result)
    limited = as_json(
        run("-o", "json", "jobs", "result", project, "totals", str(first["runId"]), "--limit", "1")
    )
    assert limited == {
        "runId": first["runId"],
        "rows": [{"device": "d0", "total": 0.5}],
        "rowsWritten": 3,
    }
    no_run = run("jobs", "result", project, "totals", "999")
    assert no_run.exit_code == 1
    assert no_run.stderr.startswith("error E18230:")


@pytest.mark.slow
def test_start_without_wait_prints_the_queued_run(
    run: Run, api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    ok(create_totals(run, project))
    queued = as_json(run("-o", "json", "jobs", "start", project, "totals", "--param", "minimum=1"))
    assert queued["status"] in {"Ready", "Running", "Successful"}
    assert queued["endTime"] is None or queued["status"] == "Successful"
    done = wait_for(api, project, "totals", queued["runId"], TERMINAL)
    assert done["status"] == "Successful"
    assert done["rowsWritten"] == 2  # 1.5 and 2.5 are over 1
    table = ok(run("jobs", "start", project, "totals")).stdout
    assert "runId" in table
    assert "batchTime" in table
    unknown = run("jobs", "start", project, "totals", "--param", "nope=1")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error E18011:")
    assert "nope" in unknown.stderr
    usage_error(run("jobs", "start", project, "totals", "--param", "minimum"), "NAME=VALUE")


def test_start_wait_exits_1_when_the_run_fails(
    run: Run, api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    ok(
        run(
            "jobs",
            "create",
            project,
            "broken",
            "--sql",
            "SELECT CAST(kind AS INTEGER) AS k FROM ev",  # binds, but 'x' is no number
            "--src",
            "events:DataSource:ev",
        )
    )
    failed = run("jobs", "start", project, "broken", "--wait", *WAIT)
    assert failed.exit_code == 1, failed.output
    assert "Failed" in failed.stdout
    assert re.search(r"error: run \d+ of job 'broken' ended Failed: \S", failed.stderr), (
        failed.stderr
    )
    assert "Traceback" not in failed.output
    as_data = run("-o", "json", "jobs", "start", project, "broken", "--wait", *WAIT)
    assert as_data.exit_code == 1
    entry = json.loads(as_data.stdout)
    assert entry["status"] == "Failed"
    assert entry["message"]
    no_result = run("jobs", "result", project, "broken", str(entry["runId"]))
    assert no_result.exit_code == 1
    assert no_result.stderr.startswith("error E18232:")


@pytest.mark.slow
def test_stop_a_running_run_then_rerun_it(
    run: Run, api: Api, project: str, big: str, workers: WorkerPool
) -> None:
    ok(run("jobs", "create", project, "heavy", "--sql", HEAVY_SQL, "--src", "big:DataSource:t"))
    run_id = as_json(run("-o", "json", "jobs", "start", project, "heavy"))["runId"]
    wait_for(api, project, "heavy", run_id, {"Running"})
    timed_out = run("jobs", "start", project, "heavy", "--wait", "--timeout", "0.3")
    assert timed_out.exit_code == 1
    assert re.search(
        r"error: run \d+ of job 'heavy' in project '\w+' is still \w+ after 0.3 s", timed_out.stderr
    ), timed_out.stderr
    # the second run goes on after the timeout: stop it as soon as it runs
    second = api.get(f"/projects/{project}/jobs/heavy/history", params={"runId": -1}).json()
    second_id = second["history"][0]["runId"]
    assert second_id == run_id + 1
    wait_for(api, project, "heavy", second_id, {"Running"})
    assert ok(run("runs", "stop", project, "heavy", "latest")).stdout.count("Cancelling") == 1
    assert wait_for(api, project, "heavy", second_id, TERMINAL)["status"] == "Canceled"

    rerun_running = run("runs", "rerun", project, "heavy", str(run_id))
    assert rerun_running.exit_code == 1
    assert rerun_running.stderr.startswith("error E18231:")
    assert "stop it first" in rerun_running.stderr

    stopped = as_json(run("-o", "json", "runs", "stop", project, "heavy", str(run_id)))
    assert stopped == {"preStatus": "Running", "postStatus": "Cancelling"}
    assert wait_for(api, project, "heavy", run_id, TERMINAL)["status"] == "Canceled"
    again = run("runs", "stop", project, "heavy", str(run_id))
    assert again.exit_code == 1
    assert again.stderr.startswith("error E18231:")
    assert "only a Running run" in again.stderr

    ok(
        run(
            "jobs",
            "update",
            project,
            "heavy",
            "--sql",
            "SELECT count(*) AS n FROM t",
            "--src",
            "big:DataSource:t",
        )
    )
    rerun = as_json(run("-o", "json", "runs", "rerun", project, "heavy", str(run_id)))
    assert rerun == {"preStatus": "Canceled", "postStatus": "Restarting", "rerunCount": 1}
    entry = wait_for(api, project, "heavy", run_id, TERMINAL)
    assert (entry["status"], entry["rerunCount"]) == ("Successful", 1)

    waited = as_json(
        run("-o", "json", "runs", "rerun", project, "heavy", str(run_id), "--wait", *WAIT)
    )
    assert (waited["runId"], waited["status"], waited["rerunCount"]) == (run_id, "Successful", 2)
    assert waited["batchTime"] == entry["batchTime"]
    table = ok(run("runs", "rerun", project, "heavy", str(run_id), "--wait", *WAIT)).stdout
    assert "Successful" in table
    assert as_json(run("-o", "json", "jobs", "result", project, "heavy", str(run_id))) == {
        "runId": run_id,
        "rows": [{"n": 3000}],
        "rowsWritten": 1,
    }
    missing = run("runs", "rerun", project, "heavy", "999")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error E18230:")


@pytest.mark.slow
def test_jobs_stop_cancels_the_running_run(
    run: Run, api: Api, project: str, big: str, workers: WorkerPool
) -> None:
    ok(run("jobs", "create", project, "heavy", "--sql", HEAVY_SQL, "--src", "big:DataSource:t"))
    run_id = as_json(run("-o", "json", "jobs", "start", project, "heavy"))["runId"]
    wait_for(api, project, "heavy", run_id, {"Running"})
    stopped = as_json(run("-o", "json", "jobs", "stop", project, "heavy"))
    assert stopped == {"name": "heavy", "scheduleState": "stopped", "runsAffected": 1}
    assert wait_for(api, project, "heavy", run_id, TERMINAL)["status"] == "Canceled"
    assert api.get(f"/projects/{project}/jobs/heavy").json()["scheduleState"] == "stopped"
    table = ok(run("jobs", "stop", project, "heavy")).stdout
    assert "runsAffected" in table
    assert "stopped" in table


def test_wait_exits_1_when_the_run_is_canceled(
    run: Run, api: Api, project: str, big: str, workers: WorkerPool
) -> None:
    ok(run("jobs", "create", project, "heavy", "--sql", HEAVY_SQL, "--src", "big:DataSource:t"))
    stopper_failed: list[BaseException] = []

    def stop_when_running() -> None:
        try:
            deadline = time.monotonic() + 30
            path = f"/projects/{project}/jobs/heavy/history"
            while time.monotonic() < deadline:
                runs = api.get(path, params={"status": "Running"}).json()["history"]
                if runs:
                    break
                time.sleep(0.05)
            body = {"jobName": "heavy", "runId": runs[0]["runId"]}
            response = api.post(f"/projects/{project}/batch/actions/stop", json=body)
            assert response.status_code == 200, response.text
        except BaseException as exc:  # reported by the test's thread
            stopper_failed.append(exc)

    stopper = threading.Thread(target=stop_when_running)
    stopper.start()
    canceled = run("jobs", "start", project, "heavy", "--wait", *WAIT)
    stopper.join(timeout=60)
    assert not stopper_failed, stopper_failed
    assert canceled.exit_code == 1, canceled.output
    assert "Canceled" in canceled.stdout
    assert re.search(
        r"error: run \d+ of job 'heavy' ended Canceled: canceled on request", canceled.stderr
    ), canceled.stderr


def test_the_engine_option(run: Run, api: Api, project: str, datasource: str) -> None:
    refused = create_totals(run, project, "--engine", "spark")
    assert refused.exit_code != 0
    assert "E18215" in refused.output
    assert "engine" in refused.output
    ok(create_totals(run, project, "--engine", "duckdb"))
    assert as_json(run("-o", "json", "jobs", "get", project, "totals"))["engine"] == "duckdb"
