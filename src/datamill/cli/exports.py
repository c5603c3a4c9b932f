"""The ``exports`` command group: where a job's results go after each successful run.

An export's spec comes from three places, each over the one before: the ``spec`` of a
request body file (``--file``), a whole spec given with ``--spec`` (which replaces the
file's), and one option per common spec field (``--format``, ``--bucket`` ...) or
``--set FIELD=VALUE`` for any other field. Options carry the API's field names one to one
(``--key-prefix`` is ``keyPrefix``), and the server validates the result, so a bad value
is answered with the catalog's error code, like any other client's.
"""

from __future__ import annotations

import json
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
    json_arg,
    key_values,
    list_command,
    run_id_arg,
)
from datamill.cli.context import get_client, get_state
from datamill.cli.render import (
    Column,
    duration_text,
    fields_table,
    history_page,
    show_log,
    show_object,
    show_page,
)
from datamill.client import Export, ExportRunEntry, canonical_export_type

# --------------------------------------------------------------------------- options

NameArg = Annotated[str, typer.Argument(help="export name", show_default=False)]
TypeOpt = Annotated[
    str | None,
    typer.Option(
        "--type",
        help="file, s3 (kodo is taken for s3), hdfs, http, logdb, tsdb or report",
        show_default=False,
    ),
]
SpecOpt = Annotated[
    str | None,
    typer.Option(
        "--spec", help="the whole spec as JSON, or @file ('@-' reads stdin)", show_default=False
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="json, csv, text, orc or parquet", show_default=False),
]
CompressionOpt = Annotated[
    str | None,
    typer.Option(
        "--compression",
        help="json/csv/text: none, gzip, bzip2, deflate, lz4, snappy; orc: none, snappy, zlib; "
        "parquet: none, snappy, gzip",
        show_default=False,
    ),
]
DelimiterOpt = Annotated[
    str | None, typer.Option("--delimiter", help="csv: the field delimiter", show_default=False)
]
HeaderOpt = Annotated[
    bool | None,
    typer.Option("--header/--no-header", help="csv: write a header line", show_default=False),
]
PathOpt = Annotated[
    str | None,
    typer.Option(
        "--path",
        help="file: the folder under the data root; hdfs: hdfs://namenode:port/folder",
        show_default=False,
    ),
]
RootOpt = Annotated[
    str | None, typer.Option("--root", help="file: the data root", show_default=False)
]
KeyPrefixOpt = Annotated[
    str | None,
    typer.Option("--key-prefix", help="s3: the key prefix of the objects", show_default=False),
]
BucketOpt = Annotated[
    str | None, typer.Option("--bucket", help="s3: the bucket", show_default=False)
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", help="s3, logdb, tsdb: the server's URL", show_default=False),
]
SecretOpt = Annotated[
    str | None,
    typer.Option("--secret", help="the stored secret holding the credentials", show_default=False),
]
PartitionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--partition-by",
        metavar="FIELD",
        help="a field to partition the files by (repeatable, or comma-separated)",
        show_default=False,
    ),
]
FileCountOpt = Annotated[
    int | None,
    typer.Option("--file-count", help="files per output or partition (1-1000)", show_default=False),
]
SaveModeOpt = Annotated[
    str | None,
    typer.Option(
        "--save-mode", help="overwrite, append, errorIfExists or ignore", show_default=False
    ),
]
RetentionOpt = Annotated[
    int | None,
    typer.Option("--retention", help="days to keep outputs (<= 0: for ever)", show_default=False),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--retries", help="automatic retries when the destination is down", show_default=False
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="FIELD=VALUE",
        help="any spec field (repeatable); VALUE is read as JSON when it parses, else as text",
        show_default=False,
    ),
]
MergeOpt = Annotated[
    bool,
    typer.Option(
        "--merge",
        help="start from the export's current spec and change only the fields given",
    ),
]

SPEC_OPTIONS = OptionGroup(
    "fields",
    format=FormatOpt,
    compression=CompressionOpt,
    delimiter=DelimiterOpt,
    containsHeader=HeaderOpt,
    path=PathOpt,
    root=RootOpt,
    keyPrefix=KeyPrefixOpt,
    bucket=BucketOpt,
    endpoint=EndpointOpt,
    secret=SecretOpt,
    partitionBy=PartitionOpt,
    fileCount=FileCountOpt,
    saveMode=SaveModeOpt,
    retention=RetentionOpt,
    retries=RetriesOpt,
)
"""The options for common spec fields, named by the API's field names, that create and
update share."""

# --------------------------------------------------------------------------- building the spec


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _spec(
    base: dict[str, Any], spec: str | None, fields: dict[str, Any], sets: list[str] | None
) -> dict[str, Any]:
    """``base`` (the file's or the stored spec), then ``--spec`` keys, then the options."""
    result = dict(base)
    if spec is not None:
        result.update(json_arg(spec, "'--spec'", dict))
    given = {key: value for key, value in fields.items() if value is not None}
    partitions = given.pop("partitionBy", None)
    if partitions:
        given["partitionBy"] = [p.strip() for item in partitions for p in item.split(",")]
    result.update(given)
    pairs = key_values(sets or [], "'--set'", form="FIELD=VALUE")
    result.update({key: _json_or_text(value) for key, value in pairs.items()})
    return result


