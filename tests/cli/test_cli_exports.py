"""The ``datamill exports`` commands against the real app, real workers and a real S3 server.

Jobs and exports are created through the CLI, the job is run with ``jobs start --wait``,
and what the export wrote is read back from the data root (``file``) or from the session's
rclone S3 server (``s3``, created under the specification's name ``kodo``) and compared with
the job's result.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
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
from tests.connectors.test_export_files import expected, part_files, read_rows
from tests.servers import RunningServer

TERMINAL = {"Successful", "Failed", "Canceled"}
SQL = "SELECT device, value, kind FROM ev ORDER BY value"
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")


@pytest.fixture
def job(run: Run, api: Api, project: str) -> str:
    """The job ``rows`` (device, value, kind of 6 rows), created through the CLI."""
    make_source(api, project, rows=6)
    ok(run("jobs", "create", project, "rows", "--sql", SQL, "--src", "events:DataSource:ev"))
    return "rows"


def api_error(result: Result, code: str, *needles: str) -> None:
    """The command failed with the API's error ``code`` on stderr (exit 1), naming each needle."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert re.match(rf"error {code}: .+ \(request [0-9a-f]{{32}}\)\n", result.stderr), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert "Traceback" not in result.output


def start(run: Run, project: str, job: str) -> dict[str, Any]:
    """Run the job to its end through the CLI; its history entry."""
    entry: dict[str, Any] = as_json(
        run("-o", "json", "jobs", "start", project, job, "--wait", "--timeout", "120")
    )
    assert entry["status"] == "Successful", entry
    return entry


def export_run(
    run: Run, project: str, job: str, name: str, run_id: int, reruns: int = 0
) -> dict[str, Any]:
    """The export run of job run ``run_id`` from ``exports history``, once it is terminal."""
    deadline = time.monotonic() + 120
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        history = as_json(run("-o", "json", "exports", "history", project, job, name))
        found = [e for e in history["history"] if e["runId"] == run_id]
        if found:
            entry = found[0]
            if entry["status"] in TERMINAL and entry["rerunCount"] >= reruns:
                return entry
        time.sleep(0.1)
    raise AssertionError(f"the export {name} of run {run_id} did not finish: {entry}")


