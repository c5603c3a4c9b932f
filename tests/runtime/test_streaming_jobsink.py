"""DISSink into another streaming job's ingest (``targetJobId``), end to end through the API
with the real engine: records posted to job A (PipelineSource → Filter → DISSink
targetJobId=B) come out of job B (PipelineSource → Map → DISSink folder) transformed, each
once, also across a kill -9 of A's engine; the check's problems for a missing target, the
job itself and two destinations; the sink's idempotent append after a crash."""

from __future__ import annotations

import json
import os
import signal
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from datamill.connectors.streams.ingest_log import IngestLog
from datamill.runtime.streaming.engine import Engine, EngineConfig
from datamill.runtime.streaming.ingest import IngestSource, JobSink
from tests.builders import create_ready, op
from tests.conftest import Api
from tests.runtime.test_streaming_engine import (
    SOURCE_FIELDS,
    drain,
    engine_pid,
    job,
    jobs,
    post,
    records,
    sink_rows,
    start,
    stop,
    wait_for,
    wait_state,
)
from tests.runtime.test_streaming_plan import MemorySource

Body = dict[str, Any]
FIELDS = [*SOURCE_FIELDS, {"field": "seq", "type": "LONG"}]


@pytest.fixture
def engine(streaming_engine: BaseProcess) -> BaseProcess:
    return streaming_engine


