"""The Python client's batch jobs (``client.jobs``, ``client.batch``) against the real app.

Runs execute in the real worker processes of the ``workers`` fixture; a few request-shape
and polling edges use a mock transport.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from datamill.client import (
    BadRequest,
    Computation,
    Conflict,
    DatamillClient,
    DatamillProtocolError,
    History,
    HistoryEntry,
    Job,
    JobBody,
    JobStopResult,
    NotFound,
    Page,
    RerunResult,
    RunLog,
    RunResult,
    RunStatus,
    RunWaitTimeout,
    Src,
    StopResult,
)
from datamill.runtime.worker import WorkerPool
from tests.builders import TOTALS_SQL, make_source
from tests.conftest import Api

HEAVY_SQL = "SELECT sum(a.value * b.value + c.value) AS s FROM t a, t b, t c"


def ev(name: str = "events") -> list[dict[str, str]]:
    return [{"name": name, "type": "DataSource", "tableName": "ev"}]


@pytest.fixture
def big(api: Api, project: str) -> Iterator[str]:
    """A 3000-row source for the job ``heavy``, which is stopped after the test whatever
    happened, so a failed test does not leave a long run on a shared worker."""
    yield make_source(api, project, "big", rows=3000)
    api.post(f"/projects/{project}/jobs/heavy/actions/stop")


def wait_status(
    dm: DatamillClient, project: str, job: str, run_id: int, status: RunStatus, timeout: float = 30
) -> HistoryEntry:
    deadline = time.monotonic() + timeout
    entry = dm.jobs.run(project, job, run_id)
    while entry.status != status and time.monotonic() < deadline:
        time.sleep(0.05)
        entry = dm.jobs.run(project, job, run_id)
    assert entry.status == status, entry
    return entry


def heavy_job(dm: DatamillClient, project: str, name: str) -> None:
    dm.jobs.create(
        project,
        name,
        srcs=[{"name": "big", "type": "DataSource", "tableName": "t"}],
        computation=HEAVY_SQL,
        scheduler="manual",
    )


# --------------------------------------------------------------------------- definitions


def test_create_get_update_delete(
    dm: DatamillClient, api: Api, project: str, datasource: str
) -> None:
    created = dm.jobs.create(
        project,
        "totals",
        srcs=[Src.model_validate({"name": datasource, "type": "DataSource", "tableName": "ev"})],
        computation=TOTALS_SQL,
        container="1U2G",
        scheduler="manual",
        params={"minimum": "0"},
        retries=2,
        max_run_seconds=120,
    )
    assert isinstance(created, Job)
    assert created.name == "totals"
    assert [(f.key, f.valtype) for f in created.schema_] == [
        ("device", "string"),
        ("total", "float"),
    ]
    assert created.computation.code == TOTALS_SQL
    assert created.container is not None
    assert (created.container.type, created.container.count) == ("1U2G", 1)
    assert [(p.name, p.default) for p in created.params or []] == [("minimum", "0")]
    assert (created.retries, created.maxRunSeconds, created.scheduleState) == (2, 120, "active")
    assert created.srcs[0].tableName == "ev"

    got = dm.jobs.get(project, "totals")
    assert got.model_dump() == created.model_dump()
    assert got.model_dump(mode="json", by_alias=True, exclude={"schedule"}) == {
        k: v
        for k, v in api.get(f"/projects/{project}/jobs/totals").json().items()
        if k != "schedule"
    }

    with pytest.raises(Conflict) as exists:
        dm.jobs.create(project, "totals", srcs=ev(), computation="SELECT 1 AS a")
    assert exists.value.error_code == "E18201"

    # an update replaces the whole job: what is left out goes back to its default
    updated = dm.jobs.update(
        project, "totals", srcs=ev(), computation="SELECT count(*) AS n FROM ev"
    )
    assert [f.key for f in updated.schema_] == ["n"]
    assert (updated.params, updated.retries, updated.maxRunSeconds) == (None, 0, None)
    assert updated.createdAt == created.createdAt
    assert updated.updatedAt >= created.updatedAt
    assert dm.jobs.get(project, "totals").computation.code == "SELECT count(*) AS n FROM ev"

    dm.jobs.delete(project, "totals")
    with pytest.raises(NotFound) as gone:
        dm.jobs.get(project, "totals")
    assert (gone.value.status, gone.value.error_code) == (404, "E18202")
    assert "totals" in gone.value.error_msg
    with pytest.raises(NotFound):
        dm.jobs.delete(project, "totals")


def test_create_from_a_body_with_keywords_over_it(
    dm: DatamillClient, project: str, datasource: str
) -> None:
    body = JobBody.model_validate(
        {
            "srcs": ev(),
            "computation": {"type": "SQL", "code": "SELECT device FROM ev"},
            "params": [{"name": "label", "default": "x"}],
        }
    )
    job = dm.jobs.create(project, "from_model", body, retries=3)
    assert (job.retries, [p.name for p in job.params or []]) == (3, ["label"])
    assert [f.key for f in job.schema_] == ["device"]
    raw = {
        "srcs": ev(),
        "computation": {"type": "SQL", "code": "SELECT device FROM ev"},
        "scheduler": {"type": "manual"},
    }
    other = dm.jobs.create(
        project, "from_dict", raw, computation=Computation(code="SELECT kind FROM ev")
    )
    assert [f.key for f in other.schema_] == ["kind"]
    assert other.scheduler is not None
    assert other.scheduler.type == "manual"


def test_invalid_jobs_raise_the_catalog_errors(
    dm: DatamillClient, project: str, datasource: str
) -> None:
    with pytest.raises(BadRequest) as bad_sql:
        dm.jobs.create(project, "bad", srcs=ev(), computation="SELECT nosuch FROM ev")
    assert bad_sql.value.error_code == "E18209"
    assert "nosuch" in bad_sql.value.error_msg
    with pytest.raises(BadRequest) as container:
        dm.jobs.create(project, "bad", srcs=ev(), computation="SELECT 1 AS a", container="3U3G")
    assert container.value.error_code == "E18213"
    with pytest.raises(NotFound) as ghost:
        dm.jobs.create(project, "bad", srcs=ev("ghost"), computation="SELECT 1 AS a")
    assert ghost.value.error_code == "E18102"
    with pytest.raises(BadRequest) as empty:
        dm.jobs.create(project, "bad")
    assert empty.value.error_code == "E18011"
    with pytest.raises(NotFound):
        dm.jobs.get(project, "bad")


def test_list_filters_and_walks_pages(dm: DatamillClient, project: str, datasource: str) -> None:
    names = ["b_job", "a_job", "c_job"]
    for name in names:
        dm.jobs.create(project, name, srcs=ev(), computation="SELECT device, value FROM ev")
    dm.jobs.create(
        project,
        "down",
        srcs=[{"name": "a_job", "type": "Job", "tableName": "up"}],
        computation="SELECT count(*) AS n FROM up",
        scheduler="depend",
    )
    page = dm.jobs.list(project, size=2)
    assert isinstance(page, Page)
    assert (page.total, page.page, page.size) == (4, 1, 2)
    assert [j.name for j in page] == ["a_job", "b_job"]
    assert page.has_next
    assert [j.name for j in dm.jobs.list(project, page=2, size=2)] == ["c_job", "down"]
    assert [j.name for j in dm.jobs.list(project, src_job="a_job")] == ["down"]
    by_source = dm.jobs.list(project, src_datasource=datasource)
    assert [j.name for j in by_source] == ["a_job", "b_job", "c_job"]
    assert dm.jobs.list(project, src_datasource="nothing_reads_this").total == 0
    assert [j.name for j in dm.jobs.list_all(project)] == ["a_job", "b_job", "c_job", "down"]
    assert [j.name for j in dm.jobs.iter_all(project, src_job="a_job")] == ["down"]
    assert len(dm.jobs.list_all(project, src_datasource=datasource)) == 3
    with pytest.raises(BadRequest) as both:
        dm.jobs.list(project, src_datasource=datasource, src_job="a_job")
    assert both.value.error_code == "E18011"
    with pytest.raises(BadRequest) as read:
        dm.jobs.delete(project, "a_job")
    assert read.value.error_code == "E18112"
    assert "down" in read.value.error_msg


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_start_wait_history_logs_result(
    dm: DatamillClient, project: str, datasource: str, workers: WorkerPool
) -> None:
    dm.jobs.create(
        project,
        "totals",
        srcs=ev(),
        computation="SELECT device, sum(value) AS total, '$(label)' AS label FROM ev "
        "WHERE value > $(minimum) GROUP BY device ORDER BY device",
        params={"minimum": "100", "label": "default"},
    )
    queued = dm.jobs.start(project, "totals", {"minimum": "0", "label": "given"})
    assert isinstance(queued, HistoryEntry)
    assert queued.status == RunStatus.Ready
    assert queued.endTime is None
    assert (queued.rerunCount, queued.rowsWritten) == (0, None)

    entry = dm.jobs.wait(project, "totals", queued.runId, timeout=60)
    assert isinstance(entry, HistoryEntry)
    assert entry.runId == queued.runId
    assert entry.status == RunStatus.Successful, entry
    assert entry.batchTime == queued.batchTime
    assert (entry.rowsRead, entry.rowsWritten) == (3, 3)
    assert entry.duration is not None
    assert entry.duration >= 0

    result = dm.jobs.result(project, "totals", queued.runId)
    assert isinstance(result, RunResult)
    assert result.rows == [
        {"device": "d0", "total": 0.5, "label": "given"},
        {"device": "d1", "total": 1.5, "label": "given"},
        {"device": "d2", "total": 2.5, "label": "given"},
    ]
    assert result.rowsWritten == 3
    assert len(dm.jobs.result(project, "totals", -1, limit=1).rows) == 1

    log = dm.jobs.logs(project, "totals", queued.runId)
    assert isinstance(log, RunLog)
    assert log.runId == queued.runId
    assert any("queued by manual" in line for line in log.lines)
    assert any("Successful" in line for line in log.lines)

    second = dm.jobs.start(project, "totals")  # the defaults: nothing is over 100
    assert dm.jobs.wait(project, "totals", second.runId).status == RunStatus.Successful
    assert dm.jobs.result(project, "totals", second.runId).rows == []

    history = dm.jobs.history(project, "totals")
    assert isinstance(history, History)
    assert history.total == 2
    assert [h.runId for h in history.history] == [second.runId, queued.runId]
    oldest_first = dm.jobs.history(project, "totals", sort_by="runId")
    assert [h.runId for h in oldest_first.history] == [queued.runId, second.runId]
    one_per_page = dm.jobs.history(project, "totals", sort_by="runId", page=2, size=1)
    assert (one_per_page.total, [h.runId for h in one_per_page.history]) == (2, [second.runId])
    assert dm.jobs.history(project, "totals", status="Successful").total == 2
    assert dm.jobs.history(project, "totals", status=RunStatus.Failed).total == 0
    latest = dm.jobs.history(project, "totals", run_id=-1)
    assert [h.runId for h in latest.history] == [second.runId]
    assert dm.jobs.run(project, "totals", queued.runId).rowsWritten == 3
    with pytest.raises(BadRequest) as bad_sort:
        dm.jobs.history(project, "totals", sort_by="colour")
    assert bad_sort.value.error_code == "E18011"
    with pytest.raises(NotFound) as no_run:
        dm.jobs.logs(project, "totals", 999)
    assert no_run.value.error_code == "E18230"
    with pytest.raises(BadRequest) as unknown_param:
        dm.jobs.start(project, "totals", {"nope": "1"})
    assert unknown_param.value.error_code == "E18011"
    assert "nope" in unknown_param.value.error_msg
    with pytest.raises(NotFound) as no_job:
        dm.jobs.start(project, "ghost")
    assert no_job.value.error_code == "E18202"


def test_wait_returns_a_failed_run_which_has_no_result(
    dm: DatamillClient, project: str, datasource: str, workers: WorkerPool
) -> None:
    # binds (the output column is an integer) but fails on the data: 'x' is no number
    dm.jobs.create(
        project, "broken", srcs=ev(), computation="SELECT CAST(kind AS INTEGER) AS k FROM ev"
    )
    run_id = dm.jobs.start(project, "broken").runId
    entry = dm.jobs.wait(project, "broken", run_id, timeout=60)
    assert entry.status == RunStatus.Failed
    assert entry.message
    assert entry.endTime is not None
    with pytest.raises(NotFound) as no_result:
        dm.jobs.result(project, "broken", run_id)
    assert no_result.value.error_code == "E18232"
    assert "Failed" in no_result.value.error_msg
    assert any("ERROR" in line for line in dm.jobs.logs(project, "broken", run_id).lines)
    assert dm.jobs.history(project, "broken", status="Failed").total == 1


@pytest.mark.slow
def test_stop_a_running_run_then_rerun_it(
    dm: DatamillClient, project: str, big: str, workers: WorkerPool
) -> None:
    heavy_job(dm, project, "heavy")
    run_id = dm.jobs.start(project, "heavy").runId
    wait_status(dm, project, "heavy", run_id, RunStatus.Running)
    with pytest.raises(RunWaitTimeout) as waited:
        dm.jobs.wait(project, "heavy", run_id, timeout=0.2, poll=0.05)
    assert isinstance(waited.value, TimeoutError)
    assert waited.value.entry is not None
    assert waited.value.entry.status == RunStatus.Running
    assert f"run {run_id} of job 'heavy'" in str(waited.value)
    assert "still Running after 0.2 s" in str(waited.value)
    with pytest.raises(Conflict) as running:
        dm.batch.rerun(project, "heavy", run_id)
    assert running.value.error_code == "E18231"
    assert "stop it first" in running.value.error_msg

    stopped = dm.batch.stop(project, "heavy", run_id)
    assert isinstance(stopped, StopResult)
    assert (stopped.preStatus, stopped.postStatus) == (RunStatus.Running, RunStatus.Cancelling)
    canceled = dm.jobs.wait(project, "heavy", run_id, timeout=30)
    assert canceled.status == RunStatus.Canceled
    with pytest.raises(Conflict) as again:
        dm.batch.stop(project, "heavy", run_id)
    assert again.value.error_code == "E18231"
    assert "only a Running run" in again.value.error_msg

    dm.jobs.update(
        project,
        "heavy",
        srcs=[{"name": "big", "type": "DataSource", "tableName": "t"}],
        computation="SELECT count(*) AS n FROM t",
    )
    rerun = dm.batch.rerun(project, "heavy", run_id)
    assert isinstance(rerun, RerunResult)
    assert (rerun.preStatus, rerun.postStatus, rerun.rerunCount) == (
        RunStatus.Canceled,
        RunStatus.Restarting,
        1,
    )
    finished = dm.jobs.wait(project, "heavy", run_id, timeout=60)
    assert finished.status == RunStatus.Successful
    assert finished.rerunCount == 1
    assert finished.batchTime == canceled.batchTime
    assert dm.jobs.result(project, "heavy", run_id).rows == [{"n": 3000}]
    # -1 is the latest run
    assert dm.batch.rerun(project, "heavy", -1).rerunCount == 2
    assert dm.jobs.wait(project, "heavy", -1, timeout=60).rerunCount == 2
    assert dm.jobs.history(project, "heavy").total == 1
    with pytest.raises(NotFound) as missing:
        dm.batch.rerun(project, "heavy", 999)
    assert missing.value.error_code == "E18230"
    with pytest.raises(NotFound) as no_job:
        dm.batch.stop(project, "ghost", 1)
    assert no_job.value.error_code == "E18202"


def test_job_stop_cancels_the_running_run(
    dm: DatamillClient, project: str, big: str, workers: WorkerPool
) -> None:
    heavy_job(dm, project, "heavy")
    run_id = dm.jobs.start(project, "heavy").runId
    wait_status(dm, project, "heavy", run_id, RunStatus.Running)
    stopped = dm.jobs.stop(project, "heavy")
    assert isinstance(stopped, JobStopResult)
    assert (stopped.name, stopped.scheduleState) == ("heavy", "stopped")
    assert stopped.runsAffected == 1
    assert dm.jobs.wait(project, "heavy", run_id, timeout=30).status == RunStatus.Canceled
    assert dm.jobs.get(project, "heavy").scheduleState == "stopped"
    assert dm.jobs.stop(project, "heavy").runsAffected == 0


# --------------------------------------------------------------------------- request shapes


def _recording(answers: list[dict[str, Any]]) -> tuple[DatamillClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answers[min(len(seen), len(answers)) - 1])

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://mock")
    return DatamillClient(token="dm_t", http=http), seen


def _entry(status: str, run_id: int = 4) -> dict[str, Any]:
    return {
        "runId": run_id,
        "batchTime": "2026-01-01T00:00:00Z",
        "startTime": None,
        "endTime": None,
        "duration": None,
        "status": status,
        "message": "",
        "rerunCount": 0,
        "attempt": 0,
        "rowsRead": None,
        "rowsWritten": None,
        "bytesRead": None,
        "bytesWritten": None,
    }


def test_wait_long_polls_the_run_until_it_ends() -> None:
    answers = [_entry(s) for s in ("Ready", "Running", "Running", "Canceled")]
    dm, seen = _recording(answers)
    entry = dm.jobs.wait("p", "j", -1, timeout=10, poll=0.01)
    assert entry.status == RunStatus.Canceled
    assert len(seen) == 4
    # -1 is resolved by the first answer: the wait follows that run, not a newer one
    assert seen[0].url.path == "/api/v1/projects/p/jobs/j/runs/-1"
    assert all(r.url.path == "/api/v1/projects/p/jobs/j/runs/4" for r in seen[1:])
    # each request holds for what is left of the timeout, within the HTTP client's own
    holds = [float(r.url.params["waitSeconds"]) for r in seen]
    assert all(0 < hold <= 10 for hold in holds), holds
    short = DatamillClient(token="t", http=httpx.Client(base_url="http://mock", timeout=4.0))
    assert short.jobs._long_poll_seconds(None) == 2.0
    assert dm.jobs._long_poll_seconds(None) == 2.5  # httpx's default timeout is 5 s
    forever = httpx.Client(base_url="http://m", timeout=None)  # noqa: S113 (what is tested)
    unlimited = DatamillClient(token="t", http=forever)
    assert unlimited.jobs._long_poll_seconds(None) == 30.0


def test_wait_gives_up_after_the_timeout() -> None:
    dm, seen = _recording([_entry("Restarting")])
    started = time.monotonic()
    with pytest.raises(RunWaitTimeout, match="run 4 of job 'j' in project 'p' is still Restarting"):
        dm.jobs.wait("p", "j", 4, timeout=0.3, poll=0.05)
    assert 0.3 <= time.monotonic() - started < 3
    assert len(seen) >= 3


def test_job_and_action_request_bodies() -> None:
    stop = {"preStatus": "Running", "postStatus": "Cancelling"}
    dm, seen = _recording([_entry("Ready"), stop, _entry("Ready")])
    dm.jobs.start("p", "j", {"day": "2024-01-01", "n": "3"})
    dm.batch.stop("p", "j", 7)
    assert json.loads(seen[0].content) == {
        "params": [{"name": "day", "value": "2024-01-01"}, {"name": "n", "value": "3"}]
    }
    assert seen[0].url.path == "/api/v1/projects/p/jobs/j/actions/start"
    assert json.loads(seen[1].content) == {"jobName": "j", "runId": 7}
    assert seen[1].url.path == "/api/v1/projects/p/batch/actions/stop"
    dm.jobs.start("p", "j")
    assert json.loads(seen[2].content) == {"params": []}

    # keyword fields go over the body; models are sent by alias, without unset fields
    with pytest.raises(DatamillProtocolError):  # the mock answers a history entry, not a job
        dm.jobs.update(
            "p",
            "j",
            {"srcs": ev(), "computation": {"type": "SQL", "code": "x"}, "retries": 1},
            container="2U4G",
            scheduler={"type": "crontab", "spec": {"crontab": "0 3 * * *"}},
            params=[{"name": "a", "default": "1"}],
            srcs=[Src.model_validate({"name": "other", "type": "Job", "tableName": "o"})],
        )
    assert seen[3].method == "PUT"
    assert json.loads(seen[3].content) == {
        "srcs": [{"name": "other", "type": "Job", "tableName": "o"}],
        "computation": {"type": "SQL", "code": "x"},
        "retries": 1,
        "container": {"type": "2U4G", "count": 1},
        "scheduler": {"type": "crontab", "spec": {"crontab": "0 3 * * *"}},
        "params": [{"name": "a", "default": "1"}],
    }


def test_wait_can_back_off_up_to_max_poll() -> None:
    steady, steady_seen = _recording([_entry("Running")])
    with pytest.raises(RunWaitTimeout):
        steady.jobs.wait("p", "j", 4, timeout=0.6, poll=0.03)
    backing_off, backed_off_seen = _recording([_entry("Running")])
    with pytest.raises(RunWaitTimeout) as caught:
        backing_off.jobs.wait("p", "j", 4, timeout=0.6, poll=0.03, max_poll=0.2)
    assert caught.value.entry is not None
    assert caught.value.entry.status == RunStatus.Running
    # 0.03, 0.045, 0.07, 0.1, 0.15, 0.2, 0.2 ...: about 7 reads in 0.6 s instead of about 20
    assert len(backed_off_seen) <= 10 < len(steady_seen)
