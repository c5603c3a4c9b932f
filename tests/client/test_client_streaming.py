"""The Python client's streaming pipelines (``client.streaming``) against the real app and
the real streaming engine (the ``streaming_engine`` supervisor): create, check, start,
ingest, sink output, metrics, logs, stop, delete, and the error answers. How ingest splits
an iterable into NDJSON requests is checked on a mock transport."""

from __future__ import annotations

import json
from multiprocessing.process import BaseProcess
from typing import Any

import httpx
import pytest

from datamill.client import (
    BadRequest,
    Conflict,
    DatamillClient,
    NotFound,
    Page,
    StateWaitTimeout,
    StreamingJob,
    StreamingJobBody,
    StreamingJobState,
    StreamingMetrics,
    StreamingSaveResult,
)
from tests.builders import op
from tests.conftest import Api
from tests.runtime.test_streaming_engine import records, sink_rows, wait_for

Body = dict[str, Any]

FIELDS = [
    {"field": "device_id", "type": "STRING"},
    {"field": "value", "type": "DOUBLE"},
    {"field": "status", "type": "STRING"},
    {"field": "event_time", "type": "TIMESTAMP"},
    {"field": "seq", "type": "LONG"},
]


def small_pipeline(target: str, name: str = "client_test") -> Body:
    """PipelineSource -> Filter (status <> 'x') -> DISSink (JSON files in ``target``)."""
    return {
        "definition": {"jobName": name},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": FIELDS, "eventTimeField": "event_time"}),
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
            op("out", "DISSink", ["keep"], {"target": target}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }


@pytest.mark.slow
def test_a_pipeline_from_draft_to_sink_output_and_back(
    dm: DatamillClient, api: Api, project: str, streaming_engine: BaseProcess
) -> None:
    body = small_pipeline("out")
    draft = dm.streaming.create(project, body)
    assert isinstance(draft, StreamingSaveResult)
    assert (draft.job_state, draft.status, draft.check_info) == (
        StreamingJobState.DRAFT,
        "success",
        {},
    )
    job_id = draft.job_id

    # a typed body is accepted as well; check=True makes it READY
    checked = dm.streaming.update(
        project, job_id, StreamingJobBody.model_validate(body), check=True
    )
    assert (checked.job_id, checked.job_state, checked.status) == (job_id, "READY", "success")
    job = dm.streaming.get(project, job_id)
    assert isinstance(job, StreamingJob)
    assert (job.job_state, job.definition.jobName, job.check_info) == ("READY", "client_test", {})
    assert [o.id for o in job.operatorInstances] == ["src", "keep", "out"]

    other = dm.streaming.create(project, small_pipeline("other", "second"))  # a draft
    listed = dm.streaming.list(project)
    assert isinstance(listed, Page)
    assert (listed.total, [j.job_id for j in listed]) == (2, [other.job_id, job_id])
    assert [j.job_id for j in dm.streaming.list(project, state="READY")] == [job_id]
    assert [j.jobName for j in dm.streaming.list_all(project, sort_by="jobName")] == [
        "client_test",
        "second",
    ]
    assert dm.streaming.list(project, state=StreamingJobState.RUNNING).total == 0

    started = dm.streaming.start(project, job_id)
    assert (started.job_id, started.job_state) == (job_id, "STARTING")
    running = dm.streaming.wait(project, job_id, "RUNNING", timeout=30)
    assert running.job_state == StreamingJobState.RUNNING
    assert running.startedAt is not None

    # a list of dicts in one JSON request, a generator in NDJSON chunks, str lines too
    assert dm.streaming.ingest(project, job_id, records(40)).accepted == 40
    sent = dm.streaming.ingest(project, job_id, iter(records(40, start=40)), chunk_records=15)
    assert sent.accepted == 40
    lines = [json.dumps(r) + "\n" for r in records(20, start=80)]
    assert dm.streaming.ingest(project, job_id, lines).accepted == 20

    target = api.data_root / project / "out"
    expected = sorted(i for i in range(100) if i % 5 != 0)
    rows = wait_for("80 sink rows", lambda: len(sink_rows(target)) >= 80 and sink_rows(target))
    assert sorted(r["seq"] for r in rows) == expected
    assert all(r["status"] == "ok" for r in rows)

    def counted() -> StreamingMetrics | None:
        figures = dm.streaming.metrics(project, job_id)
        out = figures.operators.get("out")
        return figures if out is not None and out.recordsIn >= 80 else None

    figures = wait_for("metrics of 100 records", counted)
    assert figures.job_state == StreamingJobState.RUNNING
    assert figures.operators["src"].recordsOut == 100
    assert (figures.operators["keep"].recordsIn, figures.operators["keep"].recordsOut) == (
        100,
        80,
    )
    assert figures.operators["out"].className == "DISSink"

    logs = dm.streaming.logs(project, job_id, size=1000)
    assert logs.total >= 1
    assert logs.items
    assert list(dm.streaming.iter_logs(project, job_id)) == logs.items[: logs.total]

    with pytest.raises(Conflict) as running_edit:
        dm.streaming.update(project, job_id, body)
    assert running_edit.value.error_code == "E18702"

    stopping = dm.streaming.stop(project, job_id)
    assert stopping.job_state in ("STOPPING", "STOPPED")
    stopped = dm.streaming.wait(project, job_id, ["STOPPED", "READY"], timeout=30)
    assert stopped.job_state == StreamingJobState.STOPPED
    assert stopped.stoppedAt is not None
    with pytest.raises(Conflict) as late:
        dm.streaming.ingest(project, job_id, records(1))
    assert late.value.error_code == "E18720"

    dm.streaming.delete(project, job_id)
    with pytest.raises(NotFound) as gone:
        dm.streaming.get(project, job_id)
    assert gone.value.error_code == "E18701"
    assert [j.job_id for j in dm.streaming.list_all(project)] == [other.job_id]


def test_error_answers(dm: DatamillClient, api: Api, project: str) -> None:
    # a connection that does not exist: the check keeps the job a draft and says where
    body = small_pipeline("never")
    body["operatorInstances"][-1]["configs"]["basicConfigs"] = {"dataSourceId": "nowhere"}
    saved = dm.streaming.create(project, body, check=True)
    assert (saved.job_state, saved.status) == ("DRAFT", "failed")
    assert saved.check_info == {
        "out": ["configs.basicConfigs.dataSourceId: data source 'nowhere' does not exist"]
    }
    assert dm.streaming.get(project, saved.job_id).check_info == saved.check_info

    with pytest.raises(Conflict) as draft_start:
        dm.streaming.start(project, saved.job_id)
    assert (draft_start.value.error_code, draft_start.value.status) == ("E18702", 409)
    with pytest.raises(Conflict) as not_running:
        dm.streaming.ingest(project, saved.job_id, records(2))
    assert not_running.value.error_code == "E18720"
    with pytest.raises(Conflict):  # not running: nothing to stop
        dm.streaming.stop(project, saved.job_id)

    with pytest.raises(BadRequest) as invalid:
        dm.streaming.create(project, {"definition": {}, "operatorInstances": []})
    assert "jobName" in invalid.value.error_msg

    for call in (
        lambda: dm.streaming.get(project, "0123456789abcdef"),
        lambda: dm.streaming.metrics(project, "0123456789abcdef"),
        lambda: dm.streaming.logs(project, "0123456789abcdef"),
        lambda: dm.streaming.delete(project, "0123456789abcdef"),
    ):
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.error_code == "E18701"
    with pytest.raises(NotFound):
        dm.streaming.list("no_such_project")

    with pytest.raises(StateWaitTimeout) as slow:
        dm.streaming.wait(project, saved.job_id, "RUNNING", timeout=0.3, poll=0.1)
    assert isinstance(slow.value, TimeoutError)
    assert slow.value.job is not None
    assert slow.value.job.job_state == "DRAFT"
    assert "still DRAFT, not RUNNING" in str(slow.value)
    # waiting for the state it is in answers at once
    assert dm.streaming.wait(project, saved.job_id, "DRAFT", timeout=0).job_state == "DRAFT"
    with pytest.raises(ValueError):
        dm.streaming.wait(project, saved.job_id, "SLEEPING")


def _recording_client(seen: list[httpx.Request]) -> DatamillClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/logs"):
            page = int(request.url.params["page"])
            size = int(request.url.params["size"])
            lines = [f"line {i}" for i in range(7)][(page - 1) * size : page * size]
            return httpx.Response(
                200, json={"total": 7, "page": page, "size": size, "lines": lines}
            )
        content_type = request.headers["content-type"]
        text = request.content.decode()
        count = len(json.loads(text)) if content_type == "application/json" else text.count("\n")
        return httpx.Response(202, json={"job_id": "j1", "accepted": count})

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://mock")
    return DatamillClient(token="dm_t", http=http)


def test_ingest_splits_an_iterable_into_ndjson_requests() -> None:
    seen: list[httpx.Request] = []
    with _recording_client(seen) as dm:
        result = dm.streaming.ingest("p", "j1", ({"n": i} for i in range(25)), chunk_records=10)
        assert result.accepted == 25
        assert [r.headers["content-type"] for r in seen] == ["application/x-ndjson"] * 3
        assert [r.content.count(b"\n") for r in seen] == [10, 10, 5]
        assert seen[0].url.path == "/api/v1/projects/p/streaming/jobs/j1/records"
        assert [json.loads(line) for line in seen[2].content.splitlines()] == [
            {"n": i} for i in range(20, 25)
        ]

        # by size: no request over chunk_bytes, but a record larger than it goes alone
        seen.clear()
        big = {"blob": "x" * 300}
        small = [{"n": i} for i in range(6)]
        mixed: list[dict[str, Any]] = [*small, big, *small]
        dm.streaming.ingest("p", "j1", iter(mixed), chunk_bytes=40)
        sizes = [len(r.content) for r in seen]
        assert sum(r.content.count(b"\n") for r in seen) == 13
        assert [s for s in sizes if s > 40] == [len(json.dumps(big)) + 1]

        # lines as given (blank ones skipped); a list of dicts as one JSON array
        seen.clear()
        lines: list[str | bytes] = ['{"a": 1}\n', "\n", b'{"a": 2}\r\n']
        dm.streaming.ingest("p", "j1", iter(lines))
        assert seen[0].content == b'{"a": 1}\n{"a": 2}\n'
        seen.clear()
        assert dm.streaming.ingest("p", "j1", [{"a": 1}, {"a": 2}]).accepted == 2
        assert seen[0].headers["content-type"] == "application/json"
        seen.clear()
        assert dm.streaming.ingest("p", "j1", iter([])).accepted == 0
        assert seen == []
        with pytest.raises(ValueError):
            dm.streaming.ingest("p", "j1", iter([{"a": 1}]), chunk_records=0)
        with pytest.raises(TypeError, match="single record"):
            dm.streaming.ingest("p", "j1", {"a": 1})
        assert seen == []

        seen.clear()
        assert list(dm.streaming.iter_logs("p", "j1")) == [f"line {i}" for i in range(7)]
        page = dm.streaming.logs("p", "j1", page=2, size=3)
        assert (page.total, page.items, page.has_next) == (7, ["line 3", "line 4", "line 5"], True)


def test_names_cannot_leave_their_path_segment() -> None:
    from datamill.client import InvalidName

    with _recording_client([]) as dm, pytest.raises(InvalidName):
        dm.streaming.get("p", "../jobs")
