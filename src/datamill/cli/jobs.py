"""The batch job command groups: ``jobs`` (jobs and their runs) and ``runs`` (one run)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from datamill.cli.common import (
    FileOpt,
    JobArg,
    OptionGroup,
    PageOpt,
    ProjectArg,
    RunIdArg,
    SizeOpt,
    TimeoutOpt,
    WaitOpt,
    body_file,
    delete_command,
    exit_if_failed,
    get_command,
    key_values,
    list_command,
    read_text,
    run_id_arg,
)
from datamill.cli.context import get_client, get_state
from datamill.cli.render import (
    Column,
    duration_text,
    history_page,
    items_table,
    schema_table,
    show_log,
    show_object,
    show_page,
    show_result,
)
from datamill.client import (
    DatamillClient,
    HistoryEntry,
    Job,
    MisfirePolicy,
    OverlapPolicy,
    RunStatus,
    Scheduler,
    SrcType,
)

JOB_FIELDS = {"srcs", "computation", "container", "scheduler", "params", "retries", "maxRunSeconds"}

# --------------------------------------------------------------------------- options

NameArg = Annotated[str, typer.Argument(help="job name", show_default=False)]
SqlOpt = Annotated[
    str | None,
    typer.Option("--sql", help="the job's SQL, or @file ('@-' reads stdin)", show_default=False),
]
SrcOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--src",
        metavar="NAME:TYPE:TABLE",
        help="a source (repeatable): a data source or job NAME, TYPE DataSource or Job, and the "
        "TABLE name the SQL reads it as",
        show_default=False,
    ),
]
ContainerOpt = Annotated[
    str | None,
    typer.Option(
        "--container",
        metavar="TYPE[:COUNT]",
        help="e.g. 1U2G or 4U16G:2 (default: the server's)",
        show_default=False,
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="SPEC",
        help="manual, crontab:'EXPR', loop:5m (loop:0 runs continuously) or depend",
        show_default=False,
    ),
]
TimezoneOpt = Annotated[
    str | None,
    typer.Option(
        "--timezone", help="IANA zone of a crontab schedule (default UTC)", show_default=False
    ),
]
MisfireOpt = Annotated[
    MisfirePolicy | None,
    typer.Option(
        "--misfire",
        help="fire times missed while down: latest (the server's default), all or none",
        show_default=False,
    ),
]
OverlapOpt = Annotated[
    OverlapPolicy | None,
    typer.Option(
        "--overlap",
        help="a fire time while a run is active: skip (the server's default), queue or allow",
        show_default=False,
    ),
]
ParamDefaultOpt = Annotated[
    list[str] | None,
    typer.Option("--param", metavar="NAME=DEFAULT", help="a param and its default (repeatable)"),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine", help="the engine that runs the job (default: duckdb)", show_default=False
    ),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--retries", min=0, max=10, help="automatic retries of a failed run", show_default=False
    ),
]
MaxRunOpt = Annotated[
    int | None,
    typer.Option(
        "--max-run-seconds",
        min=1,
        max=7 * 86400,
        help="stop a run after this long (default: the server's limit)",
        show_default=False,
    ),
]

JOB_OPTIONS = OptionGroup(
    "options",
    sql=SqlOpt,
    src=SrcOpt,
    container=ContainerOpt,
    scheduler=SchedulerOpt,
    timezone=TimezoneOpt,
    misfire=MisfireOpt,
    overlap=OverlapOpt,
    param=ParamDefaultOpt,
    retries=RetriesOpt,
    max_run_seconds=MaxRunOpt,
    engine=EngineOpt,
)
"""The options of a job's fields, that create and update share."""

# --------------------------------------------------------------------------- parsing