def result_rows(run: Run, project: str, job: str, run_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = as_json(
        run("-o", "json", "jobs", "result", project, job, str(run_id))
    )["rows"]
    return rows


# --------------------------------------------------------------------------- file


@pytest.mark.slow
def test_a_file_export_end_to_end(
    run: Run, api: Api, project: str, job: str, workers: WorkerPool, tmp_path: Path
) -> None:
    created = ok(
        run(
            "exports",
            "create",
            project,
            job,
            "daily",
            "--type",
            "file",
            "--path",
            "out/",
            "--format",
            "csv",
            "--delimiter",
            ";",
            "--compression",
            "gzip",
            "--file-count",
            "2",
            "--partition-by",
            "kind",
            "--retries",
            "1",
        )
    ).stdout
    for needle in ("daily", "default:out/", "spec", "partitionBy", "fileCount"):
        assert needle in created, (needle, created)
    stored = api.get(f"/projects/{project}/jobs/{job}/exports/daily").json()
    assert stored["type"] == "file"
    assert stored["spec"] == {
        "root": "default",
        "path": "out/",
        "format": "csv",
        "delimiter": ";",
        "compression": "gzip",
        "partitionBy": ["kind"],
        "fileCount": 2,
        "saveMode": "overwrite",
        "retries": 1,
    }
    got = run("-o", "json", "exports", "get", project, job, "daily")
    assert got.stdout == json.dumps(stored, indent=2, sort_keys=True) + "\n"
    listed = as_json(run("-o", "json", "exports", "list", project, job))
    assert (listed["total"], [e["name"] for e in listed["exports"]]) == (1, ["daily"])
    table = ok(run("exports", "list", project, job)).stdout
    for needle in ("destination", "default:out/", "csv", "gzip", "1-1 of 1 exports"):
        assert needle in table, (needle, table)
    assert "no runs" in ok(run("exports", "history", project, job, "daily")).stdout

    # run the job: the export runs after it and its run shows in the export's history
    run_id = start(run, project, job)["runId"]
    entry = export_run(run, project, job, "daily", run_id)
    assert entry["status"] == "Successful", entry
    assert (entry["export"], entry["rowsWritten"], entry["rerunCount"]) == ("daily", 6, 0)
    history_table = ok(run("exports", "history", project, job, "daily")).stdout
    assert "Successful" in history_table
    assert "1-1 of 1 runs" in history_table
    waited = as_json(run("-o", "json", "exports", "wait", project, job, "daily", str(run_id)))
    assert waited == entry
    shown = ok(run("exports", "wait", project, job, "daily", "latest"))
    for needle in ("Successful", "rowsWritten", f"waiting for export 'daily' of run {run_id} "):
        assert needle in shown.stdout + shown.stderr, (needle, shown)
    log = ok(run("exports", "logs", project, job, "daily", str(run_id))).stdout.splitlines()
    assert any("writing 6 rows" in line for line in log), log
    log_json = as_json(run("-o", "json", "exports", "logs", project, job, "daily", "latest"))
    assert log_json["runId"] == run_id
    assert [line.split(" ", 1)[1] for line in log_json["lines"]] == [
        line.split(" ", 1)[1] for line in log
    ]
    api_error(run("exports", "logs", project, job, "daily", "99"), "E18230")
    (location,) = [p for p in (api.data_root / project / "out").iterdir()]
    assert STAMP.fullmatch(location.name), location
    assert (location / "_SUCCESS").is_file()
    files = part_files(location)
    names = sorted(str(p.relative_to(location)) for p in files)
    assert names == [
        "kind=x/part-00000.csv.gz",
        "kind=x/part-00001.csv.gz",
        "kind=y/part-00000.csv.gz",
        "kind=y/part-00001.csv.gz",
    ]
    rows = result_rows(run, project, job, run_id)
    written = [
        {**row, "kind": path.parent.name.removeprefix("kind=")}
        for path in files
        for row in read_rows(path.read_bytes(), "csv", "gzip", delimiter=";")
    ]
    key = lambda r: (r["kind"], r["value"])  # noqa: E731
    assert sorted(written, key=key) == sorted(expected(rows, "csv"), key=key)

    # rerun the batch (the job's latest run) and wait: overwrite writes the same files again
    rerun = as_json(
        run("-o", "json", "exports", "rerun", project, job, "daily", "latest", "--wait")
    )
    assert (rerun["runId"], rerun["status"], rerun["rerunCount"]) == (run_id, "Successful", 1)
    assert part_files(location) == files
    state = as_json(run("-o", "json", "exports", "rerun", project, job, "daily", str(run_id)))
    assert state == {"preStatus": "Successful", "postStatus": "Restarting", "rerunCount": 2}
    assert export_run(run, project, job, "daily", run_id, 2)["status"] == "Successful"

    # update --merge changes only the given fields; a plain update replaces the spec
    merged = as_json(
        run(
            "-o",
            "json",
            "exports",
            "update",
            project,
            job,
            "daily",
            "--merge",
            "--save-mode",
            "append",
            "--set",
            "retention=7",
        )
    )
    assert merged["spec"] == {**stored["spec"], "saveMode": "append", "retention": 7}
    body = tmp_path / "export.json"
    body.write_text(json.dumps({"type": "file", "spec": {"format": "json", "path": "elsewhere/"}}))
    replaced = as_json(
        run("-o", "json", "exports", "update", project, job, "daily", "--file", str(body))
    )
    assert replaced["spec"]["path"] == "elsewhere/"
    assert (replaced["spec"]["format"], replaced["spec"]["partitionBy"]) == ("json", [])
    assert replaced["spec"]["saveMode"] == "overwrite"
    body.write_text(json.dumps({"type": "s3", "spec": {"format": "json", "bucket": "abcd"}}))
    usage_error(
        run("exports", "update", project, job, "daily", "--file", str(body)),
        "the type of an export cannot change",
    )

    deleted = ok(run("exports", "delete", project, job, "daily"))
    assert "deleted export 'daily'" in deleted.stdout
    api_error(
        run("exports", "get", project, job, "daily"),
        "E18302",
        f"export 'daily' of job '{job}' does not exist",
    )
    api_error(run("exports", "history", project, job, "daily"), "E18302")


def test_create_from_a_body_file_stdin_and_spec(run: Run, project: str, job: str) -> None:
    body = {"type": "file", "spec": {"format": "csv", "delimiter": ",", "path": "a/"}}
    from_stdin = as_json(
        run(
            "-o",
            "json",
            "exports",
            "create",
            project,
            job,
            "piped",
            "--file",
            "-",
            "--no-header",
            input=json.dumps(body),
        )
    )
    assert from_stdin["spec"]["containsHeader"] is False
    assert from_stdin["spec"]["path"] == "a/"
    # --spec replaces the file's spec; the options and --set go over it
    spec = as_json(
        run(
            "-o",
            "json",
            "exports",
            "create",
            project,
            job,
            "specced",
            "--type",
            "file",
            "--spec",
            '{"format": "text", "path": "b/", "fileCount": 3}',
            "--set",
            "path=c/",
            "--set",
            "fileCount=4",
            "--partition-by",
            "kind,device",
        )
    )
    assert (spec["spec"]["path"], spec["spec"]["fileCount"]) == ("c/", 4)
    assert spec["spec"]["partitionBy"] == ["kind", "device"]
    assert spec["spec"]["format"] == "text"

    # the specification's type name kodo is s3, stored and shown as s3
    kodo = as_json(
        run(
            "-o",
            "json",
            "exports",
            "create",
            project,
            job,
            "objects",
            "--type",
            "kodo",
            "--bucket",
            "some-bucket",
            "--key-prefix",
            "x/",
            "--format",
            "parquet",
            "--compression",
            "snappy",
        )
    )
    assert kodo["type"] == "s3"
    listed = as_json(run("-o", "json", "exports", "list", project, job))
    assert [(e["name"], e["type"]) for e in listed["exports"]] == [
        ("objects", "s3"),
        ("piped", "file"),
        ("specced", "file"),
    ]
    assert "s3://some-bucket/x/" in ok(run("exports", "get", project, job, "objects")).stdout


def test_errors_carry_their_codes(run: Run, project: str, job: str, tmp_path: Path) -> None:
    def create(*args: str, name: str = "e", job_name: str = job) -> Result:
        return run("exports", "create", project, job_name, name, "--type", "file", *args)

    api_error(create("--format", "xml"), "E18011", "spec.format", "unknown format 'xml'")
    api_error(
        create("--format", "parquet", "--compression", "lzo"),
        "E18011",
        "spec.compression",
        "cannot be written by this server",
    )
    api_error(create("--format", "orc", "--compression", "gzip"), "E18011", "spec.compression")
    for count in ("0", "1001"):
        api_error(create("--format", "json", "--file-count", count), "E18011", "spec.fileCount")
    api_error(create("--format", "json", "--partition-by", "nope"), "E18111", "nope")
    api_error(
        create("--format", "json", job_name="missing"),
        "E18202",
        "job 'missing' does not exist",
    )
    api_error(
        run("exports", "create", project, job, "e", "--type", "ftp", "--format", "json"),
        "E18011",
        "unknown export type 'ftp'",
    )
    api_error(create("--format", "json", "--key-prefix", "k"), "E18011", "spec.keyPrefix")
    api_error(run("exports", "list", project, "missing"), "E18202")
    ok(create("--format", "json"))
    api_error(create("--format", "json"), "E18301", "export 'e' of job")
    api_error(run("exports", "rerun", project, job, "e", "7"), "E18230")
    api_error(run("exports", "get", project, job, "nope"), "E18302")
    api_error(run("exports", "delete", project, job, "nope"), "E18302")

    # usage errors never reach the server (exit 2)
    usage_error(run("exports", "create", project, job, "u", "--format", "json"), "--type")
    usage_error(create("--spec", "{not json"), "not valid JSON")
    usage_error(create("--spec", "[1]"), "must be a JSON object")
    usage_error(create("--set", "novalue"), "FIELD=VALUE")
    usage_error(run("exports", "rerun", project, job, "e", "first"), "not a run id")
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"type": "file", "spec": {}, "name": "x"}))
    usage_error(create("--file", str(body)), "unknown field(s) name")
    assert [
        e["name"] for e in as_json(run("-o", "json", "exports", "list", project, job))["exports"]
    ] == ["e"]


