"""The streaming engine end to end through the API: records posted to a running job's
ingest endpoint flow through stateless operators into sink files; start and stop move the
job through STARTING, RUNNING, STOPPING and STOPPED; a restart resumes from the last
checkpoint without duplicates; a killed engine restarts per the job's policy or fails
with the reason; metrics and logs."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from datamill.config import Settings
from datamill.domain.streaming import JobState
from datamill.runtime.streaming.supervisor import SupervisorHolder
from datamill.services import streaming as service
from datamill.store.base import utcnow
from datamill.store.streaming import StreamingJobRow
from tests.builders import create_ready, op
from tests.conftest import Api, assert_error

Body = dict[str, Any]
WAIT = 30.0


@pytest.fixture
def engine(streaming_engine: BaseProcess) -> BaseProcess:
    return streaming_engine


SOURCE_FIELDS = [
    {"field": "device_id", "type": "STRING"},
    {"field": "value", "type": "DOUBLE"},
    {"field": "status", "type": "STRING"},
    {"field": "event_time", "type": "TIMESTAMP"},
]


def pipeline(target: str, *, runtime: dict[str, Any] | None = None, fmt: str = "JSON") -> Body:
    """PipelineSource -> Filter (status <> 'x') -> Map (temp_f) -> SelectFields -> DISSink,
    and the Filter's output also to a CSV sink."""
    return {
        "definition": {"jobName": "engine_test"},
        "operatorInstances": [
            op(
                "src",
                "PipelineSource",
                [],
                {"fields": SOURCE_FIELDS, "eventTimeField": "event_time"},
            ),
            op(
                "keep",
                "Filter",
                ["src"],
                {
                    "conditions": [
                        {"leftValue": "status", "symbol": "NOT_EQUAL", "rightValue": "'x'"}
                    ]
                },
            ),
            op(
                "convert",
                "Map",
                ["keep"],
                {
                    "mapFieldConfig": [
                        {"field": "temp_f", "type": "DOUBLE", "expression": "value * 1.8 + 32"}
                    ]
                },
            ),
            op("pick", "SelectFields", ["convert"], {"selectFields": "device_id,temp_f,seq"}),
            op("out", "DISSink", ["pick"], {"target": target}, {"format": fmt}),
            op(
                "raw",
                "DISSink",
                ["keep"],
                {"target": target + "_csv"},
                {"format": "CSV", "csvSeparator": ";"},
            ),
        ],
        "runtime": {"checkpointIntervalSeconds": 1, **(runtime or {})},
    }


def with_seq(body: Body) -> Body:
    fields = [*SOURCE_FIELDS, {"field": "seq", "type": "LONG"}]
    body["operatorInstances"][0]["configs"]["basicConfigs"]["fields"] = fields
    return body


def jobs(project: str) -> str:
    return f"/projects/{project}/streaming/jobs"