def job_a(target_job: str, **sink: Any) -> Body:
    """PipelineSource → Filter (status <> 'x') → DISSink into ``target_job``'s ingest."""
    return {
        "definition": {"jobName": "feeder"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": FIELDS}),
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
            op("out", "DISSink", ["keep"], {"targetJobId": target_job, **sink}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }


def job_b(target: str) -> Body:
    """PipelineSource → Map (temp_f) → DISSink into a folder."""
    return {
        "definition": {"jobName": "consumer"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": FIELDS}),
            op(
                "convert",
                "Map",
                ["src"],
                {
                    "mapFieldConfig": [
                        {"field": "temp_f", "type": "DOUBLE", "expression": "value * 1.8 + 32"}
                    ]
                },
            ),
            op("out", "DISSink", ["convert"], {"target": target}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }


def expected_seqs(n: int) -> list[int]:
    return [i for i in range(n) if i % 5 != 0]


@pytest.mark.slow
def test_records_flow_from_one_job_into_another_once(
    api: Api, project: str, engine: BaseProcess
) -> None:
    b = create_ready(api, project, job_b("chained"))
    a = create_ready(api, project, job_a(b))
    target = api.data_root / project / "chained"
    # B is not running yet: A's output waits in B's durable ingest log
    start(api, project, a)
    assert post(api, project, a, records(50)) == 50
    log = IngestLog(api.runtime.settings.projects_dir / project / "streaming" / b / "ingest")
    wait_for("B's ingest log", lambda: log.segments())
    start(api, project, b)
    assert post(api, project, a, records(50, start=50)) == 50
    wait_for("80 rows out of B", lambda: len(sink_rows(target)) >= 80)
    rows = drain(api, project, a, target)  # through A and B: nothing more may appear
    assert sorted(r["seq"] for r in rows) == expected_seqs(100)
    assert all(r["temp_f"] == pytest.approx(r["value"] * 1.8 + 32) for r in rows)
    assert {r["status"] for r in rows} == {"ok"}
    by_seq = {r["seq"]: r for r in rows}
    assert by_seq[1]["event_time"].startswith("2026-01-01T00:00:00.1")  # a TIMESTAMP again
    assert by_seq[99]["event_time"].startswith("2026-01-01T00:00:09.9")
    figures = wait_for(
        "the marker's count",
        lambda: (
            (m := api.get(f"{jobs(project)}/{a}/metrics").json())["operators"]["out"]["recordsIn"]
            > 80
            and m
        ),
    )
    assert figures["operators"]["out"]["recordsIn"] == 80 + 1
    stop(api, project, a)
    stop(api, project, b)


@pytest.mark.slow
def test_a_killed_feeding_engine_keeps_the_output_exactly_once(
    api: Api, project: str, engine: BaseProcess
) -> None:
    b = create_ready(api, project, job_b("chained_kill"))
    body = job_a(b)
    body["runtime"].update({"restartWhenException": True, "resumeMaxNum": 3})
    a = create_ready(api, project, body)
    target = api.data_root / project / "chained_kill"
    start(api, project, b)
    start(api, project, a)
    for round_ in range(3):
        post(api, project, a, records(40, start=round_ * 40))
        first = engine_pid(api, project, a)
        os.kill(first, signal.SIGKILL)
        wait_for("a new engine", lambda: engine_pid(api, project, a) != first)  # noqa: B023
        wait_state(api, project, a, "RUNNING")
    wait_for("96 rows out of B", lambda: len(sink_rows(target)) >= 96)
    rows = drain(api, project, a, target)  # through A and B: nothing more may appear
    assert sorted(r["seq"] for r in rows) == expected_seqs(120)
    stop(api, project, a)
    stop(api, project, b)


def test_the_check_names_a_bad_target_job(api: Api, project: str) -> None:
    b = create_ready(api, project, job_b("unused"))
    saved = api.post(jobs(project) + "?check=true", json=job_a("no_such_job")).json()
    assert saved["job_state"] == "DRAFT"
    assert saved["check_info"]["out"] == [
        "configs.basicConfigs.targetJobId: streaming job 'no_such_job' does not exist in "
        "this project"
    ]
    a = saved["job_id"]
    itself = api.put(f"{jobs(project)}/{a}?check=true", json=job_a(a))
    assert itself.status_code == 200, itself.text
    assert "is this job" in itself.json()["check_info"]["out"][0]
    two = api.put(f"{jobs(project)}/{a}?check=true", json=job_a(b, target="folder")).json()
    assert two["job_state"] == "DRAFT"
    assert any(
        "targetJobId" in p and "not target and targetJobId" in p for p in two["check_info"]["out"]
    ), two["check_info"]
    three = api.put(
        f"{jobs(project)}/{a}?check=true", json=job_a(b, dataSourceId="topic", target="f")
    ).json()
    assert any(
        "not dataSourceId and target and targetJobId" in p for p in three["check_info"]["out"]
    )
    none = job_a("")
    assert api.put(f"{jobs(project)}/{a}?check=true", json=none).json()["check_info"]["out"] == [
        "configs.basicConfigs.dataSourceId: empty (name the data source written to, a target "
        "folder or a targetJobId)"
    ]
    reads_topic = job_b("unused")
    reads_topic["operatorInstances"][0]["configs"]["basicConfigs"]["dataSourceId"] = "topic"
    created = api.post(jobs(project), json=reads_topic)
    assert created.status_code == 201, created.text
    no_ingest = api.put(
        f"{jobs(project)}/{a}?check=true", json=job_a(created.json()["job_id"])
    ).json()
    assert "has no PipelineSource without dataSourceId" in no_ingest["check_info"]["out"][0]
    fine = api.put(f"{jobs(project)}/{a}?check=true", json=job_a(b))
    assert fine.json()["job_state"] == "READY", fine.text
    assert job(api, project, a)["check_info"] == {}


def _lines(log: IngestLog) -> list[dict[str, Any]]:
    source = IngestSource(log)
    source.seek(None)
    return source.read(10_000, 0)


def test_the_sink_appends_each_committed_epoch_once(tmp_path: Path) -> None:
    log = IngestLog(tmp_path / "b" / "ingest")
    staging = tmp_path / "a" / "staging"
    sink = JobSink(log, staging)
    sink.write(pa.table({"n": [1, 2]}), 1)
    sink.write(pa.table({"n": [3]}), 1)
    sink.write(pa.table({"n": [4]}), 2)
    assert _lines(log) == []  # staged, not visible before the checkpoint
    sink.commit(1)
    assert _lines(log) == [{"n": 1}, {"n": 2}, {"n": 3}]
    log.append(b'{"other":1}\n')  # the ingest endpoint appends in between

    # a crash after the append of epoch 2 but before its done mark: not appended again
    def crash(segment: int, offset: int) -> None:
        (staging / "pending.json").write_text(
            json.dumps({"epoch": 2, "segment": segment, "offset": offset})
        )

    log.append((staging / "2.ndjson").read_bytes(), before_write=crash)
    log.append(b'{"other":2}\n')
    JobSink(log, staging).recover(2)
    assert _lines(log) == [{"n": 1}, {"n": 2}, {"n": 3}, {"other": 1}, {"n": 4}, {"other": 2}]

    # a crash between the pending mark and the write: recovery appends
    sink = JobSink(log, staging)
    sink.write(pa.table({"n": [5]}), 3)
    (staging / "pending.json").write_text(
        json.dumps({"epoch": 3, "segment": 1, "offset": (log.path(1)).stat().st_size})
    )
    log.append(b'{"other":3}\n')
    # epochs after the committed one are discarded (produced again from the checkpoint)
    sink.write(pa.table({"n": [6]}), 4)
    JobSink(log, staging).recover(3)
    assert _lines(log)[-2:] == [{"other": 3}, {"n": 5}]
    assert not (staging / "4.ndjson").exists()
    assert sorted(p.name for p in staging.iterdir()) == ["done.json", "pending.json"]


def test_a_crash_between_the_checkpoint_and_the_append_is_finished_on_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs_dir = tmp_path / "projects" / "p" / "streaming"
    root = tmp_path / "files" / "p"
    root.mkdir(parents=True)
    data = records(30)
    config = EngineConfig(
        project="p",
        job_id="a",
        job_dir=jobs_dir / "a",
        project_root=root,
        body=job_a("b"),
        stop_when_exhausted=True,
        threads=1,
        batch_records=10,
        epoch_records=10,  # a checkpoint every batch
    )
    real_commit = JobSink.commit
    commits: list[int] = []

    def crash_on_second(self: JobSink, epoch: int) -> None:
        commits.append(epoch)
        if len(commits) == 2:
            raise RuntimeError("crashed after the checkpoint")
        real_commit(self, epoch)

    monkeypatch.setattr(JobSink, "commit", crash_on_second)
    first = Engine(config, log=lambda _line: None, sources={"src": MemorySource(data)})
    with pytest.raises(RuntimeError, match="crashed after the checkpoint"):
        first.run(threading.Event())
    target = IngestLog(jobs_dir / "b" / "ingest")
    assert [r["seq"] for r in _lines(target)] == expected_seqs(10)  # epoch 2 not appended
    staged = jobs_dir / "a" / "staging" / "out"
    assert (staged / f"{commits[1]}.ndjson").exists()

    monkeypatch.setattr(JobSink, "commit", real_commit)
    second = Engine(config, log=lambda _line: None, sources={"src": MemorySource(data)})
    second.run(threading.Event())
    assert second.finished
    assert [r["seq"] for r in _lines(target)] == expected_seqs(30)