# --------------------------------------------------------------------------- s3


@pytest.fixture
def s3(s3_server: RunningServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id=s3_server.extra["access_key"],
        aws_secret_access_key=s3_server.extra["secret_key"],
        region_name="us-east-1",
    )


@pytest.mark.slow
def test_an_s3_export_end_to_end(
    run: Run, project: str, job: str, workers: WorkerPool, s3_server: RunningServer, s3: Any
) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    ok(
        run(
            "secrets",
            "create",
            project,
            "store",
            "--value",
            f"accessKeyId={s3_server.extra['access_key']}",
            "--value",
            f"secretAccessKey={s3_server.extra['secret_key']}",
        )
    )
    created = as_json(
        run(
            "-o",
            "json",
            "exports",
            "create",
            project,
            job,
            "objects",
            "--type",
            "kodo",
            "--bucket",
            bucket,
            "--endpoint",
            s3_server.url,
            "--secret",
            "store",
            "--key-prefix",
            "daily/$(year)-$(mon)-$(day)/",
            "--format",
            "json",
            "--compression",
            "gzip",
            "--retries",
            "1",
        )
    )
    assert created["type"] == "s3"
    assert created["spec"]["secret"] == "store"

    entry = start(run, project, job)
    run_id = entry["runId"]
    done = export_run(run, project, job, "objects", run_id)
    assert done["status"] == "Successful", done
    day = entry["batchTime"][:10]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="daily/").get("Contents", [])
    assert sorted(o["Key"] for o in listed) == [
        f"daily/{day}/_SUCCESS",
        f"daily/{day}/part-00000.json.gz",
    ]
    data = s3.get_object(Bucket=bucket, Key=f"daily/{day}/part-00000.json.gz")["Body"].read()
    assert read_rows(data, "json", "gzip") == result_rows(run, project, job, run_id)

    # rerun with --wait, table output: the finished export run
    waited = ok(run("exports", "rerun", project, job, "objects", str(run_id), "--wait"))
    assert "waiting for export 'objects'" in waited.stderr
    assert "Successful" in waited.stdout
    assert export_run(run, project, job, "objects", run_id, 1)["rerunCount"] == 1
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="daily/").get("Contents", [])
    assert len(listed) == 2

    # an export that cannot reach its bucket fails; rerun --wait says so and exits 1
    ok(
        run(
            "exports",
            "create",
            project,
            job,
            "nobucket",
            "--type",
            "s3",
            "--bucket",
            f"missing-{uuid.uuid4().hex[:8]}",
            "--endpoint",
            s3_server.url,
            "--secret",
            "store",
            "--format",
            "json",
            "--retries",
            "0",
        )
    )
    failed = run("exports", "rerun", project, job, "nobucket", "latest", "--wait")
    assert failed.exit_code == 1, failed.output
    assert re.search(rf"error: export 'nobucket' of run {run_id} ended Failed: \S", failed.stderr)
    assert "Failed" in failed.stdout
