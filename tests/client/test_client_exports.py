"""The Python client's exports (``client.exports``) against the real app and real workers.

Export runs execute in the worker processes of the ``workers`` fixture and write to the
test data root; paging through a long export history uses a mock transport.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from datamill.client import (
    BadRequest,
    Conflict,
    DatamillClient,
    Export,
    ExportHistory,
    ExportRunEntry,
    InvalidName,
    NotFound,
    Page,
    RerunResult,
    RunStatus,
    RunWaitTimeout,
)
from datamill.connectors.sinks.file import FileExportSpec
from datamill.runtime.worker import WorkerPool
from tests.builders import make_source
from tests.client.test_client_jobs import ev
from tests.conftest import Api
from tests.connectors.test_export_files import expected, part_files, read_rows

SQL = "SELECT device, value, kind FROM ev ORDER BY value"


@pytest.fixture
def job(dm: DatamillClient, api: Api, project: str) -> str:
    make_source(api, project, rows=4)
    dm.jobs.create(project, "rows", srcs=ev(), computation=SQL, scheduler="manual")
    return "rows"


def test_create_get_list_update_delete(
    dm: DatamillClient, api: Api, project: str, job: str
) -> None:
    created = dm.exports.create(
        project, job, "daily", type="file", spec={"format": "json", "path": "out/"}
    )
    assert isinstance(created, Export)
    assert (created.name, created.type) == ("daily", "file")
    assert created.spec["path"] == "out/"
    assert created.spec["saveMode"] == "overwrite"  # defaults are filled in
    assert dm.exports.get(project, job, "daily") == created

    # a sink's own spec model is accepted as the spec
    typed = dm.exports.create(
        project,
        job,
        "typed",
        type="file",
        spec=FileExportSpec(format="csv", delimiter="|", path="typed/", fileCount=2),
    )
    assert (typed.spec["delimiter"], typed.spec["fileCount"]) == ("|", 2)

    page = dm.exports.list(project, job, size=1)
    assert isinstance(page, Page)
    assert (page.total, page.size, [e.name for e in page]) == (2, 1, ["daily"])
    assert page.has_next
    second = dm.exports.list(project, job, page=2, size=1)
    assert [e.name for e in second] == ["typed"]
    assert [e.name for e in dm.exports.list_all(project, job)] == ["daily", "typed"]

    updated = dm.exports.update(
        project, job, "daily", spec={"format": "parquet", "compression": "snappy"}
    )
    assert updated.type == "file"
    assert (updated.spec["format"], updated.spec["path"]) == ("parquet", "")  # replaced whole
    assert updated.updatedAt >= created.updatedAt
    assert api.get(f"/projects/{project}/jobs/{job}/exports/daily").json()["spec"] == updated.spec

    dm.exports.delete(project, job, "daily")  # returns None
    with pytest.raises(NotFound) as gone:
        dm.exports.get(project, job, "daily")
    assert gone.value.error_code == "E18302"
    assert [e.name for e in dm.exports.iter_all(project, job)] == ["typed"]


def test_kodo_is_stored_as_s3(dm: DatamillClient, project: str, job: str) -> None:
    spec = {"bucket": "some-bucket", "keyPrefix": "daily/", "format": "json"}
    made = dm.exports.create(project, job, "objects", type="kodo", spec=spec)
    assert made.type == "s3"
    assert dm.exports.get(project, job, "objects").type == "s3"
    # an update keeps the type, whatever name it was created with
    again = dm.exports.update(project, job, "objects", spec={**spec, "compression": "gzip"})
    assert (again.type, again.spec["compression"]) == ("s3", "gzip")
    with pytest.raises(BadRequest) as wrong:
        dm.exports.create(project, job, "other", type="KODO", spec=spec)
    assert wrong.value.error_code == "E18011"
    assert "unknown export type 'KODO'" in wrong.value.error_msg


@pytest.mark.slow
def test_run_history_wait_and_rerun(
    dm: DatamillClient, api: Api, project: str, job: str, workers: WorkerPool
) -> None:
    dm.exports.create(
        project,
        job,
        "files",
        type="file",
        spec={"format": "csv", "delimiter": ",", "path": "files/", "retries": 1},
    )
    history = dm.exports.history(project, job, "files")
    assert isinstance(history, ExportHistory)
    assert (history.total, history.history) == (0, [])

    run = dm.jobs.start(project, job)
    assert dm.jobs.wait(project, job, run.runId, timeout=120).status == RunStatus.Successful
    entry = dm.exports.wait(project, job, "files", run.runId, timeout=120)
    assert isinstance(entry, ExportRunEntry)
    assert (entry.export, entry.runId, entry.status) == ("files", run.runId, RunStatus.Successful)
    assert (entry.rowsWritten, entry.rerunCount) == (4, 0)
    assert entry.bytesWritten
    assert entry.bytesWritten > 0
    assert dm.exports.find(project, job, "files", -1) == entry
    assert dm.exports.find(project, job, "files", run.runId + 1) is None
    assert dm.exports.run(project, job, "files", run.runId) == entry
    log = dm.exports.logs(project, job, "files", -1)
    assert log.runId == run.runId
    assert any("writing 4 rows" in line for line in log.lines), log.lines

    history = dm.exports.history(project, job, "files")
    assert history.total == 1
    assert history.history == [entry]
    (location,) = (api.data_root / project / "files").iterdir()
    (written,) = part_files(location)
    rows = dm.jobs.result(project, job, run.runId).rows
    assert read_rows(written.read_bytes(), "csv") == expected(rows, "csv")

    before = written.stat().st_mtime_ns
    time.sleep(0.01)
    rerun = dm.exports.rerun(project, job, "files", run.runId)
    assert isinstance(rerun, RerunResult)
    assert (rerun.preStatus, rerun.postStatus, rerun.rerunCount) == (
        RunStatus.Successful,
        RunStatus.Restarting,
        1,
    )
    again = dm.exports.wait(project, job, "files", -1, timeout=120, max_poll=0.5)
    assert (again.status, again.rerunCount) == (RunStatus.Successful, 1)
    (rewritten,) = part_files(location)
    assert rewritten.stat().st_mtime_ns > before
    assert read_rows(rewritten.read_bytes(), "csv") == expected(rows, "csv")

    # a new export has no run for the batch yet: rerun queues one
    dm.exports.create(project, job, "late", type="file", spec={"format": "json", "path": "late/"})
    queued = dm.exports.rerun(project, job, "late", -1)
    assert (queued.preStatus, queued.postStatus) == (RunStatus.Successful, RunStatus.Ready)
    late = dm.exports.wait(project, job, "late", run.runId, timeout=120)
    assert late.status == RunStatus.Successful
    dm.exports.create(project, job, "later", type="file", spec={"format": "json", "path": "l/"})
    with pytest.raises(NotFound, match="created after that run") as none:
        dm.exports.wait(project, job, "later", run.runId, timeout=120)
    assert none.value.error_code == "E18230"

    with pytest.raises(Conflict) as busy:
        dm.exports.create(project, job, "late", type="file", spec={"format": "json"})
    assert busy.value.error_code == "E18301"


def test_errors(dm: DatamillClient, project: str, job: str) -> None:
    def refused(spec: dict[str, Any], *needles: str, code: str = "E18011") -> None:
        with pytest.raises(BadRequest) as raised:
            dm.exports.create(project, job, "bad", type="file", spec=spec)
        assert raised.value.status == 400
        assert raised.value.error_code == code
        for needle in needles:
            assert needle in raised.value.error_msg, (needle, raised.value.error_msg)

    refused({"format": "xml"}, "spec.format", "xml")
    refused({"format": "parquet", "compression": "lzo"}, "spec.compression", "cannot be written")
    refused({"format": "json", "compression": "zlib"}, "spec.compression", "not allowed")
    refused({"format": "json", "fileCount": 0}, "spec.fileCount")
    refused({"format": "json", "fileCount": 1001}, "spec.fileCount")
    with pytest.raises(NotFound) as no_job:
        dm.exports.create(project, "missing", "bad", type="file", spec={"format": "json"})
    assert no_job.value.error_code == "E18202"
    with pytest.raises(NotFound) as no_job_list:
        dm.exports.list(project, "missing")
    assert no_job_list.value.error_code == "E18202"
    assert dm.exports.list(project, job).total == 0

    dm.exports.create(project, job, "ok", type="file", spec={"format": "json"})
    with pytest.raises(NotFound) as no_run:
        dm.exports.rerun(project, job, "ok", 42)
    assert no_run.value.error_code == "E18230"
    with pytest.raises(NotFound) as no_export:
        dm.exports.history(project, job, "nope")
    assert no_export.value.error_code == "E18302"
    with pytest.raises(InvalidName):
        dm.exports.get(project, job, "a/b")

    # the job never ran: there is no batch to wait for
    with pytest.raises(NotFound) as no_batch:
        dm.exports.wait(project, job, "ok", 3, timeout=5)
    assert no_batch.value.error_code == "E18230"
    assert dm.exports.find(project, job, "ok", 3) is None
    with pytest.raises(NotFound) as unknown:
        dm.exports.find(project, job, "nope", 3)
    assert unknown.value.error_code == "E18302"


# --------------------------------------------------------------------------- mock transport


def _entry(run_id: int, status: str = "Successful") -> dict[str, Any]:
    return {
        "export": "e",
        "runId": run_id,
        "batchTime": "2026-01-01T00:00:00Z",
        "status": status,
        "message": "",
        "attempt": 0,
        "rerunCount": 0,
        "rowsWritten": 1,
        "bytesWritten": 10,
        "startTime": None,
        "endTime": None,
    }


def _job_entry(status: str, run_id: int = 4) -> dict[str, Any]:
    entry = {k: v for k, v in _entry(run_id, status).items() if k != "export"}
    entry.update(duration=None, rowsRead=None, bytesRead=None, rowsWritten=None)
    return entry


def _mock(
    job_runs: list[str], export_runs: list[str]
) -> tuple[DatamillClient, list[httpx.Request]]:
    """A server whose job run 4 and its export run go through the given states, one state
    per request (the last one repeats)."""
    seen: list[httpx.Request] = []
    states = {"job": job_runs, "export": export_runs}
    asked = {"job": 0, "export": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        kind = "export" if "/exports/" in request.url.path else "job"
        state = states[kind][min(asked[kind], len(states[kind]) - 1)]
        asked[kind] += 1
        if kind == "export":
            return httpx.Response(200, json=_entry(4, state))
        if request.url.path.endswith("/history"):
            body = {"total": 1, "page": 1, "size": 1, "history": [_job_entry(state)]}
            return httpx.Response(200, json=body)
        return httpx.Response(200, json=_job_entry(state))

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://mock")
    return DatamillClient(token="dm_t", http=http), seen


def test_wait_follows_the_job_run_then_long_polls_the_export_run() -> None:
    dm, seen = _mock(["Running", "Running", "Successful"], ["Ready", "Running", "Successful"])
    entry = dm.exports.wait("p", "j", "e", 4, timeout=10, poll=0.01)
    assert (entry.runId, entry.status) == (4, RunStatus.Successful)
    paths = [r.url.path for r in seen]
    assert paths == [
        "/api/v1/projects/p/jobs/j/history",  # the job run is still going ...
        "/api/v1/projects/p/jobs/j/runs/4",  # ... so it is waited for first
        "/api/v1/projects/p/jobs/j/runs/4",
        "/api/v1/projects/p/jobs/j/exports/e/runs/4",
        "/api/v1/projects/p/jobs/j/exports/e/runs/4",
        "/api/v1/projects/p/jobs/j/exports/e/runs/4",
    ]
    # every wait request is a long poll holding for what is left of the timeout
    holds = [float(r.url.params["waitSeconds"]) for r in seen[1:]]
    assert all(0 < hold <= 10 for hold in holds), holds


def test_wait_gives_up_after_the_timeout() -> None:
    dm, seen = _mock(["Successful"], ["Running"])
    started = time.monotonic()
    with pytest.raises(RunWaitTimeout) as late:
        dm.exports.wait("p", "j", "e", 4, timeout=0.3, poll=0.05)
    assert 0.3 <= time.monotonic() - started < 3
    assert late.value.entry is not None
    assert late.value.entry.status == RunStatus.Running
    assert "the export 'e' of run 4 of job 'j' in project 'p' is still Running after 0.3 s" in str(
        late.value
    )
    assert seen[0].url.path == "/api/v1/projects/p/jobs/j/history"  # the job run had ended
    assert len(seen) >= 3

    # a job run that does not end in time is reported as the export's wait
    dm, _ = _mock(["Running"], ["Successful"])
    with pytest.raises(RunWaitTimeout) as still:
        dm.exports.wait("p", "j", "e", 4, timeout=0.3, poll=0.05)
    assert still.value.entry is None
    assert "is still not queued after 0.3 s" in str(still.value)
