"""The ``streaming`` command group: streaming pipelines (seed 000), their check, start and
stop, records posted to them, and what the engine reports (metrics, logs).

A job's body (``definition``, ``operatorInstances``, ``runtime``) comes from ``--file``;
jobs are named by the id the server gives them on create. ``--check`` validates the job
too: it is READY when the check passes, else it stays a DRAFT and the command prints the
problems per operator and exits 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import typer
from rich.table import Table

from datamill.cli.common import (
    FileOpt,
    PageOpt,
    ProjectArg,
    SizeOpt,
    TimeoutOpt,
    body_file,
    delete_command,
    get_command,
    list_command,
)
from datamill.cli.context import EXIT_API_ERROR, get_client, get_state
from datamill.cli.render import (
    Column,
    done,
    items_table,
    page_json,
    print_json,
    rows_table,
    show_object,
)
from datamill.client import (
    DatamillClient,
    StreamingJob,
    StreamingJobState,
    StreamingMetrics,
    StreamingSaveResult,
)

BODY_FIELDS = {"definition", "operatorInstances", "runtime"}

# --------------------------------------------------------------------------- options

JobIdArg = Annotated[
    str, typer.Argument(metavar="JOB_ID", help="the job's id (see `streaming list`)")
]
CheckOpt = Annotated[
    bool,
    typer.Option(
        "--check",
        help="check the job too: READY when it passes, else a DRAFT with the problems (exit 1)",
    ),
]
StateOpt = Annotated[
    StreamingJobState | None,
    typer.Option("--state", help="only jobs in this state", show_default=False),
]
SortOpt = Annotated[
    str,
    typer.Option("--sort-by", help="createdAt, updatedAt or jobName; '-' first: descending"),
]
StreamWaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait", help="wait until the job is RUNNING (start) or STOPPED (stop); exit 1 if FAILED"
    ),
]
RecordsOpt = Annotated[
    str,
    typer.Option(
        "--file",
        "-f",
        help="the records: NDJSON (one JSON object per line) or a JSON array; '-' reads stdin",
        show_default=False,
    ),
]
BatchOpt = Annotated[
    int,
    typer.Option("--batch", min=1, max=100_000, help="NDJSON: records per request"),
]


def _body(file: str | None) -> dict[str, Any]:
    if not file:
        raise typer.BadParameter(
            "give the job as a JSON file ('-' reads stdin)", param_hint="'--file'"
        )
    return body_file(file, BODY_FIELDS)


# --------------------------------------------------------------------------- showing

JOB_COLUMNS: list[Column] = [
    ("job_id", lambda j: j.job_id),
    ("jobName", lambda j: j.jobName),
    ("state", lambda j: j.job_state),
    ("jobType", lambda j: j.jobType),
    ("inputType", lambda j: j.jobInputType),
    ("created", lambda j: j.createdAt),
    ("updated", lambda j: j.updatedAt),
]


def _classes(operators: Any) -> dict[str, str]:
    """Operator id -> className, from models or the JSON of ``operatorInstances``."""
    found: dict[str, str] = {}
    for operator in operators or []:
        if isinstance(operator, Mapping):
            found[str(operator.get("id"))] = str(operator.get("className") or "")
        else:
            found[operator.id] = operator.className
    return found


PROBLEM_COLUMNS: list[Column] = [
    ("operator", lambda p: p[0]),
    ("className", lambda p: p[1]),
    ("problem", lambda p: p[2]),
]


def check_table(info: Mapping[str, list[str]], classes: Mapping[str, str]) -> Table:
    """The problems of a check, one row each, under the operator (or ``$graph``,
    ``$definition``) they belong to, with the operator's class."""
    rows = [
        (key if n == 0 else "", (classes.get(key) or None) if n == 0 else "", problem)
        for key, problems in info.items()
        for n, problem in enumerate(problems)
    ]
    return items_table(
        rows, PROBLEM_COLUMNS, title="check problems", caption=f"{len(rows)} problem(s)"
    )


def _show_save(ctx: typer.Context, result: StreamingSaveResult, body: Mapping[str, Any]) -> None:
    rows = [("job_id", result.job_id), ("state", result.job_state), ("status", result.status)]
    extra = [check_table(result.check_info, _classes(body.get("operatorInstances")))]
    show_object(get_state(ctx), result, rows, extra=extra if result.check_info else [])
    if result.check_info:
        typer.echo(
            f"error: the check found problems; job {result.job_id} is saved as a "
            f"{result.job_state.value}",
            err=True,
        )
        raise typer.Exit(EXIT_API_ERROR)


def _operator_inputs(operator: Any) -> str | None:
    refs = operator.fromOperators or []
    return ", ".join(ref.id for ref in refs) or None


OPERATOR_COLUMNS: list[Column] = [
    ("id", lambda o: o.id),
    ("className", lambda o: o.className),
    ("from", _operator_inputs),
]