def job(api: Api, project: str, job_id: str) -> dict[str, Any]:
    response = api.get(f"{jobs(project)}/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def wait_state(api: Api, project: str, job_id: str, *states: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        current = job(api, project, job_id)
        return current if current["job_state"] in states else None

    found: dict[str, Any] = wait_for(f"{job_id} in {states}", probe)
    return found


def start(api: Api, project: str, job_id: str) -> None:
    response = api.post(f"{jobs(project)}/{job_id}/actions/start")
    assert response.status_code == 202, response.text
    assert response.json()["job_state"] == "STARTING"
    wait_state(api, project, job_id, "RUNNING")


def stop(api: Api, project: str, job_id: str) -> None:
    response = api.post(f"{jobs(project)}/{job_id}/actions/stop")
    assert response.status_code == 200, response.text
    assert response.json()["job_state"] in ("STOPPING", "STOPPED")
    wait_state(api, project, job_id, "STOPPED")


def post(api: Api, project: str, job_id: str, records: list[dict[str, Any]]) -> int:
    response = api.post(f"{jobs(project)}/{job_id}/records", json=records)
    assert response.status_code == 202, response.text
    return int(response.json()["accepted"])


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` records, every fifth of status 'x' (filtered out)."""
    out = []
    for i in range(start, start + n):
        out.append(
            {
                "device_id": f"d{i % 7}",
                "value": float(i),
                "status": "x" if i % 5 == 0 else "ok",
                "event_time": 1_767_225_600_000 + i * 100,
                "seq": i,
            }
        )
    return out


MARKER_SEQ = 1_000_000
"""The ``seq`` of a marker record, posted behind the records a test checks (see ``drain``)."""


def drain(api: Api, project: str, job_id: str, target: Path) -> list[dict[str, Any]]:
    """Post a marker record behind everything posted so far and wait until it reaches the
    sink at ``target``; return the sink's rows without it. The job reads its ingest in
    order and publishes by checkpoint, so whatever it writes for earlier records (a
    duplicate included) is in the sink by then: a slow machine makes this slower, and an
    absence checked after it cannot pass for want of time."""
    marker = {**records(1)[0], "device_id": "marker", "status": "ok", "seq": MARKER_SEQ}
    post(api, project, job_id, [marker])
    wait_for("the marker", lambda: any(r.get("seq") == MARKER_SEQ for r in sink_rows(target)))
    return [r for r in sink_rows(target) if r.get("seq") != MARKER_SEQ]


def sink_rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rows.append(json.loads(line))
    return rows


def metrics(api: Api, project: str, job_id: str) -> dict[str, Any]:
    response = api.get(f"{jobs(project)}/{job_id}/metrics")
    assert response.status_code == 200, response.text
    return dict(response.json())


def engine_pid(api: Api, project: str, job_id: str) -> int:
    path = api.runtime.settings.projects_dir / project / "streaming" / job_id / "metrics.json"
    return int(json.loads(path.read_text())["pid"])


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_records_flow_through_a_running_pipeline(
    api: Api, project: str, engine: BaseProcess
) -> None:
    job_id = create_ready(api, project, with_seq(pipeline("out")))
    target = api.data_root / project / "out"
    url = f"{jobs(project)}/{job_id}/records"
    assert_error(api.post(url, json=records(1)), 409, "E18720", "READY", "start it first")
    start(api, project, job_id)

    assert post(api, project, job_id, records(50)) == 50
    ndjson = "\n".join(json.dumps(r) for r in records(50, start=50)) + "\n"
    response = api.post(url, content=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 50
    assert_error(api.post(url, json={"a": 1}), 400, "E18722", "JSON array")
    assert_error(api.post(url, json=[{"a": 1}, 5]), 400, "E18722", "record 1", "int")
    bad = api.post(
        url, content='{"a":1}\nnot json\n', headers={"Content-Type": "application/x-ndjson"}
    )
    assert_error(bad, 400, "E18722", "line 2")
    nan = api.post(url, content='[{"a": NaN}]', headers={"Content-Type": "application/json"})
    assert_error(nan, 400, "E18722", "record 0", "NaN")
    deep = api.post(
        url, content="[" * 5000 + "]" * 5000, headers={"Content-Type": "application/json"}
    )
    assert_error(deep, 400, "E18722", "not valid JSON")
    assert_error(
        api.post(url, content="a,b", headers={"Content-Type": "text/csv"}),
        415,
        "E18012",
        "text/csv",
    )
    assert post(api, project, job_id, []) == 0

    expected = {i: i * 1.8 + 32 for i in range(100) if i % 5 != 0}
    rows = wait_for("80 sink rows", lambda: len(sink_rows(target)) >= 80 and sink_rows(target))
    assert sorted(r["temp_f"] for r in rows) == pytest.approx(sorted(expected.values()))
    assert all(set(r) == {"device_id", "temp_f", "seq"} for r in rows)
    assert sorted(r["seq"] for r in rows) == sorted(expected)

    csv_rows: list[list[str]] = []
    wait_for("CSV output", lambda: list((api.data_root / project / "out_csv").glob("*.csv")))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        csv_rows = []
        for path in sorted((api.data_root / project / "out_csv").glob("*.csv")):
            with path.open(newline="") as handle:
                reader = list(csv.reader(handle, delimiter=";"))
            assert reader[0] == ["device_id", "value", "status", "event_time", "seq"]
            csv_rows += reader[1:]
        if len(csv_rows) >= 80:
            break
        time.sleep(0.1)
    assert len(csv_rows) == 80
    assert {row[2] for row in csv_rows} == {"ok"}

    figures = wait_for(
        "metrics of 100 records",
        lambda: (
            (m := metrics(api, project, job_id))["operators"]["src"]["recordsOut"] == 100
            and m["operators"]["out"]["recordsIn"] == 80
            and m
        ),
    )
    assert figures["job_state"] == "RUNNING"
    ops = figures["operators"]
    assert ops["keep"]["className"] == "Filter"
    assert (ops["keep"]["recordsIn"], ops["keep"]["recordsOut"]) == (100, 80)
    assert ops["convert"]["recordsIn"] == ops["convert"]["recordsOut"] == 80
    assert ops["raw"]["recordsIn"] == 80
    assert figures["lastCheckpoint"]["epoch"] >= 1
    assert figures["sources"]["src"]["lag"] == 0
    # watermark = latest event time (record 99: +9.9 s) minus the default 2 s
    assert figures["watermark"].startswith("2026-01-01T00:00:07.9")

    stop(api, project, job_id)
    state = job(api, project, job_id)
    assert state["stateMessage"] == "stopped"
    assert state["stoppedAt"]
    assert_error(api.post(url, json=records(1)), 409, "E18720", "STOPPED")
    logs = api.get(f"{jobs(project)}/{job_id}/logs?size=1000").json()
    text = "\n".join(logs["lines"])
    assert logs["total"] == len(logs["lines"])
    assert "starting from the beginning" in text
    assert "running on" in text
    assert "stopped" in text
    second = api.get(f"{jobs(project)}/{job_id}/logs?page=2&size=1").json()
    assert second["lines"] == logs["lines"][1:2]
    folder = api.runtime.settings.projects_dir / project / "streaming" / job_id
    assert (folder / "ingest").is_dir()
    assert api.delete(f"{jobs(project)}/{job_id}").status_code == 204
    assert not folder.exists()  # the ingest log and state go with the job
    assert sink_rows(target)  # the output stays


@pytest.mark.slow
def test_restart_resumes_from_the_checkpoint_without_duplicates(
    api: Api, project: str, engine: BaseProcess
) -> None:
    job_id = create_ready(api, project, with_seq(pipeline("resume")))
    target = api.data_root / project / "resume"
    start(api, project, job_id)
    post(api, project, job_id, records(40))
    wait_for("first rows", lambda: len(sink_rows(target)) == 32)
    stop(api, project, job_id)
    # records posted while stopped are refused; after a new start they are taken again
    start(api, project, job_id)
    post(api, project, job_id, records(40, start=40))
    wait_for("all rows", lambda: len(sink_rows(target)) >= 64)
    seqs = [r["seq"] for r in drain(api, project, job_id, target)]
    assert sorted(seqs) == [i for i in range(80) if i % 5 != 0]
    figures = wait_for(
        "the marker's count",
        lambda: (m := metrics(api, project, job_id))["operators"]["src"]["recordsOut"] > 80 and m,
    )
    assert figures["operators"]["src"]["recordsOut"] == 80 + 1  # counters survive restarts
    stop(api, project, job_id)
    text = "\n".join(api.get(f"{jobs(project)}/{job_id}/logs?size=1000").json()["lines"])
    assert "resuming from checkpoint" in text


@pytest.mark.slow
def test_a_killed_engine_restarts_per_policy_then_fails(
    api: Api, project: str, engine: BaseProcess
) -> None:
    body = with_seq(pipeline("killed", runtime={"restartWhenException": True, "resumeMaxNum": 1}))
    job_id = create_ready(api, project, body)
    target = api.data_root / project / "killed"
    start(api, project, job_id)
    post(api, project, job_id, records(20))
    wait_for("rows", lambda: len(sink_rows(target)) == 16)
    first = engine_pid(api, project, job_id)
    os.kill(first, signal.SIGKILL)
    wait_for("a new engine", lambda: engine_pid(api, project, job_id) != first)
    state = wait_state(api, project, job_id, "RUNNING")
    assert job(api, project, job_id)["job_state"] == "RUNNING"
    assert state["stateMessage"].startswith("running on")
    post(api, project, job_id, records(20, start=20))
    wait_for("more rows", lambda: len(sink_rows(target)) >= 32)
    rows = drain(api, project, job_id, target)
    assert sorted(r["seq"] for r in rows) == [i for i in range(40) if i % 5 != 0]
    os.kill(engine_pid(api, project, job_id), signal.SIGKILL)  # a second time in the hour
    failed = wait_state(api, project, job_id, "FAILED")
    assert "signal 9" in failed["stateMessage"], failed


@pytest.mark.slow
def test_a_killed_engine_without_restart_policy_fails_with_the_reason(
    api: Api, project: str, engine: BaseProcess
) -> None:
    job_id = create_ready(api, project, with_seq(pipeline("nopolicy")))
    start(api, project, job_id)
    os.kill(engine_pid(api, project, job_id), signal.SIGKILL)
    failed = wait_state(api, project, job_id, "FAILED")
    assert failed["stateMessage"] == "the engine process was ended by signal 9"
    assert_error(
        api.post(f"{jobs(project)}/{job_id}/records", json=records(1)), 409, "E18720", "FAILED"
    )


@pytest.mark.slow
def test_a_source_naming_a_missing_connection_fails_the_start(
    api: Api, project: str, engine: BaseProcess
) -> None:
    body = with_seq(pipeline("never"))
    body["operatorInstances"][0]["configs"]["basicConfigs"]["dataSourceId"] = "no_such_topic"
    saved = api.post(jobs(project) + "?check=true", json=body).json()
    assert saved["job_state"] == "DRAFT"
    assert "data source 'no_such_topic' does not exist" in saved["check_info"]["src"][0]
    # a job checked before its connection went away (an older check) is READY: the
    # engine refuses to run it
    job_id = saved["job_id"]
    with api.runtime.sessions() as session:
        row = session.query(StreamingJobRow).filter_by(job_id=job_id).one()
        row.state = "READY"
        session.commit()
    assert_error(
        api.post(f"{jobs(project)}/{job_id}/records", json=records(1)), 409, "E18720", "READY"
    )
    api.post(f"{jobs(project)}/{job_id}/actions/start")
    failed = wait_state(api, project, job_id, "FAILED")
    assert "no_such_topic" in failed["stateMessage"] or "not available" in failed["stateMessage"]


def test_metrics_and_logs_of_a_job_never_started(
    api: Api, project: str, streaming_job: str
) -> None:
    job_id = streaming_job
    figures = metrics(api, project, job_id)
    assert figures["job_state"] == "READY"
    assert figures["operators"] == {}
    assert figures["lastCheckpoint"] is None
    logs = api.get(f"{jobs(project)}/{job_id}/logs").json()
    assert logs == {"total": 0, "page": 1, "size": 50, "lines": []}
    assert_error(api.get(f"{jobs(project)}/nope/metrics"), 404, "E18701")
    assert_error(api.get(f"{jobs(project)}/nope/logs"), 404, "E18701")


def test_one_job_runs_in_one_place_and_moves_when_its_runner_goes_silent(
    api: Api, project: str
) -> None:
    """Supervisors on one database: a job held by runner A with a fresh lease is not
    claimed by B; once A's lease is older than B's limit, B takes the job over and A no
    longer holds it. (Leases here are far shorter than the session's supervisor's 3 s, so
    that one, if running, leaves the job alone.)"""
    job_id = create_ready(api, project, with_seq(pipeline("lease")))
    with api.runtime.sessions() as session:
        row = session.query(StreamingJobRow).filter_by(job_id=job_id).one()
        row.state, row.runner, row.heartbeat_at = "STARTING", "A", utcnow()
        session.commit()
        row_id = row.id
        assert all(c.job_id != job_id for c in service.claim_jobs(session, "B", 60))
        service.engine_transition(session, row_id, JobState.RUNNING, runner="A")
        assert service.renew_jobs(session, "A", [row_id]) == {row_id: JobState.RUNNING}
        time.sleep(0.4)
        taken = [c for c in service.claim_jobs(session, "B", 0.2) if c.job_id == job_id]
        assert [(c.state, c.project) for c in taken] == [(JobState.RUNNING, project)]
        assert service.renew_jobs(session, "A", [row_id]) == {}
        assert service.renew_jobs(session, "B", [row_id]) == {row_id: JobState.RUNNING}
        service.engine_transition(session, row_id, JobState.STOPPING)
        service.engine_transition(session, row_id, JobState.STOPPED)
    assert job(api, project, job_id)["job_state"] == "STOPPED"


@pytest.mark.slow
def test_processing_time_windows_close_on_the_wall_clock_while_idle(
    api: Api, project: str, engine: BaseProcess
) -> None:
    body = {
        "definition": {"jobName": "per_second"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": [{"field": "k", "type": "STRING"}]}),
            op(
                "count",
                "Aggregate",
                ["src"],
                {
                    "keyFields": "k",
                    "windowsType": "TumblingTimeWindows",
                    "windowAssigner": {"timeType": "ProcessingTime", "size": 1},
                    "aggregateFields": [{"field": "n", "type": "LONG", "aggregateType": "COUNT"}],
                },
            ),
            op("out", "DISSink", ["count"], {"target": "per_second"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }
    job_id = create_ready(api, project, body)
    start(api, project, job_id)
    post(api, project, job_id, [{"k": "a"}, {"k": "a"}, {"k": "b"}])
    # no more records: the windows close on the wall clock and reach the sink
    target = api.data_root / project / "per_second"
    rows = wait_for("closed windows", lambda: len(sink_rows(target)) >= 2 and sink_rows(target))
    assert sorted((r["k"], r["n"]) for r in rows) == [("a", 2), ("b", 1)]
    assert all(r["windowEnd"] > r["windowStart"] for r in rows)
    stop(api, project, job_id)


@pytest.mark.slow
def test_the_server_starts_a_new_supervisor_when_one_dies(settings: Settings) -> None:
    holder = SupervisorHolder(settings)
    try:
        first = holder.process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(
            "a new supervisor",
            lambda: holder.process.pid != first and holder.process.is_alive(),
        )
    finally:
        holder.stop()
    assert not holder.process.is_alive()
