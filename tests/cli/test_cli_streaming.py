"""The ``datamill streaming`` commands against the real app and the real streaming engine:
a pipeline (PipelineSource -> Filter -> DISSink to a folder) is created and checked from a
file, started with ``--wait``, fed NDJSON and a JSON array, its sink output, metrics and logs
read back, stopped and deleted; and the error answers, rendered like every other command's.
"""

from __future__ import annotations

import json
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from datamill.domain.streaming import JobState
from tests.cli.test_cli_exports import api_error
from tests.cli_runner import Run, as_json, ok, usage_error
from tests.client.test_client_streaming import small_pipeline
from tests.conftest import Api
from tests.runtime.test_streaming_engine import records, sink_rows, wait_for

DS = "configs.basicConfigs.dataSourceId"


def write(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value), encoding="utf-8")
    return str(path)


def ndjson(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.slow
def test_a_pipeline_end_to_end(
    run: Run, api: Api, project: str, tmp_path: Path, streaming_engine: BaseProcess
) -> None:
    body = write(tmp_path / "job.json", small_pipeline("cli_out", "cli_job"))

    draft = ok(run("streaming", "create", project, "--file", body))
    assert "DRAFT" in draft.stdout
    assert "check problems" not in draft.stdout
    job_id = as_json(run("-o", "json", "streaming", "list", project))["jobs"][0]["job_id"]
    assert job_id in draft.stdout

    checked = as_json(
        run("-o", "json", "streaming", "update", project, job_id, "-f", body, "--check")
    )
    assert checked == {
        "job_id": job_id,
        "job_state": "READY",
        "status": "success",
        "check_info": {},
    }

    listed = ok(run("streaming", "list", project, "--state", "READY"))
    assert job_id in listed.stdout
    assert "cli_job" in listed.stdout
    assert "1-1 of 1 jobs" in listed.stdout
    assert "no jobs" in ok(run("streaming", "list", project, "--state", "RUNNING")).stdout

    shown = ok(run("streaming", "get", project, job_id))
    for needle in ("READY", "cli_job", "operators", "PipelineSource", "Filter", "DISSink"):
        assert needle in shown.stdout, (needle, shown.stdout)

    started = ok(run("streaming", "start", project, job_id, "--wait", "--timeout", "30"))
    assert f"waiting for streaming job {job_id} to be RUNNING" in started.stderr
    assert "RUNNING" in started.stdout
    assert as_json(run("-o", "json", "streaming", "get", project, job_id))["job_state"] == "RUNNING"

    fed = ok(
        run(
            "streaming",
            "ingest",
            project,
            job_id,
            "--file",
            ndjson(tmp_path / "a.ndjson", records(60)),
            "--batch",
            "7",
        )
    )
    assert f"accepted 60 records for streaming job {job_id}" in fed.stdout
    array = json.dumps(records(40, start=60))
    fed_json = as_json(
        run("-o", "json", "streaming", "ingest", project, job_id, "-f", "-", input=array)
    )
    assert fed_json == {"job_id": job_id, "accepted": 40}

    bad = run("streaming", "ingest", project, job_id, "-f", "-", input='{"a": 1}\n{"a": \n')
    api_error(bad, "E18722", "line 2 is not valid JSON")

    target = api.data_root / project / "cli_out"
    rows = wait_for("80 sink rows", lambda: len(sink_rows(target)) >= 80 and sink_rows(target))
    assert sorted(r["seq"] for r in rows) == [i for i in range(100) if i % 5 != 0]

    def counted() -> dict[str, Any] | None:
        figures: dict[str, Any] = as_json(
            run("-o", "json", "streaming", "metrics", project, job_id)
        )
        out = figures["operators"].get("out")
        return figures if out and out["recordsIn"] >= 80 else None

    figures = wait_for("metrics", counted)
    assert figures["operators"]["keep"]["recordsIn"] == 100
    assert figures["operators"]["keep"]["recordsOut"] == 80
    table = ok(run("streaming", "metrics", project, job_id)).stdout
    for needle in (
        "operator",
        "recordsIn",
        "recordsOut",
        "keep",
        "Filter",
        "DISSink",
        "3 operator",
    ):
        assert needle in table, (needle, table)
    keep_line = next(line for line in table.splitlines() if line.strip().startswith("keep"))
    assert keep_line.split()[1:4] == ["Filter", "100", "80"]

    logs = ok(run("streaming", "logs", project, job_id))
    assert logs.stdout.strip()
    log_page = as_json(run("-o", "json", "streaming", "logs", project, job_id, "--size", "1"))
    assert log_page["size"] == 1
    assert log_page["total"] >= 1
    assert log_page["lines"] == [logs.stdout.splitlines()[0]]

    api_error(run("streaming", "delete", project, job_id), "E18702")  # still running
    stopped = ok(run("streaming", "stop", project, job_id, "--wait"))
    assert "STOPPED" in stopped.stdout
    api_error(
        run("streaming", "ingest", project, job_id, "-f", "-", input='{"a": 1}\n'),
        "E18720",
        "STOPPED",
    )

    deleted = ok(run("streaming", "delete", project, job_id))
    assert deleted.stdout.strip() == f"deleted streaming job {job_id}"
    api_error(run("streaming", "get", project, job_id), "E18701", job_id)


def test_a_failed_check_is_a_table_per_operator(run: Run, project: str, tmp_path: Path) -> None:
    body = small_pipeline("never")
    body["operatorInstances"][-1]["configs"]["basicConfigs"] = {"dataSourceId": "nowhere"}
    body["operatorInstances"][1]["configs"]["basicConfigs"]["conditions"][0]["leftValue"] = "nope"
    path = write(tmp_path / "job.json", body)

    failed = run("streaming", "create", project, "--file", path, "--check")
    assert failed.exit_code == 1, failed.output
    assert "check problems" in failed.stdout
    assert "2 problem(s)" in failed.stdout
    lines = failed.stdout.splitlines()
    keep = next(line for line in lines if line.strip().startswith("keep"))
    assert "Filter" in keep
    assert "nope" in keep
    out = next(line for line in lines if line.strip().startswith("out "))
    assert "DISSink" in out
    assert "'nowhere' does not exist" in failed.stdout
    assert "error: the check found problems; job " in failed.stderr
    assert "is saved as a DRAFT" in failed.stderr

    as_json_failed = run("-o", "json", "streaming", "create", project, "-f", path, "--check")
    assert as_json_failed.exit_code == 1
    saved = json.loads(as_json_failed.stdout)
    assert (saved["job_state"], saved["status"]) == ("DRAFT", "failed")
    assert saved["check_info"]["out"] == [f"{DS}: data source 'nowhere' does not exist"]
    job_id = saved["job_id"]

    shown = ok(run("streaming", "get", project, job_id))
    assert "check problems" in shown.stdout
    assert "'nowhere' does not exist" in shown.stdout
    assert "check failed" in shown.stdout  # the state message

    api_error(run("streaming", "start", project, job_id), "E18702", "DRAFT")
    api_error(run("streaming", "stop", project, job_id), "E18702")
    api_error(run("streaming", "ingest", project, job_id, "-f", "-", input="{}\n"), "E18720")
    api_error(run("streaming", "metrics", project, "0123456789abcdef"), "E18701")
    api_error(run("streaming", "logs", project, "0123456789abcdef"), "E18701")
    api_error(run("streaming", "list", "no_such_project"), "E18402", "no_such_project")


def test_usage_and_input_errors(run: Run, project: str, tmp_path: Path) -> None:
    usage_error(run("streaming", "create", project), "--file")
    bad_field = write(tmp_path / "odd.json", {**small_pipeline("x"), "jobs": []})
    usage_error(run("streaming", "create", project, "-f", bad_field), "unknown field(s) jobs")
    usage_error(
        run("streaming", "create", project, "-f", str(tmp_path / "none.json")), "cannot read"
    )
    usage_error(run("streaming", "list", project, "--state", "SLEEPING"), "SLEEPING")
    invalid = write(tmp_path / "invalid.json", {"definition": {}, "operatorInstances": []})
    api_error(run("streaming", "create", project, "-f", invalid), "E18011", "definition.jobName")

    job_id = as_json(
        run(
            "-o",
            "json",
            "streaming",
            "create",
            project,
            "-f",
            write(tmp_path / "j.json", small_pipeline("y")),
            "--check",
        )
    )["job_id"]
    usage_error(run("streaming", "ingest", project, job_id), "--file")
    usage_error(
        run("streaming", "ingest", project, job_id, "-f", str(tmp_path / "nothing.ndjson")),
        "cannot read",
    )
    usage_error(run("streaming", "ingest", project, job_id, "-f", "-", input="  \n"), "no records")
    usage_error(run("streaming", "ingest", project, job_id, "-f", "-", input="[1, 2]"), "objects")
    usage_error(run("streaming", "ingest", project, job_id, "-f", "-", input="[{"), "JSON array")
    assert (
        as_json(run("-o", "json", "streaming", "get", project, job_id))["job_state"]
        == JobState.READY
    )