def _show_job(ctx: typer.Context, job: StreamingJob) -> None:
    rows = [
        ("job_id", job.job_id),
        ("jobName", job.definition.jobName),
        ("state", job.job_state),
        ("stateMessage", job.stateMessage),
        ("createdAt", job.createdAt),
        ("updatedAt", job.updatedAt),
        ("stateChangedAt", job.stateChangedAt),
        ("startedAt", job.startedAt),
        ("stoppedAt", job.stoppedAt),
    ]
    extra = [items_table(job.operatorInstances, OPERATOR_COLUMNS, title="operators")]
    if job.check_info:
        extra.append(check_table(job.check_info, _classes(job.operatorInstances)))
    show_object(get_state(ctx), job, rows, extra=extra)


OPERATOR_METRICS = ["operator", "className", "recordsIn", "recordsOut", "stateRows", "lateRecords"]


def _show_metrics(ctx: typer.Context, figures: StreamingMetrics) -> None:
    checkpoint = figures.lastCheckpoint
    rows = [
        ("job_id", figures.job_id),
        ("state", figures.job_state),
        ("epoch", figures.epoch),
        ("batches", figures.batches),
        ("watermark", figures.watermark),
        ("maxEventTime", figures.maxEventTime),
        ("lateRecords", figures.lateRecords),
        ("stateRows", figures.stateRows),
        ("stateBytes", figures.stateBytes),
        ("lastCheckpoint", f"epoch {checkpoint.epoch}" if checkpoint else None),
        ("checkpointTime", checkpoint.time if checkpoint else None),
        ("updatedAt", figures.updatedAt),
    ]
    per_operator = [
        {
            "operator": op_id,
            "className": op.className,
            "recordsIn": op.recordsIn,
            "recordsOut": op.recordsOut,
            "stateRows": op.stateRows,
            "lateRecords": op.lateRecords,
        }
        for op_id, op in figures.operators.items()
    ]
    caption = (
        f"{len(per_operator)} operator(s)"
        if per_operator
        else "no operator figures yet (the job has not run)"
    )
    extra = [rows_table(per_operator, OPERATOR_METRICS, caption=caption)]
    if figures.sources:
        sources = [
            {"source": key, "lag": source.lag, "position": source.position}
            for key, source in figures.sources.items()
        ]
        extra.append(rows_table(sources, ["source", "lag", "position"]))
    show_object(get_state(ctx), figures, rows, extra=extra)


def _wait_for(
    ctx: typer.Context,
    client: DatamillClient,
    project: str,
    job_id: str,
    state: StreamingJobState,
    timeout: float,
) -> None:
    """Wait for ``state``, show the job; exit 1 when it ended FAILED instead."""
    if not get_state(ctx).json:
        typer.echo(f"waiting for streaming job {job_id} to be {state.value} ...", err=True)
    job = client.streaming.wait(project, job_id, state, timeout=timeout)
    _show_job(ctx, job)
    if job.job_state != state:
        why = f": {job.stateMessage}" if job.stateMessage else ""
        typer.echo(f"error: streaming job {job_id} is {job.job_state.value}{why}", err=True)
        raise typer.Exit(EXIT_API_ERROR)


# --------------------------------------------------------------------------- records


@contextmanager
def _opened(source: str) -> Iterator[IO[str]]:
    if source == "-":
        yield sys.stdin
        return
    try:
        handle = Path(source).expanduser().open(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {source}: {exc.strerror or exc}", param_hint="'--file'"
        )
    with handle:
        yield handle


def _first_char(handle: IO[str]) -> tuple[str, str]:
    """Skip leading blank text: the first non-blank character and the text read so far."""
    read = ""
    while True:
        chunk = handle.read(1)
        if not chunk:
            return "", read
        read += chunk
        if not chunk.isspace():
            return chunk, read


def _lines(head: str, handle: IO[str]) -> Iterator[str]:
    """The NDJSON lines of ``head`` (already read) followed by the rest of ``handle``."""
    first = head + handle.readline()
    yield first
    yield from handle


# --------------------------------------------------------------------------- commands

streaming_app = typer.Typer(
    help="Streaming pipelines: define and check them, start and stop them, post records, "
    "read their metrics and logs."
)


@streaming_app.command("list")
def streaming_list(
    ctx: typer.Context,
    project: ProjectArg,
    state: StateOpt = None,
    sort_by: SortOpt = "-createdAt",
    page: PageOpt = 1,
    size: SizeOpt = 50,
) -> None:
    """List the project's streaming jobs (newest first), optionally those in one state."""
    list_command(
        ctx,
        lambda dm: dm.streaming.list(project, state=state, sort_by=sort_by, page=page, size=size),
        "jobs",
        JOB_COLUMNS,
    )


@streaming_app.command("get")
def streaming_get(ctx: typer.Context, project: ProjectArg, job_id: JobIdArg) -> None:
    """Show a job: its state and why, its operators, the problems of its last check."""
    get_command(ctx, lambda dm: dm.streaming.get(project, job_id), _show_job)