def _file_spec(body: dict[str, Any]) -> dict[str, Any]:
    spec = body.get("spec", {})
    if not isinstance(spec, dict):
        raise typer.BadParameter("'spec' must be a JSON object", param_hint="'--file'")
    return spec


# --------------------------------------------------------------------------- showing


def destination(export: Export) -> str | None:
    """Where an export writes, in a few words: ``s3://bucket/prefix``, ``default:sales/`` ..."""
    spec = export.spec
    if export.type == "file":
        return f"{spec.get('root', 'default')}:{spec.get('path', '')}"
    if export.type == "s3":
        return f"s3://{spec.get('bucket', '')}/{spec.get('keyPrefix', '')}"
    if export.type == "http":
        return f"{spec.get('host', '')}{spec.get('uri', '')}"
    if export.type == "tsdb":
        return f"{spec.get('destRepoName', '')}.{spec.get('series', '')}"
    for key in ("path", "destRepoName", "tableName"):
        if spec.get(key):
            return str(spec[key])
    return None


EXPORT_COLUMNS: list[Column] = [
    ("name", lambda e: e.name),
    ("type", lambda e: e.type),
    ("destination", destination),
    ("format", lambda e: e.spec.get("format")),
    ("compression", lambda e: e.spec.get("compression")),
    ("saveMode", lambda e: e.spec.get("saveMode")),
    ("updated", lambda e: e.updatedAt),
]


def _duration(entry: ExportRunEntry) -> str | None:
    if entry.startTime is None or entry.endTime is None:
        return None
    return duration_text((entry.endTime - entry.startTime).total_seconds())


HISTORY_COLUMNS: list[Column] = [
    ("runId", lambda h: h.runId),
    ("batchTime", lambda h: h.batchTime),
    ("status", lambda h: h.status),
    ("duration", _duration),
    ("attempt", lambda h: h.attempt),
    ("reruns", lambda h: h.rerunCount),
    ("rows written", lambda h: h.rowsWritten),
    ("bytes written", lambda h: h.bytesWritten),
    ("message", lambda h: h.message or None),
]


def _show_export(ctx: typer.Context, export: Export) -> None:
    rows = [
        ("name", export.name),
        ("type", export.type),
        ("destination", destination(export)),
        ("createdAt", export.createdAt),
        ("updatedAt", export.updatedAt),
    ]
    spec = fields_table(
        [(key, value if value != [] else None) for key, value in sorted(export.spec.items())],
        title="spec",
    )
    show_object(get_state(ctx), export, rows, extra=[spec])


def _show_entry(ctx: typer.Context, entry: ExportRunEntry) -> None:
    rows = [
        ("export", entry.export),
        ("runId", entry.runId),
        ("status", entry.status),
        ("batchTime", entry.batchTime),
        ("startTime", entry.startTime),
        ("endTime", entry.endTime),
        ("duration", _duration(entry)),
        ("rowsWritten", entry.rowsWritten),
        ("bytesWritten", entry.bytesWritten),
        ("attempt", entry.attempt),
        ("rerunCount", entry.rerunCount),
        ("message", entry.message or None),
    ]
    show_object(get_state(ctx), entry, rows)


# --------------------------------------------------------------------------- commands

exports_app = typer.Typer(
    help="Exports: where a job's result goes after each successful run, and their runs."
)


@exports_app.command("list")
def exports_list(
    ctx: typer.Context, project: ProjectArg, job: JobArg, page: PageOpt = 1, size: SizeOpt = 50
) -> None:
    """List a job's exports, by name."""
    list_command(
        ctx,
        lambda dm: dm.exports.list(project, job, page=page, size=size),
        "exports",
        EXPORT_COLUMNS,
    )


@exports_app.command("get")
def exports_get(ctx: typer.Context, project: ProjectArg, job: JobArg, name: NameArg) -> None:
    """Show an export and its spec as stored (defaults filled in)."""
    get_command(ctx, lambda dm: dm.exports.get(project, job, name), _show_export)


@exports_app.command("create")
@SPEC_OPTIONS.add
def exports_create(
    ctx: typer.Context,
    project: ProjectArg,
    job: JobArg,
    name: NameArg,
    file: FileOpt = None,
    type_: TypeOpt = None,
    spec: SpecOpt = None,
    *,
    fields: dict[str, Any],
    set_: SetOpt = None,
) -> None:
    """Create an export from --type and spec options, or from --file; options win.

    --file holds the API's body, {"type": ..., "spec": {...}}. The server checks the spec
    against the job's output schema before saving it.
    """
    body = body_file(file, {"type", "spec"}) if file else {}
    kind = type_ or body.get("type")
    if not kind:
        raise typer.BadParameter("give --type, or a 'type' in --file", param_hint="'--type'")
    values = _spec(_file_spec(body), spec, fields, set_)
    get_command(
        ctx,
        lambda dm: dm.exports.create(project, job, name, type=str(kind), spec=values),
        _show_export,
    )