def _src(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise typer.BadParameter(f"expected NAME:TYPE:TABLE, got '{text}'", param_hint="'--src'")
    name, kind, table = (p.strip() for p in parts)
    types = {t.value.lower(): t.value for t in SrcType}
    if kind.lower() not in types:
        raise typer.BadParameter(
            f"source type '{kind}' is not one of {', '.join(types.values())}",
            param_hint="'--src'",
        )
    return {"name": name, "type": types[kind.lower()], "tableName": table}


def _container(text: str) -> dict[str, Any]:
    kind, sep, count = text.partition(":")
    if not kind.strip():
        raise typer.BadParameter("expected TYPE[:COUNT], e.g. 1U2G", param_hint="'--container'")
    if not sep:
        return {"type": kind.strip(), "count": 1}
    try:
        number = int(count)
    except ValueError:
        raise typer.BadParameter(
            f"container count '{count}' is not a number", param_hint="'--container'"
        )
    return {"type": kind.strip(), "count": number}


def _scheduler(text: str, extra: dict[str, str]) -> dict[str, Any]:
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    spec: dict[str, Any] = {}
    if kind in {"manual", "depend"}:
        if sep:
            raise typer.BadParameter(f"'{kind}' takes no value", param_hint="'--scheduler'")
    elif kind == "crontab":
        spec["crontab"] = value.strip()
    elif kind == "loop":
        spec["loop"] = value.strip()
    else:
        raise typer.BadParameter(
            f"'{text}' is not manual, crontab:EXPR, loop:INTERVAL or depend",
            param_hint="'--scheduler'",
        )
    spec.update(extra)
    return {"type": kind, "spec": spec} if spec else {"type": kind}


def _job_body(
    file: str | None,
    *,
    sql: str | None,
    src: list[str] | None,
    container: str | None,
    scheduler: str | None,
    timezone: str | None,
    misfire: MisfirePolicy | None,
    overlap: OverlapPolicy | None,
    param: list[str] | None,
    retries: int | None,
    max_run_seconds: int | None,
    engine: str | None,
) -> dict[str, Any]:
    """The job's body: ``--file``, with every option given over it."""
    body = body_file(file, JOB_FIELDS) if file else {}
    if sql is not None:
        code = read_text(sql[1:], "'--sql'") if sql.startswith("@") else sql
        body["computation"] = {"type": "SQL", "code": code}
    if src:
        body["srcs"] = [_src(s) for s in src]
    if container is not None:
        body["container"] = _container(container)
    scheduling = {"timezone": timezone, "misfire": misfire, "overlap": overlap}
    extra = {k: str(v) for k, v in scheduling.items() if v is not None}
    if scheduler is not None:
        body["scheduler"] = _scheduler(scheduler, extra)
    elif extra:
        option = "--" + next(iter(extra))
        raise typer.BadParameter("give --scheduler with it", param_hint=f"'{option}'")
    if param:
        defaults = key_values(param, "'--param'", form="NAME=DEFAULT")
        body["params"] = [{"name": k, "default": v} for k, v in defaults.items()]
    if retries is not None:
        body["retries"] = retries
    if max_run_seconds is not None:
        body["maxRunSeconds"] = max_run_seconds
    if engine is not None:
        body["engine"] = engine
    if "computation" not in body:
        raise typer.BadParameter("give --sql, or a 'computation' in --file", param_hint="'--sql'")
    if not body.get("srcs"):
        raise typer.BadParameter("give --src, or 'srcs' in --file", param_hint="'--src'")
    return body


# --------------------------------------------------------------------------- showing


def _scheduler_text(scheduler: Scheduler | None) -> str:
    if scheduler is None:
        return "manual"
    spec = scheduler.spec
    text = scheduler.type.value
    if spec and spec.crontab:
        text += f" {spec.crontab}"
    if scheduler.type == "loop":
        every = spec.loop.strip() if spec and spec.loop else ""
        text += f" every {every}" if every not in {"", "0"} else " continuously"
    if spec and spec.timezone:
        text += f" ({spec.timezone})"
    return text


def _container_text(job: Job) -> str | None:
    return f"{job.container.type} x{job.container.count}" if job.container else None


JOB_COLUMNS: list[Column] = [
    ("name", lambda j: j.name),
    ("sources", lambda j: ", ".join(s.name for s in j.srcs)),
    ("scheduler", lambda j: _scheduler_text(j.scheduler)),
    ("container", _container_text),
    ("state", lambda j: j.scheduleState),
    ("updated", lambda j: j.updatedAt),
]
SRC_COLUMNS: list[Column] = [
    ("table", lambda s: s.tableName),
    ("source", lambda s: s.name),
    ("type", lambda s: s.type),
    ("fileFilter", lambda s: s.fileFilter),
]
HISTORY_COLUMNS: list[Column] = [
    ("runId", lambda h: h.runId),
    ("batchTime", lambda h: h.batchTime),
    ("status", lambda h: h.status),
    ("duration", lambda h: duration_text(h.duration)),
    ("rows read", lambda h: h.rowsRead),
    ("rows written", lambda h: h.rowsWritten),
    ("message", lambda h: h.message or None),
]


def _show_job(ctx: typer.Context, job: Job) -> None:
    params = ", ".join(f"{p.name}={p.default}" for p in job.params or [])
    rows = [
        ("name", job.name),
        ("sql", job.computation.code),
        ("scheduler", _scheduler_text(job.scheduler)),
        ("container", _container_text(job)),
        ("params", params or None),
        ("retries", job.retries),
        ("maxRunSeconds", job.maxRunSeconds),
        ("scheduleState", job.scheduleState),
        ("createdAt", job.createdAt),
        ("updatedAt", job.updatedAt),
    ]
    extra = [
        items_table(job.srcs, SRC_COLUMNS, title="sources"),
        schema_table(job.schema_, title="output schema"),
    ]
    show_object(get_state(ctx), job, rows, extra=extra)


def _show_entry(ctx: typer.Context, entry: HistoryEntry) -> None:
    rows = [
        ("runId", entry.runId),
        ("status", entry.status),
        ("batchTime", entry.batchTime),
        ("startTime", entry.startTime),
        ("endTime", entry.endTime),
        ("duration", duration_text(entry.duration)),
        ("rowsRead", entry.rowsRead),
        ("rowsWritten", entry.rowsWritten),
        ("bytesRead", entry.bytesRead),
        ("bytesWritten", entry.bytesWritten),
        ("attempt", entry.attempt),
        ("rerunCount", entry.rerunCount),
        ("message", entry.message or None),
    ]
    show_object(get_state(ctx), entry, rows)


def _wait_and_show(
    ctx: typer.Context, client: DatamillClient, project: str, job: str, run_id: int, timeout: float
) -> None:
    """Wait for the run to finish, show its entry; exit 1 when it ended Failed or Canceled."""
    if not get_state(ctx).json:
        typer.echo(f"waiting for run {run_id} of job '{job}' to finish ...", err=True)
    entry = client.jobs.wait(project, job, run_id, timeout=timeout, poll=0.1, max_poll=2.0)
    _show_entry(ctx, entry)
    exit_if_failed(f"run {entry.runId} of job '{job}'", entry.status, entry.message)


# --------------------------------------------------------------------------- jobs

jobs_app = typer.Typer(help="Batch SQL jobs: define, run, and read their history, logs, results.")


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    project: ProjectArg,
    src_datasource: Annotated[
        str | None,
        typer.Option("--src-datasource", help="only jobs reading this data source"),
    ] = None,
    src_job: Annotated[
        str | None, typer.Option("--src-job", help="only jobs reading this job")
    ] = None,
    page: PageOpt = 1,
    size: SizeOpt = 50,
) -> None:
    """List a project's jobs, by name."""
    list_command(
        ctx,
        lambda dm: dm.jobs.list(
            project, src_datasource=src_datasource, src_job=src_job, page=page, size=size
        ),
        "jobs",
        JOB_COLUMNS,
    )


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Show a job: its SQL, sources, schedule and output schema."""
    get_command(ctx, lambda dm: dm.jobs.get(project, name), _show_job)


@jobs_app.command("create")
@JOB_OPTIONS.add
def jobs_create(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    file: FileOpt = None,
    *,
    options: dict[str, Any],
) -> None:
    """Create a job from --file, or from --sql and --src; options override the file.

    The server checks the sources, the SQL and the output schema before saving anything.
    """
    body = _job_body(file, **options)
    get_command(ctx, lambda dm: dm.jobs.create(project, name, body), _show_job)


@jobs_app.command("update")
@JOB_OPTIONS.add
def jobs_update(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    file: FileOpt = None,
    *,
    options: dict[str, Any],
) -> None:
    """Replace a whole job (options as for create; what is left out takes its default)."""
    body = _job_body(file, **options)
    get_command(ctx, lambda dm: dm.jobs.update(project, name, body), _show_job)


@jobs_app.command("delete")
def jobs_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a job no other job reads, with its history and results."""
    delete_command(ctx, lambda dm: dm.jobs.delete(project, name), f"job '{name}'")