@streaming_app.command("create")
def streaming_create(
    ctx: typer.Context, project: ProjectArg, file: FileOpt = None, check: CheckOpt = False
) -> None:
    """Create a job from --file (the API's body: definition, operatorInstances, runtime).

    It is saved as a DRAFT; with --check it is checked as well and is READY when it passes.
    """
    body = _body(file)
    result = get_client(ctx).streaming.create(project, body, check=check)
    _show_save(ctx, result, body)


@streaming_app.command("update")
def streaming_update(
    ctx: typer.Context,
    project: ProjectArg,
    job_id: JobIdArg,
    file: FileOpt = None,
    check: CheckOpt = False,
) -> None:
    """Replace a job with --file (not while it runs); --check as for create."""
    body = _body(file)
    result = get_client(ctx).streaming.update(project, job_id, body, check=check)
    _show_save(ctx, result, body)


@streaming_app.command("delete")
def streaming_delete(ctx: typer.Context, project: ProjectArg, job_id: JobIdArg) -> None:
    """Delete a job that is not running, with its state and ingested records."""
    delete_command(ctx, lambda dm: dm.streaming.delete(project, job_id), f"streaming job {job_id}")


@streaming_app.command("start")
def streaming_start(
    ctx: typer.Context,
    project: ProjectArg,
    job_id: JobIdArg,
    wait: StreamWaitOpt = False,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Start a READY or STOPPED job (it is STARTING until the engine runs it)."""
    _change_state(ctx, project, job_id, "start", StreamingJobState.RUNNING, wait, timeout)


@streaming_app.command("stop")
def streaming_stop(
    ctx: typer.Context,
    project: ProjectArg,
    job_id: JobIdArg,
    wait: StreamWaitOpt = False,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Stop a running job: STOPPING (a last checkpoint), then STOPPED."""
    _change_state(ctx, project, job_id, "stop", StreamingJobState.STOPPED, wait, timeout)


def _change_state(
    ctx: typer.Context,
    project: str,
    job_id: str,
    action: Literal["start", "stop"],
    reached: StreamingJobState,
    wait: bool,
    timeout: float,
) -> None:
    """Start or stop a job; show the state change, or with ``wait`` the job once it is
    ``reached``."""
    client = get_client(ctx)
    act = client.streaming.start if action == "start" else client.streaming.stop
    result = act(project, job_id)
    if wait:
        _wait_for(ctx, client, project, job_id, reached, timeout)
    else:
        show_object(get_state(ctx), result)


@streaming_app.command("ingest")
def streaming_ingest(
    ctx: typer.Context,
    project: ProjectArg,
    job_id: JobIdArg,
    file: RecordsOpt,
    batch: BatchOpt = 1000,
) -> None:
    """Post records to a running job's PipelineSource.

    NDJSON is read line by line and sent --batch records per request; a JSON array is sent
    whole. The server checks every record (a JSON object) and names the line it refuses.
    """
    client = get_client(ctx)
    with _opened(file) as handle:
        first, head = _first_char(handle)
        if first == "[":
            try:
                records = json.loads(head + handle.read())
            except ValueError as exc:
                raise typer.BadParameter(f"not a valid JSON array: {exc}", param_hint="'--file'")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise typer.BadParameter("the array must hold JSON objects", param_hint="'--file'")
            result = client.streaming.ingest(project, job_id, records)
        elif first:
            result = client.streaming.ingest(
                project, job_id, _lines(head, handle), chunk_records=batch
            )
        else:
            raise typer.BadParameter("no records in the input", param_hint="'--file'")
    if get_state(ctx).json:
        print_json({"job_id": result.job_id, "accepted": result.accepted})
    else:
        done(get_state(ctx), f"accepted {result.accepted} records for streaming job {job_id}")


@streaming_app.command("metrics")
def streaming_metrics(ctx: typer.Context, project: ProjectArg, job_id: JobIdArg) -> None:
    """Show the engine's last figures: records per operator, watermark, state, checkpoint."""
    get_command(ctx, lambda dm: dm.streaming.metrics(project, job_id), _show_metrics)


@streaming_app.command("logs")
def streaming_logs(
    ctx: typer.Context,
    project: ProjectArg,
    job_id: JobIdArg,
    page: PageOpt = 1,
    size: Annotated[int, typer.Option("--size", min=1, max=1000, help="lines per page")] = 1000,
) -> None:
    """Print the engine's log lines for a job, oldest first (one page of them)."""
    lines = get_client(ctx).streaming.logs(project, job_id, page=page, size=size)
    if get_state(ctx).json:
        print_json(page_json(lines, "lines"))
        return
    for line in lines:
        typer.echo(line)
    if lines.has_next:
        typer.echo(f"(more: --page {lines.page + 1})", err=True)


STREAMING_GROUPS: list[tuple[str, typer.Typer]] = [("streaming", streaming_app)]
"""The streaming command group, listed after the exports' by ``datamill --help``."""

__all__ = ["STREAMING_GROUPS", "check_table"]