@exports_app.command("update")
@SPEC_OPTIONS.add
def exports_update(
    ctx: typer.Context,
    project: ProjectArg,
    job: JobArg,
    name: NameArg,
    file: FileOpt = None,
    merge: MergeOpt = False,
    spec: SpecOpt = None,
    *,
    fields: dict[str, Any],
    set_: SetOpt = None,
) -> None:
    """Replace an export's spec (options as for create; the type stays).

    Fields left out take their defaults, unless --merge starts from the current spec.
    """
    body = body_file(file, {"type", "spec"}) if file else {}
    client = get_client(ctx)
    current = client.exports.get(project, job, name) if merge or "type" in body else None
    if (
        current is not None
        and "type" in body
        and canonical_export_type(str(body["type"])) != current.type
    ):
        raise typer.BadParameter(
            f"export '{name}' is of type {current.type}, the file says {body['type']}: "
            "the type of an export cannot change (delete it and create it again)",
            param_hint="'--file'",
        )
    base = dict(current.spec) if merge and current is not None else {}
    base.update(_file_spec(body))
    values = _spec(base, spec, fields, set_)
    get_command(ctx, lambda dm: dm.exports.update(project, job, name, spec=values), _show_export)


@exports_app.command("delete")
def exports_delete(ctx: typer.Context, project: ProjectArg, job: JobArg, name: NameArg) -> None:
    """Delete an export and its history (not while one of its runs is running)."""
    delete_command(ctx, lambda dm: dm.exports.delete(project, job, name), f"export '{name}'")


@exports_app.command("history")
def exports_history(
    ctx: typer.Context,
    project: ProjectArg,
    job: JobArg,
    name: NameArg,
    page: PageOpt = 1,
    size: Annotated[int, typer.Option("--size", min=1, max=1000, help="runs per page")] = 20,
) -> None:
    """List an export's runs, one per batch exported, newest batch first."""
    history = get_client(ctx).exports.history(project, job, name, page=page, size=size)
    show_page(get_state(ctx), history_page(history), "history", HISTORY_COLUMNS, noun="runs")


@exports_app.command("logs")
def exports_logs(
    ctx: typer.Context, project: ProjectArg, job: JobArg, name: NameArg, run_id: RunIdArg
) -> None:
    """Print the log of the export run of a batch (RUN_ID is the job's run)."""
    log = get_client(ctx).exports.logs(project, job, name, run_id_arg(run_id))
    show_log(get_state(ctx), log)


@exports_app.command("wait")
def exports_wait(
    ctx: typer.Context,
    project: ProjectArg,
    job: JobArg,
    name: NameArg,
    run_id: RunIdArg,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Wait for the export run of a batch to finish and show it (RUN_ID is the job's run).

    A job run still going is waited for first; the exit status is 1 when the export run
    failed or was canceled.
    """
    number = run_id_arg(run_id)
    if number == -1:  # the batch of the latest run now, even if another run starts meanwhile
        number = get_client(ctx).jobs.run(project, job, -1).runId
    if not get_state(ctx).json:
        typer.echo(f"waiting for export '{name}' of run {number} to finish ...", err=True)
    _wait_and_show(ctx, project, job, name, number, timeout)


def _wait_and_show(
    ctx: typer.Context, project: str, job: str, name: str, number: int, timeout: float
) -> None:
    entry = get_client(ctx).exports.wait(project, job, name, number, timeout=timeout, max_poll=2.0)
    _show_entry(ctx, entry)
    exit_if_failed(f"export '{name}' of run {entry.runId}", entry.status, entry.message)


@exports_app.command("rerun")
def exports_rerun(
    ctx: typer.Context,
    project: ProjectArg,
    job: JobArg,
    name: NameArg,
    run_id: RunIdArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Export the batch of a Successful job run again (RUN_ID is the job's run).

    Without --wait it prints the state change; with it, the finished export run.
    """
    client = get_client(ctx)
    number = run_id_arg(run_id)
    if wait and number == -1:  # wait for this batch even if another run starts meanwhile
        number = client.jobs.run(project, job, -1).runId
    result = client.exports.rerun(project, job, name, number)
    if not wait:
        show_object(get_state(ctx), result)
        return
    if not get_state(ctx).json:
        typer.echo(f"waiting for export '{name}' of run {number} to finish ...", err=True)
    _wait_and_show(ctx, project, job, name, number, timeout)


EXPORT_GROUPS: list[tuple[str, typer.Typer]] = [("exports", exports_app)]
"""The exports command group, listed after the jobs' by ``datamill --help``."""

__all__ = ["EXPORT_GROUPS", "destination"]
