"""One export run through the API: ``GET …/exports/{name}/runs/{runId}`` (a long poll with
``waitSeconds``) and its log, with real worker processes writing to the test data root."""

from __future__ import annotations

import time

import pytest

from datamill.runtime.worker import WorkerPool
from tests.builders import start
from tests.conftest import Api, assert_error
from tests.connectors.test_export_files import add_export, make_job, rerun_export
from tests.services.test_jobs import heavy_job, stop_running


def export_run_path(project: str, job: str, name: str, run_id: int) -> str:
    return f"/projects/{project}/jobs/{job}/exports/{name}/runs/{run_id}"


@pytest.mark.slow
def test_waiting_for_an_export_run_and_reading_its_log(
    api: Api, project: str, workers: WorkerPool
) -> None:
    make_job(api, project, "rich", rows=6)
    spec = {"path": "files/", "format": "json", "retries": 1}
    add_export(api, project, "rich", "files", "file", spec)
    run_id = start(api, project, "rich")
    path = export_run_path(project, "rich", "files", run_id)

    # one request waits through the job run and then its export run
    began = time.monotonic()
    waited = api.get(path, params={"waitSeconds": 30})
    assert waited.status_code == 200, waited.text
    entry = waited.json()
    assert (entry["export"], entry["runId"], entry["status"]) == ("files", run_id, "Successful")
    assert (entry["rowsWritten"], entry["rerunCount"]) == (6, 0)
    assert entry["bytesWritten"] > 0
    assert time.monotonic() - began < 25
    history = api.get(f"/projects/{project}/jobs/rich/exports/files/history").json()["history"]
    assert history == [entry]
    assert api.get(path).json() == entry  # without a wait: at once
    assert api.get(export_run_path(project, "rich", "files", -1)).json() == entry

    log = api.get(path + "/logs")
    assert log.status_code == 200, log.text
    assert log.json()["runId"] == run_id
    lines = log.json()["lines"]
    assert any("export 'files' queued for the batch" in line for line in lines), lines
    assert any("writing 6 rows" in line for line in lines), lines
    assert api.get(export_run_path(project, "rich", "files", -1) + "/logs").json() == log.json()
    # the job run's own log is another one
    job_log = api.get(f"/projects/{project}/jobs/rich/runs/{run_id}/logs").json()["lines"]
    assert not any("writing 6 rows" in line for line in job_log)

    # a rerun: the wait answers with the rerun once it has ended
    rerun_export(api, project, "rich", "files", run_id)
    again = api.get(path, params={"waitSeconds": 30}).json()
    assert (again["status"], again["rerunCount"], again["rowsWritten"]) == ("Successful", 1, 6)
    lines = api.get(path + "/logs").json()["lines"]
    assert sum("writing 6 rows" in line for line in lines) == 2, lines

    # an export newer than the batch has no run for it: 404 at once, even with a wait
    add_export(api, project, "rich", "late", "file", {"path": "late/", "format": "json"})
    began = time.monotonic()
    late = api.get(export_run_path(project, "rich", "late", run_id), params={"waitSeconds": 30})
    assert_error(late, 404, "E18230", "export 'late' has no run", "created after")
    assert time.monotonic() - began < 10
    assert_error(api.get(export_run_path(project, "rich", "late", run_id) + "/logs"), 404, "E18230")

    # unknown runs, exports and jobs; a wait over the limit
    assert_error(api.get(export_run_path(project, "rich", "files", 999)), 404, "E18230")
    assert_error(api.get(export_run_path(project, "rich", "nope", run_id)), 404, "E18302")
    assert_error(api.get(export_run_path(project, "nope", "files", run_id)), 404, "E18202")
    assert_error(api.get(path, params={"waitSeconds": 61}), 400, "E18011", "waitSeconds")


@pytest.mark.slow
def test_a_wait_on_a_batch_still_running(api: Api, project: str, workers: WorkerPool) -> None:
    heavy_job(api, project, "heavy")
    add_export(api, project, "heavy", "files", "file", {"path": "heavy/", "format": "json"})
    run_id = start(api, project, "heavy")
    path = export_run_path(project, "heavy", "files", run_id)

    # the wait is over before the job run: no export run yet, and the answer says why
    began = time.monotonic()
    held = api.get(path, params={"waitSeconds": 0.5})
    assert_error(held, 404, "E18230", "not yet: that run is")
    assert 0.5 <= time.monotonic() - began < 5

    # a job run that ends without success ends the wait at once: nothing will be exported
    stop_running(api, project, "heavy", run_id)
    began = time.monotonic()
    ended = api.get(path, params={"waitSeconds": 30})
    assert_error(ended, 404, "E18230", "that run is Canceled, so there is nothing to export")
    assert time.monotonic() - began < 10