@jobs_app.command("start")
def jobs_start(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="NAME=VALUE", help="a param value (repeatable)"),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Queue a run now, with param values over the job's defaults.

    Without --wait it prints the queued run; with it, the finished one.
    """
    values = key_values(param or [], "'--param'", form="NAME=VALUE")
    client = get_client(ctx)
    entry = client.jobs.start(project, name, values or None)
    if wait:
        _wait_and_show(ctx, client, project, name, entry.runId, timeout)
    else:
        _show_entry(ctx, entry)


@jobs_app.command("stop")
def jobs_stop(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Stop the job's schedule, cancel its queued runs and stop its running ones."""
    get_command(ctx, lambda dm: dm.jobs.stop(project, name))


@jobs_app.command("history")
def jobs_history(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    status: Annotated[
        RunStatus | None,
        typer.Option("--status", help="only runs with this status", show_default=False),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="just this run ('latest' or -1: the latest)"),
    ] = None,
    sort_by: Annotated[
        str,
        typer.Option(
            "--sort-by", help="endTime, startTime, batchTime or runId; '-' prefix: descending"
        ),
    ] = "-endTime",
    page: PageOpt = 1,
    size: Annotated[int, typer.Option("--size", min=1, max=1000, help="runs per page")] = 20,
) -> None:
    """List a job's runs, unfinished and most recently finished first."""
    run = run_id_arg(run_id, "'--run-id'") if run_id is not None else None
    history = get_client(ctx).jobs.history(
        project, name, page=page, size=size, sort_by=sort_by, status=status, run_id=run
    )
    show_page(get_state(ctx), history_page(history), "history", HISTORY_COLUMNS, noun="runs")


