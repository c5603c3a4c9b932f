"""The scheduler: fire times, misfire and overlap policies, the lease, depend chains.

Tests of tick() use fire times in 2090 and pass ``now`` explicitly, so the session's real
scheduler process (which only fires what is due by the real clock) never touches them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.process import BaseProcess
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from datamill.config import Settings
from datamill.runtime.process import stop_process
from datamill.runtime.worker import WorkerPool
from datamill.scheduler import lease as scheduler_lease
from datamill.scheduler import tick as scheduling
from datamill.scheduler.process import SchedulerLoop
from datamill.services import runs
from datamill.store.jobs import JobRow, LeaseRow
from datamill.store.runs import RunLogRow, RunRow
from tests.builders import TERMINAL, job_body, start, wait_for
from tests.conftest import Api, assert_error

T0 = datetime(2090, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def scheduler_process(settings: Settings, workers: WorkerPool) -> Iterator[BaseProcess]:
    process = SchedulerLoop.spawn(settings)
    yield process
    stop_process(process)


def wait_scheduler_ticks(api: Api, ticks: int = 1, timeout: float = 30) -> None:
    """Wait until the scheduler holding the lease has completed ``ticks`` whole ticks that
    began after this call. It renews the lease before each tick, so the lease's expiry
    moving on ``ticks + 1`` times brackets them: a slow machine makes this slower, and an
    absence checked after it cannot pass for want of a tick."""
    seen: list[datetime] = []
    deadline = time.monotonic() + timeout
    while len(seen) < ticks + 2:
        assert time.monotonic() < deadline, f"the scheduler ticked {len(seen) - 1} times"
        with api.runtime.sessions() as session:
            lease = session.get(LeaseRow, scheduler_lease.SCHEDULER)
            expires = lease.expires_at if lease is not None else None
        if expires is not None and (not seen or expires > seen[-1]):
            seen.append(expires)
        else:
            time.sleep(0.05)


def scheduled(
    api: Api, project: str, name: str, spec: dict[str, Any], kind: str = "crontab"
) -> JobRow:
    body = job_body("SELECT device FROM ev", scheduler={"type": kind, "spec": spec})
    response = api.post(f"/projects/{project}/jobs/{name}", json=body)
    assert response.status_code == 201, response.text
    with api.runtime.sessions() as session:
        job = session.scalars(
            select(JobRow).where(JobRow.name == name).order_by(JobRow.id.desc())
        ).first()
        assert job is not None
        job.next_fire_at = T0
        session.commit()
        return job


def batch_times(api: Api, job_id: int) -> list[datetime]:
    with api.runtime.sessions() as session:
        return list(
            session.scalars(
                select(RunRow.batch_time).where(RunRow.job_id == job_id).order_by(RunRow.batch_time)
            )
        )


def tick_at(api: Api, now: datetime) -> scheduling.TickResult:
    with api.runtime.sessions() as session:
        return scheduling.tick(session, now)


def job_row(api: Api, job_id: int) -> JobRow:
    with api.runtime.sessions() as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        return row


def test_due_fire_time_is_queued_once(api: Api, project: str, datasource: str) -> None:
    job = scheduled(api, project, "hourly", {"crontab": "0 0 * * * ?"})
    tick_at(api, T0 + timedelta(seconds=1))
    tick_at(api, T0 + timedelta(seconds=2))
    assert batch_times(api, job.id) == [T0]
    row = job_row(api, job.id)
    assert row.next_fire_at == T0 + timedelta(hours=1)
    assert row.last_fire_at == T0
    got = api.get(f"/projects/{project}/jobs/hourly").json()["schedule"]
    assert got["nextFireTime"].startswith("2090-01-01T01:00:00")
    assert "queued" in got["lastOutcome"]


@pytest.mark.parametrize(
    ("policy", "expected_hours"),
    [("latest", [5]), ("all", [0, 1, 2, 3, 4, 5]), ("none", [])],
)
def test_misfire_policies(
    api: Api, project: str, datasource: str, policy: str, expected_hours: list[int]
) -> None:
    job = scheduled(
        api,
        project,
        f"m_{policy}",
        {"crontab": "0 0 * * * ?", "misfire": policy, "overlap": "allow"},
    )
    tick_at(api, T0 + timedelta(hours=5, seconds=30))
    assert batch_times(api, job.id) == [T0 + timedelta(hours=h) for h in expected_hours]
    assert job_row(api, job.id).next_fire_at == T0 + timedelta(hours=6)


def test_on_time_fire_is_never_a_misfire(api: Api, project: str, datasource: str) -> None:
    job = scheduled(api, project, "m_none", {"crontab": "0 0 * * * ?", "misfire": "none"})
    tick_at(api, T0 + timedelta(seconds=2))
    assert batch_times(api, job.id) == [T0]


def test_overlap_skip_and_queue(api: Api, project: str, datasource: str) -> None:
    skip = scheduled(api, project, "o_skip", {"crontab": "0 0 * * * ?"})
    tick_at(api, T0 + timedelta(seconds=1))
    tick_at(api, T0 + timedelta(hours=1, seconds=1))
    assert batch_times(api, skip.id) == [T0]
    assert "skipped" in (job_row(api, skip.id).last_outcome or "")

    queue = scheduled(api, project, "o_queue", {"crontab": "0 0 * * * ?", "overlap": "queue"})
    tick_at(api, T0 + timedelta(seconds=1))
    tick_at(api, T0 + timedelta(hours=1, seconds=1))
    assert batch_times(api, queue.id) == [T0, T0 + timedelta(hours=1)]
    with api.runtime.sessions() as session:
        first = session.scalars(
            select(RunRow).where(RunRow.job_id == queue.id).order_by(RunRow.batch_time)
        ).first()
        assert first is not None
        session.execute(
            update(RunRow).where(RunRow.id == first.id).values(status="Running", worker="someone")
        )
        session.commit()
        claimed = runs.claim_next(session, "tester")
        assert claimed is None or claimed.job_id != queue.id


def test_lease_has_one_holder(api: Api) -> None:
    name = f"lease-{time.monotonic_ns()}"
    ttl = timedelta(seconds=30)
    with api.runtime.sessions() as a, api.runtime.sessions() as b:
        assert scheduling.acquire_lease(a, "a", ttl, name)
        assert not scheduling.acquire_lease(b, "b", ttl, name)
        assert scheduling.acquire_lease(a, "a", ttl, name)
        scheduling.release_lease(a, "a", name)
        assert scheduling.acquire_lease(b, "b", ttl, name)
        assert not scheduling.acquire_lease(a, "a", ttl, name)


def test_preview_in_a_time_zone(api: Api, project: str, datasource: str) -> None:
    body = job_body(
        "SELECT device FROM ev",
        scheduler={
            "type": "crontab",
            "spec": {"crontab": "0 0 12 * * ?", "timezone": "Europe/London"},
        },
    )
    assert api.post(f"/projects/{project}/jobs/noon", json=body).status_code == 201
    preview = api.get(f"/projects/{project}/jobs/noon/schedule/preview", params={"count": 3}).json()
    times = [datetime.fromisoformat(t) for t in preview["fireTimes"]]
    assert len(times) == 3
    assert all(t.astimezone(ZoneInfo("Europe/London")).hour == 12 for t in times)
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"crontab": "0 0 12 * * MON"}, "day"),
        ({"crontab": "61 * * * * ?"}, "second"),
        ({"crontab": "0 0 12 * * ?", "timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_bad_schedules_are_refused(
    api: Api, project: str, datasource: str, spec: dict[str, Any], needle: str
) -> None:
    body = job_body("SELECT device FROM ev", scheduler={"type": "crontab", "spec": spec})
    response = api.post(f"/projects/{project}/jobs/bad", json=body)
    assert_error(response, 400, "E18208")
    assert needle in response.json()["error_msg"].lower()


@pytest.mark.slow
def test_every_second_cron_fires_on_whole_seconds(
    api: Api, project: str, datasource: str, scheduler_process: BaseProcess
) -> None:
    body = job_body(
        "SELECT device FROM ev", scheduler={"type": "crontab", "spec": {"crontab": "* * * * * ?"}}
    )
    assert api.post(f"/projects/{project}/jobs/tick", json=body).status_code == 201
    try:
        deadline = time.monotonic() + 20
        history: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            history = api.get(
                f"/projects/{project}/jobs/tick/history",
                params={"status": "Successful", "sortBy": "batchTime"},
            ).json()["history"]
            if len(history) >= 3:
                break
            time.sleep(0.1)
        assert len(history) >= 3, (
            api.get(f"/projects/{project}/jobs/tick/history").json(),
            api.get(f"/projects/{project}/jobs/tick").json()["schedule"],
            scheduler_process.is_alive(),
        )
    finally:
        api.post(f"/projects/{project}/jobs/tick/actions/stop")
    stamps = [datetime.fromisoformat(h["batchTime"]) for h in history]
    assert all(s.microsecond == 0 for s in stamps)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 1 and gap == int(gap) for gap in gaps), gaps
    wait_scheduler_ticks(api)  # a tick that saw the job before the stop is over
    before = api.get(f"/projects/{project}/jobs/tick/history").json()["total"]
    wait_scheduler_ticks(api)
    assert api.get(f"/projects/{project}/jobs/tick/history").json()["total"] == before
    assert api.get(f"/projects/{project}/jobs/tick").json()["schedule"]["nextFireTime"] is None


@pytest.mark.slow
def test_continuous_loop_runs_back_to_back(
    api: Api, project: str, datasource: str, scheduler_process: BaseProcess
) -> None:
    body = job_body("SELECT device FROM ev", scheduler={"type": "loop", "spec": {"loop": "0"}})
    assert api.post(f"/projects/{project}/jobs/spin", json=body).status_code == 201
    try:
        deadline = time.monotonic() + 20
        done: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(done) < 3:
            done = api.get(
                f"/projects/{project}/jobs/spin/history", params={"status": "Successful"}
            ).json()["history"]
            time.sleep(0.1)
    finally:
        api.post(f"/projects/{project}/jobs/spin/actions/stop")
    assert len(done) >= 3
    everything = api.get(
        f"/projects/{project}/jobs/spin/history", params={"sortBy": "batchTime", "size": 1000}
    ).json()["history"]
    for earlier, later in itertools.pairwise(everything):
        if earlier["endTime"] and earlier["status"] == "Successful":
            assert later["batchTime"] >= earlier["endTime"][:19]


@pytest.mark.slow
def test_depend_chain_fan_out_failure_and_rerun(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    api.post(
        f"/projects/{project}/jobs/root",
        json=job_body(
            "SELECT device, value FROM ev WHERE value >= $(floor)",
            params=[{"name": "floor", "default": "0"}],
        ),
    )

    def depend(name: str, upstream: str, table: str, code: str) -> None:
        body = {
            "srcs": [{"name": upstream, "type": "Job", "tableName": table}],
            "computation": {"type": "SQL", "code": code},
            "scheduler": {"type": "depend"},
        }
        response = api.post(f"/projects/{project}/jobs/{name}", json=body)
        assert response.status_code == 201, response.text

    depend("mid", "root", "r", "SELECT device, value FROM r WHERE value < 100")
    depend("leaf_a", "mid", "m", "SELECT count(*) AS n FROM m")
    depend("leaf_b", "mid", "mm", "SELECT max(value) AS top FROM mm")
    run_id = start(api, project, "root", [{"name": "floor", "value": "1"}])
    root = wait_for(api, project, "root", run_id, TERMINAL)
    assert root["status"] == "Successful"
    for leaf in ("mid", "leaf_a", "leaf_b"):
        entry = wait_for(api, project, leaf, -1, TERMINAL)
        assert entry["status"] == "Successful", (leaf, entry)
        assert entry["batchTime"] == root["batchTime"]
    assert api.get(f"/projects/{project}/jobs/leaf_a/runs/-1/result").json()["rows"] == [{"n": 2}]

    rerun = api.post(
        f"/projects/{project}/batch/actions/rerun", json={"jobName": "root", "runId": run_id}
    )
    assert rerun.status_code == 200
    wait_for(api, project, "root", run_id, TERMINAL)
    again = wait_for(api, project, "leaf_b", -1, {"Successful"}, timeout=30)
    deadline = time.monotonic() + 30
    while again["rerunCount"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        again = wait_for(api, project, "leaf_b", -1, TERMINAL)
    assert again["rerunCount"] == 1
    assert api.get(f"/projects/{project}/jobs/leaf_b/history").json()["total"] == 1

    api.put(
        f"/projects/{project}/jobs/root",
        json=job_body(
            "SELECT device, CAST(device AS INTEGER) AS value FROM ev WHERE value >= $(floor)",
            params=[{"name": "floor", "default": "0"}],
        ),
    )
    failing = start(api, project, "root")
    assert wait_for(api, project, "root", failing, TERMINAL)["status"] == "Failed"
    # dependants are queued in the transaction that ends the upstream run Successful: the
    # Failed run's end, seen above, is the moment after which none can come
    assert api.get(f"/projects/{project}/jobs/mid/history").json()["total"] == 1


def test_a_stop_during_a_tick_wins(api: Api, project: str, datasource: str) -> None:
    job = scheduled(api, project, "racy", {"crontab": "0 0 * * * ?"})
    with api.runtime.sessions() as session:
        row = session.get(JobRow, job.id)
        assert row is not None
        assert row.next_fire_at == T0
        assert api.post(f"/projects/{project}/jobs/racy/actions/stop").status_code == 200
        with pytest.raises(scheduling._Superseded), scheduling._Batch(session, [row]) as batch:
            scheduling._fire(
                session, row, T0 + timedelta(seconds=1), scheduling.TickResult(), batch
            )
        session.rollback()
    assert batch_times(api, job.id) == []
    schedule = api.get(f"/projects/{project}/jobs/racy").json()["schedule"]
    assert schedule["state"] == "stopped"
    assert schedule["nextFireTime"] is None


@pytest.mark.slow
def test_one_conflict_does_not_undo_the_other_jobs_of_a_tick(
    api: Api, project: str, datasource: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due jobs are fired in one transaction; when another scheduler queued one of the
    batches meanwhile, the unique key refuses it, and the jobs are fired one by one."""
    jobs = [scheduled(api, project, f"t{i}", {"crontab": "0 0 * * * ?"}) for i in range(3)]
    with api.runtime.sessions() as session:  # "another scheduler" queued t1's batch
        row = session.get(JobRow, jobs[1].id)
        assert row is not None
        runs.new_run(session, row, T0, {}, "schedule")
        session.commit()
    # this scheduler does not see that run before it inserts (the race)
    monkeypatch.setattr(scheduling._Batch, "exists", lambda *_: False)
    result = tick_at(api, T0 + timedelta(seconds=1))
    assert result.queued >= 2
    assert batch_times(api, jobs[0].id) == [T0]
    assert batch_times(api, jobs[1].id) == [T0]  # one run for the batch: the other's
    assert batch_times(api, jobs[2].id) == [T0]
    assert job_row(api, jobs[0].id).next_fire_at == T0 + timedelta(hours=1)
    assert job_row(api, jobs[2].id).next_fire_at == T0 + timedelta(hours=1)
    monkeypatch.undo()
    tick_at(api, T0 + timedelta(seconds=2))  # next tick: t1's batch exists, moves on
    assert batch_times(api, jobs[1].id) == [T0]
    assert job_row(api, jobs[1].id).next_fire_at == T0 + timedelta(hours=1)
    with api.runtime.sessions() as session:
        lines = session.scalars(
            select(RunLogRow.line)
            .join(RunRow, RunRow.id == RunLogRow.run_pk)
            .where(RunRow.job_id == jobs[0].id)
            .order_by(RunLogRow.id)
        ).all()
    assert lines[0] == f"queued by schedule for batch {T0.isoformat()}"  # then a worker's
    assert sum(line.startswith("queued by") for line in lines) == 1