@jobs_app.command("logs")
def jobs_logs(ctx: typer.Context, project: ProjectArg, name: NameArg, run_id: RunIdArg) -> None:
    """Print a run's log."""
    show_log(get_state(ctx), get_client(ctx).jobs.logs(project, name, run_id_arg(run_id)))


@jobs_app.command("result")
def jobs_result(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    run_id: RunIdArg,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="rows to show")] = 100,
) -> None:
    """Show the first rows of a Successful run's result."""
    result = get_client(ctx).jobs.result(project, name, run_id_arg(run_id), limit=limit)
    show_result(get_state(ctx), result)


# --------------------------------------------------------------------------- runs

runs_app = typer.Typer(help="One run of a batch job: stop it, or rerun it.")


@runs_app.command("stop")
def runs_stop(ctx: typer.Context, project: ProjectArg, job: JobArg, run_id: RunIdArg) -> None:
    """Stop a Running run (it goes Cancelling, then Canceled)."""
    get_command(ctx, lambda dm: dm.batch.stop(project, job, run_id_arg(run_id)))


@runs_app.command("rerun")
def runs_rerun(
    ctx: typer.Context,
    project: ProjectArg,
    job: JobArg,
    run_id: RunIdArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Run a finished run again for the same batch time, with the same params.

    Without --wait it prints the state change; with it, the finished run.
    """
    client = get_client(ctx)
    number = run_id_arg(run_id)
    if wait and number == -1:  # wait for this run even if another one starts meanwhile
        number = client.jobs.run(project, job, -1).runId
    result = client.batch.rerun(project, job, number)
    if wait:
        _wait_and_show(ctx, client, project, job, number, timeout)
    else:
        show_object(get_state(ctx), result)


JOB_GROUPS: list[tuple[str, typer.Typer]] = [("jobs", jobs_app), ("runs", runs_app)]
"""The batch job command groups, listed after the catalog's by ``datamill --help``."""

__all__ = ["JOB_GROUPS"]
